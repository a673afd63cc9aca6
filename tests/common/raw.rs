//! A hand-driven WebSocket client for protocol-level assertions the SDKs hide
//! (rejections, close frames, malformed input).

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The (code, message) a raw provider refuses a binding with; `engine::register_trigger`
/// reports it as `trigger_registration_failed` with the message `nope: not today`.
pub const REFUSAL: (&str, &str) = ("nope", "not today");

/// Whether `err` is the engine reporting a provider's [`REFUSAL`].
pub fn is_refusal(err: &iii_sdk::Error) -> bool {
    matches!(err, iii_sdk::Error::Remote { code, message, .. }
        if code == "trigger_registration_failed" && *message == format!("{}: {}", REFUSAL.0, REFUSAL.1))
}

/// One raw worker connection.
pub struct RawClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub worker_id: String,
    pub token: String,
}

/// What the next inbound item was.
#[derive(Debug)]
pub enum Inbound {
    Frame(Value),
    Closed(Option<u16>),
}

impl RawClient {
    /// Connects and reads the `workerregistered` greeting.
    pub async fn connect(url: &str) -> RawClient {
        RawClient::connect_request(url.into_client_request().expect("request")).await
    }

    /// [`RawClient::connect`] with a request of its own (extra headers, such as a token).
    pub async fn connect_request(request: Request) -> RawClient {
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("raw connect");
        let mut client = RawClient {
            ws,
            worker_id: String::new(),
            token: String::new(),
        };
        let hello = client.recv().await;
        assert_eq!(hello["type"], "workerregistered", "first frame: {hello}");
        client.worker_id = hello["worker_id"].as_str().expect("worker_id").to_string();
        client.token = hello["reattach_token"].as_str().expect("token").to_string();
        client
    }

    /// Connects and reads the greeting; `None` when the node closes the socket instead
    /// (for example while it is fenced).
    pub async fn try_connect(url: &str) -> Option<RawClient> {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .ok()??
            .ok()?;
        let Message::Text(text) = first else {
            return None;
        };
        let hello: Value = serde_json::from_str(&text).ok()?;
        if hello["type"] != "workerregistered" {
            return None;
        }
        Some(RawClient {
            ws,
            worker_id: hello["worker_id"].as_str()?.to_string(),
            token: hello["reattach_token"].as_str()?.to_string(),
        })
    }

