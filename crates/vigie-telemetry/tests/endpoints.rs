//! The operations endpoint over real HTTP: `/metrics` in Prometheus text,
//! `/healthz`, `/readyz` following its checks, and a clean stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;
use vigie_telemetry::{Readiness, TelemetryConfig, TelemetryServer};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn serves_metrics_health_and_readiness_that_follows_its_checks() {
    let registry = Registry::new();
    let counter = IntCounterVec::new(
        Opts::new("vigie_test_things_total", "Things done."),
        &["kind"],
    )
    .unwrap();
    registry.register(Box::new(counter.clone())).unwrap();
    counter.with_label_values(&["a"]).inc_by(3);

    let db_up = Arc::new(AtomicBool::new(true));
    let flag = db_up.clone();
    let readiness = Readiness::default()
        .with("kafka", || async { Ok(()) })
        .with("postgres", move || {
            let up = flag.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err("connection refused".to_owned())
                }
            }
        });
    let shutdown = CancellationToken::new();
    let config = TelemetryConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    let server = TelemetryServer::start(&config, registry, readiness, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr());
    let http = client();

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        metrics.headers()
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l == r#"vigie_test_things_total{kind="a"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("# TYPE vigie_test_things_total counter"),
        "{text}"
    );

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "kafka: ok\npostgres: ok\n");

    // The database goes away: not ready, the failing check named; the
    // process itself is still healthy.
    db_up.store(false, Ordering::SeqCst);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.text().await.unwrap(),
        "kafka: ok\npostgres: down: connection refused\n"
    );
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // It comes back: ready again, nothing cached.
    db_up.store(true, Ordering::SeqCst);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // Shutdown stops the server.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server.join())
        .await
        .expect("the server stops once shut down");
    assert!(http.get(format!("{base}/healthz")).send().await.is_err());
}

#[tokio::test]
async fn a_busy_address_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = TelemetryConfig {
        listen: taken.local_addr().unwrap(),
    };
    let err = TelemetryServer::start(
        &config,
        Registry::new(),
        Readiness::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}
