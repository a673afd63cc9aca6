//! Channel ends on another node than the channel's home: the home node's side of the
//! `ChannelCheck`, `ChannelWrite` and `ChannelRead` RPCs, and the opening of those streams
//! from the node that holds the socket.
//!
//! Why: behind a load balancer the two ends of a channel land on any node. Each remote end
//! is one gRPC stream to the home node (never a call per frame), on a connection of its own
//! (so its backpressure never stalls another stream), with an explicit end
//! marker so that a broken stream is never taken for a clean end. Backpressure crosses
//! nodes through HTTP/2 flow control; every hop holds at most [`HOP_FRAMES`] frames. Both
//! sides of every stream beat ([`super::beat`]), so a node cut off silently is noticed in
//! about a second.

use futures_util::Stream;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, Streaming};
use tracing::debug;

use super::beat::{self, Heard, Heartbeat, LastSent};
use super::buffer::{Channel, Direction, End, Popped};
use super::endpoint::EndRequest;
use super::ends::{end_frame, popped_of, Inlet, Outlet};
use super::id::ChannelId;
use super::metrics::Hop;
use super::pieces::{self, Joiner};
use super::socket::OpenEnd;
use super::Channels;
use crate::budget::Budget;
use crate::ids::NodeId;
use crate::rpc::client::PeerClients;
use crate::rpc::pb;
use crate::rpc::pb::channel_frame::Kind;

/// The channel stream format this node speaks, exchanged in `ChannelCheck`: 1 = beats both
/// ways and frames over 256 KiB in pieces. A node of another format would take beats for
/// broken frames and pieces for whole ones, so a cross-node end is only opened between
/// nodes that speak the same format (see `docs/clustering.md`, "Mixed versions").
pub const STREAM_VERSION: u32 = 1;

/// Frames queued on one hop between a socket and a gRPC stream.
pub const HOP_FRAMES: usize = 2;

/// How long the home node may take to answer the opening of a stream.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The stream of frames a home node answers a channel stream with.
pub type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::ChannelFrame, Status>> + Send>>;

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
/// accepts no new ends and says so (the asking node answers 503), and so does a node asked
/// by one that speaks another channel stream format.
#[allow(clippy::result_large_err)]
pub fn check(
    channels: &Channels,
    draining: bool,
    request: pb::ChannelCheckRequest,
) -> Result<pb::ChannelCheckReply, Status> {
    if draining {
        return Err(Status::unavailable("this node is draining"));
    }
    if request.stream_version != STREAM_VERSION {
        return Err(Status::failed_precondition(format!(
            "this node speaks channel stream version {STREAM_VERSION}, the asking node {}",
            request.stream_version
        )));
    }
    let found = request
        .end
        .as_ref()
        .is_some_and(|open| open_here(channels, open).is_ok());
    Ok(pb::ChannelCheckReply {
        found,
        stream_version: STREAM_VERSION,
    })
}

/// The first frame of a stream a peer opens: it names the channel.
#[allow(clippy::result_large_err)]
async fn first_open(
    heartbeat: Heartbeat,
    frames: &mut Streaming<pb::ChannelFrame>,
) -> Result<pb::ChannelOpen, Status> {
    match heartbeat.next_frame(frames).await {
        Heard::Frame(pb::ChannelFrame {
            kind: Some(Kind::Open(open)),
            ..
        }) => Ok(open),
        _ => Err(Status::invalid_argument(
            "the first frame must name the channel",
        )),
    }
}

/// `ChannelWrite` on the home node: the writer's frames from another node go into the
/// channel until the end marker; a stream that stops without one, or goes silent, is a
/// writer that vanished. The answer carries beats for as long as the write goes on.
pub async fn serve_write(
    channels: Arc<Channels>,
    budget: Arc<Budget>,
    draining: bool,
    request: Request<Streaming<pb::ChannelFrame>>,
) -> Result<FrameStream, Status> {
    if draining {
        return Err(Status::unavailable("this node is draining"));
    }
    let peer = request
        .remote_addr()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut frames = request.into_inner();
    let heartbeat = channels.heartbeat;
    let open = first_open(heartbeat, &mut frames).await?;
    let (channel, direction) = open_here(&channels, &open)?;
    if direction != Direction::Write || !channel.claim(Direction::Write, Some(budget.open(peer))) {
        return Err(Status::already_exists("the write end is already connected"));
    }
    let (answer, answers) = mpsc::channel(1);
    // Nothing but beats goes on the answer: it beats every period.
    let answer_sent = LastSent::default();
    tokio::spawn(heartbeat.beat_into(answer.downgrade(), || Ok(beat::beat()), answer_sent));
    let open_end = OpenEnd::new(channels.metrics.clone());
    tokio::spawn(async move {
        let _open = open_end;
        // Holding the answer's sender keeps it beating until the write is over.
        let _answer = answer;
        relay_writes(&channels, &channel, &mut frames).await;
    });
    Ok(Box::pin(crate::rpc::receiver_stream(answers)))
}

