//! Fault-injecting TCP relays for partition tests without root.
//!
//! Each node listens for peers on its own loopback IP (`127.0.0.11`, `127.0.0.12`, …) and
//! advertises the address of a relay in front of it; quorum dials peers from the IP it listens
//! on, so a relay knows which node each connection comes from. Cutting a node off drops, in
//! every relay, the connections it makes and the ones made to it: both directions of the
//! partition, with open connections closed at once and new ones closed on accept.
//! Silencing a node instead keeps every connection open but carries nothing, with no reset
//! and no FIN: a dead link, noticed only by timeouts and heartbeats.
//! Slowing a node delays every chunk its connections carry (a slow link, for a catch-up that
//! takes seconds instead of milliseconds); holding it keeps every byte its connections carry
//! until it is released, then delivers them all (a stuck link that recovers).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a partition does to a node's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Closed at once; new ones closed on accept.
    Cut,
    /// Held open, carrying nothing.
    Silence,
    /// Carrying everything, each chunk after a delay.
    Slow(Duration),
    /// Held open; what is sent waits, and is delivered once the fault ends.
    Hold,
}

impl Fault {
    /// Whether the fault ends a forwarded connection (the others act on its bytes).
    fn breaks(self) -> bool {
        matches!(self, Fault::Cut | Fault::Silence)
    }
}

type FaultMap = HashMap<IpAddr, Fault>;

/// The node IPs currently partitioned and how, shared by every relay of a test.
#[derive(Clone)]
pub struct Faults {
    cut: Arc<watch::Sender<HashMap<IpAddr, Fault>>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            cut: Arc::new(watch::Sender::new(HashMap::new())),
        }
    }
}

impl Faults {
    /// Cuts the node listening on `ip` off from every other node.
    pub fn cut(&self, ip: IpAddr) {
        self.cut.send_modify(|cut| {
            cut.insert(ip, Fault::Cut);
        });
    }

    /// Silences the node listening on `ip`: its connections to and from every other node
    /// stay open but carry nothing, in either direction (no reset, no FIN).
    pub fn silence(&self, ip: IpAddr) {
        self.cut.send_modify(|cut| {
            cut.insert(ip, Fault::Silence);
        });
    }

    /// Delays every chunk the connections to and from the node on `ip` carry by `delay`.
    pub fn slow(&self, ip: IpAddr, delay: Duration) {
        self.cut.send_modify(|cut| {
            cut.insert(ip, Fault::Slow(delay));
        });
    }

    /// Holds what the connections to and from the node on `ip` carry (they stay open, and
    /// new ones are accepted) until [`Faults::heal`] releases it, undelivered bytes first.
    pub fn hold(&self, ip: IpAddr) {
        self.cut.send_modify(|cut| {
            cut.insert(ip, Fault::Hold);
        });
    }

    /// Ends the partition (or the slowing, or the hold) of the node on `ip`.
    pub fn heal(&self, ip: IpAddr) {
        self.cut.send_modify(|cut| {
            cut.remove(&ip);
        });
    }
}

/// The fault a connection from `source` to the node on `node` crosses, if any.
fn crossed(cut: &FaultMap, source: IpAddr, node: IpAddr) -> Option<Fault> {
    cut.get(&source).or_else(|| cut.get(&node)).copied()
}

/// Whether the link from `source` to the node on `node` is broken (cut or silenced).
fn broken(cut: &FaultMap, source: IpAddr, node: IpAddr) -> Option<Fault> {
    crossed(cut, source, node).filter(|f| f.breaks())
}

