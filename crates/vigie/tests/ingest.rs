//! `vigie ingest` as a process, polling the simulator's SODA endpoint:
//! killed with SIGKILL at random points and restarted from its checkpoint.
//! No row may be missing from the topic, and any row produced twice must
//! carry the same event id and the same data.

mod common;

use common::{Reaped, SpawnReaped, free_port, metric, vigie};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use vigie_simulator::server::{CASES_PATH, CasesSim, SimConfig, Simulator};
use vigie_simulator::{CaseGenConfig, CaseGenerator};
use vigie_testkit::{broker, create_topic_and_dlq, read_topic, topic_len, unique_name, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);
const ROWS: u64 = 40_000;
const SEED: u64 = 23;

fn config(dir: &std::path::Path, sim: &str, topic: &str) -> std::path::PathBuf {
    let path = dir.join("vigie.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[producers]
checkpoint_dir = "{cp}"
quarantine_dir = "{q}"

[producers.sources.cdc-cases]
url = "{sim}{CASES_PATH}"
topic = "{topic}"
poll_interval_ms = 50
options = {{ page_size = 1000 }}
"#,
            cp = dir.join("checkpoints").display(),
            q = dir.join("quarantine").display(),
        ),
    )
    .unwrap();
    path
}

fn start(config: &std::path::Path, port: u16, until_caught_up: bool) -> Reaped {
    let mut c = vigie();
    c.arg("--config")
        .arg(config)
        .args(["ingest", "--source", "cdc-cases"])
        .env("VIGIE__KAFKA__BROKERS", &broker().bootstrap)
        .env("VIGIE__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if until_caught_up {
        c.arg("--until-caught-up");
    }
    c.spawn_reaped()
}

#[tokio::test]
async fn kill_9_at_random_points_then_restart_leaves_no_gap_and_repeats_keep_their_id() {
    let sim = Simulator::start(
        SimConfig {
            seed: SEED,
            cases: CasesSim {
                rows: ROWS,
                ..CasesSim::default()
            },
            ..SimConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let b = broker();
    let topic = unique_name("health.case.v1");
    create_topic_and_dlq(&b.bootstrap, &topic, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), sim.base_url(), &topic);

    // Five kill points spread over the load, each at a random row.
    let mut points: Vec<u64> = (0..5)
        .map(|i| i * ROWS / 6 + rand::random_range(1_000..ROWS / 6))
        .collect();
    points.sort_unstable();
    for point in points {
        let port = free_port();
        let mut child = start(&config, port, false);
        // Rows acknowledged by this run; the topic holds the earlier ones.
        let before = topic_len(&b.bootstrap, &topic) as u64;
        wait_for(&format!("{point} rows produced"), DEADLINE, || async {
            let n = metric(port, "vigie_source_events_total").await?;
            (before + n as u64 >= point).then_some(())
        })
        .await;
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
    }
    let mut last = start(&config, free_port(), true);
    let status = tokio::task::spawn_blocking(move || last.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the last run catches up and exits 0");

    let total = topic_len(&b.bootstrap, &topic);
    assert!(total >= ROWS as i64, "{total} records");
    let g = CaseGenerator::new(CaseGenConfig {
        seed: SEED,
        ..CaseGenConfig::default()
    })
    .unwrap();
    let expected: BTreeSet<String> = (0..ROWS)
        .map(|i| {
            vigie_simulator::case_envelope(&g, i, Utc::now())
                .id
                .to_string()
        })
        .collect();
    let mut by_id: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (_, _, _, value, _) in read_topic(&b.bootstrap, &topic, total as usize, DEADLINE) {
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(expected.contains(&id), "unexpected id {id}");
        if let Some(earlier) = by_id.get(&id) {
            assert_eq!(
                earlier["data"], v["data"],
                "a repeat of {id} with other data"
            );
        }
        by_id.insert(id, v);
    }
    let got: BTreeSet<String> = by_id.into_keys().collect();
    assert_eq!(got.len(), expected.len(), "no gap");
    assert_eq!(got, expected);
}
