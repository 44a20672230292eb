//! The operations endpoint of a component: `/metrics` (Prometheus text),
//! `/healthz` (the process serves) and `/readyz` (its dependencies answer).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The `[telemetry]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Address of the operations endpoint; port 0 picks a free one.
    pub listen: SocketAddr,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named readiness check: a real round trip to a dependency.
pub type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// How long one readiness check may take before it counts as failed.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The readiness checks of a component (broker reachable, database reachable...).
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<(String, Check)>,
    timeout: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            checks: Vec::new(),
            timeout: DEFAULT_CHECK_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.checks.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Readiness {
    /// Adds a check; `/readyz` answers 200 only when every check passes.
    pub fn with<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((
            name.to_owned(),
            Arc::new(move || Box::pin(f()) as CheckFuture),
        ));
        self
    }

    /// Sets how long each check may take (default
    /// [`DEFAULT_CHECK_TIMEOUT`]); a check that has not answered by then
    /// fails, so `/readyz` answers within this bound even when a
    /// dependency hangs.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs every check, all at once, each bounded by the check timeout.
    pub async fn check(&self) -> ReadinessReport {
        let timeout = self.timeout;
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let run = check();
            async move {
                let result = match tokio::time::timeout(timeout, run).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                (name.clone(), result)
            }
        }))
        .await;
        ReadinessReport { results }
    }

    /// Runs every check; returns the report and whether all passed.
    pub async fn run(&self) -> (bool, String) {
        let report = self.check().await;
        (report.is_ready(), report.to_string())
    }
}

/// The outcome of every readiness check, in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    /// Each check's name and its result (the error says what is wrong).
    pub results: Vec<(String, Result<(), String>)>,
}

impl ReadinessReport {
    /// True when every check passed (and so with no check at all).
    pub fn is_ready(&self) -> bool {
        self.results.iter().all(|(_, r)| r.is_ok())
    }

    /// Names of the checks that failed.
    pub fn failing(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// One line per check: `name: ok` or `name: down: error`.
impl std::fmt::Display for ReadinessReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, result) in &self.results {
            match result {
                Ok(()) => writeln!(f, "{name}: ok")?,
                Err(e) => writeln!(f, "{name}: down: {e}")?,
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    readiness: Readiness,
}

/// A running operations endpoint.
#[derive(Debug)]
pub struct TelemetryServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TelemetryServer {
    /// Binds and serves until `shutdown` is cancelled.
    pub async fn start(
        config: &TelemetryConfig,
        registry: Registry,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let state = AppState {
            registry,
            readiness,
        };
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        });
        tracing::info!(%addr, "Serving /metrics, /healthz, /readyz");
        Ok(Self { addr, task })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the server to stop after shutdown.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let enc = TextEncoder::new();
    match enc.encode(&s.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(CONTENT_TYPE, enc.format_type().to_owned())],
            buf,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(CONTENT_TYPE, "text/plain".to_owned())],
            e.to_string().into_bytes(),
        ),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let report = s.readiness.check().await;
    let code = if report.is_ready() {
        StatusCode::OK
    } else {
        tracing::warn!(failing = ?report.failing(), "Not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, report.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn ready_when_every_check_passes() {
        let r = Readiness::default()
            .with("kafka", || async { Ok(()) })
            .with("postgres", || async { Ok(()) });
        let report = r.check().await;
        assert!(report.is_ready());
        assert!(report.failing().is_empty());
        assert_eq!(report.to_string(), "kafka: ok\npostgres: ok\n");
        assert_eq!(r.run().await, (true, report.to_string()));
    }

    #[tokio::test]
    async fn no_check_means_ready() {
        assert!(Readiness::default().check().await.is_ready());
    }

    #[tokio::test]
    async fn one_failing_check_makes_it_not_ready_and_is_named_with_its_error() {
        let r = Readiness::default()
            .with("kafka", || async { Err("connection refused".to_owned()) })
            .with("postgres", || async { Ok(()) });
        let report = r.check().await;
        assert!(!report.is_ready());
        assert_eq!(report.failing(), ["kafka"]);
        // The other checks still run and are reported.
        assert_eq!(
            report.to_string(),
            "kafka: down: connection refused\npostgres: ok\n"
        );
        let (ok, text) = r.run().await;
        assert!(!ok);
        assert_eq!(text, report.to_string());
    }

    #[tokio::test]
    async fn every_failing_check_is_named() {
        let r = Readiness::default()
            .with("kafka", || async { Err("a".to_owned()) })
            .with("postgres", || async { Err("b".to_owned()) });
        assert_eq!(r.check().await.failing(), ["kafka", "postgres"]);
    }

    #[tokio::test]
    async fn a_check_that_hangs_fails_after_the_timeout() {
        let r = Readiness::default()
            .check_timeout(Duration::from_millis(50))
            .with("kafka", || async { Ok(()) })
            .with("postgres", futures::future::pending::<Result<(), String>>);
        let report = tokio::time::timeout(Duration::from_secs(10), r.check())
            .await
            .expect("the report comes despite the hung check");
        assert_eq!(report.failing(), ["postgres"]);
        assert!(
            report
                .to_string()
                .contains("postgres: down: no answer within 50ms"),
            "{report}"
        );
    }

    #[tokio::test]
    async fn checks_run_concurrently() {
        // Each check waits for the other: run one after the other they
        // would both time out.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let (b1, b2) = (barrier.clone(), barrier);
        let r = Readiness::default()
            .check_timeout(Duration::from_secs(30))
            .with("a", move || {
                let b = b1.clone();
                async move {
                    b.wait().await;
                    Ok(())
                }
            })
            .with("b", move || {
                let b = b2.clone();
                async move {
                    b.wait().await;
                    Ok(())
                }
            });
        assert!(r.check().await.is_ready());
    }

    #[tokio::test]
    async fn each_run_checks_again() {
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let r = Readiness::default().with("kafka", move || {
            let up = flag.load(Ordering::SeqCst);
            async move { if up { Ok(()) } else { Err("down".to_owned()) } }
        });
        assert!(r.check().await.is_ready());
        up.store(false, Ordering::SeqCst);
        assert_eq!(r.check().await.failing(), ["kafka"]);
        up.store(true, Ordering::SeqCst);
        assert!(r.check().await.is_ready());
    }
}
