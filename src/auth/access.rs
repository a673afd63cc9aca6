//! What each RPC on the cluster port demands of its caller.

/// The kind of caller an RPC on the cluster port accepts. With certificates, every RPC needs a
/// certificate signed by the cluster's CA; this says which ones beyond that. Without
/// certificates (a plaintext cluster), every caller is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A member node speaking as itself: its certificate identity is the one the membership
    /// records for the node id it claims (Raft, invocation streams, forwarded writes).
    Member,
    /// An operator: a client certificate (`quorum cert create-client`), or a member node
    /// passing an operator's request on to the leader.
    Operator,
    /// Any holder of a certificate signed by the CA, node or client (status, join).
    Certified,
}
