//! The ends of a data channel as a test drives them: the Rust SDK's writer and reader
//! following a plan of text and binary items, a hand-driven WebSocket end that tells how
//! its socket ended (the SDKs' readers end quietly on any close, so only a raw end can
//! tell 1011 from 1000), and the summary every language reports alike
//! (`tests/python/channels.py`, `tests/node/channels.mjs`), so one comparison checks
//! bytes, hash, frame boundaries, kinds and order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use iii_sdk::channel::{ChannelReader, ChannelWriter, StreamChannelRef};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The largest frame an SDK writer sends: data is split into frames of this size.
pub const FRAME: usize = 64 * 1024;
/// Bytes a writer hands to its SDK at once (a multiple of [`FRAME`]).
pub const PIECE: usize = 1024 * 1024;
/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// Text and binary items interleaved, with texts that look like data and JSON, so a
/// stream that loses kinds, order or boundaries shows it.
pub fn interleaved_plan() -> Value {
    json!([
        {"text": "first"},
        {"binary": 100_000},
        {"text": "ünïcödé ✓"},
        {"binary": 3 * FRAME + 17},
        {"text": "{\"looks\":\"like a frame\"}"},
        {"binary": 1},
        {"text": "last"},
    ])
}

/// One binary item of `bytes`.
pub fn binary_plan(bytes: u64) -> Value {
    json!([{ "binary": bytes }])
}

/// What went through one end: sha256 and length of the binary data, binary frames and
/// the largest, and the items in order with consecutive binary frames merged (so it
/// compares equal to the plan).
#[derive(Default)]
pub struct Summary {
    digest: Sha256,
    bytes: u64,
    frames: u64,
    max_frame: usize,
    sequence: Vec<Value>,
}

impl Summary {
    pub fn text(&mut self, text: &str) {
        self.sequence.push(json!({ "text": text }));
    }

    /// `data` as sent in `frames` frames of at most `largest` bytes (a reader: one frame).
    pub fn binary(&mut self, data: &[u8], frames: u64, largest: usize) {
        self.digest.update(data);
        self.bytes += data.len() as u64;
        self.frames += frames;
        self.max_frame = self.max_frame.max(largest);
        match self.sequence.last_mut() {
            Some(last) if last.get("binary").is_some() => {
                last["binary"] = json!(last["binary"].as_u64().unwrap_or(0) + data.len() as u64)
            }
            _ => self.sequence.push(json!({ "binary": data.len() })),
        }
    }

    /// A frame a reader received.
    pub fn frame(&mut self, data: &[u8]) {
        self.binary(data, 1, data.len());
    }

