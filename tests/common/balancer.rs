//! A TCP load balancer in front of the nodes' worker ports, standing in for haproxy or a
//! Kubernetes Service: each new connection goes to the next backend that accepts it, so a
//! draining node (its listener closed) or a restarting one (not listening yet) is skipped
//! and an SDK's reconnect lands on a live node.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How backends are tried for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Start from the backend after the previous connection's (spreads workers).
    RoundRobin,
    /// Always start from the first backend (a test knows where a worker lands).
    FirstAvailable,
}

/// A running balancer; stops when dropped.
pub struct Balancer {
    /// The address workers connect to.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Listens on an OS-chosen loopback port and forwards to `backends`.
    pub async fn start(backends: Vec<SocketAddr>, policy: Policy) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind balancer");
        let addr = listener.local_addr().expect("balancer address");
        let backends = Arc::new(backends);
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let start = match policy {
                    Policy::RoundRobin => next.fetch_add(1, Ordering::Relaxed),
                    Policy::FirstAvailable => 0,
                };
                tokio::spawn(forward(client, backends.clone(), start));
            }
        });
        Balancer { addr, task }
    }

    /// The URL an SDK uses to reach the nodes through the balancer.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, backends: Arc<Vec<SocketAddr>>, start: usize) {
    let _ = client.set_nodelay(true);
    for k in 0..backends.len() {
        let backend = backends[(start + k) % backends.len()];
        let connect = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(backend));
        if let Ok(Ok(mut server)) = connect.await {
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            return;
        }
    }
    // No backend accepts: the client sees the connection close and retries.
}

/// A door in front of one worker port that a test points at a node, or shuts: shut, it
/// accepts and drops every connection, so an SDK keeps retrying and the test decides when,
/// and on which node, a worker comes back.
pub struct Door {
    /// The address the worker connects to.
    pub addr: SocketAddr,
    target: Arc<tokio::sync::watch::Sender<Option<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Door {
    /// Listens on an OS-chosen loopback port and forwards to `target` (shut when `None`).
    pub async fn start(target: Option<SocketAddr>) -> Door {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind door");
        let addr = listener.local_addr().expect("door address");
        let target = Arc::new(tokio::sync::watch::Sender::new(target));
        let current = target.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if let Some(backend) = *current.borrow() {
                    tokio::spawn(forward(client, Arc::new(vec![backend]), 0));
                }
            }
        });
        Door { addr, target, task }
    }

    /// Sends new connections to `target` from now on, or drops them (`None`); open
    /// connections stay as they are.
    pub fn point(&self, target: Option<SocketAddr>) {
        self.target.send_replace(target);
    }

    /// The URL an SDK uses to reach the node behind the door.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        self.task.abort();
    }
}
