//! Graceful shutdown: SIGTERM or SIGINT cancels a token; components stop
//! fetching, finish the batch in flight, commit and return.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Returns a token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "Shutting down"),
            _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "Shutting down"),
        }
        t.cancel();
    });
    token
}
