//! The `vigie` binary as a user runs it: configuration errors, schema
//! checks, a consumer stopped by SIGTERM or SIGINT mid-stream, `/readyz`
//! naming the dependency that is down, and the simulator's telemetry.

mod common;

use common::{SpawnReaped, free_port, metric, produce_sample, vigie};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::{Connection, Executor};
use vigie_testkit::{TestDb, broker, create_topic, create_topic_and_dlq, unique_name, wait_for};

/// `vigie config check` of a file holding `toml`, which it must refuse
/// (exit 2): its standard error.
fn refused_config(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigie.toml");
    std::fs::write(&file, toml).unwrap();
    let out = vigie()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    err
}

#[test]
fn a_config_typo_is_an_error_naming_the_key_and_its_line() {
    let err = refused_config(
        "[kafka]\nbrokers = \"b:9092\"\n\n[kafka.consumer]\ngroup_id = \"g\"\nbatch_max_recrods = 5\n",
    );
    assert!(err.contains("kafka.consumer.batch_max_recrods"), "{err}");
    assert!(err.contains("line 6"), "{err}");
    assert!(
        err.contains("batch_max_records"),
        "the error lists the valid keys: {err}"
    );
}

#[test]
fn ingest_refuses_an_unknown_source_and_a_bad_option_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigie.toml");
    let run = |toml: &str| {
        std::fs::write(&file, toml).unwrap();
        let out = vigie()
            .arg("--config")
            .arg(&file)
            .args(["ingest", "--until-caught-up"])
            .env("VIGIE__TELEMETRY__LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("[producers.sources.cdc-casse]\nurl = \"http://x\"\ntopic = \"t\"\n");
    assert!(err.contains("unknown source `cdc_casse`"), "{err}");
    assert!(err.contains("cdc-cases, who-covid, who-don"), "{err}");
    let err = run(
        "[producers.sources.who-don]\nurl = \"http://x/news\"\ntopic = \"t\"\n\
         [producers.sources.who-don.options]\nrequests_per_secnd = 3\n",
    );
    assert!(err.contains("producers.sources.who-don.options"), "{err}");
    assert!(err.contains("requests_per_secnd"), "{err}");
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigie.toml");
    std::fs::write(&file, "[kafka]\nbrokers = \"kafka-1:9092\"\n").unwrap();
    let out = vigie()
        .args(["config", "check"])
        .arg(&file)
        .env("VIGIE__KAFKA__SECURITY__SASL_PASSWORD", "hunter2")
        .env(
            "VIGIE__KAFKA__SECURITY__SSL_CERTIFICATE_FILE",
            "/etc/vigie/c.pem",
        )
        .env("VIGIE__KAFKA__SECURITY__SSL_KEY_FILE", "/etc/vigie/c.key")
        .env("VIGIE__KAFKA__SECURITY__SSL_KEY_PASSWORD", "hunter4")
        .env("VIGIE__KAFKA__PRODUCER__LINGER_MS", "7")
        .env(
            "VIGIE__CONSUMERS__SINKS__POSTGRES__URL",
            "postgres://u:hunter3@localhost/x",
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("kafka-1:9092"), "file layer applied: {text}");
    assert!(
        text.contains("linger_ms = 7"),
        "environment layer applied: {text}"
    );
    assert!(
        text.contains("health.case.v1"),
        "embedded topics present: {text}"
    );
    assert!(text.contains("***") && !text.contains("hunter2"), "{text}");
    assert!(
        text.contains("ssl_key_password = \"***\"") && !text.contains("hunter4"),
        "the client key's password is redacted: {text}"
    );
    assert!(
        text.contains("url = \"postgres://u:***@localhost/x\"") && !text.contains("hunter3"),
        "a password inside a URL is redacted too: {text}"
    );

    // A secret written in the file is refused.
    let err = refused_config("[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_password = \"x\"\n");
    assert!(
        err.contains("kafka.security.sasl_password") && err.contains("line 3"),
        "{err}"
    );

    // A client certificate without its key is refused, naming both.
    let err =
        refused_config("[kafka.security]\nprotocol = \"ssl\"\nssl_certificate_file = \"c.pem\"\n");
    assert!(
        err.contains("ssl_certificate_file") && err.contains("ssl_key_file"),
        "{err}"
    );
}

