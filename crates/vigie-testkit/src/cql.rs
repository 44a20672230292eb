//! A CQL server for the tests: `SCYLLA_URI` when set (a ScyllaDB node),
//! else Apache Cassandra on 127.0.0.1:19042, started on first use by
//! `scripts/cassandra start 19042` and shared by every test process, as
//! the broker is. Tests isolate themselves with a keyspace each.

use std::process::Command;
use std::sync::OnceLock;

use crate::broker::{port_open, repo_root};

/// A reachable CQL server.
#[derive(Debug, Clone)]
pub struct CqlServer {
    /// `host:port` for a driver's known nodes.
    pub uri: String,
    /// PEM file of the CA that signs the node's TLS certificate: the
    /// Cassandra node's own when this checkout runs it, else
    /// `SCYLLA_CA_FILE` (none: the TLS test says so and stops).
    pub ca: Option<std::path::PathBuf>,
}

/// The shared CQL server.
pub fn cql_server() -> &'static CqlServer {
    static S: OnceLock<CqlServer> = OnceLock::new();
    S.get_or_init(|| {
        if let Ok(uri) = std::env::var("SCYLLA_URI") {
            let ca = std::env::var_os("SCYLLA_CA_FILE").map(Into::into);
            return CqlServer { uri, ca };
        }
        let addr = "127.0.0.1:19042";
        if !port_open(addr) {
            let out = Command::new(repo_root().join("scripts/cassandra"))
                .args(["start", "19042"])
                .output()
                .expect("run scripts/cassandra");
            assert!(
                out.status.success(),
                "scripts/cassandra start 19042 failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The node's CA is this checkout's only when this checkout's
        // scripts/cassandra runs the node (another checkout's node on the
        // same port has a CA of its own).
        let dir = crate::state_dir().join("cassandra-19042");
        let ours = std::fs::read_to_string(dir.join("cassandra.pid"))
            .is_ok_and(|pid| std::path::Path::new("/proc").join(pid.trim()).exists());
        CqlServer {
            uri: addr.to_owned(),
            ca: ours.then(|| dir.join("tls/ca.pem")),
        }
    })
}

/// An Apache Cassandra node of the test's own (`scripts/cassandra` on free
/// ports), that the test may kill and start again. Its data is removed
/// when it is dropped.
#[derive(Debug)]
pub struct PrivateCql {
    port: u16,
    /// `host:port` for a driver's known nodes.
    pub uri: String,
}

impl PrivateCql {
    /// Starts a new node on free ports (CQL, storage, JMX) and waits until
    /// it answers CQL.
    pub fn start() -> Self {
        let port = crate::broker::free_ports(3);
        let node = Self {
            port,
            uri: format!("127.0.0.1:{port}"),
        };
        node.script("start");
        node
    }

    /// Kills it (SIGKILL) and waits until the process is gone.
    pub fn kill(&self) {
        self.script("kill");
    }

    /// Starts it again on the same ports and data, and waits until it
    /// answers.
    pub fn restart(&self) {
        self.script("start");
    }

    fn script(&self, cmd: &str) {
        crate::broker::run_ok(
            Command::new(repo_root().join("scripts/cassandra")).args([cmd, &self.port.to_string()]),
        );
    }
}

impl Drop for PrivateCql {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/cassandra"))
            .args(["reset", &self.port.to_string()])
            .output();
    }
}
