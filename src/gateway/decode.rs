//! Decoding a worker's frame. Most frames are small and are decoded where they are read; a big
//! one (up to the 64 MiB message limit) would hold the runtime thread for tens of milliseconds
//! while every other connection on it waits, so it is decoded on the blocking pool instead.

use bytes::Bytes;
use serde::de::Error as _;

use crate::protocol::{self, Incoming};

/// Frames of at least this many bytes are decoded off the runtime threads.
const DECODE_ELSEWHERE_BYTES: usize = 256 * 1024;

/// Decodes one frame, off the runtime threads when it is big (the frame moves there, it is not
/// copied).
pub async fn decode(bytes: Bytes) -> Result<Incoming, serde_json::Error> {
    if bytes.len() < DECODE_ELSEWHERE_BYTES {
        return protocol::decode(&bytes);
    }
    match tokio::task::spawn_blocking(move || protocol::decode(&bytes)).await {
        Ok(decoded) => decoded,
        Err(join_error) => Err(serde_json::Error::custom(join_error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_big_frame_decodes_the_same_as_a_small_one() {
        let pad = "p".repeat(DECODE_ELSEWHERE_BYTES);
        let big = format!(r#"{{"type":"registerfunction","id":"f","description":"{pad}"}}"#);
        match decode(Bytes::from(big)).await {
            Ok(Incoming::RegisterFunction(f)) => assert_eq!(f.id, "f"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(decode(Bytes::from_static(b"{not json")).await.is_err());
        assert!(decode(Bytes::from(format!("{{{pad}"))).await.is_err());
    }
}
