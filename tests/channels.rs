//! Data channels (issue 12) on real nodes: `engine::channels::create` with the Rust SDK, both
//! ends on one node and across three nodes, frames keeping their kind and order, and every
//! bad input refused before the upgrade or bounded.

mod common;

use common::channel_ends::{connect, end_url, metric, read_to_close, Noise};
use common::footprint::{rss_bytes, MIB};
use common::{call, eventually, unique_name, worker, Cluster, Node, NodeOptions};
use futures_util::{SinkExt, StreamExt};
use iii_sdk::channel::{ChannelReader, ChannelWriter, StreamChannelRef};
use iii_sdk::helpers::create_channel;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

/// `channel` with another id and key, for requests that must be refused.
fn forged(channel: &StreamChannelRef, id: &str, key: &str) -> StreamChannelRef {
    StreamChannelRef {
        channel_id: id.to_string(),
        access_key: key.to_string(),
        ..channel.clone()
    }
}

/// `{writer, reader}` refs from `engine::channels::create`, called through the engine.
async fn create(url: &str, input: Value) -> (StreamChannelRef, StreamChannelRef) {
    let client = worker(url, &unique_name("creator"), None).await;
    let refs = call(&client, "engine::channels::create", input)
        .await
        .expect("channel created");
    client.shutdown_async().await;
    let writer = serde_json::from_value(refs["writer"].clone()).expect("writer ref");
    let reader = serde_json::from_value(refs["reader"].clone()).expect("reader ref");
    (writer, reader)
}

