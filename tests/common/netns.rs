//! A private network of Linux network namespaces for partition tests (needs root and `ip`).
//!
//! Every node gets its own namespace with two links:
//! - `eth0`, a veth whose other end is a port of a bridge in a hub namespace of the lab's own:
//!   the cluster network, `10.K.0.0/24`, node `i` at `10.K.0.i`;
//! - `wk0`, a veth whose other end is in the test's namespace: the worker network of node `i`,
//!   `10.K.i.0/24`, the node at `.2`, the test at `.1`, so the test reaches worker ports.
//!
//! A partition takes a node's bridge port down: the cluster network loses the node while the
//! test still talks to its workers. Every address lives on these veths only, so no packet
//! leaves the machine. Dropping the lab kills its nodes by PID, then deletes its links and
//! namespaces, also when the test panics.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::certs::Certs;
use super::{cluster_cli_as, Node, NodeOptions};

/// The cluster gRPC port every node listens on (each has its own address).
pub const CLUSTER_PORT: u16 = 7000;
/// The worker WebSocket port every node listens on.
pub const WORKER_PORT: u16 = 7100;

/// Runs `ip ARGS`; the error names the command and what it printed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be made here, if they cannot: not root, or no `ip`.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root".into());
    }
    match Command::new("ip").arg("-V").stdout(Stdio::null()).status() {
        Ok(status) if status.success() => None,
        _ => Some("the `ip` command (iproute2) is not available".into()),
    }
}

/// The lab: namespaces, links and the nodes running in them.
pub struct NetnsLab {
    /// Node `i` (0-based) runs in `namespaces[i]`; `None` until started.
    pub nodes: Vec<Option<Node>>,
    pub namespaces: Vec<String>,
    hub: String,
    /// The second octet of every address of this lab.
    octet: u8,
    /// Links made in the test's namespace, deleted on drop.
    root_links: Vec<String>,
    /// Namespaces made so far, deleted on drop.
    made: Vec<String>,
    dir: tempfile::TempDir,
    /// The nodes listen on non-loopback addresses, so they run with certificates.
    certs: Certs,
}

impl NetnsLab {
    /// Makes the namespaces and links for `n` nodes (none started yet).
    pub fn create(n: usize) -> Result<NetnsLab, String> {
        let pid = std::process::id();
        let mut lab = NetnsLab {
            nodes: (0..n).map(|_| None).collect(),
            namespaces: (1..=n).map(|i| format!("quorum-t{pid}-n{i}")).collect(),
            hub: format!("quorum-t{pid}-hub"),
            octet: free_octet()?,
            root_links: Vec::new(),
            made: Vec::new(),
            dir: tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?,
            certs: Certs::new(),
        };
        let hub = lab.hub.clone();
        lab.add_namespace(&hub)?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = lab.namespaces[i].clone();
            lab.add_namespace(&ns)?;
            let port = format!("c{}", i + 1);
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            let cluster_ip = format!("{}/24", lab.cluster_ip(i));
            ip(&["-n", &ns, "addr", "add", &cluster_ip, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;

            let root_link = format!("qt{pid}w{}", i + 1);
            ip(&[
                "link", "add", &root_link, "type", "veth", "peer", "name", "wk0", "netns", &ns,
            ])?;
            lab.root_links.push(root_link.clone());
            let test_side = format!("10.{}.{}.1/24", lab.octet, i + 1);
            ip(&["addr", "add", &test_side, "dev", &root_link])?;
            ip(&["link", "set", &root_link, "up"])?;
            let node_side = format!("{}/24", lab.worker_ip(i));
            ip(&["-n", &ns, "addr", "add", &node_side, "dev", "wk0"])?;
            ip(&["-n", &ns, "link", "set", "wk0", "up"])?;
        }
        Ok(lab)
    }

    /// The lab for `n` nodes, or `None` (the reason printed as SKIPPED) where namespaces cannot
    /// be made: not root, or no `ip`. Under CI as root, failing to make them is a failure.
    pub fn create_or_skip(n: usize) -> Option<NetnsLab> {
        if let Some(reason) = unavailable() {
            println!("SKIPPED: {reason}");
            return None;
        }
        match NetnsLab::create(n) {
            Ok(lab) => Some(lab),
            Err(reason) => {
                let root = unsafe { libc::geteuid() } == 0;
                if root && std::env::var("CI").as_deref() == Ok("true") {
                    panic!("CI runs as root, yet the network namespaces failed: {reason}");
                }
                println!("SKIPPED: cannot make network namespaces: {reason}");
                None
            }
        }
    }

    /// Starts every node: node 0 founds the cluster and the others join it.
    pub fn start_all(&mut self) {
        self.start(0, &[]);
        let seed = self.cluster_addr(0);
        for i in 1..self.nodes.len() {
            self.start(i, &["--join", &seed]);
        }
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.made.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// Node `i`'s address on the cluster network.
    pub fn cluster_ip(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.octet, i + 1)
    }

    /// Node `i`'s address on its worker link.
    pub fn worker_ip(&self, i: usize) -> String {
        format!("10.{}.{}.2", self.octet, i + 1)
    }

    /// Node `i`'s cluster address (`host:port`).
    pub fn cluster_addr(&self, i: usize) -> String {
        format!("{}:{CLUSTER_PORT}", self.cluster_ip(i))
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespaces[i]]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// The data directory of node `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{}", i + 1))
    }

