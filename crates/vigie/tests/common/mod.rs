//! Helpers shared by the binary's integration tests.

use std::process::Command;

/// The `vigie` binary, with none of the developer's own `VIGIE__`
/// variables: only what a test sets.
pub(crate) fn vigie() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigie"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VIGIE__") || k == "VIGIE_CONFIG" {
            c.env_remove(k);
        }
    }
    c
}

/// Appends `count` sample cases of generator `seed` to `topic` with
/// `vigie produce --sample cases` (seeds give distinct ids).
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) fn produce_sample(bootstrap: &str, topic: &str, count: u64, seed: u64) {
    let out = vigie()
        .args(["produce", "--topic", topic, "--sample", "cases"])
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .env("VIGIE__KAFKA__BROKERS", bootstrap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP port free right now on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sum of a metric's samples on an instance's `/metrics`; `None` while
/// the endpoint does not answer.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all use it"
)]
pub(crate) async fn metric(port: u16, name: &str) -> Option<f64> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}
