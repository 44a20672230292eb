//! The operations endpoint of a component: `/metrics` (Prometheus text),
//! `/healthz` (the process serves) and `/readyz` (its dependencies answer).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

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

/// The readiness checks of a component (broker reachable, database reachable...).
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(String, Check)>,
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

    /// Runs every check; returns the report and whether all passed.
    pub async fn run(&self) -> (bool, String) {
        let mut ok = true;
        let mut report = String::new();
        for (name, check) in &self.checks {
            match check().await {
                Ok(()) => report.push_str(&format!("{name}: ok\n")),
                Err(e) => {
                    ok = false;
                    report.push_str(&format!("{name}: {e}\n"));
                }
            }
        }
        (ok, report)
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
    let (ok, report) = s.readiness.run().await;
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, report)
}
