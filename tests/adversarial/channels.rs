//! Issue 12 under issue 11's rule: writers pushing far more than the cap into channels nobody
//! reads are held back (TCP backpressure on their own sockets), the node's memory stays
//! within the channels' byte caps, and the canary never notices.

use futures_util::SinkExt;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

use super::common::canary::Canary;
use super::common::footprint::{peak_rss_bytes, rss_bytes, MIB};
use super::common::{call, unique_name, worker, Node, NodeOptions};

/// Channels flooded at once.
const WRITERS: usize = 16;
/// How long each writer pushes.
const FLOOD: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_flooding_channels_nobody_reads_are_held_back_within_the_cap() {
    let _serial = super::serial();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions {
            args: vec!["--channel-buffer-bytes".into(), "1MiB".into()],
            ..NodeOptions::default()
        },
    );
    let canary = Canary::start(&node.url);
    let creator = worker(&node.url, &unique_name("flood-creator"), None).await;
    let idle = rss_bytes(node.pid());
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let refs = call(
            &creator,
            "engine::channels::create",
            json!({"buffer_size": 1024}),
        )
        .await
        .expect("channel created");
        let url = format!(
            "{}/ws/channels/{}?key={}&dir=write",
            node.url,
            refs["writer"]["channel_id"].as_str().unwrap(),
            refs["writer"]["access_key"].as_str().unwrap()
        );
        writers.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("writer");
            let frame = vec![9u8; 64 * 1024];
            let mut sent = 0u64;
            let push = async {
                loop {
                    ws.send(Message::Binary(frame.clone().into()))
                        .await
                        .expect("the node holds a flooding writer back; it does not close it");
                    sent += frame.len() as u64;
                }
            };
            // The push never ends by itself: only the flood's time limit stops it.
            let _: Result<(), _> = tokio::time::timeout(FLOOD, push).await;
            sent
        }));
    }
    let mut total = 0;
    for writer in writers {
        let sent = writer.await.unwrap();
        assert!(
            sent < 48 * MIB,
            "a writer was held back: it got {} MiB in",
            sent / MIB
        );
        total += sent;
    }
    let peak = peak_rss_bytes(node.pid());
    let report = canary.stop();
    // Each channel holds at most 1 MiB (plus one frame being read); the rest of what the
    // writers sent waits in kernel socket buffers, not in the node.
    let bound = idle + WRITERS as u64 * 2 * MIB + 64 * MIB;
    assert!(
        peak <= bound,
        "peak RSS {} MiB over {} MiB (writers pushed {} MiB)",
        peak / MIB,
        bound / MIB,
        total / MIB
    );
    report.assert_healthy(100);
    creator.shutdown_async().await;
}