/// The lag client is built from the cluster's connection settings like
/// every other Kafka client: told to authenticate with SASL, it cannot
/// talk to the plaintext test broker, and says so without the password.
#[tokio::test]
async fn the_lag_client_uses_the_security_settings_and_never_shows_the_password() {
    let b = broker();
    let topic = unique_name("health.case.v1");
    let lag = |protocol: &str| {
        vigie()
            .args(["lag", "--group", "g", "--topic", &topic])
            .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
            .env("VIGIE__KAFKA__SECURITY__PROTOCOL", protocol)
            .env("VIGIE__KAFKA__SECURITY__SASL_MECHANISM", "PLAIN")
            .env("VIGIE__KAFKA__SECURITY__SASL_USERNAME", "vigie-lag")
            .env("VIGIE__KAFKA__SECURITY__SASL_PASSWORD", "hunter4-secret")
            .output()
            .unwrap()
    };
    create_topic(&b.bootstrap, &topic, 2).await;

    let out = lag("plaintext");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("total lag of group g: 0"), "{text}");

    let out = lag("sasl_plaintext");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("security.protocol=sasl_plaintext"),
        "the error names the connection it tried: {err}"
    );
    let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!all.contains("hunter4-secret"), "{all}");
}

#[test]
fn schemas_check_passes_on_the_repository_and_fails_on_a_breaking_version() {
    let out = vigie()
        .args(["schemas", "check"])
        .arg(vigie_testkit::repo_root().join("schemas"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok    health.case"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let v1 =
        std::fs::read_to_string(vigie_testkit::repo_root().join("schemas/health.case.v1.json"))
            .unwrap();
    std::fs::write(dir.path().join("health.case.v1.json"), &v1).unwrap();
    let mut v2: serde_json::Value = serde_json::from_str(&v1).unwrap();
    v2["properties"].as_object_mut().unwrap().remove("hosp_yn");
    v2["required"] = serde_json::Value::Array(
        v2["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| *f != "hosp_yn")
            .cloned()
            .collect(),
    );
    std::fs::write(dir.path().join("health.case.v2.json"), v2.to_string()).unwrap();
    let out = vigie()
        .args(["schemas", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  health.case") && text.contains("hosp_yn"),
        "{text}"
    );
}

/// Records on the topic of a mid-stream stop: enough that, at the pace
/// below, consuming them all takes many seconds.
const MID_STREAM_TOTAL: u64 = 20_000;

/// Sum over partitions of the group's committed offsets (0 where none).
async fn committed(bootstrap: &str, group: &str, topic: &str) -> Option<(u64, u64)> {
    let lags = vigie_kafka::group_lag(
        &vigie_kafka::Cluster::new(bootstrap),
        group,
        &[topic.to_owned()],
        Duration::from_secs(10),
    )
    .await
    .ok()?;
    let committed: i64 = lags.iter().map(|l| l.committed.unwrap_or(0)).sum();
    let lag: i64 = lags.iter().map(|l| l.lag).sum();
    Some((committed as u64, lag as u64))
}

/// Starts a consumer on a loaded topic, sends `signal` once some but not
/// all records are committed, and checks that it finished and committed
/// the batch in flight, committed exactly what it processed, and exited 0
/// in bounded time.
async fn stop_mid_stream(signal: &str) {
    let b = broker();
    let topic = unique_name("health.case.v1");
    let group = unique_name("g");
    create_topic_and_dlq(&b.bootstrap, &topic, 2).await;
    let total = MID_STREAM_TOTAL;
    produce_sample(&b.bootstrap, &topic, total, 42);

    let port = free_port();
    let mut child = vigie()
        .args(["consume", "--group", &group, "--topic", &topic])
        .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
        // Small batches, each a synchronous commit: the topic takes many
        // round trips to drain, so the signal lands mid-stream.
        .env("VIGIE__KAFKA__CONSUMER__BATCH_MAX_RECORDS", "5")
        .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("VIGIE__LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn_reaped();
    // Logs are read as they come (a full pipe would block the consumer).
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let before = wait_for(
        "the consumer to commit a first batch",
        Duration::from_secs(60),
        || async {
            committed(&b.bootstrap, &group, &topic)
                .await
                .filter(|(c, _)| *c > 0)
        },
    )
    .await
    .0;
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().await.unwrap().contains("kafka: ok"));

    let kill = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let sent = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(45), status)
        .await
        .unwrap_or_else(|_| panic!("the consumer exits within 45 s of SIG{signal}"))
        .unwrap();
    let exited_after = sent.elapsed();
    let logs = logs.join().unwrap();
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        logs.join("\n")
    );
    let stopped: serde_json::Value = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "Consumer stopped")
        .unwrap_or_else(|| panic!("no 'Consumer stopped' line in:\n{}", logs.join("\n")));
    let consumed = stopped["consumed"].as_u64().unwrap();
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("\"signal\":\"SIG{signal}\""))),
        "the signal was logged:\n{}",
        logs.join("\n")
    );

    // Everything processed was committed, and nothing more.
    let (committed, lag) = committed(&b.bootstrap, &group, &topic).await.unwrap();
    assert_eq!(
        committed, consumed,
        "committed offsets match the records processed"
    );
    assert_eq!(lag, total - committed);
    // The signal came mid-stream: after the first commit, before the end.
    assert!(
        committed >= before,
        "committed {committed} before the signal {before}"
    );
    assert!(
        committed < total,
        "the signal arrived before the end of the stream ({committed} of {total} committed, \
         exited {exited_after:?} after it)"
    );
}

