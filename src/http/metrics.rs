//! `/metrics`: this node's counters and state in the Prometheus text format (0.0.4).
//!
//! iii's metric names with Prometheus spelling (`iii.invocations.total` becomes
//! `iii_invocations_total`, durations are in seconds), then quorum's own cluster metrics
//! under `quorum_`. Everything is read at scrape time; no lock is held past this function.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::metrics::{HistogramSnapshot, DURATION_BUCKETS};
use crate::node::Node;

/// The exposition text of one scrape.
pub fn render(node: &Node) -> String {
    let mut out = Exposition::default();
    let m = &node.metrics;
    let ok = m.invocations_ok.load(Ordering::Relaxed);
    let errors = m.invocations_error.load(Ordering::Relaxed);

    out.family(
        "iii_invocations_total",
        "Calls started on this node that ended, by result.",
        "counter",
    );
    out.sample("iii_invocations_total", &[("result", "ok")], ok);
    out.sample("iii_invocations_total", &[("result", "error")], errors);
    out.family(
        "iii_invocation_errors_total",
        "Calls started on this node that ended with an error.",
        "counter",
    );
    out.sample("iii_invocation_errors_total", &[], errors);
    out.histogram(
        "iii_invocation_duration_seconds",
        "Time from routing a call started on this node to its answer.",
        &m.invocation_duration.snapshot(),
    );

    let (functions, triggers, trigger_types) = {
        let registry = node.registry();
        (
            registry.functions().count(),
            registry.triggers().count(),
            registry.trigger_types().count(),
        )
    };
    out.gauge(
        "iii_workers_active",
        "Worker connections this node holds.",
        node.connections.len() as u64,
    );
    out.counter(
        "iii_workers_spawns_total",
        "Worker connections this node accepted.",
        m.workers_connected.load(Ordering::Relaxed),
    );
    out.counter(
        "iii_workers_deaths_total",
        "Worker connections on this node that ended.",
        m.workers_disconnected.load(Ordering::Relaxed),
    );
    out.gauge(
        "iii_functions_registered",
        "Functions registered by workers, cluster-wide.",
        functions as u64,
    );
    out.gauge(
        "iii_triggers_registered",
        "Triggers registered, cluster-wide.",
        triggers as u64,
    );
    out.gauge(
        "iii_trigger_types_registered",
        "Trigger types known, cluster-wide (built-in ones included).",
        trigger_types as u64,
    );

    out.family(
        "quorum_forwarded_calls_total",
        "Calls crossing the invocation stream: sent to the owner's node, or received from the caller's.",
        "counter",
    );
    out.sample(
        "quorum_forwarded_calls_total",
        &[("direction", "sent")],
        m.forwarded_sent.load(Ordering::Relaxed),
    );
    out.sample(
        "quorum_forwarded_calls_total",
        &[("direction", "received")],
        m.forwarded_received.load(Ordering::Relaxed),
    );
    out.counter(
        "quorum_telemetry_frames_total",
        "Telemetry frames workers sent to this node (dropped: not exported yet).",
        m.telemetry_frames.load(Ordering::Relaxed),
    );
    out.gauge(
        "quorum_node_fenced",
        "1 while this node is cut off from a quorum and serves no workers.",
        u64::from(node.is_fenced()),
    );
    render_raft(node, &mut out);
    render_channels(node, &mut out);
    out.text
}

fn render_channels(node: &Node, out: &mut Exposition) {
    use crate::channels::metrics::Hop;
    let channels = &node.channels;
    out.gauge(
        "quorum_channels_open",
        "Data channels living on this node.",
        channels.table.len() as u64,
    );
    out.gauge(
        "quorum_channel_ends_open",
        "Channel ends this node serves: its channel sockets and the streams of peers.",
        channels.ends_open(),
    );
    out.gauge(
        "quorum_channel_writers_held_back",
        "Channel writers this node holds back now: their next frame waits for room in the channel or on the stream to its home node.",
        channels.metrics.writers_held_back(),
    );
    out.counter(
        "quorum_channels_created_total",
        "Data channels created on this node.",
        channels.metrics.created.load(Ordering::Relaxed),
    );
    let hops = [(Hop::Local, "local"), (Hop::CrossNode, "cross_node")];
    out.family(
        "quorum_channel_frames_total",
        "Channel frames delivered: to a reader socket of this node (local) or to another node.",
        "counter",
    );
    for (hop, label) in hops {
        let (frames, _) = channels.metrics.totals(hop);
        out.sample("quorum_channel_frames_total", &[("hop", label)], frames);
    }
    out.family(
        "quorum_channel_bytes_total",
        "Channel payload bytes delivered: to a reader socket of this node (local) or to another node.",
        "counter",
    );
    for (hop, label) in hops {
        let (_, bytes) = channels.metrics.totals(hop);
        out.sample("quorum_channel_bytes_total", &[("hop", label)], bytes);
    }
}

