//! Certificates for secure test clusters, made with the `quorum cert` commands a user runs:
//! one CA, an operator certificate (`admin`), and one directory per node holding `ca.crt`
//! and that node's own `node.crt`/`node.key` (valid for 127.0.0.1 and localhost).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A CA and the certificates made from it, in a temp dir removed on drop.
pub struct Certs {
    root: tempfile::TempDir,
}

impl Certs {
    /// A new CA with an `admin` operator certificate.
    pub fn new() -> Certs {
        let certs = Certs {
            root: tempfile::tempdir().expect("temp dir"),
        };
        let ca = certs.ca_dir();
        cert(&["create-ca", "--certs-dir", path(&ca)]);
        cert(&["create-client", "--certs-dir", path(&ca), "admin"]);
        certs
    }

    /// The CA's directory: `ca.crt`, `ca.key`, `client.admin.crt`/`.key`. The `--certs-dir`
    /// an operator command takes.
    pub fn ca_dir(&self) -> PathBuf {
        self.root.path().join("ca")
    }

    /// The `--certs-dir` of node `name`, made on first use with its own key, valid for
    /// 127.0.0.1 and localhost.
    pub fn node_dir(&self, name: &str) -> PathBuf {
        self.node_dir_for(name, &[])
    }

    /// [`Certs::node_dir`] valid for `extra_hosts` too (the loopback IPs of relays, say).
    pub fn node_dir_for(&self, name: &str, extra_hosts: &[String]) -> PathBuf {
        let dir = self.root.path().join(format!("node-{name}"));
        if !dir.join("node.crt").exists() {
            let mut args = vec!["create-node", "127.0.0.1", "localhost"];
            args.extend(extra_hosts.iter().map(String::as_str));
            self.signed_dir(&dir, &args);
        }
        dir
    }

    /// A directory with `ca.crt` and whatever `args` (a `quorum cert` signing command
    /// without its directory flags) make there, signed by this CA.
    pub fn signed_dir(&self, dir: &Path, args: &[&str]) {
        std::fs::create_dir_all(dir).expect("certs dir");
        std::fs::copy(self.ca_dir().join("ca.crt"), dir.join("ca.crt")).expect("copy ca.crt");
        let ca_key = self.ca_dir().join("ca.key");
        let mut all = vec![args[0], "--certs-dir", path(dir), "--ca-key", path(&ca_key)];
        all.extend_from_slice(&args[1..]);
        cert(&all);
    }

    /// The arguments that make a `quorum cluster` command present the admin certificate.
    pub fn admin_args(&self) -> Vec<String> {
        vec![
            "--certs-dir".to_string(),
            self.ca_dir().display().to_string(),
        ]
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Runs `quorum cert ARGS` and panics with its output when it fails.
pub fn cert(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .arg("cert")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run quorum cert");
    assert!(
        output.status.success(),
        "quorum cert {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
