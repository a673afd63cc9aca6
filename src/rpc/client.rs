//! The pool of gRPC channels to peers: one lazily connected channel per cluster address,
//! shared by Raft, forwarding, membership and the invocation streams; and connections of
//! their own for the streams of data channels ([`PeerClients::dedicated`]).
//!
//! A channel is made on first use and connects when the first call needs it; tonic reconnects it
//! after a failure, so a restarted peer at the same address is reached again without evicting
//! anything. The map's lock is held only to look up or insert a channel, never across `.await`.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::Response;
use tonic::Status;

use super::errors::RpcError;
use super::pb::cluster_client::ClusterClient;
use super::MAX_MESSAGE_BYTES;

/// How long opening a TCP connection to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// HTTP/2 keep-alive ping interval on peer connections, so a dead peer is noticed on idle
/// streams too.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a keep-alive ping may go unanswered before the connection counts as broken.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest HTTP/2 frame a node accepts from a peer, on both sides of a cluster
/// connection (HTTP/2's default is 16 KiB).
///
/// Why: a data channel's piece of 256 KiB (`channels::pieces::PIECE_BYTES`) in one
/// frame, not cut into sixteen, costs the sender and the receiver a sixteenth of the
/// per-frame work. Flow control, not the frame size, bounds what a peer can send ahead.
pub const MAX_FRAME_BYTES: u32 = 512 * 1024;

/// Lazily connected channels to peers, by cluster address. Cheap to clone; clones share the
/// channels.
#[derive(Clone, Default)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// The source IP of outgoing connections; the OS picks one when `None`.
    local_ip: Option<IpAddr>,
    /// The certificate peers are dialled with; plaintext when `None`.
    tls: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for PeerClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("PeerClients")
            .field("peers", &peers)
            .field("local_ip", &self.local_ip)
            .finish()
    }
}

impl PeerClients {
    /// A pool whose connections leave from the IP this node listens on for peers, when that is
    /// one specific IP (not `0.0.0.0` or `::`). On a multi-homed host, peers then see a node's
    /// connections come from the address they know it by, so firewall rules per peer address
    /// hold in both directions. A peer of the other IP family, or a non-loopback peer of a node
    /// on a loopback IP, is dialled from an OS-chosen address.
    pub fn bound_to(listen_ip: IpAddr) -> Self {
        Self {
            channels: Arc::default(),
            local_ip: (!listen_ip.is_unspecified()).then_some(listen_ip),
            tls: None,
        }
    }

    /// The same pool dialling with TLS and `tls`'s certificate (`None` keeps it plaintext).
    pub fn with_tls(mut self, tls: Option<ClientTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// The channel to `addr` (`host:port`), made on first use; it connects on the first call.
    pub fn channel(&self, addr: &str) -> Result<Channel, RpcError> {
        if let Some(channel) = self.lock().get(addr) {
            return Ok(channel.clone());
        }
        let channel = self.endpoint(addr)?.connect_lazy();
        // Another task may have raced us; keep whichever got in first so all share one.
        Ok(self
            .lock()
            .entry(addr.to_string())
            .or_insert(channel)
            .clone())
    }

    /// The IP to dial `addr` from. A loopback IP reaches only loopback peers, so a node
    /// listening on one (behind a port forward, say) dials any other peer from an OS-chosen IP.
    fn source_ip(&self, addr: &str) -> Option<IpAddr> {
        let local = self.local_ip?;
        if !local.is_loopback() {
            return Some(local);
        }
        let peer: std::net::SocketAddr = addr.parse().ok()?;
        peer.ip().is_loopback().then_some(local)
    }

    /// How `addr` is dialled: timeouts, keep-alive, TLS and the source IP.
    fn endpoint(&self, addr: &str) -> Result<Endpoint, RpcError> {
        let bad_address = |source| RpcError::BadAddress {
            addr: addr.to_string(),
            source,
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(bad_address)?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(bad_address)?;
        }
        Ok(endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .max_frame_size(MAX_FRAME_BYTES)
            .local_address(self.source_ip(addr)))
    }

    /// A `Cluster` service client for `addr`, accepting messages up to [`MAX_MESSAGE_BYTES`].
    pub fn cluster(&self, addr: &str) -> Result<ClusterClient<Channel>, RpcError> {
        Ok(Self::limits(ClusterClient::new(self.channel(addr)?)))
    }

    /// A `Cluster` client on a connection of its own to `addr`, for one long stream whose
    /// backpressure must not hold back any other stream: a data channel's end. HTTP/2 flow
    /// control is per connection as well as per stream, so a stream left unread (a slow
    /// reader, a full channel) on a shared connection would stall every stream on it. The
    /// connection closes when the client and its calls are dropped.
    pub fn dedicated(&self, addr: &str) -> Result<ClusterClient<Channel>, RpcError> {
        Ok(Self::limits(ClusterClient::new(
            self.endpoint(addr)?.connect_lazy(),
        )))
    }

    fn limits(client: ClusterClient<Channel>) -> ClusterClient<Channel> {
        client
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs one unary call to `addr` with a deadline, turning every failure into an
    /// [`RpcError`]: `call(client).await` must finish within `timeout`.
    pub async fn unary<T, F, Fut>(
        &self,
        addr: &str,
        timeout: Duration,
        call: F,
    ) -> Result<T, RpcError>
    where
        F: FnOnce(ClusterClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let client = self.cluster(addr)?;
        match tokio::time::timeout(timeout, call(client)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(RpcError::from_status(addr, status)),
            Err(_) => Err(RpcError::Timeout {
                addr: addr.to_string(),
                timeout,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_dialled_from_the_listen_ip_when_it_can_reach_them() {
        let any = PeerClients::bound_to("0.0.0.0".parse().unwrap());
        assert_eq!(any.source_ip("10.0.0.2:7000"), None);
        let private = PeerClients::bound_to("10.0.0.1".parse().unwrap());
        assert_eq!(
            private.source_ip("10.0.0.2:7000"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            private.source_ip("peer.example:7000"),
            Some("10.0.0.1".parse().unwrap())
        );
        let loopback = PeerClients::bound_to("127.0.0.11".parse().unwrap());
        assert_eq!(
            loopback.source_ip("127.0.0.12:7000"),
            Some("127.0.0.11".parse().unwrap())
        );
        assert_eq!(loopback.source_ip("10.0.0.2:7000"), None);
        assert_eq!(loopback.source_ip("peer.example:7000"), None);
    }
}
