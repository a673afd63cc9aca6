//! haproxy (a real TCP load balancer) in TCP mode in front of the nodes' worker ports,
//! round robin, health-checked by connecting (a draining node closes its listener).
//! Needs the `haproxy` binary (CI installs Debian's package); [`find`] says whether it is
//! there so a test can skip locally and fail under CI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_address;

/// A running haproxy, killed by PID when dropped.
pub struct Haproxy {
    child: Child,
    /// The URL workers connect to (`ws://127.0.0.1:PORT`).
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts `binary` in front of `backends` and waits until its frontend listens.
    pub fn start(binary: &PathBuf, backends: &[SocketAddr]) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let front = free_address();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("  server node{} {addr} check\n", i + 1))
            .collect();
        let config = format!(
            "global\n  maxconn 512\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5m\n  timeout server 5m\n  retries 3\n  option redispatch\n\
             frontend workers\n  bind {front}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n  default-server inter 200ms fall 1 rise 2\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("haproxy config");
        let check = Command::new(binary)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run haproxy -c");
        assert!(check.status.success(), "haproxy config invalid: {check:?}");
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let port: u16 = front
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("frontend port");
        let haproxy = Haproxy {
            child,
            url: format!("ws://{front}"),
            _dir: dir,
        };
        wait_listening(port);
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The haproxy binary, if installed.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file())
}

/// The haproxy binary; `None` after saying why the test is skipped (a failure under CI).
pub fn find_or_skip() -> Option<PathBuf> {
    let found = find();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "haproxy is required under CI (.ci/run installs it)"
        );
        eprintln!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
    }
    found
}

/// Waits (up to 10 s) until a socket listens on loopback `port`, read from `/proc/net/tcp`
/// so that no probe connection goes through the balancer and moves its round robin.
fn wait_listening(port: u16) {
    let wanted = format!(":{port:04X}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let listening = table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1).is_some_and(|local| local.ends_with(&wanted))
                && fields.get(3) == Some(&"0A")
        });
        if listening {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "haproxy did not listen on {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
