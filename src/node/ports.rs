//! Binding the node's listeners, with an error that says what to do when a port is taken.
//!
//! The default ports (49134 for workers, 49180 for HTTP) lie inside Linux's default ephemeral
//! range, so an outgoing connection of any process can hold one just before the node binds.
//! The bind error names the port and, when it is in the kernel's ephemeral range, says how to
//! reserve it.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Where Linux keeps the range it picks outgoing connections' local ports from.
const EPHEMERAL_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr}: {source}{advice}")]
pub struct BindError {
    what: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
    advice: String,
}

/// Binds `addr` for `what` (workers, peers, HTTP).
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let advice = if source.kind() == std::io::ErrorKind::AddrInUse {
            in_use_advice(addr.port(), ephemeral_range())
        } else {
            String::new()
        };
        BindError {
            what,
            addr,
            source,
            advice,
        }
    })
}

/// The kernel's ephemeral port range, when it can be read.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string(EPHEMERAL_RANGE_FILE).ok()?;
    parse_range(&text)
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    Some((bounds.next()?.ok()?, bounds.next()?.ok()?))
}

fn in_use_advice(port: u16, range: Option<(u16, u16)>) -> String {
    let mut advice = format!(" (port {port} is already in use");
    if let Some((low, high)) = range.filter(|(low, high)| (*low..=*high).contains(&port)) {
        advice.push_str(&format!(
            "; it lies in the kernel's ephemeral port range {low}-{high}, so an outgoing \
             connection may hold it: reserve it with `sysctl -w net.ipv4.ip_local_reserved_ports={port}` \
             (see docs/operations.md, \"Ports\")"
        ));
    }
    advice.push(')');
    advice
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_range_format() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("garbage"), None);
    }

    #[test]
    fn advice_names_the_sysctl_only_inside_the_range() {
        let inside = in_use_advice(49134, Some((32768, 60999)));
        assert!(inside.contains("port 49134"), "{inside}");
        assert!(
            inside.contains("net.ipv4.ip_local_reserved_ports=49134"),
            "{inside}"
        );
        let outside = in_use_advice(8080, Some((32768, 60999)));
        assert!(outside.contains("port 8080"), "{outside}");
        assert!(!outside.contains("reserved_ports"), "{outside}");
    }
}