    /// Binary bytes so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn report(self) -> Value {
        json!({
            "sha256": hex(&self.digest.finalize()),
            "bytes": self.bytes,
            "frames": self.frames,
            "max_frame": self.max_frame,
            "sequence": self.sequence,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts the reader saw exactly what the writer sent: same bytes and hash, same
/// frames (none merged or split), same kinds in the same order.
pub fn assert_same_stream(what: &str, written: &Value, read: &Value) {
    for key in ["bytes", "sha256", "frames", "sequence"] {
        assert_eq!(
            read[key], written[key],
            "{what}: `{key}` differs\nwritten: {written}\nread:    {read}"
        );
    }
    assert!(
        read["max_frame"].as_u64().unwrap_or(u64::MAX) <= FRAME as u64,
        "{what}: a frame over 64 KiB reached the reader: {read}"
    );
}

/// Fast reproducible filler bytes (xorshift), so a stream is not all zeros.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.fill(&mut buf);
        buf
    }
}

/// Writes `plan` through the Rust SDK's writer and closes it; the summary of what it sent.
pub async fn write_plan(writer: &ChannelWriter, plan: &Value) -> Result<Value, iii_sdk::Error> {
    let mut summary = Summary::default();
    let mut noise = Noise::new(0x5eed);
    for step in plan.as_array().expect("a plan is an array") {
        if let Some(text) = step["text"].as_str() {
            writer.send_message(text).await?;
            summary.text(text);
            continue;
        }
        let mut remaining = step["binary"].as_u64().expect("a binary step") as usize;
        while remaining > 0 {
            let piece = noise.bytes(remaining.min(PIECE));
            writer.write(&piece).await?;
            summary.binary(
                &piece,
                piece.len().div_ceil(FRAME) as u64,
                piece.len().min(FRAME),
            );
            remaining -= piece.len();
        }
    }
    writer.close().await?;
    Ok(summary.report())
}

/// Reads a stream to its end through the Rust SDK's reader; the summary of what it got.
pub async fn read_all(reader: &ChannelReader) -> Result<Value, iii_sdk::Error> {
    let summary = Arc::new(Mutex::new(Summary::default()));
    let texts = summary.clone();
    reader
        .on_message(move |text| texts.lock().expect("summary").text(&text))
        .await;
    while let Some(frame) = reader.next_binary().await? {
        summary.lock().expect("summary").frame(&frame);
    }
    let done = std::mem::take(&mut *summary.lock().expect("summary"));
    Ok(done.report())
}

/// The URL of one end of a channel on the node at `base` (`ws://host:port`).
pub fn end_url(base: &str, channel: &StreamChannelRef, dir: &str) -> String {
    let key: String = form_urlencoded::byte_serialize(channel.access_key.as_bytes()).collect();
    format!(
        "{}/ws/channels/{}?key={key}&dir={dir}",
        base.trim_end_matches('/'),
        channel.channel_id
    )
}

/// How a node refused an end.
#[derive(Debug)]
pub enum Refusal {
    /// An HTTP answer instead of the upgrade.
    Http(u16),
    /// Upgraded, then closed at once (with this code, if any).
    Closed(Option<u16>),
    /// No WebSocket at all (connection refused, reset, ...).
    Unreachable(String),
}

/// How an end's socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A Close frame, with its code if it had one.
    Close(Option<u16>),
    /// No Close frame: a reset, an EOF or another socket error.
    Dropped(String),
}

impl Ending {
    /// A reader can tell this from a complete stream: a Close other than 1000, or none.
    pub fn is_error(&self) -> bool {
        match self {
            Ending::Close(Some(code)) => *code != 1000,
            Ending::Close(None) => false,
            Ending::Dropped(_) => true,
        }
    }
}

/// A channel end's WebSocket, driven by hand.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the channel socket at `url` (see [`end_url`]); panics when it is refused.
pub async fn connect(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("channel end upgraded")
        .0
}

/// What a reader socket received: its data frames as they came (boundaries kept), then the
/// close code (`None`: a Close without one, or no Close at all). Panics when the socket is
/// still open after `deadline`.
pub async fn read_to_close(socket: &mut Socket, deadline: Duration) -> (Vec<Message>, Option<u16>) {
    let mut frames = Vec::new();
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let next = tokio::time::timeout_at(until, socket.next())
            .await
            .expect("reader socket ended within the deadline");
        match next {
            Some(Ok(Message::Close(frame))) => return (frames, frame.map(|f| u16::from(f.code))),
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => frames.push(message),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (frames, None),
        }
    }
}

/// One end of a channel on a hand-driven WebSocket.
pub struct RawEnd {
    ws: Socket,
}

