//! The Kafka clients against a broker with SASL listeners (plaintext and
//! TLS) and Kafka's authorizer: a component authenticates as its own
//! principal (`[kafka.security]`) and may do only what its ACLs allow it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigie_kafka::{
    BatchConsumer, Cluster, ConsumerConfig, Delivered, EventProducer, KafkaError, KafkaMetrics,
    OutRecord, ProducerConfig, TopicSpec, ensure_topics, group_lag, ping,
};
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
        partition: None,
        topic,
        key: None,
        payload: Some(v.as_bytes()),
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

/// `user` on the SASL_SSL listener with `mechanism`, trusting the broker's CA.
fn over_tls(k: &PrivateKafka, user: &str, password: &str, mechanism: &str) -> Cluster {
    Cluster::new(k.sasl_ssl_bootstrap())
        .with("security.protocol", "sasl_ssl")
        .with("sasl.mechanism", mechanism)
        .with("sasl.username", user)
        .with("sasl.password", password)
        .with("ssl.ca.location", k.ca_file().display().to_string())
}

#[tokio::test]
async fn scram_over_tls_creates_produces_consumes_and_reads_the_lag_and_refusals_say_why() {
    let k =
        PrivateKafka::start_with_sasl(&[("vigie-ingest", "ingest-pw"), ("vigie-sink", "sink-pw")]);
    let topic = unique_name("health.case.v1");
    let group = unique_name("vigie-sink");
    k.allow(
        "vigie-ingest",
        &["Create", "Write", "Describe"],
        &["--topic", &topic, "--resource-pattern-type", "prefixed"],
    );
    k.allow("vigie-sink", &["Read", "Describe"], &["--topic", &topic]);
    k.allow("vigie-sink", &["Read"], &["--group", &group]);
    let ingest = over_tls(&k, "vigie-ingest", "ingest-pw", "SCRAM-SHA-512");
    let sink = over_tls(&k, "vigie-sink", "sink-pw", "SCRAM-SHA-256");

    // Topics, then records, as the ingest principal.
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 2,
        replication: 1,
        retention_ms: None,
        cleanup_policy: None,
        dlq: true,
        config: Default::default(),
    };
    let created = ensure_topics(&ingest, &[spec])
        .await
        .expect("vigie-ingest creates its topics over SASL_SSL");
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(send(&ingest, &topic).await.expect("delivered").len(), 10);

    // Consumed, committed and read back as lag 0 by the sink principal.
    ping(&sink, Duration::from_secs(10))
        .await
        .expect("vigie-sink is ready over SASL_SSL");
    let lag = |c: Cluster| {
        let (group, topics) = (group.clone(), vec![topic.clone()]);
        async move {
            group_lag(&c, &group, &topics, Duration::from_secs(10))
                .await
                .expect("lag")
                .iter()
                .map(|p| p.lag)
                .sum::<i64>()
        }
    };
    assert_eq!(lag(sink.clone()).await, 10);
    let consumer = BatchConsumer::new(
        &sink,
        ConsumerConfig {
            group_id: group.clone(),
            topics: vec![topic.clone()],
            batch_max_records: 10,
            batch_max_wait_ms: 200,
            ..ConsumerConfig::default()
        },
        KafkaMetrics::unregistered(),
    )
    .expect("consumer");
    let stop = CancellationToken::new();
    let mut consumed = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while consumed < 10 {
            let b = consumer
                .next_batch(&stop)
                .await
                .expect("batch")
                .expect("running");
            consumer.commit(&b).expect("commit");
            consumed += b.len();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("consumed {consumed} of 10 over SASL_SSL"));
    consumer.close().await;
    assert_eq!(consumed, 10);
    assert_eq!(lag(sink.clone()).await, 0);

    // Refusals end the first contact at once, saying which listener and
    // mechanism refused, never with the password.
    let refused = |cluster: Cluster, timeout: u64| async move {
        match cluster.check(Duration::from_secs(timeout)) {
            Err(e @ KafkaError::Refused { .. }) => e.to_string(),
            other => panic!("a refusal, not {other:?}"),
        }
    };
    let tls_listener = format!("sasl_ssl://{}", k.sasl_ssl_bootstrap());
    let err = refused(
        over_tls(&k, "vigie-sink", "wrong-pw-5521", "SCRAM-SHA-512"),
        30,
    )
    .await;
    assert!(
        err.contains(&tls_listener)
            && err.contains("SCRAM-SHA-512")
            && err.contains("Authentication failed")
            && !err.contains("wrong-pw-5521"),
        "a wrong password: {err}"
    );
    let untrusted = Cluster::new(k.sasl_ssl_bootstrap())
        .with("security.protocol", "sasl_ssl")
        .with("sasl.mechanism", "SCRAM-SHA-512")
        .with("sasl.username", "vigie-sink")
        .with("sasl.password", "sink-pw");
    let err = refused(untrusted, 30).await;
    assert!(
        err.contains(&tls_listener) && err.contains("certificate verify failed"),
        "a CA the client does not trust: {err}"
    );
    // The broker only closes the connection: judged when the wait ends.
    let err = refused(Cluster::new(k.sasl_ssl_bootstrap()), 5).await;
    assert!(
        err.contains("security.protocol=plaintext") && err.contains("TLS listener"),
        "a plaintext client on the TLS listener: {err}"
    );
}

