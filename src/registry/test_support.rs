//! Registry set-ups shared by unit tests here and in the modules that read the registry.

use super::{Announcement, Command, Outcome, Registration, Registry, WorkerMeta};
use crate::ids::{NodeId, WorkerId};

/// Connects worker `n` (its id is `n` in every byte) on `node`.
pub fn connect_on(reg: &mut Registry, n: u8, node: NodeId) -> WorkerId {
    let worker = WorkerId(uuid::Uuid::from_bytes([n; 16]));
    reg.apply(&Command::WorkerConnected {
        worker,
        node,
        token_hash: format!("h{n}"),
        at_ms: 1,
        ip_address: None,
    });
    worker
}

/// `worker` announces the worker name `name` and registers `{name}::echo`.
pub fn announce_and_register(reg: &mut Registry, worker: WorkerId, name: &str) -> Outcome {
    reg.apply(&Command::Registrations {
        worker,
        items: vec![
            Registration::Announce(Announcement {
                namespace: "default".into(),
                meta: WorkerMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
            }),
            Registration::Function {
                id: format!("{name}::echo"),
                description: None,
                request_format: None,
                response_format: None,
                metadata: None,
                invocation: None,
            },
        ],
    })
}