/// Pushes a remote writer's frames into `channel` until the end, the reader leaving, or the
/// writer's node falling silent. A push waiting for room is not counted in
/// `quorum_channel_writers_held_back` here: the writer's own node counts it, once, while its
/// socket waits on this stream.
async fn relay_writes(
    channels: &Channels,
    channel: &Channel,
    frames: &mut Streaming<pb::ChannelFrame>,
) {
    let mut joiner = Joiner::default();
    loop {
        let heard = tokio::select! {
            heard = channels.heartbeat.next_frame(frames) => heard,
            _ = channel.gone() => return,
        };
        let item = match heard {
            Heard::Frame(frame) => match joiner.join(frame).map(popped_of) {
                None => continue,
                Some(Popped::Item(item)) => item,
                Some(Popped::End(end)) => return channel.finish_writer(end),
            },
            Heard::Ended => return channel.finish_writer(End::Broken),
            Heard::Silent => {
                debug!(channel_id = %channel.id, "the writer's node fell silent");
                return channel.finish_writer(End::Broken);
            }
        };
        if channel.push(item).await.is_err() {
            return channel.finish_writer(End::Broken);
        }
    }
}

/// `ChannelRead` on the home node: the channel's frames (and beats) go to the reader's node,
/// then the end marker. When that node stops listening or falls silent, the reader is gone
/// and the channel is finished (its writer sees that nobody reads).
pub async fn serve_read(
    channels: Arc<Channels>,
    draining: bool,
    request: Request<Streaming<pb::ChannelFrame>>,
) -> Result<FrameStream, Status> {
    if draining {
        return Err(Status::unavailable("this node is draining"));
    }
    let mut requests = request.into_inner();
    let open = first_open(channels.heartbeat, &mut requests).await?;
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
        tokio::select! {
            _ = relay_reads(&channels, &mut outlet, &tx) => {}
            quiet = channels.heartbeat.until_quiet(&mut requests) => {
                debug!(?quiet, "the reader's node left or fell silent");
            }
        }
        outlet.finish();
    });
    Ok(Box::pin(crate::rpc::receiver_stream(rx)))
}

/// Sends the channel's frames to a remote reader's node, with a beat whenever the channel
/// is quiet, until the end marker is sent or that node stops listening.
async fn relay_reads(
    channels: &Channels,
    outlet: &mut Outlet,
    tx: &mpsc::Sender<Result<pb::ChannelFrame, Status>>,
) {
    let mut beats = channels.heartbeat.ticker();
    loop {
        let popped = tokio::select! {
            popped = outlet.next() => popped,
            _ = beats.tick() => {
                // A full queue needs no beat: the reader's node has frames to hear.
                let _ = tx.try_send(Ok(beat::beat()));
                continue;
            }
            // A reader's node that drops the stream is noticed at once, not at the next frame.
            _ = tx.closed() => return,
        };
        let item = match popped {
            Popped::Item(item) => item,
            Popped::End(end) => {
                let _ = tx.send(Ok(end_frame(end))).await;
                return;
            }
        };
        let len = item.len();
        for piece in pieces::split(item) {
            if tx.send(Ok(piece)).await.is_err() {
                return;
            }
        }
        // Counted in the channel until it is on the stream's bounded queue.
        outlet.delivered(len);
        channels.metrics.relayed(Hop::CrossNode, len);
        beats.reset();
    }
}

