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

/// A TCP port free right now on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
