//! Poison input against a real broker: each bad record lands in the DLQ
//! with its reason and origin, the stream goes on, and `in = stored + dlq`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigie_consumers::sinks::blackhole::Blackhole;
use vigie_consumers::{ConsumerMetrics, Runtime};
use vigie_core::SchemaRegistry;
use vigie_kafka::{ConsumerConfig, KafkaMetrics, ProducerConfig};
use vigie_testkit::{
    broker, create_topic, create_topic_with, produce_raw, read_topic, unique_name, wait_for,
};

fn case_envelope(i: usize) -> String {
    serde_json::json!({
        "id": vigie_core::event_id("cdc-cases", &[&format!("row-{i}")]).to_string(),
        "schema": "health.case",
        "schema_version": 1,
        "source": "cdc-cases",
        "occurred_at": "2021-03-01T00:00:00Z",
        "ingested_at": "2026-11-28T10:00:00.123456Z",
        "data": {
            "row_id": format!("row-{i}"),
            "case_month": "2021-03",
            "res_state": "NY",
            "state_fips_code": "36",
            "age_group": "18 to 49 years",
            "sex": "Female",
            "race": "White",
            "ethnicity": "Non-Hispanic/Latino",
            "case_positive_specimen_interval": null,
            "case_onset_interval": 0,
            "process": "Missing",
            "exposure_yn": "Missing",
            "current_status": "Laboratory-confirmed case",
            "symptom_status": "Symptomatic",
            "hosp_yn": "No",
            "icu_yn": "Missing",
            "death_yn": "No",
            "underlying_conditions_yn": "NA"
        }
    })
    .to_string()
}

