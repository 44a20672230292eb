//! Waiting on observable conditions, with a deadline.

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, or panics after `deadline` naming
/// `what` was awaited. The poll interval is short and fixed; the deadline
/// only bounds a failing test, it never paces a passing one.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