#[tokio::test]
async fn sigterm_mid_stream_commits_the_batch_and_exits_cleanly() {
    stop_mid_stream("TERM").await;
}

#[tokio::test]
async fn sigint_mid_stream_commits_the_batch_and_exits_cleanly() {
    stop_mid_stream("INT").await;
}

/// `/readyz` of an instance, `None` while it does not answer.
async fn readyz(port: u16) -> Option<(u16, String)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Stops a child this test started, by its id, and reaps it.
fn stop(mut child: common::Reaped) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn readyz_fails_naming_kafka_when_the_broker_is_unreachable() {
    let port = free_port();
    // A port nothing listens on.
    let closed = free_port();
    let child = vigie()
        .args(["consume", "--group", &unique_name("g"), "--topic", "t"])
        .env("VIGIE__KAFKA__BROKERS", format!("127.0.0.1:{closed}"))
        .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn_reaped();
    let (status, body) = wait_for("/readyz to answer", Duration::from_secs(60), || {
        readyz(port)
    })
    .await;
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    stop(child);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kafka: down"), "{body}");
    assert_eq!(health.status(), 200, "the process itself is healthy");
}

#[tokio::test]
async fn readyz_fails_naming_postgres_while_its_database_refuses_connections() {
    let b = vigie_testkit::broker();
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 1).await;
    let db = TestDb::create().await;
    let port = free_port();
    let child = vigie()
        .args([
            "consume",
            "--sink",
            "postgres",
            "--group",
            &unique_name("g"),
        ])
        .args(["--topic", &topic])
        .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
        .env("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", &db.url)
        .env(
            "VIGIE__CONSUMERS__SINKS__POSTGRES__ACQUIRE_TIMEOUT_MS",
            "2000",
        )
        .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn_reaped();
    // Ready, with its partition: the consumer has read its stored offsets
    // and only the probe touches the database from now on.
    let body = wait_for(
        "the consumer to be ready",
        Duration::from_secs(60),
        || async {
            let (status, body) = readyz(port).await?;
            let assigned = metric(port, "vigie_consumer_assigned_partitions").await?;
            (status == 200 && assigned > 0.0).then_some(body)
        },
    )
    .await;
    assert!(
        body.contains("kafka: ok") && body.contains("postgres: ok"),
        "{body}"
    );

    // The database goes away: new connections refused, open ones ended.
    let mut admin = sqlx::PgConnection::connect(&vigie_testkit::admin_url())
        .await
        .unwrap();
    let set_allowed = |allowed: bool| {
        sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allowed}",
            db.name
        ))
    };
    admin.execute(set_allowed(false)).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db.name)
        .execute(&mut admin)
        .await
        .unwrap();
    let body = wait_for("/readyz to fail", Duration::from_secs(60), || async {
        readyz(port)
            .await
            .filter(|(status, _)| *status == 503)
            .map(|(_, body)| body)
    })
    .await;
    assert!(body.contains("postgres: down"), "{body}");
    assert!(
        body.contains("kafka: ok"),
        "only the database is named: {body}"
    );

    // It comes back: ready again.
    admin.execute(set_allowed(true)).await.unwrap();
    wait_for("/readyz to recover", Duration::from_secs(60), || async {
        readyz(port).await.filter(|(status, _)| *status == 200)
    })
    .await;
    stop(child);
}