#[tokio::test]
async fn poison_goes_to_the_dlq_with_reason_and_origin_and_the_stream_goes_on() {
    let b = broker();
    let topic = unique_name("health.case.v1");
    // The topic takes records of up to 4 MiB, its dead-letter twin only
    // the broker's default of 1 MiB.
    create_topic_with(&b.bootstrap, &topic, 2, &[("max.message.bytes", "4194304")]).await;
    create_topic(&b.bootstrap, &vigie_kafka::dlq_topic(&topic), 2).await;

    let mut oversized: serde_json::Value = serde_json::from_str(&case_envelope(9999)).unwrap();
    oversized["data"]["res_county"] = "X".repeat(2_000_000).into();
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"{\"id\": \"truncated".to_vec()),
        (
            "schema_violation",
            case_envelope(5000)
                .replace("18 to 49 years", "99 years")
                .into_bytes(),
        ),
        ("envelope_violation", br#"{"hello":"world"}"#.to_vec()),
        (
            "unknown_schema",
            case_envelope(5001)
                .replace("health.case", "health.nope")
                .into_bytes(),
        ),
        ("oversized", oversized.to_string().into_bytes()),
    ];
    // Valid records before and after every poison record, same keys.
    let mut input = Vec::new();
    let mut valid = 0;
    for (i, (_, bytes)) in poison.iter().enumerate() {
        for j in 0..10 {
            input.push((
                format!("k{j}").into_bytes(),
                case_envelope(i * 100 + j).into_bytes(),
                vec![],
            ));
            valid += 1;
        }
        input.push((
            b"k0".to_vec(),
            bytes.clone(),
            vec![("origin".to_owned(), b"test".to_vec())],
        ));
    }
    for j in 0..10 {
        input.push((
            format!("k{j}").into_bytes(),
            case_envelope(9000 + j).into_bytes(),
            vec![],
        ));
        valid += 1;
    }
    produce_raw(&b.bootstrap, &topic, &input).await;
    // Where each poison record landed, read back from the source topic.
    let source = read_topic(&b.bootstrap, &topic, input.len(), Duration::from_secs(30));
    let landed: BTreeMap<&str, (i32, i64)> = poison
        .iter()
        .map(|(reason, bytes)| {
            let at: Vec<(i32, i64)> = source
                .iter()
                .filter(|(_, _, _, value, _)| value == bytes)
                .map(|(partition, offset, _, _, _)| (*partition, *offset))
                .collect();
            assert_eq!(at.len(), 1, "{reason}: one copy in the source topic");
            (*reason, at[0])
        })
        .collect();

    let kafka_metrics = KafkaMetrics::unregistered();
    let metrics = ConsumerMetrics::register(&prometheus::Registry::new()).unwrap();
    let group = unique_name("g");
    let runtime = Runtime {
        component: "blackhole",
        cluster: vigie_kafka::Cluster::new(b.bootstrap.clone()),
        consumer: ConsumerConfig {
            group_id: group.clone(),
            topics: vec![topic.clone()],
            batch_max_records: 7,
            batch_max_wait_ms: 100,
            max_record_bytes: 4_096,
            lag_interval_ms: 0,
            ..ConsumerConfig::default()
        },
        producer: ProducerConfig::default(),
        schemas: Arc::new(SchemaRegistry::embedded().unwrap()),
        kafka_metrics: kafka_metrics.clone(),
        metrics,
    };
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sink = Blackhole::default();
            let summary = runtime.run(&mut sink, stop).await.expect("run");
            (summary, sink.written())
        })
    };
    let total = input.len() as u64;
    wait_for("every record committed", Duration::from_secs(60), || {
        let n = kafka_metrics
            .consumed
            .with_label_values(&[&group, &topic])
            .get();
        async move { (n >= total).then_some(()) }
    })
    .await;
    stop.cancel();
    let (summary, written) = task.await.unwrap();

    assert_eq!(summary.consumed, total);
    assert_eq!(
        written, valid as u64,
        "every valid record, before and after poison, stored"
    );
    assert_eq!(summary.dead_lettered, poison.len() as u64);
    assert_eq!(
        summary.consumed,
        summary.written + summary.dead_lettered,
        "in = stored + dlq"
    );

    let dlq = read_topic(
        &b.bootstrap,
        &format!("{topic}.dlq"),
        poison.len(),
        Duration::from_secs(30),
    );
    let by_reason: BTreeMap<String, _> = dlq
        .iter()
        .map(|(_, _, key, value, headers)| {
            let h: BTreeMap<&str, String> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            (
                h["vigie.dlq.reason"].clone(),
                (key.clone(), value.clone(), h),
            )
        })
        .collect();
    for (reason, original) in &poison {
        let (key, value, h) = by_reason.get(*reason).unwrap_or_else(|| {
            panic!(
                "no dead letter with reason {reason}: {:?}",
                by_reason.keys()
            )
        });
        if *reason == "oversized" {
            // Cut to fit the dead-letter topic, with the whole one's size
            // and digest.
            assert_eq!(value.len(), vigie_kafka::dlq::DLQ_MAX_VALUE_BYTES);
            assert_eq!(value[..], original[..value.len()], "the value's start");
            assert_eq!(h["vigie.dlq.original.size"], original.len().to_string());
            use sha2::Digest;
            let sha: String = sha2::Sha256::digest(original)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(h["vigie.dlq.original.sha256"], sha);
        } else {
            assert_eq!(value, original, "{reason}: original bytes unchanged");
            assert!(
                !h.contains_key("vigie.dlq.original.size"),
                "{reason}: not cut"
            );
        }
        assert_eq!(key.as_deref(), Some(&b"k0"[..]), "{reason}: key kept");
        assert_eq!(h["vigie.dlq.origin.topic"], topic);
        assert_eq!(h["vigie.dlq.stage"], "validate");
        assert_eq!(h["origin"], "test", "{reason}: original headers kept");
        let offset: i64 = h["vigie.dlq.origin.offset"].parse().unwrap();
        let partition: i32 = h["vigie.dlq.origin.partition"].parse().unwrap();
        assert_eq!(
            (partition, offset),
            landed[reason],
            "{reason}: origin partition and offset are the poison record's own"
        );
        assert!(!h["vigie.dlq.error"].is_empty());
    }
    assert!(by_reason["schema_violation"].2["vigie.dlq.error"].contains("/data/age_group"));
    assert!(by_reason["oversized"].2["vigie.dlq.error"].contains("max_record_bytes = 4096"));
}