impl RawEnd {
    /// Opens `dir` (`read` or `write`) of `channel` on the node at `base`.
    pub async fn connect(
        base: &str,
        channel: &StreamChannelRef,
        dir: &str,
    ) -> Result<RawEnd, Refusal> {
        let url = end_url(base, channel, dir);
        let connect = tokio_tungstenite::connect_async(url);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((ws, _))) => Ok(RawEnd { ws }),
            Ok(Err(WsError::Http(response))) => Err(Refusal::Http(response.status().as_u16())),
            Ok(Err(other)) => Err(Refusal::Unreachable(other.to_string())),
            Err(_) => Err(Refusal::Unreachable("no answer within 10 s".into())),
        }
    }

    /// Opens `dir` of `channel` on a socket whose receive buffer is about `bytes` (the kernel's
    /// autotuning off), so a reader that reads slowly holds the node back at once instead of
    /// after many MiB of kernel buffers. Panics when the node refuses it.
    pub async fn connect_with_receive_buffer(
        base: &str,
        channel: &StreamChannelRef,
        dir: &str,
        bytes: u32,
    ) -> RawEnd {
        let url = end_url(base, channel, dir);
        let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().expect("an end's URL");
        let addr =
            tokio::net::lookup_host((uri.host().expect("a host"), uri.port_u16().expect("a port")))
                .await
                .expect("the node's address")
                .next()
                .expect("an address");
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .expect("a socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let tcp = socket.connect(addr).await.expect("connected to the node");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .expect("channel end upgraded");
        RawEnd { ws }
    }

    /// Opens an end and checks the node keeps it: `Err` when it refuses before the upgrade
    /// or closes the socket within `grace` after it.
    pub async fn connect_kept(
        base: &str,
        channel: &StreamChannelRef,
        dir: &str,
        grace: Duration,
    ) -> Result<RawEnd, Refusal> {
        let mut end = RawEnd::connect(base, channel, dir).await?;
        match tokio::time::timeout(grace, end.ws.next()).await {
            Err(_) => Ok(end),
            Ok(Some(Ok(Message::Close(frame)))) => {
                Err(Refusal::Closed(frame.map(|f| u16::from(f.code))))
            }
            Ok(None) | Ok(Some(Err(_))) => Err(Refusal::Closed(None)),
            Ok(Some(Ok(other))) => panic!("an end that nobody wrote to received {other:?}"),
        }
    }

    /// Reads into `summary` until it holds at least `bytes` of data; panics if the stream
    /// ends first or `deadline` passes.
    pub async fn read_at_least(&mut self, summary: &mut Summary, bytes: u64, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        while summary.bytes() < bytes {
            let item = tokio::time::timeout_at(until, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("fewer than {bytes} bytes within {deadline:?}"));
            match item {
                Some(Ok(Message::Binary(data))) => summary.frame(&data),
                Some(Ok(Message::Text(text))) => summary.text(&text),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                other => panic!(
                    "the stream ended after {} bytes: {other:?}",
                    summary.bytes()
                ),
            }
        }
    }

    /// Reads `frames` binary frames into `summary`, one every `pace`: a reader that is slow
    /// but steady. Panics if the stream ends first or a frame takes longer than `deadline`.
    pub async fn read_paced(
        &mut self,
        summary: &mut Summary,
        frames: usize,
        pace: Duration,
        deadline: Duration,
    ) {
        for _ in 0..frames {
            tokio::time::sleep(pace).await;
            let next = summary.bytes() + 1;
            self.read_at_least(summary, next, deadline).await;
        }
    }

    /// Reads the rest of the stream into `summary`: its report, how the socket ended and
    /// when. Panics when it is still open after `deadline`.
    pub async fn read_to_end(
        mut self,
        mut summary: Summary,
        deadline: Duration,
    ) -> (Value, Ending, Instant) {
        let until = tokio::time::Instant::now() + deadline;
        let ending = loop {
            let item = tokio::time::timeout_at(until, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the reader was still open {deadline:?} later, after {} bytes",
                        summary.bytes()
                    )
                });
            match item {
                Some(Ok(Message::Binary(data))) => summary.frame(&data),
                Some(Ok(Message::Text(text))) => summary.text(&text),
                Some(Ok(Message::Close(frame))) => {
                    break Ending::Close(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Ending::Dropped(e.to_string()),
                None => break Ending::Dropped("end of stream without a Close".into()),
            }
        };
        (summary.report(), ending, Instant::now())
    }
}

/// What a [`Pump`] did: the summary of what it sent, how its socket ended and when.
#[derive(Debug)]
pub struct Pumped {
    pub summary: Value,
    pub ending: Ending,
    pub ended_at: Instant,
}

/// A raw writer sending 64 KiB binary frames of random bytes on its own task, while it
/// watches its socket for the node closing it. Stopped when dropped.
pub struct Pump {
    task: Option<JoinHandle<Pumped>>,
    sent: Arc<AtomicU64>,
}

