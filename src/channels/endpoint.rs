//! `GET /ws/channels/{id}?key=&dir=read|write`: reading the request, and deciding before the
//! upgrade whether it opens a channel here, on another node, or nowhere.
//!
//! Why: an unknown channel or a wrong key must be an HTTP error *before* the upgrade, also
//! when the channel lives on another node, so the home node is asked over gRPC first.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info};

use super::buffer::{Channel, Direction};
use super::id::ChannelId;
use super::remote::STREAM_VERSION;
use crate::node::Node;
use crate::rpc::pb;

/// The path prefix of channel sockets.
pub const PATH_PREFIX: &str = "/ws/channels/";

/// How long asking the home node whether a channel exists may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One end a socket asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndRequest {
    pub id: ChannelId,
    pub key: String,
    pub direction: Direction,
}

/// Why a channel request is refused before the upgrade; each maps to one HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the id is not a channel id, or `dir` is missing or not `read`/`write`.
    #[error("malformed channel request: {0}")]
    Malformed(&'static str),
    /// 404: no such channel, wrong key, or a home node that is not a member.
    #[error("no such channel")]
    NotFound,
    /// 503: the home node did not answer, this node is draining, it already serves
    /// `--channel-connections-per-peer` ends through the home node, or the home speaks
    /// another channel stream version (a rolling upgrade is under way).
    #[error("the channel's node is unavailable")]
    Unavailable,
}

impl Refusal {
    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) => 400,
            Refusal::NotFound => 404,
            Refusal::Unavailable => 503,
        }
    }
}

/// Where an admitted end is served.
pub enum Admitted {
    /// The channel lives on this node.
    Local {
        end: EndRequest,
        channel: Arc<Channel>,
    },
    /// The channel lives on the node at cluster address `addr` (the id names it); `_slot` is
    /// this end's share of the connections toward it, held for the end's life.
    Remote {
        end: EndRequest,
        addr: String,
        _slot: OwnedSemaphorePermit,
    },
}

/// Whether `path` is a channel socket's path.
pub fn is_channel_path(path: &str) -> bool {
    path.starts_with(PATH_PREFIX)
}

/// The channel path and query a request meant, when the Node SDK (0.22) hid them in the query.
///
/// That SDK builds a channel URL by appending `/ws/channels/{id}?key=..&dir=..` to the engine
/// URL as text, so an engine URL with a query (`ws://host:49134/?token=T`, as managed workers
/// get it) yields `ws://host:49134/?token=T/ws/channels/{id}?key=K&dir=D`: the path is `/` and
/// the channel's own path and query sit inside the first query. Returns them, or `None` for
/// any other request.
pub fn hidden_in_query<'q>(path: &str, query: Option<&'q str>) -> Option<(&'q str, &'q str)> {
    if path != "/" {
        return None;
    }
    let query = query?;
    let at = query.find(PATH_PREFIX)?;
    let meant = &query[at..];
    Some(meant.split_once('?').unwrap_or((meant, "")))
}

/// Reads `/ws/channels/{id}` and its query. The channel's own `key` and `dir` come last (any
/// query from the engine URL comes first), so the last occurrence of each wins.
pub fn parse(path: &str, query: Option<&str>) -> Result<EndRequest, Refusal> {
    let id_text = path.strip_prefix(PATH_PREFIX).ok_or(Refusal::NotFound)?;
    let id = ChannelId::parse(id_text).map_err(|_| Refusal::Malformed("not a channel id"))?;
    let mut key = None;
    let mut dir = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "key" => key = Some(value.into_owned()),
            "dir" => dir = Some(value.into_owned()),
            _ => {}
        }
    }
    let direction = match dir {
        None => return Err(Refusal::Malformed("`dir` is missing")),
        Some(dir) => {
            Direction::parse(&dir).ok_or(Refusal::Malformed("`dir` is not `read` or `write`"))?
        }
    };
    Ok(EndRequest {
        id,
        key: key.ok_or(Refusal::NotFound)?,
        direction,
    })
}

/// Decides a channel request: served here, served through the home node, or refused.
pub async fn admit(node: &Arc<Node>, path: &str, query: Option<&str>) -> Result<Admitted, Refusal> {
    let end = parse(path, query)?;
    if node.is_draining() {
        return Err(Refusal::Unavailable);
    }
    let home = end.id.home();
    if home == node.id {
        let channel = node
            .channels
            .table
            .open(end.id, &end.key)
            .ok_or(Refusal::NotFound)?;
        return Ok(Admitted::Local { end, channel });
    }
    let addr = node.peer_address(home).ok_or(Refusal::NotFound)?;
    let Some(slot) = node.channels.slots.take(&addr) else {
        debug!(
            node = node.id,
            home, "no free channel connection toward the home node"
        );
        return Err(Refusal::Unavailable);
    };
    let request = pb::ChannelCheckRequest {
        end: Some(super::remote::open_message(&end)),
        stream_version: STREAM_VERSION,
    };
    let reply = node
        .peers
        .unary(&addr, CHECK_TIMEOUT, |mut client| async move {
            client.channel_check(request).await
        })
        .await;
    match reply {
        Ok(reply) if reply.stream_version != STREAM_VERSION => {
            info!(
                node = node.id,
                home,
                home_version = reply.stream_version,
                version = STREAM_VERSION,
                "channel end refused: its home node speaks another channel stream version"
            );
            Err(Refusal::Unavailable)
        }
        Ok(reply) if reply.found => Ok(Admitted::Remote {
            end,
            addr,
            _slot: slot,
        }),
        Ok(_) => Err(Refusal::NotFound),
        Err(err) => {
            debug!(node = node.id, home, error = %err, "channel check failed");
            Err(Refusal::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(id: &ChannelId) -> String {
        format!("{PATH_PREFIX}{id}")
    }

    #[test]
    fn the_channel_query_follows_the_engine_query() {
        let id = ChannelId::new(2);
        let end = parse(&path(&id), Some("token=abc&key=engine&key=k%2F1&dir=write")).unwrap();
        assert_eq!(end.id, id);
        assert_eq!(end.key, "k/1");
        assert_eq!(end.direction, Direction::Write);
    }

    #[test]
    fn a_channel_url_the_node_sdk_appended_to_a_query_is_read_as_meant() {
        let id = ChannelId::new(2);
        let query = format!("token=abc/ws/channels/{id}?key=k%2F1&dir=read");
        let (path, query) = hidden_in_query("/", Some(&query)).expect("a channel request");
        let end = parse(path, Some(query)).unwrap();
        assert_eq!(end.id, id);
        assert_eq!(end.key, "k/1");
        assert_eq!(end.direction, Direction::Read);
        // A worker's own connection, or a channel path proper, is left alone.
        assert_eq!(hidden_in_query("/", Some("token=abc")), None);
        assert_eq!(hidden_in_query("/", None), None);
        assert_eq!(
            hidden_in_query(&self::path(&id), Some("key=k&dir=read")),
            None
        );
    }

    #[test]
    fn bad_requests_are_refused_with_their_status() {
        let id = ChannelId::new(2);
        assert_eq!(
            parse("/ws/channels/nope", Some("key=a&dir=read"))
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(parse(&path(&id), Some("key=a")).unwrap_err().status(), 400);
        assert_eq!(
            parse(&path(&id), Some("key=a&dir=both"))
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse(&path(&id), Some("dir=read")).unwrap_err().status(),
            404
        );
        assert_eq!(parse(&path(&id), None).unwrap_err().status(), 400);
    }
}