/// Opens the write stream of a socket on this node to the channel's home node, beating on
/// it; the inlet is gone when the home node ends the stream, refuses it or falls silent.
pub fn open_writer(
    me: NodeId,
    peers: &PeerClients,
    addr: &str,
    end: &EndRequest,
    channels: &Channels,
) -> Inlet {
    let (tx, rx) = mpsc::channel(HOP_FRAMES);
    let gone = CancellationToken::new();
    // The queue is empty and holds HOP_FRAMES (>= 1): the first frame always fits.
    let _ = tx.try_send(open_frame(end));
    let heartbeat = channels.heartbeat;
    // The writer's frames stand in for beats while they flow.
    let sent = LastSent::default();
    tokio::spawn(heartbeat.beat_into(tx.downgrade(), beat::beat, sent.clone()));
    let client = peers.dedicated(addr);
    let done = gone.clone();
    let taken = Arc::new(AtomicBool::new(false));
    let refused = taken.clone();
    let addr = addr.to_string();
    tokio::spawn(async move {
        let result = match client {
            Ok(mut client) => {
                let call = client.channel_write(crate::rpc::receiver_stream(rx));
                match tokio::time::timeout(ANSWER_WITHIN, call).await {
                    Ok(Ok(answer)) => match heartbeat.until_quiet(&mut answer.into_inner()).await {
                        Heard::Silent => Err("the home node fell silent".to_string()),
                        _ => Ok(()),
                    },
                    Ok(Err(status)) => {
                        if status.code() == tonic::Code::AlreadyExists {
                            refused.store(true, Ordering::Relaxed);
                        }
                        Err(status.to_string())
                    }
                    Err(_) => Err("the home node did not answer".to_string()),
                }
            }
            Err(err) => Err(err.to_string()),
        };
        if let Err(error) = result {
            debug!(node = me, home = %addr, %error, "channel write stream ended with an error");
        }
        done.cancel();
    });
    Inlet::Remote {
        frames: tx,
        sent,
        gone,
        taken,
        metrics: channels.metrics.clone(),
    }
}

/// Opens the read stream of a socket on this node from the channel's home node, beating on
/// it; `None` when the home node refuses it (the end is taken) or cannot be reached.
pub async fn open_reader(
    peers: &PeerClients,
    addr: &str,
    end: &EndRequest,
    heartbeat: Heartbeat,
) -> Option<Outlet> {
    let mut client = peers.dedicated(addr).ok()?;
    let (to_home, rx) = mpsc::channel(1);
    let _ = to_home.try_send(open_frame(end));
    // Nothing but beats goes to the home: it beats every period.
    tokio::spawn(heartbeat.beat_into(to_home.downgrade(), beat::beat, LastSent::default()));
    let call = client.channel_read(crate::rpc::receiver_stream(rx));
    let stream = tokio::time::timeout(ANSWER_WITHIN, call).await.ok()?.ok()?;
    Some(Outlet::Remote {
        frames: Box::new(stream.into_inner()),
        joiner: Joiner::default(),
        waiting: None,
        heartbeat,
        _to_home: to_home,
        _connection: Box::new(client),
    })
}

/// The first frame of a stream to the home node: which end it is.
fn open_frame(end: &EndRequest) -> pb::ChannelFrame {
    pb::ChannelFrame {
        kind: Some(Kind::Open(open_message(end))),
        more: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::table::Limits;

    #[test]
    fn a_node_of_another_stream_version_is_refused_and_the_home_says_its_version() {
        let limits = Limits {
            buffer_bytes: 1 << 20,
            unconnected_timeout: Duration::from_secs(60),
            max_channels: 10,
            max_per_connection: 10,
            reader_stall: Duration::from_secs(60),
        };
        let channels = Channels::new(3, limits, 4, Heartbeat::default());
        let channel = channels.table.create(None, None).expect("created");
        let asked_by = |stream_version| pb::ChannelCheckRequest {
            end: Some(pb::ChannelOpen {
                channel_id: channel.id.to_string(),
                access_key: channel.key().as_str().to_string(),
                direction: "read".to_string(),
            }),
            stream_version,
        };
        // A node from before beats and pieces sends no version (0).
        let older = check(&channels, false, asked_by(0)).expect_err("refused");
        assert_eq!(older.code(), tonic::Code::FailedPrecondition);
        let reply = check(&channels, false, asked_by(STREAM_VERSION)).expect("answered");
        assert!(reply.found);
        assert_eq!(reply.stream_version, STREAM_VERSION);
    }
}
