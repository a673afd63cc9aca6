//! Channel ends on another node than the channel's home: the home node's side of the
//! `ChannelCheck`, `ChannelWrite` and `ChannelRead` RPCs, and the opening of those streams
//! from the node that holds the socket.
//!
//! Why: behind a load balancer the two ends of a channel land on any node. Each remote end
//! is one gRPC stream to the home node (never a call per frame), with an explicit end
//! marker so that a broken stream is never taken for a clean end. Backpressure crosses
//! nodes through HTTP/2 flow control; every hop holds at most [`HOP_FRAMES`] frames.

use futures_util::{Stream, StreamExt};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, Streaming};
use tracing::debug;

use super::buffer::{Channel, Direction, End, Popped};
use super::endpoint::EndRequest;
use super::ends::{end_frame, frame_of, popped_of, Inlet, Outlet};
use super::id::ChannelId;
use super::metrics::Hop;
use super::socket::OpenEnd;
use super::Channels;
use crate::budget::Budget;
use crate::ids::NodeId;
use crate::rpc::client::PeerClients;
use crate::rpc::pb;
use crate::rpc::pb::channel_frame::Kind;

/// Frames queued on one hop between a socket and a gRPC stream.
pub const HOP_FRAMES: usize = 2;

/// The stream of frames a home node sends to a remote reader.
pub type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::ChannelFrame, Status>> + Send>>;

/// The protobuf naming one end.
pub fn open_message(end: &EndRequest) -> pb::ChannelOpen {
    pb::ChannelOpen {
        channel_id: end.id.to_string(),
        access_key: end.key.clone(),
        direction: end.direction.as_str().to_string(),
    }
}

/// The channel a peer names, when it lives here and the key opens it.
#[allow(clippy::result_large_err)]
fn open_here(
    channels: &Channels,
    open: &pb::ChannelOpen,
) -> Result<(Arc<Channel>, Direction), Status> {
    let not_found = || Status::not_found("no such channel");
    let id = ChannelId::parse(&open.channel_id).map_err(|_| not_found())?;
    let direction = Direction::parse(&open.direction)
        .ok_or_else(|| Status::invalid_argument("direction is not `read` or `write`"))?;
    let channel = channels
        .table
        .open(id, &open.access_key)
        .ok_or_else(not_found)?;
    Ok((channel, direction))
}

/// `ChannelCheck` on the home node: does this channel open with this key? A draining node
/// accepts no new ends and says so (the asking node answers 503).
#[allow(clippy::result_large_err)]
pub fn check(
    channels: &Channels,
    draining: bool,
    request: pb::ChannelCheckRequest,
) -> Result<pb::ChannelCheckReply, Status> {
    if draining {
        return Err(Status::unavailable("this node is draining"));
    }
    let found = request
        .end
        .as_ref()
        .is_some_and(|open| open_here(channels, open).is_ok());
    Ok(pb::ChannelCheckReply { found })
}

/// `ChannelWrite` on the home node: the writer's frames from another node go into the
/// channel until the end marker; a stream that stops without one is a writer that vanished.
pub async fn serve_write(
    channels: Arc<Channels>,
    budget: Arc<Budget>,
    draining: bool,
    request: Request<Streaming<pb::ChannelFrame>>,
) -> Result<pb::ChannelWriteReply, Status> {
    if draining {
        return Err(Status::unavailable("this node is draining"));
    }
    let peer = request
        .remote_addr()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut frames = request.into_inner();
    let open = match frames.next().await {
        Some(Ok(pb::ChannelFrame {
            kind: Some(Kind::Open(open)),
        })) => open,
        _ => {
            return Err(Status::invalid_argument(
                "the first frame must name the channel",
            ))
        }
    };
    let (channel, direction) = open_here(&channels, &open)?;
    if direction != Direction::Write || !channel.claim(Direction::Write, Some(budget.open(peer))) {
        return Err(Status::already_exists("the write end is already connected"));
    }
    let _open = OpenEnd::new(channels.metrics.clone());
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            _ = channel.gone() => return Err(Status::aborted("the channel's reader is gone")),
        };
        let item = match frame {
            Some(Ok(frame)) => match popped_of(frame) {
                Popped::Item(item) => item,
                Popped::End(end) => {
                    channel.finish_writer(end);
                    return Ok(pb::ChannelWriteReply {});
                }
            },
            _ => {
                channel.finish_writer(End::Broken);
                return Ok(pb::ChannelWriteReply {});
            }
        };
        if channel.push(item).await.is_err() {
            channel.finish_writer(End::Broken);
            return Err(Status::aborted("the channel's reader is gone"));
        }
    }
}

