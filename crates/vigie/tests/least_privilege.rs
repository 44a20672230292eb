//! Each component as its own Kafka principal, over SASL_SSL with SCRAM (the
//! operator's `vigie offsets` over mutual TLS, known by its client
//! certificate), on a broker whose authorizer allows only what an ACL
//! grants: with exactly the ACLs `docs/security.md` lists for it, each does
//! its whole job, dead letters and transactions included.

mod common;

use common::{Reaped, SpawnReaped, free_port, vigie};

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigie_simulator::server::{CASES_PATH, CasesSim, SimConfig, Simulator};
use vigie_testkit::{
    PrivateKafka, TestDb, create_topic_and_dlq, ort_dylib, produce_raw, read_topic, topic_len,
    unique_name, wait_for,
};

const ROWS: u64 = 300;
const DEADLINE: Duration = Duration::from_secs(120);

/// `vigie` as `user` on the SASL_SSL listener of `k`.
fn as_user(k: &PrivateKafka, user: &str) -> Command {
    let mut c = vigie();
    c.env("VIGIE__KAFKA__BROKERS", k.sasl_ssl_bootstrap())
        .env("VIGIE__KAFKA__SECURITY__PROTOCOL", "sasl_ssl")
        .env("VIGIE__KAFKA__SECURITY__SASL_MECHANISM", "SCRAM-SHA-512")
        .env("VIGIE__KAFKA__SECURITY__SASL_USERNAME", user)
        .env("VIGIE__KAFKA__SECURITY__SASL_PASSWORD", password(user))
        .env("VIGIE__KAFKA__SECURITY__SSL_CA_FILE", k.ca_file())
        .env(
            "VIGIE__TELEMETRY__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    c
}

fn password(user: &str) -> String {
    format!("{user}-secret-5150")
}

/// Stops a long-running component with SIGTERM; it must exit cleanly.
fn stop(mut child: Reaped) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success(), "clean exit after SIGTERM");
}

