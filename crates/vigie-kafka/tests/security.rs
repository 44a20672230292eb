//! The Kafka clients against a broker with a SASL/PLAIN listener and
//! Kafka's authorizer: a component authenticates as its own principal
//! (`[kafka.security]`) and may do only what its ACLs allow it.

use std::time::Duration;

use vigie_kafka::{Cluster, Delivered, EventProducer, KafkaError, KafkaMetrics, OutRecord};
use vigie_kafka::{ProducerConfig, ping};
use vigie_testkit::{PrivateKafka, create_topic, topic_len, unique_name};

fn as_user(k: &PrivateKafka, user: &str, password: &str) -> Cluster {
    Cluster::new(k.sasl_bootstrap())
        .with("security.protocol", "sasl_plaintext")
        .with("sasl.mechanism", "PLAIN")
        .with("sasl.username", user)
        .with("sasl.password", password)
}

/// Ten records to `topic`, as the producer of `cluster`.
async fn send(cluster: &Cluster, topic: &str) -> Result<Vec<Delivered>, KafkaError> {
    let p = EventProducer::new(
        cluster,
        &ProducerConfig::default(),
        KafkaMetrics::unregistered(),
    )?;
    let values: Vec<String> = (0..10).map(|i| format!("{{\"n\":{i}}}")).collect();
    p.send_all(values.iter().map(|v| OutRecord {
        topic,
        key: None,
        payload: v.as_bytes(),
        headers: &[],
        timestamp_ms: None,
    }))
    .await
}

#[tokio::test]
async fn a_component_writes_only_where_its_acls_allow_and_a_denied_write_names_the_topic() {
    let k =
        PrivateKafka::start_with_sasl(&[("vigie-ingest", "ingest-pw"), ("vigie-sink", "sink-pw")]);
    let cases = unique_name("health.case.v1");
    let other = unique_name("health.other.v1");
    create_topic(&k.bootstrap, &cases, 1).await;
    create_topic(&k.bootstrap, &other, 1).await;
    k.acls(&[
        "--add",
        "--allow-principal",
        "User:vigie-ingest",
        "--operation",
        "Write",
        "--operation",
        "Describe",
        "--topic",
        &cases,
    ]);
    let ingest = as_user(&k, "vigie-ingest", "ingest-pw");
    let sink = as_user(&k, "vigie-sink", "sink-pw");

    let delivered = send(&ingest, &cases)
        .await
        .expect("vigie-ingest may write its topic");
    assert_eq!(delivered.len(), 10);

    for (who, cluster, topic) in [
        ("vigie-ingest on a topic it has no ACL for", &ingest, &other),
        ("vigie-sink on the cases topic", &sink, &cases),
    ] {
        let err = send(cluster, topic)
            .await
            .expect_err(&format!("{who}: refused"));
        let msg = err.to_string();
        assert!(
            msg.contains(topic.as_str()) && msg.contains("Authorization"),
            "{who}: the error names the topic and the refusal: {msg}"
        );
    }
    // Only the allowed write landed.
    assert_eq!(topic_len(&k.bootstrap, &cases), 10);
    assert_eq!(topic_len(&k.bootstrap, &other), 0);

    // Authentication itself: the readiness probe passes with the right
    // password, and fails with a wrong one, saying so.
    ping(&sink, Duration::from_secs(10))
        .await
        .expect("vigie-sink authenticates");
    let err = ping(
        &as_user(&k, "vigie-sink", "not-the-pw-7731"),
        Duration::from_secs(3),
    )
    .await
    .expect_err("a wrong password is refused")
    .to_string();
    assert!(
        err.contains("Authentication") && !err.contains("not-the-pw-7731"),
        "the error says the authentication was refused, without the password: {err}"
    );
}
