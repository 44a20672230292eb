//! The `vigie` binary as a user runs it: configuration errors, schema
//! checks, and a consumer stopped by SIGTERM mid-stream.

mod common;

use common::{free_port, metric, produce_sample, vigie};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use vigie_testkit::{create_topic, create_topic_and_dlq, durable_broker, unique_name, wait_for};

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn a_config_typo_is_an_error_naming_the_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigie.toml");
    std::fs::write(
        &file,
        "[kafka]\nbrokers = \"b:9092\"\n\n[kafka.consumer]\ngroup_id = \"g\"\nbatch_max_recrods = 5\n",
    )
    .unwrap();
    let out = vigie()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
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
        .env("VIGIE__KAFKA__PRODUCER__LINGER_MS", "7")
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

    // A secret written in the file is refused.
    std::fs::write(
        &file,
        "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_password = \"x\"\n",
    )
    .unwrap();
    let out = vigie()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("kafka.security.sasl_password") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn schemas_check_passes_on_the_repository_and_fails_on_a_breaking_version() {
    let out = vigie()
        .args(["schemas", "check"])
        .arg(repo_root().join("schemas"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok    health.case"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let v1 = std::fs::read_to_string(repo_root().join("schemas/health.case.v1.json")).unwrap();
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

#[tokio::test]
async fn sigterm_mid_stream_commits_the_batch_and_exits_cleanly() {
    // Committed offsets are read back: the durable broker (docs/tansu.md).
    let b = durable_broker();
    let topic = unique_name("health.case.v1");
    let group = unique_name("g");
    create_topic_and_dlq(&b.bootstrap, &topic, 2).await;
    let total = 20_000u64;
    produce_sample(&b.bootstrap, &topic, total, 42);

    let port = free_port();
    let mut child = vigie()
        .args(["consume", "--group", &group, "--topic", &topic])
        .env("VIGIE__KAFKA__BROKERS", &b.bootstrap)
        .env("VIGIE__KAFKA__CONSUMER__BATCH_MAX_RECORDS", "200")
        .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("VIGIE__LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_for(
        "the consumer to commit a first batch",
        Duration::from_secs(60),
        || async {
            metric(port, "vigie_consumer_records_total")
                .await
                .filter(|n| *n > 0.0)
        },
    )
    .await;
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
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || {
        let stderr = child.stderr.take().unwrap();
        let logs: Vec<String> = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect();
        (child.wait().unwrap(), logs)
    });
    let (status, logs) = tokio::time::timeout(Duration::from_secs(45), status)
        .await
        .expect("the consumer exits within 45 s of SIGTERM")
        .unwrap();
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
    assert!(consumed > 0 && consumed <= total);

    // Everything processed was committed, and nothing more.
    let lags = vigie_kafka::group_lag(
        &b.bootstrap,
        &group,
        std::slice::from_ref(&topic),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let committed: i64 = lags.iter().map(|l| l.committed.unwrap_or(0)).sum();
    assert_eq!(
        committed as u64, consumed,
        "committed offsets match the records processed"
    );
    let lag: i64 = lags.iter().map(|l| l.lag).sum();
    assert_eq!(lag as u64, total - consumed);
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