fn render_raft(node: &Node, out: &mut Exposition) {
    let raft = node.consensus.raft().metrics().borrow().clone();
    let last_log = raft.last_log_index.unwrap_or(0);
    out.gauge(
        "quorum_raft_term",
        "The Raft term this node is in.",
        raft.current_term,
    );
    out.gauge(
        "quorum_raft_leader_id",
        "The leader this node follows (0: none known).",
        raft.current_leader.unwrap_or(0),
    );
    out.gauge(
        "quorum_raft_is_leader",
        "1 when this node is the Raft leader.",
        u64::from(raft.current_leader == Some(node.id)),
    );
    out.gauge(
        "quorum_raft_last_log_index",
        "Index of the last entry in this node's Raft log.",
        last_log,
    );
    out.gauge(
        "quorum_raft_last_applied_index",
        "Index of the last entry applied to this node's registry.",
        raft.last_applied.map(|id| id.index).unwrap_or(0),
    );
    out.gauge(
        "quorum_raft_snapshot_index",
        "Last log index in this node's latest snapshot (0: none yet).",
        raft.snapshot.map(|id| id.index).unwrap_or(0),
    );
    out.gauge(
        "quorum_raft_purged_index",
        "Log entries up to this index were compacted away after a snapshot (0: none).",
        raft.purged.map(|id| id.index).unwrap_or(0),
    );
    out.gauge(
        "quorum_raft_members",
        "Nodes in the Raft membership (voters and learners).",
        raft.membership_config.membership().nodes().count() as u64,
    );
    out.family(
        "quorum_raft_replication_lag",
        "Entries a peer is behind the leader's log (on the leader only).",
        "gauge",
    );
    if let Some(replication) = &raft.replication {
        for (peer, matched) in replication {
            if *peer == node.id {
                continue;
            }
            let lag = match matched {
                Some(id) => last_log.saturating_sub(id.index),
                None => last_log + 1,
            };
            out.sample(
                "quorum_raft_replication_lag",
                &[("peer", &peer.to_string())],
                lag,
            );
        }
    }
}

/// The text being written, one metric family at a time.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.line(name, labels, &value.to_string());
    }

    fn line(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape(val));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, "counter");
        self.sample(name, &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, "gauge");
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, snap: &HistogramSnapshot) {
        self.family(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (bound, count) in DURATION_BUCKETS.iter().zip(&snap.cumulative) {
            self.sample(&bucket, &[("le", &bound.to_string())], *count);
        }
        self.sample(&bucket, &[("le", "+Inf")], snap.count);
        self.line(&format!("{name}_sum"), &[], &snap.sum_seconds.to_string());
        self.sample(&format!("{name}_count"), &[], snap.count);
    }
}

/// Label values escaped as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_labels_follow_the_text_format() {
        let mut out = Exposition::default();
        out.family("x_total", "An x.", "counter");
        out.sample("x_total", &[("peer", "2"), ("q", "a\"b")], 7);
        out.histogram(
            "d_seconds",
            "A d.",
            &HistogramSnapshot {
                cumulative: vec![1; DURATION_BUCKETS.len() + 1],
                count: 1,
                sum_seconds: 0.25,
            },
        );
        let text = out.text;
        assert!(text.starts_with("# HELP x_total An x.\n# TYPE x_total counter\n"));
        assert!(text.contains("x_total{peer=\"2\",q=\"a\\\"b\"} 7\n"));
        assert!(text.contains("d_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("d_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("d_seconds_sum 0.25\nd_seconds_count 1\n"));
    }
}
