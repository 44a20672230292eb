//! Start-or-reuse of the shared test brokers.
//!
//! Every test process asks for the same two brokers (memory storage on
//! port 19092 for speed; SQLite storage on 19093 where watermarks, offsets
//! by time and restarts must be right). The first process to ask starts
//! them, detached, under a file lock; the others find the port open and reuse
//! them. Tests isolate themselves by using a unique topic and group each.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The storage engine of a test broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `memory://`: fast; its ListOffsets answers are wrong (see docs/tansu.md).
    Memory,
    /// `sqlite://`: a file; survives a restart, right watermarks.
    Sqlite,
}

/// A reachable broker.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Bootstrap servers for clients.
    pub bootstrap: String,
    /// Its storage engine (assumed `Memory` for an external broker given by
    /// `VIGIE_TEST_BROKER`, `Sqlite` for `VIGIE_TEST_DURABLE_BROKER`).
    pub storage: Storage,
    /// True when the broker is Tansu started by this harness.
    pub is_tansu: bool,
}

/// The shared fast broker.
pub fn broker() -> &'static Broker {
    static B: OnceLock<Broker> = OnceLock::new();
    B.get_or_init(|| start_or_reuse(Storage::Memory, "VIGIE_TEST_BROKER", 19092))
}

/// The shared broker with durable, correct offsets.
pub fn durable_broker() -> &'static Broker {
    static B: OnceLock<Broker> = OnceLock::new();
    B.get_or_init(|| start_or_reuse(Storage::Sqlite, "VIGIE_TEST_DURABLE_BROKER", 19093))
}

fn state_dir() -> PathBuf {
    let d = std::env::temp_dir().join("vigie-test");
    std::fs::create_dir_all(&d).expect("create the test state directory");
    d
}

/// The Tansu binary to run.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let c = dir.join("tansu");
            if c.is_file() {
                return c;
            }
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cargo/bin/tansu")
}

fn port_open(addr: &str) -> bool {
    TcpStream::connect_timeout(
        &addr.parse().expect("a socket address"),
        Duration::from_millis(200),
    )
    .is_ok()
}

#[expect(
    clippy::zombie_processes,
    reason = "the broker is detached on purpose: it outlives this process and serves the next ones"
)]
fn start_or_reuse(storage: Storage, env: &str, port: u16) -> Broker {
    if let Ok(b) = std::env::var(env) {
        return Broker {
            bootstrap: b,
            storage,
            is_tansu: false,
        };
    }
    let addr = format!("127.0.0.1:{port}");
    let broker = Broker {
        bootstrap: addr.clone(),
        storage,
        is_tansu: true,
    };
    if port_open(&addr) {
        return broker;
    }
    let dir = state_dir();
    let lock = std::fs::File::create(dir.join(format!("tansu-{port}.lock")))
        .expect("create the broker lock file");
    lock.lock().expect("lock the broker lock file");
    if port_open(&addr) {
        return broker;
    }
    let engine = match storage {
        Storage::Memory => "memory://tansu/".to_owned(),
        Storage::Sqlite => {
            // Tansu resolves the SQLite path against its working directory.
            format!("sqlite://tansu-{port}.db")
        }
    };
    let log = std::fs::File::create(dir.join(format!("tansu-{port}.log")))
        .expect("create the broker log");
    let bin = tansu_bin();
    // setsid: the broker outlives this test process and is shared by the next.
    let child = Command::new("setsid")
        .arg(&bin)
        .arg("broker")
        .args(["--listener-url", &format!("tcp://{addr}")])
        .args(["--advertised-listener-url", &format!("tcp://{addr}")])
        .args(["--storage-engine", &engine])
        .arg("--silent")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start Tansu ({}): {e}; run scripts/setup, or set {env}",
                bin.display()
            )
        });
    std::fs::write(
        dir.join(format!("tansu-{port}.pid")),
        child.id().to_string(),
    )
    .expect("write the broker pid file");
    let start = Instant::now();
    while !port_open(&addr) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Tansu did not open {addr} within 30 s; see {}",
            dir.join(format!("tansu-{port}.log")).display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}
