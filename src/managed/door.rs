//! door: where this node's managed workers connect.
//!
//! Always over loopback: the worker gate accepts a managed worker's local token only from a
//! loopback peer, and a worker on loopback needs no certificate covering 127.0.0.1 nor a CA
//! its SDK trusts. When the worker port is plain and listens on loopback or on every
//! address, the door is the worker port itself. Otherwise (the port speaks TLS, or listens on
//! one address that is not loopback) the node opens a plain listener of its own on
//! 127.0.0.1, on a port the OS picks, served by the same gateway: the same sessions, the
//! same gate (tokens included), closed on drain and shutdown like the worker port. Traffic
//! on loopback never leaves the host, so TLS there would protect nothing.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use crate::gateway;
use crate::node::Node;

/// Opens the door for this node's managed workers (the worker port is bound to `listen`,
/// with TLS when `tls`) and returns their `III_URL`, without a token.
pub async fn open(node: &Arc<Node>, listen: SocketAddr, tls: bool) -> io::Result<String> {
    if let Some(address) = worker_port_on_loopback(listen, tls) {
        return Ok(format!("ws://{address}"));
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let address = listener.local_addr()?;
    info!(node = node.id, managed_listen = %address, "managed workers connect through a plain listener on loopback");
    tokio::spawn(gateway::serve(node.clone(), listener, None));
    Ok(format!("ws://{address}"))
}

/// The loopback address of the worker port when managed workers can use it as it is: plain,
/// and listening on loopback or on every address.
fn worker_port_on_loopback(listen: SocketAddr, tls: bool) -> Option<SocketAddr> {
    let ip = match listen.ip() {
        _ if tls => return None,
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip if ip.is_loopback() => ip,
        _ => return None,
    };
    Some(SocketAddr::new(ip, listen.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reuse(listen: &str, tls: bool) -> Option<String> {
        worker_port_on_loopback(listen.parse().unwrap(), tls).map(|a| a.to_string())
    }

    #[test]
    fn the_worker_port_is_used_when_plain_and_reachable_on_loopback() {
        assert_eq!(
            reuse("0.0.0.0:4000", false).as_deref(),
            Some("127.0.0.1:4000")
        );
        assert_eq!(
            reuse("127.0.0.1:4000", false).as_deref(),
            Some("127.0.0.1:4000")
        );
        assert_eq!(reuse("[::]:4000", false).as_deref(), Some("[::1]:4000"));
        assert_eq!(reuse("[::1]:4000", false).as_deref(), Some("[::1]:4000"));
        // TLS, or an address that loopback does not reach: a listener of their own.
        assert_eq!(reuse("0.0.0.0:4000", true), None);
        assert_eq!(reuse("127.0.0.1:4000", true), None);
        assert_eq!(reuse("10.0.0.5:4000", false), None);
    }
}
