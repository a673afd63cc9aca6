//! Fault-injecting TCP relays for partition tests without root.
//!
//! Each node listens for peers on its own loopback IP (`127.0.0.11`, `127.0.0.12`, …) and
//! advertises the address of a relay in front of it; quorum dials peers from the IP it listens
//! on, so a relay knows which node each connection comes from. Cutting a node off drops, in
//! every relay, the connections it makes and the ones made to it: both directions of the
//! partition, with open connections closed at once and new ones closed on accept.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The set of node IPs currently cut off, shared by every relay of a test.
#[derive(Clone)]
pub struct Faults {
    cut: Arc<watch::Sender<HashSet<IpAddr>>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            cut: Arc::new(watch::Sender::new(HashSet::new())),
        }
    }
}

impl Faults {
    /// Cuts the node listening on `ip` off from every other node.
    pub fn cut(&self, ip: IpAddr) {
        self.cut.send_modify(|cut| {
            cut.insert(ip);
        });
    }

    /// Ends the partition of the node on `ip`.
    pub fn heal(&self, ip: IpAddr) {
        self.cut.send_modify(|cut| {
            cut.remove(&ip);
        });
    }
}

/// Whether a connection from `source` to the node on `node` crosses a cut.
fn crosses(cut: &HashSet<IpAddr>, source: IpAddr, node: IpAddr) -> bool {
    cut.contains(&source) || cut.contains(&node)
}

/// One relay: accepts on `addr`, forwards to the node on `target`.
pub struct Relay {
    pub addr: SocketAddr,
    /// The source IP of every connection accepted so far.
    sources: Arc<Mutex<HashSet<IpAddr>>>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts a relay on `listen_ip` (any port) in front of `target`, obeying `faults`.
    pub async fn start(listen_ip: IpAddr, target: SocketAddr, faults: &Faults) -> Relay {
        let listener = TcpListener::bind((listen_ip, 0)).await.expect("relay bind");
        let addr = listener.local_addr().expect("relay address");
        let faults = faults.clone();
        let sources = Arc::new(Mutex::new(HashSet::new()));
        let seen = sources.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, source)) = listener.accept().await {
                seen.lock().unwrap().insert(source.ip());
                let mut cut = faults.cut.subscribe();
                if crosses(&cut.borrow_and_update(), source.ip(), target.ip()) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| crosses(cut, source.ip(), target.ip())) => {}
                    }
                });
            }
        });
        Relay {
            addr,
            sources,
            task,
        }
    }

    /// The source IPs of the connections accepted so far.
    pub fn sources(&self) -> HashSet<IpAddr> {
        self.sources.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
