//! A worker's frame, as the session reads every text or binary message: whatever the
//! bytes, decoding ends in a frame or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = quorum::protocol::decode(bytes);
});