#[tokio::test]
async fn each_component_does_its_job_with_exactly_its_documented_acls() {
    let users = [
        "vigie-ingest",
        "vigie-sink",
        "vigie-scorer",
        "vigie-operator",
    ];
    let passwords: Vec<String> = users.iter().map(|u| password(u)).collect();
    let k = PrivateKafka::start_with_sasl(
        &users
            .iter()
            .zip(&passwords)
            .map(|(u, p)| (*u, p.as_str()))
            .collect::<Vec<_>>(),
    );
    let cases = unique_name("health.case.v1");
    let scores = unique_name("health.case_score.v1");
    let (cases_dlq, scores_dlq) = (format!("{cases}.dlq"), format!("{scores}.dlq"));
    for t in [&cases, &scores] {
        create_topic_and_dlq(&k.bootstrap, t, 2).await;
    }
    let (sink_group, scorer_group) = (unique_name("vigie-sink"), unique_name("vigie-scorer"));
    let txn_id = unique_name("vigie-scorer-txn");

    // docs/security.md, "The ACLs each component needs".
    k.allow("vigie-ingest", &["Write", "Describe"], &["--topic", &cases]);
    k.allow(
        "vigie-ingest",
        &["Write", "Describe"],
        &["--topic", &cases_dlq],
    );
    for (user, group) in [("vigie-sink", &sink_group), ("vigie-scorer", &scorer_group)] {
        k.allow(user, &["Read", "Describe"], &["--topic", &cases]);
        k.allow(
            user,
            &["Write", "Describe", "Read"],
            &["--topic", &cases_dlq],
        );
        k.allow(user, &["Read", "Describe"], &["--group", group]);
    }
    k.allow(
        "vigie-scorer",
        &["Write", "Describe"],
        &["--topic", &scores],
    );
    k.allow(
        "vigie-scorer",
        &["Write", "Describe"],
        &["--topic", &scores_dlq],
    );
    k.allow(
        "vigie-scorer",
        &["Write", "Describe"],
        &["--transactional-id", &txn_id],
    );
    k.allow(
        "vigie-operator",
        &["Read", "Describe"],
        &["--topic", &cases],
    );
    k.allow(
        "vigie-operator",
        &["Read", "Describe"],
        &["--group", &sink_group],
    );

    // vigie ingest: the simulator's cases into the cases topic.
    let sim = Simulator::start(
        SimConfig {
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
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigie.toml");
    std::fs::write(
        &config,
        format!(
            "[producers]\ncheckpoint_dir = \"{}\"\n\n[producers.sources.cdc-cases]\nurl = \"{}{CASES_PATH}\"\ntopic = \"{cases}\"\n",
            dir.path().join("checkpoints").display(),
            sim.base_url(),
        ),
    )
    .unwrap();
    let logs = dir.path().join("ingest.stderr");
    let mut ingest = as_user(&k, "vigie-ingest")
        .arg("--config")
        .arg(&config)
        .args(["ingest", "--source", "cdc-cases", "--until-caught-up"])
        .stderr(std::fs::File::create(&logs).unwrap())
        .spawn_reaped();
    let status = wait_for("ingest to catch up and exit", DEADLINE, || {
        let exited = ingest.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(
        status.success(),
        "ingest as vigie-ingest: {}",
        std::fs::read_to_string(&logs).unwrap()
    );
    assert_eq!(topic_len(&k.bootstrap, &cases), ROWS as i64);
    // One record no sink can read, for their dead-letter writes.
    produce_raw(
        &k.bootstrap,
        &cases,
        &[(b"NY".to_vec(), b"{not json".to_vec(), vec![])],
    )
    .await;

    // vigie consume --sink postgres and --sink scorer, side by side.
    let db = TestDb::create().await;
    let sink = as_user(&k, "vigie-sink")
        .args([
            "consume",
            "--sink",
            "postgres",
            "--group",
            &sink_group,
            "--topic",
            &cases,
        ])
        .env("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", &db.url)
        .spawn_reaped();
    let scorer = as_user(&k, "vigie-scorer")
        .args([
            "consume",
            "--sink",
            "scorer",
            "--group",
            &scorer_group,
            "--topic",
            &cases,
        ])
        .env("VIGIE__CONSUMERS__SINKS__SCORER__OUTPUT_TOPIC", &scores)
        .env("VIGIE__CONSUMERS__SINKS__SCORER__TRANSACTIONAL_ID", &txn_id)
        .env(
            "VIGIE__CONSUMERS__SINKS__SCORER__MODEL_DIR",
            vigie_testkit::repo_root().join("models/hosp_risk/1.0.0"),
        )
        .env("ORT_DYLIB_PATH", ort_dylib())
        .spawn_reaped();
    let pool = db.pool().await;
    wait_for("every case stored", DEADLINE, || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM health_case")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n == ROWS as i64).then_some(())
        }
    })
    .await;
    let scored = tokio::task::spawn_blocking({
        let (bootstrap, scores) = (k.bootstrap.clone(), scores.clone());
        move || read_topic(&bootstrap, &scores, ROWS as usize, DEADLINE)
    })
    .await
    .unwrap();
    assert_eq!(scored.len(), ROWS as usize, "one score per case");
    // Each sink dead-letters the bad record once.
    let letters = tokio::task::spawn_blocking({
        let bootstrap = k.bootstrap.clone();
        move || read_topic(&bootstrap, &cases_dlq, 2, DEADLINE)
    })
    .await
    .unwrap();
    assert_eq!(letters.len(), 2, "one letter from each sink");
    stop(sink);
    stop(scorer);

    // vigie offsets reset, as the operator, authenticated by its client
    // certificate (its key's password from a `_file` key): the sink's
    // stored offsets and the group's committed ones go back to the start.
    let (cert, key) = k.client_cert("vigie-operator");
    let key_password = dir.path().join("operator-key-password");
    std::fs::write(&key_password, password("vigie-operator")).unwrap();
    let operator = |group: &str| {
        let mut c = vigie();
        c.env("VIGIE__KAFKA__BROKERS", k.mtls_bootstrap())
            .env("VIGIE__KAFKA__SECURITY__PROTOCOL", "ssl")
            .env("VIGIE__KAFKA__SECURITY__SSL_CA_FILE", k.ca_file())
            .env("VIGIE__KAFKA__SECURITY__SSL_CERTIFICATE_FILE", &cert)
            .env("VIGIE__KAFKA__SECURITY__SSL_KEY_FILE", &key)
            .env(
                "VIGIE__KAFKA__SECURITY__SSL_KEY_PASSWORD_FILE",
                &key_password,
            )
            .env("VIGIE__CONSUMERS__SINKS__POSTGRES__URL", &db.url)
            .env("RUST_LOG", "warn")
            .args(["offsets", "reset", "--group", group, "--topic", &cases])
            .args(["--to-earliest", "--execute"]);
        c.output().unwrap()
    };
    let out = operator(&sink_group);
    assert!(
        out.status.success(),
        "offsets reset as vigie-operator: {out:?}"
    );
    let stored: Vec<(i64, i64)> =
        sqlx::query_as("SELECT next_offset, epoch FROM sink_offsets WHERE consumer_group = $1")
            .bind(&sink_group)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored, vec![(0, 1); 2], "both partitions back to 0");
    let committed = vigie_kafka::group_lag(
        &vigie_kafka::Cluster::new(&k.bootstrap),
        &sink_group,
        std::slice::from_ref(&cases),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(
        committed.iter().all(|p| p.committed == Some(0)),
        "Kafka's committed offsets follow: {committed:?}"
    );
    // A group it has no ACL for is refused, naming the refusal.
    let out = operator(&scorer_group);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Group authorization failed"),
        "offsets reset of a group without an ACL: {err}"
    );
}
