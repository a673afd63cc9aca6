//! A Raft log entry's commands, decoded and applied as the state machine does: no panic,
//! and the registry's cross-references hold after every command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorum::registry::{Command, Registry};

fuzz_target!(|bytes: &[u8]| {
    let Ok(commands) = serde_json::from_slice::<Vec<Command>>(bytes) else {
        return;
    };
    let mut registry = Registry::default();
    for command in &commands {
        registry.apply(command);
        if let Err(broken) = registry.check_invariants() {
            panic!("invariant broken after {command:?}: {broken}");
        }
    }
});
