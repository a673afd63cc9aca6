//! channels: iii data channels, created on any node and reachable from every node.
//!
//! A channel lives on the node that created it (`engine::channels::create`); its id carries
//! that node's id, so every node knows where it lives without a Raft write. Each end connects
//! to any node's worker port at `/ws/channels/{id}?key=&dir=read|write`; an end on another
//! node reaches the channel over one gRPC stream to its home node.
//!
//! | file | job |
//! |---|---|
//! | `id.rs` | the channel id (a UUIDv8 naming the home node) and the access key |
//! | `buffer.rs` | one channel: its items bounded in messages and bytes, the state of each end |
//! | `table.rs` | the channels living on this node, their cap, and the sweep of unconnected ends |
//! | `builtin.rs` | `engine::channels::create` |
//! | `endpoint.rs` | reading a channel request and deciding it before the upgrade |
//! | `ends.rs` | where a socket's frames go or come from: a local channel or a stream to its home |
//! | `socket.rs` | the WebSocket relay of one end, with its keepalive |
//! | `remote.rs` | the cross-node RPCs, both sides |
//! | `beat.rs` | heartbeats on the cross-node streams, so a silent node is noticed in 1 s |
//! | `slots.rs` | how many ends this node serves through each home node, each on its own connection |
//! | `pieces.rs` | large frames crossing nodes in pieces, so beats pass between them |
//! | `metrics.rs` | open ends, frames and bytes relayed, local and cross-node |

pub mod beat;
pub mod buffer;
pub mod builtin;
pub mod endpoint;
pub mod ends;
pub mod id;
pub mod metrics;
pub mod pieces;
pub mod remote;
pub mod slots;
pub mod socket;
pub mod table;

use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

use beat::Heartbeat;
use buffer::Direction;
use endpoint::Admitted;
use ends::{Inlet, Outlet};
use metrics::ChannelMetrics;
use slots::PeerSlots;
use socket::ChannelSocket;
use table::Table;

use crate::node::Node;

/// This node's channels and their counters.
pub struct Channels {
    pub table: Arc<Table>,
    pub metrics: Arc<ChannelMetrics>,
    /// The ends served through each home node, each on a connection of its own.
    pub slots: PeerSlots,
    /// The beats on this node's cross-node channel streams, and the silence that ends them.
    pub heartbeat: Heartbeat,
}

impl Channels {
    /// No channels yet, with these limits, serving at most `per_peer` ends through each home
    /// and beating on their streams with `heartbeat`.
    pub fn new(
        node: crate::ids::NodeId,
        limits: table::Limits,
        per_peer: usize,
        heartbeat: Heartbeat,
    ) -> Channels {
        Channels {
            table: Arc::new(Table::new(node, limits)),
            metrics: Arc::new(ChannelMetrics::default()),
            slots: PeerSlots::new(per_peer),
            heartbeat,
        }
    }

    /// Whether an end is still open on this node (the drain waits for them).
    pub fn ends_open(&self) -> u64 {
        self.metrics
            .ends_open
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Serves one upgraded channel socket until its end is done.
pub async fn serve<S>(node: Arc<Node>, ws: ChannelSocket<S>, admitted: Admitted)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = node.channels.metrics.clone();
    let stall = node.channels.table.reader_stall();
    match admitted {
        Admitted::Local { end, channel } => {
            let share = ws.get_ref().share().clone();
            if !channel.claim(end.direction, Some(share)) {
                return socket::refuse(ws).await;
            }
            match end.direction {
                Direction::Write => {
                    socket::run_writer(node.id, ws, Inlet::Local(channel), metrics).await
                }
                Direction::Read => {
                    let outlet = Outlet::Local {
                        channel,
                        table: node.channels.table.clone(),
                    };
                    socket::run_reader(node.id, ws, outlet, metrics, stall).await
                }
            }
        }
        // The slot toward the home node is held until the end is done.
        Admitted::Remote { end, addr, _slot } => match end.direction {
            Direction::Write => {
                let inlet = remote::open_writer(node.id, &node.peers, &addr, &end, &node.channels);
                socket::run_writer(node.id, ws, inlet, metrics).await
            }
            Direction::Read => {
                match remote::open_reader(&node.peers, &addr, &end, node.channels.heartbeat).await {
                    Some(outlet) => socket::run_reader(node.id, ws, outlet, metrics, stall).await,
                    None => socket::refuse(ws).await,
                }
            }
        },
    }
}
