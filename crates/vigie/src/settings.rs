//! The whole configuration of the `vigie` binary: one struct per section,
//! every field documented, unknown keys refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigie_config::{ConfigError, Loader, Secret};
use vigie_consumers::{SinkSpec, SinksConfig};
use vigie_kafka::{Cluster, ConsumerConfig, KafkaError, ProducerConfig, TopicSpec};
use vigie_producers::ProducersConfig;
use vigie_telemetry::{LogConfig, TelemetryConfig};

/// Embedded defaults: `defaults.toml` plus the topic definitions of `infra/`.
pub(crate) fn defaults_toml() -> String {
    format!(
        "{}\n{}",
        include_str!("defaults.toml"),
        include_str!("../../../infra/topics.toml")
    )
}

/// How long a command's first contact with Kafka waits for an answer
/// before it goes on with a warning.
const FIRST_CONTACT: Duration = Duration::from_secs(5);

/// Keys that may only come from the environment or a `<key>_file`: the
/// Kafka passwords (SASL, the client key's) and every sink's own secrets.
pub(crate) fn secret_keys() -> Vec<String> {
    let mut keys = vec![
        "kafka.security.sasl_password".to_owned(),
        "kafka.security.ssl_key_password".to_owned(),
    ];
    keys.extend(SinkSpec::secret_keys());
    keys
}

/// Top-level configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Kafka connection and client settings.
    pub(crate) kafka: KafkaSettings,
    /// The operations endpoint.
    pub(crate) telemetry: TelemetryConfig,
    /// Logs.
    pub(crate) log: LogConfig,
    /// Topics `vigie topics create` makes sure exist.
    pub(crate) topics: Vec<TopicSpec>,
    /// The consumer components.
    pub(crate) consumers: ConsumersSettings,
    /// The upstream sources.
    pub(crate) producers: ProducersConfig,
}

/// The `[consumers]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsumersSettings {
    /// One `[consumers.sinks.<name>]` section per sink of the registry,
    /// each read by its sink with unknown keys refused.
    #[serde(default)]
    pub(crate) sinks: SinksConfig,
}

/// The `[kafka]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub(crate) brokers: String,
    /// Transport security and authentication.
    pub(crate) security: SecuritySettings,
    /// Producer settings.
    pub(crate) producer: ProducerConfig,
    /// Consumer settings shared by consumer components.
    pub(crate) consumer: ConsumerConfig,
}

/// The `[kafka.security]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecuritySettings {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub(crate) protocol: String,
    /// SASL mechanism, e.g. `SCRAM-SHA-512`.
    #[serde(default)]
    pub(crate) sasl_mechanism: Option<String>,
    /// SASL user name.
    #[serde(default)]
    pub(crate) sasl_username: Option<String>,
    /// SASL password: only from `VIGIE__KAFKA__SECURITY__SASL_PASSWORD` or
    /// `sasl_password_file`, never written in a config file.
    #[serde(default)]
    pub(crate) sasl_password: Option<Secret>,
    /// PEM file of the CAs that sign the brokers' certificates (`ssl` and
    /// `sasl_ssl`), trusted instead of the system's CAs (librdkafka's
    /// `ssl.ca.location`); unset: the system's.
    #[serde(default)]
    pub(crate) ssl_ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate, for a listener that asks
    /// for one (mutual TLS; librdkafka's `ssl.certificate.location`).
    /// Set with `ssl_key_file`.
    #[serde(default)]
    pub(crate) ssl_certificate_file: Option<PathBuf>,
    /// PEM file of the private key of `ssl_certificate_file`
    /// (`ssl.key.location`).
    #[serde(default)]
    pub(crate) ssl_key_file: Option<PathBuf>,
    /// Password of an encrypted `ssl_key_file`: only from
    /// `VIGIE__KAFKA__SECURITY__SSL_KEY_PASSWORD` or
    /// `ssl_key_password_file`.
    #[serde(default)]
    pub(crate) ssl_key_password: Option<Secret>,
}

impl SecuritySettings {
    /// A client certificate needs its key, and a key password a key.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| ConfigError::InvalidValue {
            origin: None,
            key: "kafka.security".to_owned(),
            message: message.to_owned(),
        };
        match (&self.ssl_certificate_file, &self.ssl_key_file) {
            (Some(_), None) => Err(invalid(
                "ssl_certificate_file is set without ssl_key_file: a client certificate needs its private key",
            )),
            (None, Some(_)) => Err(invalid(
                "ssl_key_file is set without ssl_certificate_file: a private key needs its client certificate",
            )),
            (None, None) if self.ssl_key_password.is_some() => {
                Err(invalid("ssl_key_password is set without ssl_key_file"))
            }
            _ => Ok(()),
        }
    }
}

impl Settings {
    /// Loads defaults, then `file`, then the environment.
    pub(crate) fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut loader = Loader::new(defaults_toml()).secret_keys(secret_keys());
        if let Some(f) = file {
            loader = loader.file(f);
        }
        let settings: Self = loader.load()?;
        settings.kafka.security.check()?;
        settings
            .consumers
            .sinks
            .check()
            .map_err(|e| ConfigError::InvalidValue {
                origin: None,
                key: e.section,
                message: e.message,
            })?;
        Ok(settings)
    }

    /// The cluster with the `[kafka.security]` properties: what every
    /// Kafka client of the command is built from. Kept out of `self` so
    /// that printing the settings never prints the password.
    pub(crate) fn cluster(&self) -> Cluster {
        let sec = &self.kafka.security;
        let mut cluster =
            Cluster::new(&self.kafka.brokers).with("security.protocol", &sec.protocol);
        if let Some(m) = &sec.sasl_mechanism {
            cluster = cluster.with("sasl.mechanism", m);
        }
        if let Some(u) = &sec.sasl_username {
            cluster = cluster.with("sasl.username", u);
        }
        if let Some(p) = &sec.sasl_password {
            cluster = cluster.with("sasl.password", p.expose());
        }
        if let Some(ca) = &sec.ssl_ca_file {
            cluster = cluster.with("ssl.ca.location", ca.display().to_string());
        }
        if let Some(cert) = &sec.ssl_certificate_file {
            cluster = cluster.with("ssl.certificate.location", cert.display().to_string());
        }
        if let Some(key) = &sec.ssl_key_file {
            cluster = cluster.with("ssl.key.location", key.display().to_string());
        }
        if let Some(p) = &sec.ssl_key_password {
            cluster = cluster.with("ssl.key.password", p.expose());
        }
        cluster
    }

    /// [`cluster`](Self::cluster), after a first round trip to it. A
    /// refused connection (a wrong password, a certificate that does not
    /// verify, a plaintext client on a TLS listener) stops the command
    /// here, saying what the client reported, rather than retrying
    /// forever; a cluster that does not answer yet only warns, and the
    /// clients keep trying.
    pub(crate) async fn connect(&self) -> anyhow::Result<Cluster> {
        let cluster = self.cluster();
        match vigie_kafka::ping(&cluster, FIRST_CONTACT).await {
            Ok(()) => {}
            Err(e @ KafkaError::Refused { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "Kafka does not answer yet; its clients keep trying")
            }
        }
        Ok(cluster)
    }
}
