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
}

/// The shared CQL server.
pub fn cql_server() -> &'static CqlServer {
    static S: OnceLock<CqlServer> = OnceLock::new();
    S.get_or_init(|| {
        if let Ok(uri) = std::env::var("SCYLLA_URI") {
            return CqlServer { uri };
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
        CqlServer {
            uri: addr.to_owned(),
        }
    })
}