/// The HTTP status a refused upgrade got.
async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_streams_through_a_channel_on_one_node() {
    let node = Node::start();
    let client = worker(&node.url, &unique_name("streamer"), None).await;
    let channel = create_channel(&client, Some(8))
        .await
        .expect("create_channel");
    assert_eq!(channel.writer_ref.channel_id, channel.reader_ref.channel_id);
    let data = Noise::new(12).bytes(3 * 1024 * 1024 + 17);
    let sent = data.clone();
    let writer = channel.writer;
    let writing = tokio::spawn(async move {
        writer.write(&sent).await.expect("write");
        writer.send_message("done").await.expect("message");
        writer.close().await.expect("close");
    });
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = messages.clone();
    channel
        .reader
        .on_message(move |m| seen.lock().unwrap().push(m))
        .await;
    let received = tokio::time::timeout(Duration::from_secs(30), channel.reader.read_all())
        .await
        .expect("stream ends")
        .expect("read_all");
    writing.await.unwrap();
    assert_eq!(received.len(), data.len());
    assert!(received == data, "the bytes arrive unchanged");
    assert_eq!(*messages.lock().unwrap(), vec!["done".to_string()]);
    eventually(
        "the finished channel is removed",
        Duration::from_secs(5),
        || async { (metric(&node, "quorum_channels_open ").await == 0.0).then_some(()) },
    )
    .await;
    client.shutdown_async().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_interleaved_with_binary_keeps_kind_order_and_boundaries() {
    let node = Node::start();
    let (w, r) = create(&node.url, json!({"buffer_size": 4})).await;
    let mut writer = connect(&end_url(&node.url, &w, "write")).await;
    let mut reader = connect(&end_url(&node.url, &r, "read")).await;
    let mut expected = Vec::new();
    for i in 0..40u32 {
        let message = if i % 3 == 0 {
            Message::Text(format!("text {i}").into())
        } else {
            Message::Binary(vec![i as u8; 1 + i as usize * 100].into())
        };
        expected.push(message.clone());
        writer.send(message).await.unwrap();
    }
    writer.close(None).await.unwrap();
    let (frames, code) = read_to_close(&mut reader, Duration::from_secs(10)).await;
    assert_eq!(frames, expected);
    assert_eq!(code, Some(1000), "a writer's Close ends the stream cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_may_write_everything_and_close_before_the_reader_connects() {
    let node = Node::start();
    let client = worker(&node.url, &unique_name("early"), None).await;
    let channel = create_channel(&client, None).await.expect("create_channel");
    // 20 frames of 64 KiB: within the default 64 messages and 8 MiB.
    let data = Noise::new(12).bytes(20 * 64 * 1024);
    channel.writer.write(&data).await.expect("write");
    channel.writer.close().await.expect("close");
    let reader = ChannelReader::new(&node.url, &channel.reader_ref);
    let received = tokio::time::timeout(Duration::from_secs(10), reader.read_all())
        .await
        .expect("stream ends")
        .expect("read_all");
    assert!(received == data, "the data waited for its reader");
    client.shutdown_async().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creator_writer_and_reader_on_three_different_nodes() {
    let cluster = Cluster::start(3);
    let (creator, writer_node, reader_node) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let (w, r) = create(&creator.url, json!({})).await;
    // Rust SDK ends, each on its own node.
    let data = Noise::new(12).bytes(2 * 1024 * 1024 + 5);
    let sent = data.clone();
    let writer = ChannelWriter::new(&writer_node.url, &w);
    let writing = tokio::spawn(async move {
        writer.write(&sent).await.expect("write");
        writer.send_message("tail").await.expect("message");
        writer.close().await.expect("close");
    });
    let reader = ChannelReader::new(&reader_node.url, &r);
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = messages.clone();
    reader
        .on_message(move |m| seen.lock().unwrap().push(m))
        .await;
    let received = tokio::time::timeout(Duration::from_secs(30), reader.read_all())
        .await
        .expect("stream ends")
        .expect("read_all");
    writing.await.unwrap();
    assert!(received == data, "the bytes crossed two hops unchanged");
    assert_eq!(*messages.lock().unwrap(), vec!["tail".to_string()]);
    assert!(metric(creator, "quorum_channel_frames_total{hop=\"cross_node\"}").await > 0.0);
    eventually(
        "the home node removed the channel",
        Duration::from_secs(5),
        || async { (metric(creator, "quorum_channels_open ").await == 0.0).then_some(()) },
    )
    .await;

    // Raw ends across nodes: kinds, order and the clean Close survive too.
    let (w, r) = create(&creator.url, json!({"buffer_size": 2})).await;
    let mut raw_writer = connect(&end_url(&writer_node.url, &w, "write")).await;
    let mut raw_reader = connect(&end_url(&reader_node.url, &r, "read")).await;
    let expected = [
        Message::Text("a".into()),
        Message::Binary(vec![1, 2, 3].into()),
        Message::Text("b".into()),
    ];
    raw_writer.send(expected[0].clone()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), raw_reader.next()).await;
    assert!(matches!(first, Ok(Some(Ok(ref m))) if *m == expected[0]));
    // A second writer on a third node: the home refuses the taken end, it is closed with 1008.
    let mut second = connect(&end_url(&reader_node.url, &w, "write")).await;
    let (frames, code) = read_to_close(&mut second, Duration::from_secs(10)).await;
    assert!(frames.is_empty());
    assert_eq!(code, Some(1008));
    for m in &expected[1..] {
        raw_writer.send(m.clone()).await.unwrap();
    }
    raw_writer.close(None).await.unwrap();
    let (frames, code) = read_to_close(&mut raw_reader, Duration::from_secs(10)).await;
    assert_eq!(frames, expected[1..]);
    assert_eq!(code, Some(1000));
}

/// `--channel-connections-per-peer`: ends served through one home node each take a
/// connection to its cluster port; beyond the limit an end is refused with 503 before the
/// upgrade (the peers' own connections keep their room), and a freed slot serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_through_one_home_past_the_connection_limit_are_refused_with_503() {
    let cluster = Cluster::start_with(2, |_| {
        NodeOptions::with_args(&["--channel-connections-per-peer", "1"])
    });
    let (home, other) = (cluster.node(0), cluster.node(1));
    let (w, r) = create(&home.url, json!({})).await;
    let writer_url = end_url(&other.url, &w, "write");
    let reader_url = end_url(&other.url, &r, "read");
    let mut writer = connect(&writer_url).await;
    assert_eq!(
        refused_status(&reader_url).await,
        503,
        "the only slot toward the home is the writer's"
    );
    // On the home node itself the reader needs no slot.
    let mut reader = connect(&end_url(&home.url, &r, "read")).await;
    writer.send(Message::Text("x".into())).await.unwrap();
    writer.close(None).await.unwrap();
    let (frames, code) = read_to_close(&mut reader, Duration::from_secs(10)).await;
    assert_eq!(frames, vec![Message::Text("x".into())]);
    assert_eq!(code, Some(1000));
    // The writer's end is done: its slot serves the next end through the home.
    let (_, r2) = create(&home.url, json!({})).await;
    let next_reader = end_url(&other.url, &r2, "read");
    eventually(
        "the freed slot serves again",
        Duration::from_secs(10),
        || {
            let url = next_reader.clone();
            async move { tokio_tungstenite::connect_async(url).await.ok().map(|_| ()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_with_404_before_the_upgrade() {
    let node = Node::start();
    let (w, _) = create(&node.url, json!({})).await;
    let url = end_url(
        &node.url,
        &forged(&w, &w.channel_id, "not-the-key"),
        "write",
    );
    assert_eq!(refused_status(&url).await, 404);
    let no_key = format!("{}/ws/channels/{}?dir=write", node.url, w.channel_id);
    assert_eq!(refused_status(&no_key).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_channel_id_is_refused_with_404() {
    let node = Node::start();
    let (w, _) = create(&node.url, json!({})).await;
    // A well-formed id of this node that was never created.
    let mut other: Vec<char> = w.channel_id.chars().collect();
    let last = other.len() - 1;
    other[last] = if other[last] == '0' { '1' } else { '0' };
    let other: String = other.into_iter().collect();
    let url = end_url(&node.url, &forged(&w, &other, &w.access_key), "read");
    assert_eq!(refused_status(&url).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_channel_id_is_refused_with_400() {
    let node = Node::start();
    let (w, _) = create(&node.url, json!({})).await;
    for id in ["not-a-uuid", "0", &uuid::Uuid::new_v4().to_string()] {
        let url = end_url(&node.url, &forged(&w, id, "key"), "read");
        assert_eq!(refused_status(&url).await, 400, "id {id}");
    }
    // The node still serves workers.
    let (after, _) = create(&node.url, json!({})).await;
    assert!(!after.channel_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_dir_is_refused_with_400() {
    let node = Node::start();
    let (w, _) = create(&node.url, json!({})).await;
    let missing = format!(
        "{}/ws/channels/{}?key={}",
        node.url, w.channel_id, w.access_key
    );
    assert_eq!(refused_status(&missing).await, 400);
    let invalid = end_url(&node.url, &w, "both");
    assert_eq!(refused_status(&invalid).await, 400);
    // The engine URL's own query comes first and is ignored.
    let with_engine_query = format!(
        "{}/ws/channels/{}?dir=nonsense&key=x&key={}&dir=write",
        node.url, w.channel_id, w.access_key
    );
    let mut writer = connect(&with_engine_query).await;
    writer.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_upgraded_and_closed_at_once() {
    let node = Node::start();
    let (w, r) = create(&node.url, json!({})).await;
    let url = end_url(&node.url, &w, "write");
    let mut reader = connect(&end_url(&node.url, &r, "read")).await;
    let mut first = connect(&url).await;
    first.send(Message::Text("first".into())).await.unwrap();
    // The first frame arrived, so the first writer holds the end.
    let next = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
    assert!(matches!(next, Ok(Some(Ok(Message::Text(ref t)))) if t.as_str() == "first"));
    // Both ends opened as writers: the second one is upgraded, then closed at once.
    let mut second = connect(&url).await;
    let (frames, code) = read_to_close(&mut second, Duration::from_secs(5)).await;
    assert!(frames.is_empty());
    assert_eq!(
        code,
        Some(1008),
        "the taken end is closed with a policy code"
    );
    // The first writer is unaffected.
    first.send(Message::Text("second".into())).await.unwrap();
    first.close(None).await.unwrap();
    let (frames, code) = read_to_close(&mut reader, Duration::from_secs(5)).await;
    assert_eq!(frames, vec![Message::Text("second".into())]);
    assert_eq!(code, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_id_whose_home_node_does_not_exist_is_refused_with_404() {
    let node = Node::start();
    let (w, _) = create(&node.url, json!({})).await;
    // Put a node id that is no member into the id's node bits (bytes 0..6, 7 and 9).
    let mut bytes = *uuid::Uuid::parse_str(&w.channel_id).unwrap().as_bytes();
    bytes[0] ^= 0x5a;
    let foreign = uuid::Uuid::from_bytes(bytes).to_string();
    let url = end_url(&node.url, &forged(&w, &foreign, &w.access_key), "read");
    assert_eq!(refused_status(&url).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_channels_never_connected_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions::with_args(&["--channel-unconnected-timeout-secs", "2"]),
    );
    let client = worker(&node.url, &unique_name("hoarder"), None).await;
    let mut first = None;
    for _ in 0..100 {
        let batch = (0..100).map(|_| call(&client, "engine::channels::create", json!({})));
        for refs in futures_util::future::join_all(batch).await {
            first.get_or_insert(refs.expect("created"));
        }
    }
    let first = first.unwrap();
    // Sweeping may start while the last batches are created: the counter shows all were.
    let created = metric(&node, "quorum_channels_created_total ").await;
    assert_eq!(
        created, 10_000.0,
        "every channel was created before the sweep"
    );
    eventually(
        "every unconnected channel is swept",
        Duration::from_secs(20),
        || async { (metric(&node, "quorum_channels_open ").await == 0.0).then_some(()) },
    )
    .await;
    let first: StreamChannelRef = serde_json::from_value(first["reader"].clone()).expect("ref");
    let url = end_url(&node.url, &first, "read");
    assert_eq!(refused_status(&url).await, 404, "a swept channel is gone");
    client.shutdown_async().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_flooding_a_channel_nobody_reads_is_held_back_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions::with_args(&["--channel-buffer-bytes", "1MiB"]),
    );
    let (w, _) = create(&node.url, json!({"buffer_size": 1024})).await;
    let before = rss_bytes(node.pid());
    let mut writer = connect(&end_url(&node.url, &w, "write")).await;
    let frame = vec![7u8; 64 * 1024];
    let mut sent = 0u64;
    // Far more than the cap: the writer is held back (a send blocks) long before 512 MiB.
    let flood = async {
        while sent < 512 * MIB {
            writer
                .send(Message::Binary(frame.clone().into()))
                .await
                .unwrap();
            sent += frame.len() as u64;
        }
    };
    let held_back = tokio::time::timeout(Duration::from_secs(10), flood)
        .await
        .is_err();
    assert!(
        held_back,
        "the writer was held back (sent {} MiB)",
        sent / MIB
    );
    assert!(
        sent < 64 * MIB,
        "only the cap plus socket buffers got through: {} MiB",
        sent / MIB
    );
    let after = rss_bytes(node.pid());
    assert!(
        after < before + 48 * MIB,
        "node RSS grew from {} to {} MiB",
        before / MIB,
        after / MIB
    );
    // The node still serves everyone else.
    let (other, _) = create(&node.url, json!({})).await;
    assert!(!other.channel_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_vanishes_without_close_ends_the_reader_with_1011() {
    let node = Node::start();
    let (w, r) = create(&node.url, json!({})).await;
    let mut reader = connect(&end_url(&node.url, &r, "read")).await;
    let mut writer = connect(&end_url(&node.url, &w, "write")).await;
    writer
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
    assert!(matches!(first, Ok(Some(Ok(Message::Binary(ref b)))) if b[..] == [1, 2, 3]));
    // No Close: the TCP connection is reset under the WebSocket.
    if let MaybeTlsStream::Plain(tcp) = writer.get_ref() {
        reset_on_drop(tcp);
    }
    drop(writer);
    let (frames, code) = read_to_close(&mut reader, Duration::from_secs(10)).await;
    assert!(frames.is_empty());
    assert_eq!(code, Some(1011), "a vanished writer is never a clean end");
}

/// Makes dropping the socket a reset (SO_LINGER 0), as when a process dies mid-stream.
#[allow(deprecated)] // a zero linger never blocks: the close is a reset
fn reset_on_drop(tcp: &TcpStream) {
    tcp.set_linger(Some(Duration::ZERO)).expect("linger");
}

/// Under `--worker-auth token` a channel socket is admitted by its access key alone (the
/// key was handed out only to a connection that presented a token): the Node SDK opens its
/// channel sockets without the token its worker connection carries. A wrong key is still
/// refused before the upgrade, and the form the Node SDK builds from an engine URL with a
/// query (`/?token=T/ws/channels/ID?key=K&dir=D`) reaches the channel it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_sockets_need_only_their_key_under_worker_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let token = "channel-test-token";
    let node = Node::start_in(
        &dir.path().join("node"),
        NodeOptions {
            args: common::worker_token_args(dir.path(), token),
            ..Default::default()
        },
    );
    // The worker port itself still asks for the token.
    assert_eq!(refused_status(&format!("{}/", node.url)).await, 401);
    let mut creator =
        common::raw::RawClient::connect(&format!("{}/?token={token}", node.url)).await;
    let answer = creator.call("engine::channels::create", json!({})).await;
    let refs = &answer["result"];
    let w: StreamChannelRef = serde_json::from_value(refs["writer"].clone()).expect("writer");
    let r: StreamChannelRef = serde_json::from_value(refs["reader"].clone()).expect("reader");
    let wrong = format!(
        "{}/ws/channels/{}?key=not-the-key&dir=read",
        node.url, r.channel_id
    );
    assert_eq!(refused_status(&wrong).await, 404);
    // The writer with its key only; the reader as the Node SDK writes it.
    let mut writer = connect(&end_url(&node.url, &w, "write")).await;
    let node_sdk_form = format!(
        "{}/?token={token}/ws/channels/{}?key={}&dir=read",
        node.url, r.channel_id, r.access_key
    );
    let mut reader = connect(&node_sdk_form).await;
    writer.send(Message::Text("hi".into())).await.unwrap();
    writer.close(None).await.unwrap();
    let (frames, code) = read_to_close(&mut reader, Duration::from_secs(5)).await;
    assert_eq!(frames, vec![Message::Text("hi".into())]);
    assert_eq!(code, Some(1000));
}

/// `--max-channels-per-connection`: a connection at its share gets a clear error from
/// `engine::channels::create` while another connection still creates; the channels of a
/// connection that closed stay usable (they were handed on) and still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_at_its_channel_share_is_refused_and_others_still_create() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions::with_args(&["--max-channels-per-connection", "3"]),
    );
    let greedy = worker(&node.url, &unique_name("greedy"), None).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            call(&greedy, "engine::channels::create", json!({}))
                .await
                .expect("within the share"),
        );
    }
    let refused = call(&greedy, "engine::channels::create", json!({}))
        .await
        .expect_err("a fourth channel for the same connection");
    let message = refused.to_string();
    println!("the fourth create answered: {message}");
    assert!(
        message.contains("connection holds its maximum of 3"),
        "the error says why: {message}"
    );
    let other = worker(&node.url, &unique_name("modest"), None).await;
    call(&other, "engine::channels::create", json!({}))
        .await
        .expect("another connection still creates");

    // The greedy connection leaves: its channels were handed on, so they stay usable.
    greedy.shutdown_async().await;
    let handed: StreamChannelRef =
        serde_json::from_value(held[0]["reader"].clone()).expect("reader ref");
    let reader = common::channel_ends::RawEnd::connect_kept(
        &node.url,
        &handed,
        "read",
        Duration::from_millis(300),
    )
    .await
    .expect("a channel outlives the connection that created it");
    assert_eq!(
        metric(&node, "quorum_channels_open ").await,
        4.0,
        "the greedy connection's three channels still count, and the other's one"
    );
    drop(reader);
    other.shutdown_async().await;
}

/// Fire-and-forget creates count against the connection's share like any other: a loop of
/// void `engine::channels::create` calls cannot fill the node's channel cap for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn void_creates_past_the_share_are_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions::with_args(&["--max-channels-per-connection", "3"]),
    );
    let greedy = worker(&node.url, &unique_name("greedy"), None).await;
    for _ in 0..10 {
        greedy
            .trigger(iii_sdk::protocol::TriggerRequest {
                function_id: "engine::channels::create".into(),
                payload: json!({}),
                action: Some(iii_sdk::TriggerAction::Void),
                timeout_ms: None,
            })
            .await
            .expect("a void call is sent");
    }
    eventually(
        "the share of void creates is open",
        Duration::from_secs(10),
        || async { (metric(&node, "quorum_channels_open ").await == 3.0).then_some(()) },
    )
    .await;
    let refused = call(&greedy, "engine::channels::create", json!({}))
        .await
        .expect_err("the void creates took the connection's share");
    assert!(
        refused
            .to_string()
            .contains("connection holds its maximum of 3"),
        "the error says why: {refused}"
    );
    assert_eq!(
        metric(&node, "quorum_channels_open ").await,
        3.0,
        "no void create went past the share"
    );
    greedy.shutdown_async().await;
}

/// `--channel-reader-stall-secs`: a reader that stays connected but never reads is cut off
/// once a send to it makes no progress for the limit, and the channel is torn down, so the
/// writer (held back by the full channel) gets 1011 instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_cut_off_and_the_writer_told() {
    use common::channel_ends::{new_channel, Pump, RawEnd, Summary};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions::with_args(&["--channel-reader-stall-secs", "1"]),
    );
    let creator = worker(&node.url, &unique_name("creator"), None).await;
    let channel = new_channel(&creator).await;
    // Connected, and never read from until the end of the test.
    let reader = RawEnd::connect(&node.url, &channel.reader_ref, "read")
        .await
        .expect("reader connected");
    let writer = RawEnd::connect(&node.url, &channel.writer_ref, "write")
        .await
        .expect("writer connected");
    let pump = Pump::start(writer, None, Duration::ZERO);
    let pumped = pump.finish(Duration::from_secs(30)).await;
    println!(
        "writer ended {:?} after {} MiB",
        pumped.ending,
        pumped.summary["bytes"].as_u64().unwrap_or(0) / MIB
    );
    assert_eq!(
        pumped.ending,
        common::channel_ends::Ending::Close(Some(1011)),
        "the writer hears that nobody reads"
    );
    eventually(
        "the stalled channel is removed",
        Duration::from_secs(5),
        || async { (metric(&node, "quorum_channels_open ").await == 0.0).then_some(()) },
    )
    .await;
    // The reader finally reads: what the socket buffers held, then no clean end.
    let (_, ending, _) = reader
        .read_to_end(Summary::default(), Duration::from_secs(10))
        .await;
    println!("the stalled reader's socket ended {ending:?}");
    assert!(ending.is_error(), "{ending:?}");
    creator.shutdown_async().await;
}

/// `--channel-reader-stall-secs` counts time without progress: with a 2 s limit, a reader
/// that takes one 64 KiB frame every 50 ms from a full channel is not cut off over three
/// periods and then gets the whole stream, while a reader beside it that never reads is
/// still cut off and its writer told. (The pace leaves room for the kernel: the node's socket
/// becomes writable again only once a third of its send buffer, up to 4 MiB, has drained.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_reader_is_not_cut_off_while_one_that_never_reads_is() {
    use common::channel_ends::{
        assert_same_stream, new_channel, Ending, Pump, RawEnd, Summary, FRAME,
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions::with_args(&[
            "--channel-reader-stall-secs",
            "2",
            "--channel-buffer-bytes",
            "1MiB",
        ]),
    );
    let creator = worker(&node.url, &unique_name("creator"), None).await;
    let open = |channel: StreamChannelRef, dir: &'static str| {
        let url = node.url.clone();
        async move {
            RawEnd::connect(&url, &channel, dir)
                .await
                .unwrap_or_else(|refusal| panic!("{dir} end refused: {refusal:?}"))
        }
    };
    let held_back = || metric(&node, "quorum_channel_writers_held_back ");
    let pace = Duration::from_millis(50);
    let frame_within = Duration::from_secs(10);

    let slow = new_channel(&creator).await;
    // A small socket buffer, so the node's relay waits on this reader within a few frames.
    let mut slow_reader =
        RawEnd::connect_with_receive_buffer(&node.url, &slow.reader_ref, "read", 64 * 1024).await;
    let frames = 32 * MIB / FRAME as u64;
    let slow_pump = Pump::start(
        open(slow.writer_ref.clone(), "write").await,
        Some(frames),
        Duration::ZERO,
    );
    let mut read = Summary::default();
    slow_reader
        .read_paced(&mut read, 20, pace, frame_within)
        .await;
    assert_eq!(
        held_back().await,
        1.0,
        "the channel is full: the relay waits on the slow reader"
    );

    let stuck = new_channel(&creator).await;
    let _stuck_reader = open(stuck.reader_ref.clone(), "read").await;
    let stuck_pump = Pump::start(
        open(stuck.writer_ref.clone(), "write").await,
        None,
        Duration::ZERO,
    );
    slow_reader
        .read_paced(&mut read, 100, pace, frame_within)
        .await;
    let stuck_pumped = stuck_pump.finish(Duration::from_secs(30)).await;
    assert_eq!(
        stuck_pumped.ending,
        Ending::Close(Some(1011)),
        "the writer of the reader that never reads hears that nobody reads"
    );
    assert_eq!(
        held_back().await,
        1.0,
        "the slow reader is still behind after three periods, and still served"
    );

    let (read, ending, _) = slow_reader.read_to_end(read, Duration::from_secs(60)).await;
    let pumped = slow_pump.finish(Duration::from_secs(30)).await;
    assert_eq!(
        ending,
        Ending::Close(Some(1000)),
        "the slow reader's ending"
    );
    assert_same_stream("the stream to a slow reader", &pumped.summary, &read);
    creator.shutdown_async().await;
}
