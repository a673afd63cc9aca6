//! budget: the bytes a node buffers on behalf of its clients, bounded node-wide.
//!
//! Why: every per-connection limit (64 MiB per message, a bounded outbox) still lets many
//! connections together exhaust the node. One [`Budget`] counts what all worker connections
//! hold (partial inbound messages, queued outbound frames) and decides who pays when the
//! total would go over it: the connection over its fair share, never a small one.
//!
//! | file | job |
//! |---|---|
//! | `size.rs` | reading `512MiB`-style sizes and choosing the default from the cgroup limit |
//! | `pool.rs` | the node-wide total, the fair-share rule and picking whom to close |
//! | `share.rs` | one connection's account and its kill switch |
//! | `metered.rs` | the socket wrapper that counts bytes read until they form a message |
//! | `outbox.rs` | a session's outbound queue, bounded in bytes, and its stall watch |
//!
//! Channel buffers (once channels exist) are charged the same way: open a [`Share`] for the
//! holder and [`Share::charge`]/[`Share::release`] the bytes it buffers.

mod metered;
mod outbox;
mod pool;
mod share;
mod size;

pub use metered::Metered;
pub use outbox::{outbox, Outbox, OutboxReceiver, Queued, Weigh};
pub use pool::Budget;
pub use share::Eviction;
#[allow(unused_imports)] // the hook for buffers other than sockets (see above)
pub use share::Share;
pub use size::{choose_budget, parse_bytes, BudgetChoice, ByteSize};

/// The close code of a connection that the budget ends (policy violation).
pub const CLOSE_POLICY: u16 = 1008;
