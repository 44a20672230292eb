//! How every Kafka client Vigie creates reaches the cluster.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use crate::error::KafkaError;

/// Connection properties whose values are secrets: never shown.
const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
];

/// The bootstrap servers and the connection properties (`security.protocol`,
/// `sasl.*`, `ssl.*`) of the cluster. Every Kafka client Vigie creates
/// (producer, group consumer, admin, lag, readiness, dead-letter reader,
/// offset commits from outside a group) starts from
/// [`client_config`](Self::client_config), so none of them can leave the
/// security settings out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    brokers: String,
    connection: BTreeMap<String, String>,
}

impl Cluster {
    /// A cluster reached at `brokers` (`host:port[,host:port]`) with
    /// librdkafka's default connection: plaintext, no authentication.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            connection: BTreeMap::new(),
        }
    }

    /// Adds a connection property (`security.protocol`, `sasl.mechanism`...)
    /// every client gets.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.connection.insert(key.into(), value.into());
        self
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The one starting point of every client's librdkafka configuration:
    /// the bootstrap servers and the connection properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.connection {
            c.set(k, v);
        }
        c
    }

    /// The connection properties that are not secrets, as `key=value, ...`:
    /// how an error says which way the client tried to connect.
    pub fn describe(&self) -> String {
        let shown: Vec<String> = self
            .connection
            .iter()
            .filter(|(k, _)| !SECRET_PROPERTIES.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if shown.is_empty() {
            "security.protocol=plaintext".to_owned()
        } else {
            shown.join(", ")
        }
    }

    /// Whether the connection is encrypted (`ssl` or `sasl_ssl`).
    fn tls(&self) -> bool {
        self.connection
            .get("security.protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("ssl") || p.eq_ignore_ascii_case("sasl_ssl"))
    }

    /// A client for one short request (metadata, lag, a group's members or
    /// offsets) with `properties` added. Its errors go through [`explain`].
    pub(crate) fn short_lived(
        &self,
        properties: &[(&str, &str)],
    ) -> Result<BaseConsumer<Reports>, KafkaError> {
        let mut c = self.client_config();
        for (k, v) in properties {
            c.set(*k, *v);
        }
        // The connection failures are logged at Info and above; rdkafka
        // would otherwise take the level of the `log` crate's logger.
        c.set_log_level(RDKafkaLogLevel::Info)
            .create_with_context(Reports::default())
            .map_err(KafkaError::creation)
    }

    /// A first round trip to the cluster (a metadata request), within
    /// `timeout`. Fails at once, with [`KafkaError::Refused`], when the
    /// cluster refuses the connection in a way retrying cannot mend: a
    /// refused authentication, a certificate that does not verify, a
    /// plaintext client on a TLS listener. Other failures (no broker
    /// answering yet) come after `timeout`, as [`KafkaError::Unreachable`].
    pub fn check(&self, timeout: Duration) -> Result<(), KafkaError> {
        let c = self.short_lived(&[])?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = c.fetch_metadata(None, left.min(Duration::from_millis(500)));
            let Err(e) = attempt else { return Ok(()) };
            let reported = reports(&c);
            let refused = reported.iter().any(|r| refusal(r));
            if refused || left.is_zero() {
                return Err(self.explained(e.into(), reported));
            }
        }
    }

    /// `e` with what the client reported before it: a refusal when one of
    /// the reports is (see [`check`](Self::check)).
    fn explained(&self, e: KafkaError, reported: Vec<String>) -> KafkaError {
        if reported.is_empty() {
            return e;
        }
        // A TLS listener accepts the connection and closes it at the first
        // request; a broker going down resets connections or refuses them,
        // which is no refusal.
        let plaintext_on_tls = !self.tls()
            && reported.iter().any(|r| {
                r.contains("Disconnected")
                    && r.contains("closed by peer")
                    && r.contains("APIVERSION_QUERY")
            })
            && !reported
                .iter()
                .any(|r| r.contains("Connection refused") || r.contains("reset by peer"));
        let mut joined = reported.join("; ");
        // Mutual TLS: the broker refuses the handshake with an alert when
        // the client sent no certificate, or one its CA does not sign.
        let certificate_refused = self.tls()
            && reported.iter().any(|r| {
                [
                    "alert bad certificate",
                    "alert certificate required",
                    "alert unknown ca",
                ]
                .iter()
                .any(|alert| r.contains(alert))
            });
        if certificate_refused {
            let sent = if self.connection.contains_key("ssl.certificate.location") {
                "refused this client's certificate: it must be signed by a CA the listener trusts"
            } else {
                "asks for a client certificate: set kafka.security.ssl_certificate_file and ssl_key_file"
            };
            joined.push_str(&format!("; the listener {sent}"));
        }
        if plaintext_on_tls {
            joined.push_str(
                "; the broker closes the connection before the first answer, as a TLS \
                 listener does to a plaintext client: set kafka.security.protocol to ssl \
                 or sasl_ssl if this listener is encrypted",
            );
        }
        match e {
            _ if plaintext_on_tls || reported.iter().any(|r| refusal(r)) => KafkaError::Refused {
                brokers: self.brokers.clone(),
                connection: self.describe(),
                reported: joined,
            },
            KafkaError::Client(request) => KafkaError::Unreachable {
                request,
                reported: joined,
            },
            e => e,
        }
    }
}