impl Pump {
    /// Sends `frames` frames (`None`: until the socket ends), `pace` apart (zero: as fast
    /// as the node takes them), then a Close 1000, and waits for the node's Close.
    pub fn start(end: RawEnd, frames: Option<u64>, pace: Duration) -> Pump {
        let sent = Arc::new(AtomicU64::new(0));
        Pump {
            task: Some(tokio::spawn(pump(end.ws, frames, pace, sent.clone()))),
            sent,
        }
    }

    /// Bytes the node has taken so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// How the pump ended; panics if it has not within `deadline`.
    pub async fn finish(mut self, deadline: Duration) -> Pumped {
        let task = self.task.take().expect("not finished yet");
        tokio::time::timeout(deadline, task)
            .await
            .unwrap_or_else(|_| panic!("the writer's socket was still open {deadline:?} later"))
            .expect("pump task")
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn pump(ws: Socket, frames: Option<u64>, pace: Duration, taken: Arc<AtomicU64>) -> Pumped {
    let (mut sink, mut stream) = ws.split();
    // Whatever the node sends a writer, only its end matters.
    let mut watch = tokio::spawn(async move {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return (
                        Ending::Close(frame.map(|f| u16::from(f.code))),
                        Instant::now(),
                    )
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return (Ending::Dropped(e.to_string()), Instant::now()),
                None => {
                    return (
                        Ending::Dropped("end of stream without a Close".into()),
                        Instant::now(),
                    )
                }
            }
        }
    });
    let mut summary = Summary::default();
    let mut noise = Noise::new(0xfeed);
    let mut sent = 0u64;
    let ended = loop {
        if frames.is_some_and(|n| sent >= n) {
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
            break tokio::time::timeout(Duration::from_secs(30), &mut watch)
                .await
                .map(|joined| joined.expect("watch task"))
                .unwrap_or((
                    Ending::Dropped("no Close from the node in 30 s".into()),
                    Instant::now(),
                ));
        }
        let frame = noise.bytes(FRAME);
        tokio::select! {
            biased;
            joined = &mut watch => break joined.expect("watch task"),
            result = sink.send(Message::Binary(frame.clone().into())) => match result {
                Ok(()) => {
                    summary.frame(&frame);
                    sent += 1;
                    taken.fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    // The watch usually saw why (a Close frame); a reset shows here first.
                    break match tokio::time::timeout(Duration::from_millis(500), &mut watch).await {
                        Ok(joined) => joined.expect("watch task"),
                        Err(_) => (Ending::Dropped(e.to_string()), Instant::now()),
                    };
                }
            },
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    };
    watch.abort();
    Pumped {
        summary: summary.report(),
        ending: ended.0,
        ended_at: ended.1,
    }
}

/// A new channel made through `creator` (`engine::channels::create` with the defaults).
pub async fn new_channel(creator: &iii_sdk::IIIClient) -> iii_sdk::channel::Channel {
    iii_sdk::helpers::create_channel(creator, None)
        .await
        .expect("engine::channels::create")
}

/// A metric's value in `node`'s exposition, from the line starting `line_start` (0 when
/// absent).
pub async fn metric(node: &super::Node, line_start: &str) -> f64 {
    let (_, body) = super::http::get(&node.http, "/metrics")
        .await
        .expect("scrape");
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Starts `tests/python/channels.py` as worker `name` on the node at `url`, with the Python
/// at `python`, and waits for its READY line.
pub async fn python_channel_worker(
    python: &std::path::Path,
    url: &str,
    name: &str,
) -> super::script::Script {
    use std::ffi::OsStr;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/channels.py");
    let env: [(&str, &dyn AsRef<OsStr>); 3] = [
        ("PYTHONUNBUFFERED", &"1"),
        ("III_URL", &url),
        ("PY_WORKER_NAME", &name),
    ];
    let mut script = super::script::Script::spawn("channels.py", python, &[&path], &env);
    script.expect("READY", super::script::READY_TIMEOUT).await;
    script
}
