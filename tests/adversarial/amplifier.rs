//! The amplifier: a worker whose function turns a small call into a large answer, run as a
//! process of its own so the answers it writes cost the node, not the test process.
//!
//! Why a process and a raw socket: an SDK worker in the test process serialises every
//! 3 MB answer (and its OpenTelemetry thread copies it again) on the cores and runtime the
//! canary measures with, so the canary measured the test, not the node. This one is this
//! test binary started again in [`amplifier_process`]: it speaks the worker protocol on a
//! raw WebSocket and answers every call, unpaced, with a frame prepared once per size.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_tungstenite::tungstenite::Message;

use super::common::raw::RawClient;
use super::common::script::{Script, READY_TIMEOUT};
use super::common::unique_name;

/// The function the amplifier serves: answers `{"size": n}` with `{"blob": "bbb…"}`, a
/// string of n bytes.
pub const BIG: &str = "memory::big";
/// Set (to the node's worker URL) for the amplifier process.
const AMPLIFIER_URL: &str = "ADVERSARIAL_AMPLIFIER_URL";
/// Set (to the worker name to announce) for the amplifier process.
const AMPLIFIER_NAME: &str = "ADVERSARIAL_AMPLIFIER_NAME";

/// A running amplifier process, killed by PID when dropped, however the test ends.
pub struct Amplifier {
    script: Script,
    /// The worker name it announced.
    pub name: String,
}

impl Amplifier {
    /// Starts the amplifier on `url` and waits until it has registered [`BIG`] (callers
    /// still wait for the function to be visible to them).
    pub async fn start(url: &str) -> Amplifier {
        let name = unique_name("amplifier");
        let exe = std::env::current_exe().expect("this test binary");
        let mut script = Script::spawn(
            "amplifier",
            exe,
            &[
                &"amplifier::amplifier_process",
                &"--exact",
                &"--ignored",
                &"--nocapture",
                &"--test-threads=1",
            ],
            &[(AMPLIFIER_URL, &url), (AMPLIFIER_NAME, &name)],
        );
        script.expect("READY", READY_TIMEOUT).await;
        Amplifier { script, name }
    }

    /// The amplifier's process id, to read its CPU time or memory.
    pub fn pid(&self) -> u32 {
        self.script.pid()
    }

    /// Asks it to stop (stdin closed), checks that it exited cleanly and returns how many
    /// answers it sent.
    pub async fn stop(mut self) -> u64 {
        let done = self.script.finish_cleanly().await;
        done["answers"].as_u64().expect("DONE counts the answers")
    }
}

/// Answers the amplifier process has sent, reported on its `DONE` line.
static ANSWERS: AtomicU64 = AtomicU64::new(0);

/// The answer frame for one call: the prepared text around the call's invocation id.
struct Answers {
    /// `{"blob":"bbb…"}` by size, made once.
    results: HashMap<usize, String>,
}

impl Answers {
    fn frame(&mut self, invocation_id: &str, size: usize) -> String {
        let result = self
            .results
            .entry(size)
            .or_insert_with(|| json!({ "blob": "b".repeat(size) }).to_string());
        let head = json!({"type": "invocationresult", "invocation_id": invocation_id,
            "function_id": BIG})
        .to_string();
        // `{…head…}` becomes `{…head…,"result":{…}}`.
        let mut frame = String::with_capacity(head.len() + result.len() + 16);
        frame.push_str(&head[..head.len() - 1]);
        frame.push_str(",\"result\":");
        frame.push_str(result);
        frame.push('}');
        frame
    }
}

/// The amplifier process (started by [`Amplifier::start`]; does nothing when run as a
/// test): announces itself, registers [`BIG`], prints `READY`, answers every call as soon
/// as it arrives, and exits with `DONE` when its stdin closes.
#[test]
#[ignore = "helper process of the adversarial tests (see Amplifier::start)"]
fn amplifier_process() {
    let (Ok(url), Ok(name)) = (std::env::var(AMPLIFIER_URL), std::env::var(AMPLIFIER_NAME)) else {
        return;
    };
    // Stdin closed is the signal to stop.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let answers = ANSWERS.load(Ordering::SeqCst);
        println!("\nDONE {}", json!({ "answers": answers }));
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("amplifier runtime");
    runtime.block_on(async move {
        let mut client = RawClient::connect(&url).await;
        client.announce(&name, None).await;
        client
            .send(json!({"type": "registerfunction", "id": BIG}))
            .await;
        // On a line of its own: the test harness has printed the test's name without one.
        println!("\nREADY {}", json!({ "worker_id": client.worker_id }));
        let mut answers = Answers {
            results: HashMap::new(),
        };
        while let Some(Ok(message)) = client.ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(call) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let (Some("invokefunction"), Some(id)) =
                (call["type"].as_str(), call["invocation_id"].as_str())
            else {
                continue;
            };
            let size = call["data"]["size"].as_u64().unwrap_or(0) as usize;
            let frame = answers.frame(id, size);
            if client.ws.send(Message::Text(frame.into())).await.is_err() {
                break;
            }
            ANSWERS.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The node closed the connection: the process stays until it is told to stop, so the
    // test sees a disconnect and not a vanished process.
    loop {
        std::thread::park();
    }
}