    /// Connects and reads the first frame: the client when it is the greeting, else the close
    /// code the node refused it with (`None`: no code, or no connection at all).
    pub async fn connect_or_refusal(url: &str) -> Result<RawClient, Option<u16>> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|_| None)?;
        let mut client = RawClient {
            ws,
            worker_id: String::new(),
            token: String::new(),
        };
        match client.next().await {
            Inbound::Frame(hello) if hello["type"] == "workerregistered" => {
                client.worker_id = hello["worker_id"].as_str().unwrap_or_default().to_string();
                client.token = hello["reattach_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                Ok(client)
            }
            Inbound::Frame(_) => Err(None),
            Inbound::Closed(code) => Err(code),
        }
    }

    /// The close code that ends this connection, skipping frames; `None` when it ends without
    /// one. Panics when it is still open after `deadline`.
    pub async fn closed_within(&mut self, deadline: Duration) -> Option<u16> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let item = tokio::time::timeout_at(until, self.ws.next())
                .await
                .expect("connection still open at the deadline");
            match item {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Sends one JSON frame as text.
    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    /// An announced connection (unique name) that provides trigger type `id`.
    pub async fn provider(url: &str, id: &str) -> RawClient {
        let mut client = RawClient::connect(url).await;
        client
            .announce(&super::unique_name("raw-provider"), None)
            .await;
        client.provide(id).await;
        client
    }

    /// Registers this connection as the provider of trigger type `id`.
    pub async fn provide(&mut self, id: &str) {
        self.send(json!({"type":"registertriggertype","id":id,"description":"raw provider"}))
            .await;
    }

    /// Sends `text` as one message fragmented into frames of `chunk` bytes, as the SDKs
    /// send messages over 16 MiB.
    pub async fn send_fragmented(&mut self, text: &str, chunk: usize) {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        let bytes = text.as_bytes();
        let pieces: Vec<&[u8]> = bytes.chunks(chunk.max(1)).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let last = i + 1 == pieces.len();
            self.ws
                .feed(Message::Frame(Frame::message(piece.to_vec(), opcode, last)))
                .await
                .expect("send fragment");
        }
        self.ws.flush().await.expect("flush fragments");
    }

    /// Sends a call of `function_id` whose frame is 8 bytes under the 64 MiB every SDK
    /// accepts (fragmented in 1 MiB frames, its data `{"blob": "zzz…"}`), which the caller's id
    /// the engine adds would push over; asserts the engine answers `payload_too_large`.
    pub async fn assert_near_limit_call_refused(&mut self, function_id: &str) {
        let total = 64 * 1024 * 1024 - 8;
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let envelope = json!({"type":"invokefunction","invocation_id":invocation_id,
            "function_id":function_id,"data":{"blob":""}})
        .to_string();
        let blob = "z".repeat(total - envelope.len());
        let frame = envelope.replace("\"blob\":\"\"", &format!("\"blob\":\"{blob}\""));
        assert_eq!(frame.len(), total);
        self.send_fragmented(&frame, 1024 * 1024).await;
        let answer = self.recv_type("invocationresult").await;
        assert_eq!(answer["invocation_id"], invocation_id.as_str());
        assert_eq!(answer["error"]["code"], "payload_too_large");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    /// Announces the connection (void `engine::workers::register`).
    pub async fn announce(&mut self, name: &str, namespace: Option<&str>) {
        self.send(
            json!({"type":"invokefunction","function_id":"engine::workers::register",
            "data":{"runtime":"raw","name":name,"pid":std::process::id(),"namespace":namespace},
            "action":{"type":"void"}}),
        )
        .await;
    }

    /// The next frame or close, within 10 s.
    pub async fn next(&mut self) -> Inbound {
        loop {
            let item = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no frame within 10 s");
            match item {
                Some(Ok(Message::Text(text))) => {
                    return Inbound::Frame(serde_json::from_str(&text).expect("engine sent JSON"))
                }
                Some(Ok(Message::Binary(bytes))) => {
                    return Inbound::Frame(
                        serde_json::from_slice(&bytes).expect("engine sent JSON"),
                    )
                }
                Some(Ok(Message::Close(frame))) => {
                    return Inbound::Closed(frame.map(|f| f.code.into()))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Inbound::Closed(None),
            }
        }
    }

    /// The next frame; panics on close.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Inbound::Frame(v) => v,
            Inbound::Closed(code) => {
                panic!("connection closed ({code:?}) while a frame was expected")
            }
        }
    }

    /// As a trigger-type provider: answers the next `registertrigger` the engine forwards,
    /// refusing it with [`REFUSAL`] when `refuse` is set; returns the forwarded frame.
    pub async fn answer_next_trigger(&mut self, refuse: bool) -> Value {
        let forwarded = self.recv_type("registertrigger").await;
        let mut answer = json!({"type": "triggerregistrationresult", "id": forwarded["id"],
            "trigger_type": forwarded["trigger_type"], "function_id": forwarded["function_id"]});
        if refuse {
            answer["error"] = json!({"code": REFUSAL.0, "message": REFUSAL.1});
        }
        self.send(answer).await;
        forwarded
    }

    /// The next frame of a given type, skipping others (discovery fires, pings).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Calls a function and waits for its result frame.
    pub async fn call(&mut self, function_id: &str, data: Value) -> Value {
        let id = uuid::Uuid::new_v4().to_string();
        self.send(json!({"type":"invokefunction","invocation_id":id,"function_id":function_id,"data":data}))
            .await;
        loop {
            let frame = self.recv_type("invocationresult").await;
            if frame["invocation_id"] == id.as_str() {
                return frame;
            }
        }
    }
}
