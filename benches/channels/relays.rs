//! The relay floors of the channel bench: the same stream through a middle process that is
//! not quorum, so the report shows what one hop costs by itself on this machine.
//!
//! - [`tcp_relay`]: a plain byte copy through a middle process (64 KiB reads and writes),
//!   between the bench's TCP writer and the TCP sink.
//! - [`ws_relay`]: a middle process that accepts the SDK's two WebSocket channel ends and
//!   forwards the writer's frames to the reader, as a node does for a channel whose ends are
//!   both on it, with nothing else (no channel table, no buffer accounting, no metrics).
//!
//! Each runs as a helper role of the bench binary and serves one stream, then exits.

use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The size of one read and one write of the TCP relay, the bench's frame size.
const COPY_BYTES: usize = 64 * 1024;

/// Frames queued between the writer's socket and the reader's in the WebSocket relay.
const HOP_FRAMES: usize = 16;

/// The TCP relay role: prints its address, accepts one connection, connects to the sink at
/// `SINK_ADDR`, and copies every byte to it until the writer closes.
pub fn tcp_relay() {
    let sink_addr = std::env::var("SINK_ADDR").expect("SINK_ADDR");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    let (mut from, _) = listener.accept().expect("accept");
    let mut to = std::net::TcpStream::connect(sink_addr.trim()).expect("connect sink");
    let _ = to.set_nodelay(true);
    let mut buf = vec![0u8; COPY_BYTES];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => to.write_all(&buf[..n]).expect("relay write"),
            Err(e) => panic!("relay read: {e}"),
        }
    }
}

/// One accepted channel end and the direction its URL asked for.
// The handshake callback's error type is tungstenite's, not ours to make smaller.
#[allow(clippy::result_large_err)]
async fn accept_end(listener: &TcpListener) -> (String, WebSocketStream<TcpStream>) {
    let (tcp, _) = listener.accept().await.expect("accept");
    let _ = tcp.set_nodelay(true);
    let mut dir = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |request: &Request, response: Response| {
        dir = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("dir="))
            .unwrap_or_default()
            .to_string();
        Ok(response)
    })
    .await
    .expect("websocket handshake");
    (dir, ws)
}

/// The WebSocket relay role: prints its `ws://` base URL, accepts a channel's writer and
/// reader (in either order), and forwards the writer's frames to the reader, flushing when
/// no more are ready, then the writer's Close.
pub async fn ws_relay() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("ws://{}", listener.local_addr().expect("addr"));
    let (mut writer, mut reader) = (None, None);
    while writer.is_none() || reader.is_none() {
        match accept_end(&listener).await {
            (dir, ws) if dir == "write" => writer = Some(ws),
            (dir, ws) if dir == "read" => reader = Some(ws),
            (dir, _) => panic!("a channel end with dir={dir:?}"),
        }
    }
    let (Some(writer), Some(reader)) = (writer, reader) else {
        unreachable!("the loop ends with both ends");
    };
    let (tx, mut rx) = mpsc::channel::<Message>(HOP_FRAMES);
    let (_, mut from) = writer.split();
    let pump = tokio::spawn(async move {
        while let Some(Ok(message)) = from.next().await {
            let close = message.is_close();
            if (message.is_binary() || message.is_text() || close)
                && tx.send(message).await.is_err()
            {
                return;
            }
            if close {
                return;
            }
        }
    });
    let (mut to, mut acks) = reader.split();
    while let Some(message) = rx.recv().await {
        to.feed(message).await.expect("relay send");
        while let Ok(message) = rx.try_recv() {
            to.feed(message).await.expect("relay send");
        }
        to.flush().await.expect("relay flush");
    }
    // The reader answers the Close; wait for it so the Close is not lost in a reset.
    while let Some(Ok(_)) = acks.next().await {}
    let _ = pump.await;
}
