//! Helpers shared by the binary's integration tests.

use std::process::{Child, Command};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

/// The `vigie` binary, with none of the developer's own `VIGIE__`
/// variables: only what a test sets.
pub(crate) fn vigie() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigie"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VIGIE__") || k == "VIGIE_CONFIG" {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `cmd`, which must succeed, and returns its standard output.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `cmd`, which must fail, and returns its standard error.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn stderr_of_failure(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Appends `count` sample cases of generator `seed` to `topic` with
/// `vigie produce --sample cases` (seeds give distinct ids).
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn produce_sample(bootstrap: &str, topic: &str, count: u64, seed: u64) {
    produce_sample_with(bootstrap, topic, count, seed, &[]);
}

/// [`produce_sample`] with more `VIGIE__` settings in the environment.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn produce_sample_with(
    bootstrap: &str,
    topic: &str,
    count: u64,
    seed: u64,
    env: &[(&str, &str)],
) {
    let out = vigie()
        .args(["produce", "--topic", topic, "--sample", "cases"])
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .env("VIGIE__KAFKA__BROKERS", bootstrap)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP port free right now on 127.0.0.1.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sum of a metric's samples on an instance's `/metrics`; `None` while
/// the endpoint does not answer.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) async fn metric(port: u16, name: &str) -> Option<f64> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// Counts every case row the PostgreSQL sink offers to `health_case` in a
/// committed transaction, after migrating the database: a BEFORE INSERT
/// trigger fires for each proposed row, even one that the upsert then finds
/// already there. The primary key would hide a case applied twice; this
/// count does not. (A write rolled back with its transaction rolls its
/// count back too.) [`writes`] reads it.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) async fn count_writes(pool: &sqlx::PgPool) {
    vigie_consumers::sinks::postgres::migrate::migrate(pool)
        .await
        .unwrap();
    for sql in [
        "CREATE TABLE test_case_writes (event_id uuid NOT NULL)",
        "CREATE FUNCTION test_count_write() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO test_case_writes VALUES (NEW.event_id); RETURN NEW; END $$",
        "CREATE TRIGGER test_count_write BEFORE INSERT ON health_case
           FOR EACH ROW EXECUTE FUNCTION test_count_write()",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
}

/// `(writes, distinct cases written)` counted since [`count_writes`].
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) async fn writes(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM test_case_writes")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A `vigie` process that is killed (SIGKILL) and reaped when dropped, so
/// that a test that fails does not leave it running. Derefs to the
/// [`Child`].
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
#[derive(Debug)]
pub(crate) struct Reaped(Child);

impl std::ops::Deref for Reaped {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // Nothing to do for a child already waited for: `kill` knows it
        // exited and sends no signal.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a command as a [`Reaped`] child.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) trait SpawnReaped {
    /// Spawns it; panics if it cannot start.
    fn spawn_reaped(&mut self) -> Reaped;
}

impl SpawnReaped for Command {
    fn spawn_reaped(&mut self) -> Reaped {
        Reaped(self.spawn().expect("spawn a test process"))
    }
}

/// `vigie consume --sink postgres` of `topic` into the database at `db_url`,
/// with `/metrics` on `port`, quiet: each test adds what it needs.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn postgres_sink(
    bootstrap: &str,
    topic: &str,
    group: &str,
    db_url: &str,
    port: u16,
) -> Command {
    let mut c = vigie();
    c.args([
        "consume", "--sink", "postgres", "--group", group, "--topic", topic,
    ])
    .env("VIGIE__KAFKA__BROKERS", bootstrap)
    .env("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", db_url)
    .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
    .env("RUST_LOG", "warn")
    .stdout(std::process::Stdio::null());
    c
}

/// The sum of the next offsets `group` stored in `sink_offsets`, when it
/// stored any.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) async fn stored_offsets(pool: &sqlx::PgPool, group: &str) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT sum(next_offset)::bigint FROM sink_offsets WHERE consumer_group = $1",
    )
    .bind(group)
    .fetch_one(pool)
    .await
    .ok()
    .flatten()
}

/// The sum over the partitions of `group`'s committed offsets on `topic`
/// (0 where none) on the shared broker; `None` while they cannot be read.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) async fn committed_total(group: &str, topic: &str) -> Option<i64> {
    let lags = vigie_kafka::group_lag(
        &vigie_kafka::Cluster::new(&vigie_testkit::broker().bootstrap),
        group,
        &[topic.to_owned()],
        std::time::Duration::from_secs(10),
    )
    .await
    .ok()?;
    Some(lags.iter().map(|l| l.committed.unwrap_or(0)).sum())
}

/// Waits until `group` has committed at least `n` records of `topic` on the
/// shared broker.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) async fn committed_at_least(group: &str, topic: &str, n: i64) {
    vigie_testkit::wait_for(
        &format!("{n} records of {topic} committed by {group}"),
        std::time::Duration::from_secs(180),
        || async { committed_total(group, topic).await.filter(|c| *c >= n) },
    )
    .await;
}

/// Every row `cql` selects on the CQL server at `uri`.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) async fn cql_rows<R>(uri: &str, cql: String) -> Vec<R>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(uri)
        .build()
        .await
        .unwrap();
    session
        .query_unpaged(cql, &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<R>()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Tells when a transaction is open on a topic: records on the broker that
/// a `read_committed` reader cannot see yet (a partition's high watermark
/// past its last stable offset).
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) struct OpenTransactions {
    topic: String,
    committed: BaseConsumer,
    uncommitted: BaseConsumer,
    partitions: Vec<i32>,
}

#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
impl OpenTransactions {
    pub(crate) fn new(bootstrap: &str, topic: &str) -> Self {
        let client = |isolation| -> BaseConsumer {
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("isolation.level", isolation)
                .create()
                .unwrap()
        };
        let committed = client("read_committed");
        let partitions = committed
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap()
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        Self {
            topic: topic.to_owned(),
            committed,
            uncommitted: client("read_uncommitted"),
            partitions,
        }
    }

    /// Per partition, the high watermark and the last stable offset.
    fn ends(&self) -> Vec<(i64, i64)> {
        let end = |c: &BaseConsumer, p| {
            c.fetch_watermarks(&self.topic, p, Duration::from_secs(5))
                .map_or(0, |(_, high)| high)
        };
        self.partitions
            .iter()
            .map(|p| (end(&self.uncommitted, *p), end(&self.committed, *p)))
            .collect()
    }

    /// A transaction is open now.
    pub(crate) fn any(&self) -> bool {
        self.ends().iter().any(|(high, stable)| high > stable)
    }

    /// Waits until a transaction is open with more records on the topic
    /// than `since`; returns how many there are. Polls without a pause:
    /// a transaction lasts milliseconds.
    pub(crate) fn wait(&self, since: i64) -> i64 {
        let start = std::time::Instant::now();
        loop {
            let ends = self.ends();
            let total = ends.iter().map(|(high, _)| high).sum();
            if total > since && ends.iter().any(|(high, stable)| high > stable) {
                return total;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no transaction open on {} past {since} records: {ends:?}",
                self.topic
            );
        }
    }
}

/// Sends `sig` (`-TERM`, `-STOP`) to the child.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn signal(child: &Reaped, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig}");
}

/// Stops the child with SIGTERM; it must exit cleanly.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn stop(mut child: Reaped) {
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success(), "clean exit after SIGTERM");
}
