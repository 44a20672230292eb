//! Apache Kafka for the tests: one shared broker, and private ones for the
//! tests that stop or kill their broker.
//!
//! Every test process asks for the same shared broker on port 19092. The
//! first one to ask starts it with `scripts/kafka start 19092` (which holds
//! a lock, so that processes asking at once start one broker); the others
//! find the port open and reuse it. Tests isolate themselves with a unique
//! topic and group each, so the broker outlives the test run and serves the
//! next one.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// A reachable broker.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Bootstrap servers for clients.
    pub bootstrap: String,
}

/// The shared broker: `VIGIE_TEST_BROKER` when set, else Apache Kafka on
/// 127.0.0.1:19092, started on first use.
pub fn broker() -> &'static Broker {
    static B: OnceLock<Broker> = OnceLock::new();
    B.get_or_init(|| {
        if let Ok(bootstrap) = std::env::var("VIGIE_TEST_BROKER") {
            return Broker { bootstrap };
        }
        let addr = "127.0.0.1:19092";
        if !port_open(addr) {
            scripts_kafka("start", 19092);
        }
        Broker {
            bootstrap: addr.to_owned(),
        }
    })
}

/// The top of the source tree (where `scripts/` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the source tree")
}

pub(crate) fn port_open(addr: &str) -> bool {
    TcpStream::connect_timeout(
        &addr.parse().expect("a socket address"),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Runs `scripts/kafka CMD PORT`, which returns once the broker answers (or
/// is gone).
fn scripts_kafka(cmd: &str, port: u16) {
    scripts_kafka_with(cmd, port, &[]);
}

/// `scripts/kafka CMD PORT`, with `KAFKA_SASL_USERS` made of `users`.
fn scripts_kafka_with(cmd: &str, port: u16, users: &[(String, String)]) {
    let mut command = Command::new(repo_root().join("scripts/kafka"));
    command.args([cmd, &port.to_string()]);
    if !users.is_empty() {
        let list: Vec<String> = users.iter().map(|(u, p)| format!("{u}={p}")).collect();
        command.env("KAFKA_SASL_USERS", list.join(" "));
    }
    run_ok(&mut command);
}

/// Runs `command` (a script of the repository) and fails the test, with
/// its standard error, unless it succeeds.
pub(crate) fn run_ok(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs one of Apache Kafka's tools (`scripts/kafka-cli TOOL`) against
/// `bootstrap` and returns its output; panics when it fails.
pub fn kafka_tool(bootstrap: &str, tool: &str, args: &[&str]) -> String {
    run_ok(
        Command::new(repo_root().join("scripts/kafka-cli"))
            .args([tool, "--bootstrap-server", bootstrap])
            .args(args),
    )
}

/// A broker of one test's own, on a free pair of ports (client, controller),
/// that the test may stop, kill and start again. Its data is removed when
/// it is dropped.
#[derive(Debug)]
pub struct PrivateKafka {
    port: u16,
    users: Vec<(String, String)>,
    /// Bootstrap servers for clients.
    pub bootstrap: String,
}

impl PrivateKafka {
    /// Starts a new broker on free ports and waits until it answers.
    pub fn start() -> Self {
        Self::start_with_sasl(&[])
    }

    /// Starts a new broker that also has SASL listeners
    /// ([`sasl_bootstrap`](Self::sasl_bootstrap),
    /// [`sasl_ssl_bootstrap`](Self::sasl_ssl_bootstrap)) knowing `users`
    /// (name, password), and a mutual-TLS one
    /// ([`mtls_bootstrap`](Self::mtls_bootstrap)) knowing them by their
    /// client certificates, with Kafka's authorizer: there a user may do only what
    /// an ACL allows it ([`acls`](Self::acls)); on
    /// [`bootstrap`](Self::bootstrap), everything.
    pub fn start_with_sasl(users: &[(&str, &str)]) -> Self {
        let port = free_ports(5);
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect();
        scripts_kafka_with("start", port, &users);
        Self {
            port,
            users,
            bootstrap: format!("127.0.0.1:{port}"),
        }
    }

    /// The SASL_PLAINTEXT listener of a broker started with users (PLAIN,
    /// SCRAM-SHA-256, SCRAM-SHA-512).
    pub fn sasl_bootstrap(&self) -> String {
        self.listener(2)
    }

    /// The SASL_SSL listener of a broker started with users (PLAIN,
    /// SCRAM-SHA-256, SCRAM-SHA-512), whose certificate, for `127.0.0.1`
    /// and `localhost`, [`ca_file`](Self::ca_file) signs.
    pub fn sasl_ssl_bootstrap(&self) -> String {
        self.listener(3)
    }

    /// The SSL listener of a broker started with users, which requires a
    /// client certificate ([`client_cert`](Self::client_cert)) signed by
    /// [`ca_file`](Self::ca_file): `CN=NAME` is the principal `User:NAME`.
    pub fn mtls_bootstrap(&self) -> String {
        self.listener(4)
    }

    /// The PEM file of the CA of this broker's TLS listeners.
    pub fn ca_file(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }

    /// The client certificate of `user` for the
    /// [`mtls_bootstrap`](Self::mtls_bootstrap) listener, and its private
    /// key, encrypted with the user's password.
    pub fn client_cert(&self, user: &str) -> (PathBuf, PathBuf) {
        assert!(
            self.users.iter().any(|(u, _)| u == user),
            "{user} is not a user of this broker"
        );
        let dir = self.tls_dir().join("clients");
        (
            dir.join(format!("{user}.crt")),
            dir.join(format!("{user}.key")),
        )
    }

    fn tls_dir(&self) -> PathBuf {
        crate::state_dir().join(format!("kafka-{}/tls", self.port))
    }

    fn listener(&self, offset: u16) -> String {
        assert!(
            !self.users.is_empty(),
            "a broker started without SASL users has no SASL listener"
        );
        format!("127.0.0.1:{}", self.port + offset)
    }

    /// Runs Kafka's `kafka-acls` against this broker with `args` (such as
    /// `--add --allow-principal User:u --operation Write --topic t`).
    pub fn acls(&self, args: &[&str]) {
        kafka_tool(&self.bootstrap, "kafka-acls", args);
    }

    /// Allows `user` the `operations` (`Read`, `Write`, `Describe`...) on
    /// `resource` (`--topic t`, `--group g`, `--transactional-id id`, with
    /// `--resource-pattern-type prefixed` for a prefix).
    pub fn allow(&self, user: &str, operations: &[&str], resource: &[&str]) {
        let principal = format!("User:{user}");
        let mut args = vec!["--add", "--allow-principal", &principal];
        for op in operations {
            args.extend(["--operation", op]);
        }
        args.extend(resource);
        self.acls(&args);
    }

    /// Stops it gracefully (SIGTERM) and waits until the process is gone.
    pub fn stop(&self) {
        scripts_kafka("stop", self.port);
    }

    /// Kills it (SIGKILL) and waits until the process is gone.
    pub fn kill(&self) {
        scripts_kafka("kill", self.port);
    }

    /// Starts it again on the same ports and data, and waits until it answers.
    pub fn restart(&self) {
        scripts_kafka_with("start", self.port, &self.users);
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/kafka"))
            .args(["reset", &self.port.to_string()])
            .output();
    }
}

/// A port P such that P to P+n-1 are all free now (the broker's client,
/// controller, SASL_PLAINTEXT, SASL_SSL and SSL listeners), taken from a range
/// no shared broker uses.
pub(crate) fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let p = l.local_addr().expect("local address").port();
        if p <= u16::MAX - n && (1..n).all(|i| TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
    panic!("no {n} free ports in a row for a private broker");
}