    /// Starts node `i` (Raft id `i + 1`) in its namespace with extra `args`.
    pub fn start(&mut self, i: usize, args: &[&str]) {
        let dir = self.data_dir(i);
        std::fs::create_dir_all(&dir).expect("node data dir");
        let mut all = vec![
            "--node-id".to_string(),
            (i + 1).to_string(),
            "--advertise".to_string(),
            self.cluster_addr(i),
            "--certs-dir".to_string(),
            self.certs
                .node_dir_for(&(i + 1).to_string(), &[self.cluster_ip(i)])
                .display()
                .to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let node = Node::start_in(
            &dir,
            NodeOptions {
                listen: Some(format!("{}:{WORKER_PORT}", self.worker_ip(i))),
                cluster_listen: Some(self.cluster_addr(i)),
                args: all,
                wrapper: self.wrapper(i),
                ..NodeOptions::default()
            },
        );
        self.nodes[i] = Some(node);
    }

    /// Node `i`, which must be running.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// `quorum cluster status` of node `i`, asked from inside its namespace.
    pub fn status(&self, i: usize) -> Option<Value> {
        cluster_cli_as(
            &self.wrapper(i),
            &self.certs.admin_args(),
            &self.cluster_addr(i),
            &["status"],
        )
        .ok()
    }

    /// `quorum worker ARGS --json` asked of node `i` from inside its namespace, with the
    /// admin certificate.
    pub fn worker_cli(&self, i: usize, args: &[&str]) -> Result<Value, String> {
        super::cli_json(
            &self.wrapper(i),
            "worker",
            &self.admin_args(),
            &self.cluster_addr(i),
            args,
        )
    }

    /// The arguments that present the admin certificate to an operator command.
    pub fn admin_args(&self) -> Vec<String> {
        self.certs.admin_args()
    }

    /// Cuts node `i` off the cluster network (its bridge port goes down).
    pub fn cut(&self, i: usize) {
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            &format!("c{}", i + 1),
            "down",
        ])
        .expect("cut link");
    }

    /// Puts node `i` back on the cluster network.
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.hub, "link", "set", &format!("c{}", i + 1), "up"]).expect("heal link");
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        super::log_tails((0..self.nodes.len()).map(|i| self.data_dir(i)), 40)
    }
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        // Processes first: a namespace lives on while a process is in it.
        for node in self.nodes.iter_mut().flatten() {
            node.kill();
        }
        for link in &self.root_links {
            let _ = ip(&["link", "del", link]);
        }
        for ns in self.made.iter().rev() {
            if let Err(err) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {err}");
            }
        }
    }
}

/// A second octet `K` such that no route of this machine is in `10.K.0.0/16` yet (the lab's
/// /24 routes are more specific than any wider one).
fn free_octet() -> Result<u8, String> {
    let output = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    let routes = String::from_utf8_lossy(&output.stdout);
    let start = (std::process::id() % 50) as u8;
    (0..50u8)
        .map(|k| 200 + (start + k) % 50)
        .find(|k| {
            let prefix = format!("10.{k}.");
            !routes.lines().any(|line| line.contains(&prefix))
        })
        .ok_or_else(|| "no free 10.K.0.0/16 range for the test network".to_string())
}
