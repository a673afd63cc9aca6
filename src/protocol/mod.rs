//! protocol: the iii worker wire protocol as the published SDKs speak it.
//!
//! Owns the shapes of every frame quorum reads from or writes to a worker, and the
//! one place where internal failures become protocol error codes (`error.rs`).
//! It never does I/O and never decides anything: decoding is loose where the SDKs
//! are loose (unknown fields ignored, null means absent), encoding always carries
//! the fields the strict Rust SDK requires.

pub mod error;
pub mod messages;
pub mod names;
pub mod payload;
pub mod raw_result;

pub use error::ErrorBody;
pub use messages::{Incoming, Outgoing};
pub use payload::Payload;

/// Largest single WebSocket frame accepted or sent (the SDKs' own frame limit).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Largest whole message, after reassembling fragments.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Payload size of each continuation frame when a large message is sent fragmented.
pub const FRAGMENT_BYTES: usize = 1024 * 1024;

/// Response header listing transport capabilities of the engine's end.
pub const CAPABILITIES_HEADER: &str = "x-iii-capabilities";
/// Capability token: the engine's socket has `TCP_NODELAY` set.
pub const CAPABILITY_TCP_NODELAY: &str = "tcp-nodelay";

/// Binary frames starting with these prefixes are telemetry, even on the worker socket.
pub const TELEMETRY_PREFIXES: [&[u8; 4]; 3] = [b"OTLP", b"MTRC", b"LOGS"];

/// Whether a binary frame is an OpenTelemetry export rather than a protocol message.
pub fn is_telemetry_frame(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && TELEMETRY_PREFIXES.iter().any(|p| &bytes[..4] == *p)
}

/// Reads one frame from a worker, as the session does with every text or binary message.
/// Untrusted bytes: it must never panic nor allocate much beyond the input's size (the
/// `frame` fuzz target and `tests/untrusted_input.rs` hold it to that).
/// A large `invocationresult` keeps its result as text ([`raw_result`]).
pub fn decode(bytes: &[u8]) -> Result<Incoming, serde_json::Error> {
    // The raw path parses the whole frame; a large frame of another kind (a registration, a
    // call) that does not even name the kind skips it rather than being parsed twice.
    if bytes.len() >= raw_result::RAW_RESULT_BYTES
        && memchr::memmem::find(bytes, b"\"invocationresult\"").is_some()
    {
        if let Some(result) = raw_result::decode(bytes) {
            return Ok(Incoming::InvocationResult(result));
        }
    }
    serde_json::from_slice(bytes)
}

/// The message used when a caller names a namespace and leaves it blank.
pub fn blank_namespace_message(field: &str) -> String {
    format!(
        "`{field}` is empty: it was named and left blank. Give it a name, or omit it to use `default`."
    )
}