#[tokio::test]
async fn simulate_serve_serves_metrics_health_and_readiness() {
    let sim_port = free_port();
    let port = free_port();
    let mut child = vigie()
        .args(["simulate", "serve", "--listen"])
        .arg(format!("127.0.0.1:{sim_port}"))
        // The same key as every other component.
        .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn_reaped();
    let (status, body) = wait_for("the simulator's /readyz", Duration::from_secs(60), || {
        readyz(port)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "simulator: ok\n");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Every second cases request fails with a 503, once.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{sim_port}");
    let added = http
        .post(format!("{base}/_sim/faults"))
        .body(r#"{"endpoint":"cases","kind":"server_error","status":503,"every":2,"times":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = http
            .get(format!("{base}/resource/n8mc-b4w4.json?$limit=1"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 503, 200]);
    let r = http.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let get = |name: &'static str| async move { metric(port, name).await.unwrap() };
    assert_eq!(
        get(r#"vigie_simulator_requests_total{endpoint="cases",status="200"}"#).await,
        2.0
    );
    assert_eq!(
        get(r#"vigie_simulator_requests_total{endpoint="cases",status="503"}"#).await,
        1.0
    );
    assert_eq!(
        get(r#"vigie_simulator_requests_total{endpoint="not_found",status="404"}"#).await,
        1.0
    );
    assert_eq!(
        get(r#"vigie_simulator_faults_injected_total{endpoint="cases",kind="server_error"}"#).await,
        1.0
    );
    // Readiness probes use the control API: not counted as upstream traffic.
    assert_eq!(get("vigie_simulator_requests_total").await, 4.0);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .expect("the simulator exits within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        readyz(port).await.is_none(),
        "the telemetry endpoint stopped"
    );
}

#[tokio::test]
async fn produce_with_validation_stops_at_the_first_bad_line_and_keeps_what_came_before() {
    let b = vigie_testkit::broker();
    let topic = unique_name("health.case.v1");
    create_topic(&b.bootstrap, &topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.tsv");
    // Two valid events, a schema violation, then another valid one.
    let good = |i: u64| {
        let row = vigie_simulator::CaseGenerator::new(vigie_simulator::CaseGenConfig::default())
            .unwrap()
            .row(i);
        let env = vigie_core::Envelope::new("cdc-cases", row, chrono::Utc::now());
        String::from_utf8(env.to_json_bytes().unwrap()).unwrap()
    };
    let bad = good(2).replace("\"sex\":\"", "\"sex\":\"Unsure-");
    std::fs::write(
        &input,
        format!(
            "NY\t{}\nCA\t{}\nTX\t{bad}\nWY\t{}\n",
            good(0),
            good(1),
            good(3)
        ),
    )
    .unwrap();

    let out = vigie()
        .args(["produce", "--validate", "--topic", &topic, "--input"])
        .arg(&input)
        .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("line 3") && err.contains("/data/sex"), "{err}");
    assert!(err.contains("the 2 records before it were sent"), "{err}");

    let got = vigie_testkit::read_topic(&b.bootstrap, &topic, 2, Duration::from_secs(30));
    let keys: Vec<_> = got.iter().map(|r| r.2.clone().unwrap()).collect();
    assert_eq!(keys, vec![b"NY".to_vec(), b"CA".to_vec()]);
}

#[tokio::test]
async fn offsets_reset_refuses_a_running_group_and_a_bad_offset_then_moves_the_store_to_a_new_epoch()
 {
    let b = broker();
    let topic = unique_name("health.case.v1");
    let group = unique_name("g");
    create_topic_and_dlq(&b.bootstrap, &topic, 1).await;
    produce_sample(&b.bootstrap, &topic, 30, 5);
    let db = TestDb::create().await;
    let with_env = |c: &mut Command| {
        c.env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
            .env("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", &db.url)
            .env("RUST_LOG", "error");
    };
    let offsets = |args: &[&str]| {
        let mut c = vigie();
        c.arg("offsets")
            .args(args)
            .args(["--group", &group, "--topic", &topic]);
        with_env(&mut c);
        c.output().unwrap()
    };
    let port = free_port();
    let mut consumer = vigie();
    consumer
        .args(["consume", "--sink", "postgres", "--group", &group])
        .args(["--topic", &topic])
        .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .stderr(Stdio::null());
    with_env(&mut consumer);
    let child = consumer.spawn_reaped();
    let pool = db.pool().await;
    let stored = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT next_offset, epoch FROM sink_offsets WHERE consumer_group = $1",
        )
        .bind(&group)
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    };
    wait_for("the backlog stored", Duration::from_secs(60), || async {
        stored().await.filter(|s| *s == (30, 0))
    })
    .await;

    let out = offsets(&["reset", "--to-earliest", "--execute"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("group {group} has 1 running member")),
        "{err}"
    );
    assert_eq!(stored().await, Some((30, 0)), "nothing moved");

    // Stopped (it leaves the group).
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut child = child;
    assert!(child.wait().unwrap().success());

    let out = offsets(&["reset", "--to-offset", "31", "--execute"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--to-offset 31") && err.contains("holds offsets 0 to 30"),
        "{err}"
    );

    let out = offsets(&["reset", "--to-offset", "12"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(printed.contains("dry run: nothing changed"), "{printed}");
    assert_eq!(stored().await, Some((30, 0)), "a dry run moves nothing");

    let out = offsets(&["reset", "--to-offset", "12", "--execute"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stored().await, Some((12, 1)), "moved back, in a new epoch");
    assert_eq!(
        committed(&b.bootstrap, &group, &topic).await,
        Some((12, 18)),
        "Kafka's committed offset follows"
    );
    let out = offsets(&["show"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = printed
        .lines()
        .find(|l| l.starts_with(&topic))
        .unwrap_or_else(|| panic!("{printed}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1..], ["0", "12", "1", "0", "30"], "{printed}");
}

/// Every command as its own SCRAM principal over SASL_SSL: topics, produce,
/// consume (ready on `/readyz`), lag. A wrong password stops `consume` at
/// its first contact, naming the listener and the mechanism, instead of
/// retrying forever.
#[tokio::test]
async fn the_commands_work_over_sasl_ssl_and_a_wrong_password_stops_consume_at_once() {
    let k = vigie_testkit::PrivateKafka::start_with_sasl(&[
        ("vigie-admin", "admin-pw-3306"),
        ("vigie-sink", "sink-pw-4410"),
    ]);
    let group = unique_name("vigie-sink");
    let topic = "health.case.v1";
    for (user, operations, resource) in [
        (
            "vigie-admin",
            &["Create", "Write", "Describe"][..],
            &["--topic", "health.", "--resource-pattern-type", "prefixed"][..],
        ),
        (
            // The internal topics (the drift component's state).
            "vigie-admin",
            &["Create", "Describe"][..],
            &["--topic", "vigie.", "--resource-pattern-type", "prefixed"][..],
        ),
        ("vigie-sink", &["Read", "Describe"], &["--topic", topic]),
        ("vigie-sink", &["Read"], &["--group", &group]),
    ] {
        k.allow(user, operations, resource);
    }
    let ca = k.ca_file();
    let as_user = |user: &str, password: &str| {
        let mut c = vigie();
        c.env("VIGIE__KAFKA__BROKERS", k.sasl_ssl_bootstrap())
            .env("VIGIE__KAFKA__SECURITY__PROTOCOL", "sasl_ssl")
            .env("VIGIE__KAFKA__SECURITY__SASL_MECHANISM", "SCRAM-SHA-512")
            .env("VIGIE__KAFKA__SECURITY__SASL_USERNAME", user)
            .env("VIGIE__KAFKA__SECURITY__SASL_PASSWORD", password)
            .env("VIGIE__KAFKA__SECURITY__SSL_CA_FILE", &ca);
        c
    };
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{c:?}: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };

    let created = ok(as_user("vigie-admin", "admin-pw-3306").args(["topics", "create"]));
    assert!(created.contains(&format!("created {topic}")), "{created}");
    ok(as_user("vigie-admin", "admin-pw-3306").args([
        "produce", "--topic", topic, "--sample", "cases", "--count", "50",
    ]));

    let port = free_port();
    // Every log line, librdkafka's included, goes to a file the test
    // searches for the password.
    let logs = tempfile::NamedTempFile::new().unwrap();
    let consumer = as_user("vigie-sink", "sink-pw-4410")
        .args([
            "consume",
            "--sink",
            "blackhole",
            "--group",
            &group,
            "--topic",
            topic,
        ])
        .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "trace")
        .stderr(logs.reopen().unwrap())
        .spawn_reaped();
    let (status, body) = wait_for("/readyz to answer", Duration::from_secs(60), || {
        readyz(port)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    let lag = || {
        let text = ok(as_user("vigie-sink", "sink-pw-4410")
            .args(["lag", "--group", &group, "--topic", topic]));
        let drained = text.contains(&format!("total lag of group {group}: 0"));
        async move { drained.then_some(()) }
    };
    wait_for(
        "the sink to consume the 50 cases",
        Duration::from_secs(60),
        lag,
    )
    .await;
    stop(consumer);
    let logged = std::fs::read_to_string(logs.path()).unwrap();
    assert!(
        logged.contains("TRACE"),
        "the consumer logged at trace level"
    );
    assert!(!logged.contains("sink-pw-4410"), "the password was logged");

    let refused_logs = tempfile::NamedTempFile::new().unwrap();
    let mut refused = as_user("vigie-sink", "wrong-pw-8817")
        .args([
            "consume",
            "--sink",
            "blackhole",
            "--group",
            &group,
            "--topic",
            topic,
        ])
        .env(
            "VIGIE__TELEMETRY__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(refused_logs.reopen().unwrap())
        .spawn_reaped();
    let code = wait_for("consume to give up", Duration::from_secs(60), || {
        let exited = refused.try_wait().unwrap();
        async move { exited }
    })
    .await;
    let all = std::fs::read_to_string(refused_logs.path()).unwrap();
    let err = all.lines().last().unwrap_or_default();
    assert!(!code.success(), "{err}");
    assert!(!all.contains("wrong-pw-8817"), "the password was logged");
    assert!(
        err.contains(&format!("sasl_ssl://{}", k.sasl_ssl_bootstrap()))
            && err.contains("SCRAM-SHA-512")
            && err.contains("Authentication failed")
            && !err.contains("wrong-pw-8817"),
        "{err}"
    );
}

/// `vigie migrate` creates the health model in an empty database, lists
/// every migration, and applied again changes nothing; it names a database
/// it cannot reach.
#[tokio::test]
async fn migrate_applies_every_migration_once() {
    let db = TestDb::create().await;
    let files = std::fs::read_dir(vigie_testkit::repo_root().join("infra/postgres/migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count();
    assert!(files > 0);
    let run = || {
        vigie()
            .arg("migrate")
            .env("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", &db.url)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        out.ends_with(&format!("{files} of {files} migrations applied\n")),
        "{out}"
    );
    let pool = db.pool().await;
    let cases: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'health_case'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(cases, 1, "the health_case table exists");
    let second = run();
    assert!(second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        out,
        "nothing more applied"
    );

    let unreachable = vigie()
        .arg("migrate")
        .env(
            "VIGIE__CONSUMERS__SINKS__POSTGRES__URL",
            "postgres://postgres@127.0.0.1:1/vigie",
        )
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("cannot connect to PostgreSQL"),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
}

#[tokio::test]
async fn topics_create_sets_the_replication_and_min_insync_replicas_asked() {
    let b = broker();
    let topic = unique_name("replicated");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigie.toml");
    std::fs::write(
        &file,
        format!("[[topics]]\nname = \"{topic}\"\npartitions = 2\ndlq = false\n"),
    )
    .unwrap();
    let create = |args: &[&str]| {
        vigie()
            .arg("--config")
            .arg(&file)
            .args(["topics", "create"])
            .args(args)
            .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
            .output()
            .unwrap()
    };
    // One broker: three replicas are refused by Kafka, naming why.
    let out = create(&["--replication", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.to_lowercase().contains("replication factor"), "{err}");
    // More in-sync replicas than replicas: refused before asking Kafka.
    let out = create(&["--min-insync-replicas", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("more than topic {topic}'s 1 replicas")),
        "{err}"
    );
    let out = create(&["--replication", "1", "--min-insync-replicas", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("created {topic}")));
    // Set on the topic itself (kafka-configs lists only what was set).
    let described = vigie_testkit::kafka_tool(
        &b.bootstrap,
        "kafka-configs",
        &[
            "--describe",
            "--entity-type",
            "topics",
            "--entity-name",
            &topic,
        ],
    );
    assert!(described.contains("min.insync.replicas=1"), "{described}");
}