/// Whether a connection failure librdkafka reported is one retrying cannot
/// mend: a SASL handshake or authentication refused, a TLS handshake that
/// fails.
fn refusal(report: &str) -> bool {
    ["SASL", "Authentication", "SSL"]
        .iter()
        .any(|word| report.contains(word))
}

/// The context of a short-lived client: keeps the connection failures
/// librdkafka reports (its `FAIL` log lines and error events), which name
/// the listener, the stage and, for SASL, the mechanism, rather than
/// logging every retry.
#[derive(Default)]
pub(crate) struct Reports(Mutex<Vec<String>>);

impl Reports {
    /// At most this many distinct reports are kept.
    const KEPT: usize = 3;

    fn push(&self, message: &str) {
        // "[thrd:…]: 127.0.0.1:9093/bootstrap: … (after 322ms in state
        // AUTH_REQ, 1 identical error(s) suppressed)": the broker, the
        // failure and the state are kept; the thread, the timing and the
        // count, which differ from one retry to the next, are not.
        let message = match message.split_once("]: ") {
            Some((thread, rest)) if thread.starts_with("[thrd:") => rest,
            _ => message,
        };
        let message = match message.split_once(" (after ") {
            Some((head, tail)) => {
                let state = tail
                    .split_once(" in state ")
                    .map(|(_, s)| s.split([',', ')']).next().unwrap_or(s));
                match state {
                    Some(state) => format!("{head} (in state {state})"),
                    None => head.to_owned(),
                }
            }
            None => message.to_owned(),
        };
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < Self::KEPT && !kept.contains(&message) {
            kept.push(message);
        }
    }

    /// The distinct reports so far.
    fn reported(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" {
            self.push(message);
        } else if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            tracing::warn!(target: "librdkafka", facility = fac, "{message}");
        }
    }

    fn error(&self, _error: rdkafka::error::KafkaError, reason: &str) {
        // The reason repeats the `FAIL` line: kept once.
        self.push(reason);
    }
}

impl ConsumerContext for Reports {}

/// `e`, the error of a request of `c`, naming the connection failures the
/// client reported before it (a refused authentication, a broker it cannot
/// reach), which librdkafka reports apart from the request's answer: a
/// wrong password then reads as a refused authentication, not as a bare
/// timeout.
pub(crate) fn explain(cluster: &Cluster, c: &BaseConsumer<Reports>, e: KafkaError) -> KafkaError {
    cluster.explained(e, reports(c))
}

/// What `c` reported so far. librdkafka queues its log lines and error
/// events apart from the requests' answers: they reach the context only
/// when the client is polled.
fn reports(c: &BaseConsumer<Reports>) -> Vec<String> {
    // The first poll waits a little: the reports trail the answer.
    let mut wait = Duration::from_millis(100);
    let mut events = Vec::new();
    while let Some(event) = c.poll(wait) {
        if let Err(e) = event {
            events.push(e.to_string());
        }
        wait = Duration::ZERO;
    }
    // The bare error codes only when no line said more.
    if c.context().reported().is_empty() {
        for e in &events {
            c.context().push(e);
        }
    }
    c.context().reported()
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: BTreeMap<&str, &str> = self
            .connection
            .iter()
            .map(|(k, v)| {
                let secret = SECRET_PROPERTIES.contains(&k.as_str());
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("Cluster")
            .field("brokers", &self.brokers)
            .field("connection", &shown)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_keep_the_broker_the_failure_and_the_state_once() {
        let r = Reports::default();
        for (ms, suffix) in [("322", ""), ("318", ", 1 identical error(s) suppressed")] {
            r.push(&format!(
                "[thrd:sasl_ssl://k:9093/bootstrap]: sasl_ssl://k:9093/bootstrap: SASL \
                 authentication error: Authentication failed (after {ms}ms in state \
                 AUTH_REQ{suffix})"
            ));
        }
        r.push("k:9092/bootstrap: Connect to ipv4#10.0.0.1:9092 failed (after 3ms)");
        for n in 0..5 {
            r.push(&format!("another failure {n}"));
        }
        assert_eq!(
            r.reported(),
            [
                "sasl_ssl://k:9093/bootstrap: SASL authentication error: Authentication \
                 failed (in state AUTH_REQ)",
                "k:9092/bootstrap: Connect to ipv4#10.0.0.1:9092 failed",
                "another failure 0",
            ]
        );
    }

    #[test]
    fn every_client_gets_the_connection_properties_and_debug_hides_the_secrets() {
        let cluster = Cluster::new("k1:9092,k2:9092")
            .with("security.protocol", "sasl_plaintext")
            .with("sasl.mechanism", "PLAIN")
            .with("sasl.username", "vigie-sink")
            .with("sasl.password", "s3cret-value");
        let c = cluster.client_config();
        assert_eq!(c.get("bootstrap.servers"), Some("k1:9092,k2:9092"));
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(c.get("sasl.password"), Some("s3cret-value"));
        let shown = format!("{cluster:?}");
        assert!(
            shown.contains("vigie-sink") && shown.contains("***"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret-value"), "{shown}");
    }
}