/// Copies `from` into `to` until `from` ends, obeying a hold (waits, keeping the chunk) and
/// a slowing (sleeps before each chunk) of the link; then ends `to`'s writing side.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut faults: watch::Receiver<FaultMap>,
    (source, node): (IpAddr, IpAddr),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        let now = faults
            .wait_for(|f| crossed(f, source, node) != Some(Fault::Hold))
            .await
            .map(|f| crossed(&f, source, node))
            .map_err(|_| std::io::Error::other("the relay's faults are gone"))?;
        if let Some(Fault::Slow(delay)) = now {
            tokio::time::sleep(delay).await;
        }
        to.write_all(&buf[..n]).await?;
    }
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
                let (from, to) = (source.ip(), target.ip());
                let fault = broken(&cut.borrow_and_update(), from, to);
                match fault {
                    Some(Fault::Cut) => {
                        drop(inbound);
                        continue;
                    }
                    Some(Fault::Silence) => {
                        // Accepted and held, never forwarded, until the node is healed.
                        tokio::spawn(async move {
                            let _held = inbound;
                            let _ = cut.wait_for(|cut| broken(cut, from, to).is_none()).await;
                        });
                        continue;
                    }
                    _ => {}
                }
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    let (in_read, in_write) = inbound.split();
                    let (out_read, out_write) = outbound.split();
                    let link = (from, to);
                    let (there, back) = (cut.clone(), cut.clone());
                    let forward = async {
                        let _ = tokio::join!(
                            pump(in_read, out_write, there, link),
                            pump(out_read, in_write, back, link),
                        );
                    };
                    let fault = tokio::select! {
                        _ = forward => None,
                        cut = cut.wait_for(|cut| broken(cut, from, to).is_some()) => {
                            cut.ok().and_then(|cut| broken(&cut, from, to))
                        }
                    };
                    if fault == Some(Fault::Silence) {
                        // Both sockets stay open and carry nothing until the node is healed.
                        let _ = cut.wait_for(|cut| broken(cut, from, to).is_none()).await;
                    }
                    drop((inbound, outbound));
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

/// A cluster whose nodes reach each other only through relays: node `i` listens for peers
/// on `127.0.0.{nodes_from + i}` and advertises a relay on `127.0.0.{relays_from + i}`.
/// Worker and HTTP ports are reached directly, so a test still talks to a partitioned node.
pub struct RelayedCluster {
    pub cluster: super::Cluster,
    pub faults: Faults,
    /// Node `i`'s cluster IP, the one [`Faults`] partitions.
    pub ips: Vec<IpAddr>,
    pub relays: Vec<Relay>,
}

impl RelayedCluster {
    /// Starts `n` nodes with extra `args` (node 1 first, the others joining through its
    /// relay) and waits until every node sees all `n` as voters.
    pub async fn start(n: u8, nodes_from: u8, relays_from: u8, args: &[&str]) -> RelayedCluster {
        let faults = Faults::default();
        let mut cluster = super::Cluster::empty();
        let mut ips = Vec::new();
        let mut relays: Vec<Relay> = Vec::new();
        for i in 0..n {
            let ip: IpAddr = [127, 0, 0, nodes_from + i].into();
            // The port is chosen before the node starts, so the relay (which the node
            // advertises) forwards to it from the first connection on.
            let target = SocketAddr::new(ip, super::free_port_on(ip));
            let relay = Relay::start([127, 0, 0, relays_from + i].into(), target, &faults).await;
            let mut node_args = vec!["--advertise".to_string(), relay.addr.to_string()];
            if let Some(seed) = relays.first() {
                node_args.extend(["--join".to_string(), seed.addr.to_string()]);
            }
            node_args.extend(args.iter().map(|a| a.to_string()));
            let options = super::NodeOptions {
                cluster_listen: Some(target.to_string()),
                args: node_args,
                ..super::NodeOptions::default()
            };
            tokio::task::block_in_place(|| cluster.spawn_node(options));
            ips.push(ip);
            relays.push(relay);
        }
        let expected: Vec<u64> = (1..=u64::from(n)).collect();
        tokio::task::block_in_place(|| {
            cluster.wait_until("every node sees all members as voters", |c| {
                c.live().iter().all(|i| {
                    c.status(*i).is_some_and(|s| {
                        let members = super::members(&s);
                        s["leader_id"].as_u64().is_some()
                            && members.iter().map(|m| m.0).collect::<Vec<_>>() == expected
                            && members.iter().all(|m| m.1 != "learner")
                    })
                })
            })
        });
        RelayedCluster {
            cluster,
            faults,
            ips,
            relays,
        }
    }
}
