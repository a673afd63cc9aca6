//! cluster: how nodes become, stay and stop being one Raft cluster.
//!
//! Owns start-up membership ([`bootstrap`]: found a cluster of one, join through listed members,
//! or restart from stored state; [`admission`] keeps the admitting leader's members for the
//! certificate check while a rejoining node's log catches up), membership changes and the
//! cluster's view for operators ([`membership`]: join on the leader, leave and remove keeping
//! a quorum, status), sending
//! registry writes to the leader ([`forwarder`]), holding back a write some member's binary
//! cannot apply yet ([`command_level`]), the cluster id that keeps clusters apart
//! ([`identity`]), leases that fence a cut-off node and purge a lost one ([`lease`]), removing
//! voters that departed for good ([`departed`]), and the `quorum cluster …` commands ([`cli`]).
//!
//! It never applies registry commands itself (that is `consensus` and `registry`) and never
//! initializes Raft when `--join` names members, except on the designated founder (listed
//! first) once every other listed member answered that it belongs to no cluster: a node whose
//! data was wiped rejoins the cluster it names instead of founding a second one. Membership changes happen only on the
//! leader; every other member forwards them there.

pub mod admission;
pub mod bootstrap;
pub mod cli;
pub mod command_level;
pub mod departed;
pub mod forwarder;
pub mod identity;
pub mod lease;
pub mod membership;
