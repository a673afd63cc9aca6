//! Row 5 of the issue and points 4 and 6: a client that floods malformed frames, forged
//! `reattach` frames and huge ids. The log grows by a few lines, the answers stay small,
//! the flooder's own connection stays usable, and the canary never notices.

use super::common::canary::Canary;
use super::common::footprint::{peak_rss_bytes, rss_bytes};
use super::common::raw::RawClient;
use super::common::{Node, NodeOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_malformed_frames_forged_reattach_and_huge_ids_cost_a_few_warnings() {
    let _serial = super::serial();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(dir.path(), NodeOptions::default());
    let canary = Canary::start(&node.url);
    let idle_rss = rss_bytes(node.pid());
    let log_before = node.log().len();

    let victim = RawClient::connect(&node.url).await;
    let mut flood = RawClient::connect(&node.url).await;
    for i in 0..100_000 {
        flood.send_text(&format!("{{not json {i}")).await;
    }
    for _ in 0..100_000 {
        flood
            .send(
                json!({"type":"reattach","previous_worker_id":victim.worker_id,
                "reattach_token":"forged"}),
            )
            .await;
    }
    let huge = "f".repeat(10 << 20);
    let mut largest_answer = 0;
    for _ in 0..10 {
        let answer = flood.call(&huge, json!({})).await;
        assert_eq!(answer["error"]["code"], "function_not_found", "{answer}");
        largest_answer = largest_answer.max(answer.to_string().len());
    }
    // Frames of one connection are handled in order: this answer comes after the flood.
    let answer = flood.call("engine::workers::list", json!({})).await;
    assert!(answer.get("error").is_none(), "{answer}");
    let report = canary.stop();

    // The harness logs at debug level (every canary call); a node runs at info, where
    // only warnings are about the flood.
    let log = node.log();
    let warnings: Vec<&str> = log[log_before..]
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(warnings.len() < 10, "the flood logged {warnings:#?}");
    for first in [
        "malformed or unknown frame dropped",
        "reattach with a wrong token ignored",
    ] {
        assert!(
            warnings.iter().any(|l| l.contains(first)),
            "the first of each kind is logged: {first}"
        );
    }
    assert!(largest_answer < 1024, "an answer of {largest_answer} bytes");
    let grew = peak_rss_bytes(node.pid()).saturating_sub(idle_rss);
    assert!(grew < 256 << 20, "the flood cost {grew} bytes of peak RSS");
    report.assert_healthy(50);
}