/// `user` on the mutual-TLS listener, known by its client certificate.
fn with_certificate(k: &PrivateKafka, user: &str, key_password: &str) -> Cluster {
    let (cert, key) = k.client_cert(user);
    Cluster::new(k.mtls_bootstrap())
        .with("security.protocol", "ssl")
        .with("ssl.ca.location", k.ca_file().display().to_string())
        .with("ssl.certificate.location", cert.display().to_string())
        .with("ssl.key.location", key.display().to_string())
        .with("ssl.key.password", key_password)
}

#[tokio::test]
async fn a_client_certificate_is_the_principal_its_acls_name_and_a_missing_one_is_refused() {
    let k =
        PrivateKafka::start_with_sasl(&[("vigie-ingest", "ingest-pw"), ("vigie-sink", "sink-pw")]);
    let cases = unique_name("health.case.v1");
    create_topic(&k.bootstrap, &cases, 1).await;
    k.allow("vigie-ingest", &["Write", "Describe"], &["--topic", &cases]);

    // The certificate's CN is the principal: vigie-ingest's ACL lets it
    // write, vigie-sink's certificate gets no such right.
    let ingest = with_certificate(&k, "vigie-ingest", "ingest-pw");
    ingest
        .check(Duration::from_secs(10))
        .expect("the listener accepts vigie-ingest's certificate");
    assert_eq!(send(&ingest, &cases).await.expect("delivered").len(), 10);
    let err = send(&with_certificate(&k, "vigie-sink", "sink-pw"), &cases)
        .await
        .expect_err("vigie-sink has no Write ACL")
        .to_string();
    assert!(
        err.contains(&cases) && err.contains("Authorization"),
        "{err}"
    );
    assert_eq!(topic_len(&k.bootstrap, &cases), 10);

    // No certificate: the handshake is refused at once, and the error
    // says which settings are missing. The broker's alert depends on its
    // JDK: "certificate required" (TLS 1.3's own, JDK 25), "bad
    // certificate" (JDK 17).
    let without = Cluster::new(k.mtls_bootstrap())
        .with("security.protocol", "ssl")
        .with("ssl.ca.location", k.ca_file().display().to_string());
    let err = match without.check(Duration::from_secs(30)) {
        Err(e @ KafkaError::Refused { .. }) => e.to_string(),
        other => panic!("a refusal, not {other:?}"),
    };
    assert!(
        err.contains(&format!("ssl://{}", k.mtls_bootstrap()))
            && (err.contains("alert certificate required")
                || err.contains("alert bad certificate"))
            && err.contains("ssl_certificate_file"),
        "no client certificate: {err}"
    );

    // A wrong key password fails when the client is made, without the
    // password in the error.
    let err = with_certificate(&k, "vigie-ingest", "wrong-key-pw-2209")
        .check(Duration::from_secs(10))
        .expect_err("the key does not decrypt")
        .to_string();
    assert!(
        err.contains("ssl.key.location failed")
            && err.contains("ssl_key_password")
            && !err.contains("wrong-key-pw-2209"),
        "a wrong key password: {err}"
    );
}
