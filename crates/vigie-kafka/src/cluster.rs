//! How every Kafka client Vigie creates reaches the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;

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

    /// A client for one short request (metadata, lag, a group's members or
    /// offsets) with `properties` added. Its errors go through [`explain`].
    pub(crate) fn short_lived(
        &self,
        properties: &[(&str, &str)],
    ) -> Result<BaseConsumer, KafkaError> {
        let mut c = self.client_config();
        for (k, v) in properties {
            c.set(*k, *v);
        }
        c.create().map_err(|e| KafkaError::Config(e.to_string()))
    }
}

/// `e`, the error of a request of `c`, naming the errors the client
/// reported on its own before it (a refused authentication, a broker it
/// cannot reach), which librdkafka hands out only when polled: a wrong
/// password then reads as a refused authentication, not as a bare
/// transport failure.
pub(crate) fn explain(c: &BaseConsumer, e: KafkaError) -> KafkaError {
    let mut reported: Vec<String> = Vec::new();
    // The first poll waits a little: the reports are queued apart from the
    // request's answer.
    while let Some(Err(r)) = c.poll(Duration::from_millis(100)) {
        let r = r
            .rdkafka_error_code()
            .map_or_else(|| r.to_string(), |code| code.to_string());
        if !reported.contains(&r) {
            reported.push(r);
        }
        if reported.len() == 3 {
            break;
        }
    }
    match e {
        KafkaError::Client(request) if !reported.is_empty() => KafkaError::Unreachable {
            request,
            reported: reported.join("; "),
        },
        e => e,
    }
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
