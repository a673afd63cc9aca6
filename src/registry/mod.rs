//! registry: the replicated state machine of workers, functions, trigger types and triggers.
//!
//! Pure: no async, no I/O, no clock, no randomness. Every change is a [`Command`] that
//! arrives through the Raft log; [`Registry::apply`] is deterministic, so every node
//! reaches the same verdict on conflicts, leases and trigger bindings. What other
//! modules must do because of a change (tell a provider, fire a discovery trigger,
//! close a retired session) comes back as data in the [`Outcome`].
//!
//! Invariants (checked by the property tests): every function, trigger type and
//! trigger owner is a live worker; every name lease points at a live worker that
//! announced that name; a live binding's provider key exists.

mod apply;
mod command;
mod drains;
pub mod limits;
mod managed;
mod model;
mod name_rule;
mod queries;
pub mod reserved;
mod serde_pairs;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
mod tokens;

pub use command::{
    Announcement, Command, Event, Notice, Outcome, Registration, Rejection, WorkerEventKind,
};
pub use drains::DrainCause;
pub use managed::{
    labels_fit, ExpectedPlacement, ManagedStatus, ManagedWorker, NodeLabels, SpecOrigin,
    MAX_SPEC_BYTES,
};
pub use model::{Function, Registry, Trigger, TriggerType, Worker, WorkerMeta, WorkerToken};
pub use queries::Resolution;
