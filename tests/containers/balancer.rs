//! The client Service in front of the chart's pods: HAProxy (the Debian-built stand-in
//! image) in a container on the clients network, sending each new worker connection to a
//! pod that passes the rendered readiness probe, as a Service picks endpoints. Like a
//! Service it leaves established connections alone when a pod turns unready: a draining pod
//! closes its workers' sockets itself once their calls are done, and a fenced one at once. Pods are found by container name
//! through Docker's DNS, so a restarted pod's new address is picked up.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use super::images::HAPROXY;
use super::pods::Pods;

/// The balancer container of a test run (removed with the run's scope).
pub struct Balancer {
    /// The host address workers connect to.
    pub addr: SocketAddr,
    _config: tempfile::TempDir,
}

impl Balancer {
    /// Starts the balancer over every pod of `pods`.
    pub async fn start(pods: &Pods) -> Balancer {
        let chart = &pods.chart;
        let worker = chart.port("worker");
        let readiness = chart.probe("readinessProbe").expect("readiness probe");
        let servers: String = (0..chart.replicas())
            .map(|i| {
                format!(
                    "    server {} {}:{worker}\n",
                    chart.pod_name(i),
                    pods.container(i)
                )
            })
            .collect();
        let config = format!(
            "global\n    maxconn 1024\n\
             resolvers docker\n    nameserver dns 127.0.0.11:53\n    hold valid 1s\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n    timeout tunnel 1h\n    retries 3\n    option redispatch\n\
             frontend workers\n    bind :{worker}\n    default_backend pods\n\
             backend pods\n    balance leastconn\n    option httpchk\n    http-check send meth GET uri {path}\n    http-check expect status 200\n\
             \x20   default-server check port {check} inter 500ms fall 2 rise 2 resolvers docker init-addr last,libc,none\n{servers}",
            path = readiness.path,
            check = readiness.port,
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).expect("haproxy config");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .expect("chmod haproxy config");

        let docker = pods.docker();
        let name = pods.scope().name("balancer");
        let [flag, label] = pods.scope().label();
        let mount = format!("{}:/usr/local/etc/haproxy/haproxy.cfg:ro", file.display());
        let publish = format!("127.0.0.1::{worker}");
        docker.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            &flag,
            &label,
            "--network",
            &pods.clients,
            "-v",
            &mount,
            "-p",
            &publish,
            HAPROXY,
        ]);
        let addr = super::common::eventually(
            "the balancer's port",
            std::time::Duration::from_secs(10),
            || async { docker.host_port(&name, worker) },
        )
        .await;
        Balancer { addr, _config: dir }
    }

    /// The URL a worker uses, with the chart's bootstrap token.
    pub fn url(&self, token: &str) -> String {
        format!("ws://{}/?token={token}", self.addr)
    }
}
