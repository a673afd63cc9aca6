//! `engine::channels::create {buffer_size?}`: a new channel on the node that serves the call,
//! answered as the two refs the SDKs turn into a reader and a writer.

use serde::Deserialize;
use serde_json::{json, Value};

use super::buffer::Direction;
use super::table::CreateError;
use super::Channels;
use crate::ids::WorkerId;
use crate::protocol::error::EngineError;

/// The built-in's id.
pub const CREATE: &str = "engine::channels::create";

/// The input; `buffer_size` null or absent means the default.
#[derive(Debug, Default, Deserialize)]
pub struct CreateInput {
    #[serde(default)]
    buffer_size: Option<i64>,
}

/// Creates a channel and returns `{writer, reader}`. It counts against the share of
/// `creator`, the connection that called (none for a call from no connection).
pub fn create(
    channels: &Channels,
    draining: bool,
    creator: Option<WorkerId>,
    input: CreateInput,
) -> Result<Value, EngineError> {
    if draining {
        return Err(EngineError::ChannelRefused(
            CreateError::Draining.to_string(),
        ));
    }
    // Negative sizes become 0; the table clamps every size to 1..=1024.
    let buffer_size = input.buffer_size.map(|n| usize::try_from(n).unwrap_or(0));
    let channel = channels
        .table
        .create(creator, buffer_size)
        .map_err(|e| EngineError::ChannelRefused(e.to_string()))?;
    channels
        .metrics
        .created
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reference = |direction: Direction| {
        json!({
            "channel_id": channel.id.to_string(),
            "access_key": channel.key().as_str(),
            "direction": direction.as_str(),
        })
    };
    Ok(json!({
        "writer": reference(Direction::Write),
        "reader": reference(Direction::Read),
    }))
}
