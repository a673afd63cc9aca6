//! The adversarial suite (issue 11): each test replays one thing a careless or hostile
//! client did to a node, while a canary (two real SDK workers calling each other) runs
//! beside it, and asserts that the node stayed within its bounds, that the offending
//! client was the one cut off, and that the canary never noticed.
//!
//! The tests of this binary run one at a time: a flood in one test would otherwise be
//! measured by another test's canary.

// The serial guard is held across the awaits of a whole test on purpose: that is its job.
#![allow(clippy::await_holding_lock)]

#[path = "../common/mod.rs"]
mod common;

use std::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

/// Held for the whole of one adversarial test.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

mod amplifier;
mod attention;
mod channels;
mod disk;
mod doors;
mod memory;
mod noise;

mod baseline {
    use super::common::canary::Canary;
    use super::common::footprint::peak_rss_bytes;
    use super::common::{Node, NodeOptions};
    use std::time::Duration;

    /// The bar every other test holds the canary to is met on an idle node, so a failure
    /// elsewhere is the attack's doing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_canary_is_healthy_on_an_idle_node() {
        let _serial = super::serial();
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start_in(dir.path(), NodeOptions::default());
        let canary = Canary::start(&node.url);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = canary.stop();
        report.assert_healthy(50);
        assert!(peak_rss_bytes(node.pid()) > 0, "RSS is readable from /proc");
    }
}
