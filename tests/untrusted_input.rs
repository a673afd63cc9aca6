//! Property tests on the two places where bytes nobody vouches for become state: a
//! worker's frame (`protocol::decode`) and a Raft log entry's commands (decoded, then
//! applied by `Registry::apply`). Whatever the bytes, nothing panics, the registry's
//! invariants hold, and the memory allocated while reading them stays within a small
//! multiple of their size. The `fuzz/` targets drive the same two paths with libFuzzer.
//!
//! Allocation is measured by a counting allocator, per thread, so the harness's other
//! threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use quorum::protocol::decode;
use quorum::registry::{Command, Registry};
use serde_json::json;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(bytes: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn sub(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}

// SAFETY: every call is passed to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        sub(layout.size());
        add(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes allocated at once on this thread while `work` ran, above what was live
/// before it.
fn peak_during<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = work();
    (out, PEAK.with(Cell::get).saturating_sub(base))
}

/// What reading `len` untrusted bytes may cost at most: a fixed allowance for small
/// inputs, then a small multiple of the input.
fn allowance(len: usize) -> usize {
    64 * 1024 + 16 * len
}

/// One of each frame the SDKs send, as seeds for mutation.
fn sample_frames() -> Vec<String> {
    [
        json!({"type":"registerfunction","id":"svc::f","description":"d",
            "request_format":{"type":"object"},"metadata":{"k":[1,2,3]}}),
        json!({"type":"unregisterfunction","id":"svc::f"}),
        json!({"type":"invokefunction","invocation_id":"0b6f1a52-3c55-4f0e-9d0f-6f7e7f2a1b11",
            "function_id":"svc::f","data":{"x":1},"namespace":"default","traceparent":"00-ab-cd-01",
            "action":{"type":"void"}}),
        json!({"type":"invocationresult","invocation_id":"0b6f1a52-3c55-4f0e-9d0f-6f7e7f2a1b11",
            "function_id":"svc::f","result":{"ok":true}}),
        json!({"type":"invocationresult","invocation_id":"x","function_id":"f",
            "error":{"code":"boom","message":"no"}}),
        json!({"type":"registertriggertype","id":"cron","description":"d","namespace":"ns"}),
        json!({"type":"registertrigger","id":"t1","trigger_type":"cron","function_id":"svc::f",
            "config":{"expression":"* * * * *"}}),
        json!({"type":"unregistertrigger","id":"t1"}),
        json!({"type":"triggerregistrationresult","id":"t1","trigger_type":"cron",
            "function_id":"svc::f","error":null}),
        json!({"type":"reattach","previous_worker_id":"0b6f1a52-3c55-4f0e-9d0f-6f7e7f2a1b11",
            "reattach_token":"tok"}),
        json!({"type":"registerservice","id":"svc","name":"svc"}),
        json!({"type":"ping"}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect()
}

/// One of each command family, as a log entry would carry them.
fn sample_commands() -> String {
    let worker = "0b6f1a52-3c55-4f0e-9d0f-6f7e7f2a1b11";
    json!([
        {"WorkerConnected":{"worker":worker,"node":1,"token_hash":"h","at_ms":1,"ip_address":null}},
        {"Registrations":{"worker":worker,"items":[
            {"Announce":{"namespace":"default","meta":{"name":"w"}}},
            {"Function":{"id":"a::b","description":null,"request_format":null,
                "response_format":null,"metadata":{"m":1},"invocation":null}},
            {"TriggerType":{"namespace":null,"id":"cron","description":"d",
                "trigger_request_format":null,"call_request_format":null}},
            {"Trigger":{"id":"t","trigger_type":"cron","function_id":"a::b","config":{},
                "metadata":null,"namespace":null,"trigger_namespace":null}}
        ]}},
        {"DurableTriggerRegistered":{"id":"d","trigger_type":"cron","function_id":"a::b",
            "config":{},"metadata":null,"trigger_namespace":null}},
        {"TriggerRemoved":{"id":"d"}},
        {"NodeDraining":{"node":1}},
        {"WorkerDisconnected":{"worker":worker}},
        {"NodeRestarted":{"node":1}}
    ])
    .to_string()
}

/// A seed with bytes replaced, inserted and cut at the given places.
fn mutated(seed: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for &(at, op, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match op % 4 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// Decodes and applies whatever commands the bytes hold, checking invariants after each.
fn apply_all(bytes: &[u8]) -> Result<(), String> {
    let Ok(commands) = serde_json::from_slice::<Vec<Command>>(bytes) else {
        return Ok(());
    };
    let mut registry = Registry::default();
    for command in &commands {
        registry.apply(command);
        registry.check_invariants()?;
    }
    Ok(())
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_decode_to_a_frame_or_an_error_within_bounded_memory(
        bytes in prop::collection::vec(any::<u8>(), 0..4096)
    ) {
        let (_, peak) = peak_during(|| decode(&bytes).is_ok());
        prop_assert!(peak <= allowance(bytes.len()), "{peak} bytes for {} input", bytes.len());
    }

    #[test]
    fn a_mutated_sdk_frame_decodes_or_errs_within_bounded_memory(
        which in 0usize..12,
        edits in edits(),
    ) {
        let frames = sample_frames();
        let bytes = mutated(&frames[which % frames.len()], &edits);
        let (_, peak) = peak_during(|| decode(&bytes).is_ok());
        prop_assert!(peak <= allowance(bytes.len()), "{peak} bytes for {} input", bytes.len());
    }

    #[test]
    fn mutated_log_entries_apply_without_panic_and_keep_the_invariants(edits in edits()) {
        let bytes = mutated(&sample_commands(), &edits);
        let (applied, peak) = peak_during(|| apply_all(&bytes));
        prop_assert_eq!(applied, Ok(()));
        prop_assert!(peak <= allowance(bytes.len()), "{peak} bytes for {} input", bytes.len());
    }
}

#[test]
fn the_seeds_are_valid_so_mutation_starts_from_real_input() {
    let mut most = 0;
    for frame in sample_frames() {
        let (decoded, peak) = peak_during(|| decode(frame.as_bytes()).is_ok());
        assert!(decoded, "{frame}");
        most = most.max(peak);
    }
    // A frame with strings allocates: the counting allocator sees the decoder's allocations.
    assert!(most > 0);
    let commands: Vec<Command> = serde_json::from_str(&sample_commands()).expect("commands");
    assert_eq!(commands.len(), 7);
    assert_eq!(apply_all(sample_commands().as_bytes()), Ok(()));
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let depth = 100_000;
    let nested = format!(
        "{{\"type\":\"invokefunction\",\"function_id\":\"f\",\"data\":{}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let (decoded, peak) = peak_during(|| decode(nested.as_bytes()).is_ok());
    assert!(
        !decoded,
        "nesting past serde_json's recursion limit is an error"
    );
    assert!(peak <= allowance(nested.len()));
    let entry = format!("[{{\"TriggerRemoved\":{{\"id\":{}}}}}]", "[".repeat(depth));
    assert_eq!(apply_all(entry.as_bytes()), Ok(()));
}

#[test]
fn a_length_claimed_but_not_sent_costs_nothing() {
    // JSON has no length prefixes, but a huge number or a long run of escapes must not
    // make the decoder reserve for what the input only claims.
    let frame = format!(
        "{{\"type\":\"registerfunction\",\"id\":\"{}\",\"metadata\":1e999999}}",
        "\\u0041".repeat(10_000)
    );
    let (_, peak) = peak_during(|| decode(frame.as_bytes()).is_ok());
    assert!(peak <= allowance(frame.len()), "{peak}");
}