/// `ChannelRead` on the home node: the channel's frames go to the reader's node, then the
/// end marker. When that node stops listening, the reader is gone.
pub fn serve_read(
    channels: Arc<Channels>,
    draining: bool,
    open: pb::ChannelOpen,
) -> Result<ReadStream, Status> {
    if draining {
        return Err(Status::unavailable("this node is draining"));
    }
    let (channel, direction) = open_here(&channels, &open)?;
    if direction != Direction::Read || !channel.claim(Direction::Read, None) {
        return Err(Status::already_exists("the read end is already connected"));
    }
    let (tx, rx) = mpsc::channel(HOP_FRAMES);
    let open_end = OpenEnd::new(channels.metrics.clone());
    tokio::spawn(async move {
        let _open = open_end;
        let mut outlet = Outlet::Local {
            channel,
            table: channels.table.clone(),
        };
        loop {
            // A reader's node that drops the stream is noticed at once, not at the next frame.
            let popped = tokio::select! {
                popped = outlet.next() => popped,
                _ = tx.closed() => break,
            };
            let frame = match popped {
                Popped::Item(item) => {
                    let len = item.len();
                    channels.metrics.relayed(Hop::CrossNode, len);
                    frame_of(item)
                }
                Popped::End(end) => {
                    let _ = tx.send(Ok(end_frame(end))).await;
                    break;
                }
            };
            if tx.send(Ok(frame)).await.is_err() {
                break;
            }
        }
        outlet.finish();
    });
    Ok(Box::pin(crate::rpc::receiver_stream(rx)))
}

/// Opens the write stream of a socket on this node to the channel's home node.
pub fn open_writer(
    me: NodeId,
    peers: &PeerClients,
    addr: &str,
    end: &EndRequest,
    channels: &Channels,
) -> Inlet {
    let (tx, rx) = mpsc::channel(HOP_FRAMES);
    let gone = CancellationToken::new();
    let first = pb::ChannelFrame {
        kind: Some(Kind::Open(open_message(end))),
    };
    // The queue is empty and holds HOP_FRAMES (>= 1): the first frame always fits.
    let _ = tx.try_send(first);
    let client = peers.cluster(addr);
    let done = gone.clone();
    let taken = Arc::new(AtomicBool::new(false));
    let refused = taken.clone();
    let addr = addr.to_string();
    tokio::spawn(async move {
        let result = match client {
            Ok(mut client) => match client.channel_write(crate::rpc::receiver_stream(rx)).await {
                Ok(_) => Ok(()),
                Err(status) => {
                    if status.code() == tonic::Code::AlreadyExists {
                        refused.store(true, Ordering::Relaxed);
                    }
                    Err(status.to_string())
                }
            },
            Err(err) => Err(err.to_string()),
        };
        if let Err(error) = result {
            debug!(node = me, home = %addr, %error, "channel write stream ended with an error");
        }
        done.cancel();
    });
    Inlet::Remote {
        frames: tx,
        gone,
        taken,
        metrics: channels.metrics.clone(),
    }
}

/// Opens the read stream of a socket on this node from the channel's home node; `None`
/// when the home node refuses it (the end is taken) or cannot be reached.
pub async fn open_reader(peers: &PeerClients, addr: &str, end: &EndRequest) -> Option<Outlet> {
    let mut client = peers.cluster(addr).ok()?;
    let stream = client.channel_read(open_message(end)).await.ok()?;
    Some(Outlet::Remote(Box::new(stream.into_inner())))
}
