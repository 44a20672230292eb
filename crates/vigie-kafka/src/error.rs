//! The one error type of the Kafka plumbing.

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The client configuration was refused: by Vigie (a setting that would
    /// switch off a guarantee) or by librdkafka.
    #[error("invalid Kafka client configuration: {0}")]
    Config(String),
    /// A record could not be delivered (after librdkafka's own retries).
    #[error("delivery to topic {topic} failed: {source}")]
    Delivery {
        /// Topic the record was meant for.
        topic: String,
        /// The broker's or client's error.
        source: rdkafka::error::KafkaError,
    },
    /// Committing consumer offsets failed.
    #[error("offset commit failed: {0}")]
    Commit(rdkafka::error::KafkaError),
    /// An admin request (topic creation, metadata) failed.
    #[error("admin request failed for {what}: {message}")]
    Admin {
        /// What was being done (topic name, request).
        what: String,
        /// The broker's message.
        message: String,
    },
    /// A request failed after the client reported a connection error of
    /// its own (authentication refused, broker unreachable): both named.
    #[error("{request}; before it, the client reported: {reported}")]
    Unreachable {
        /// The request's error.
        request: rdkafka::error::KafkaError,
        /// The errors the client reported before it.
        reported: String,
    },
    /// The cluster refused the connection in a way retrying cannot mend
    /// (authentication refused, a certificate that does not verify, a
    /// plaintext client on a TLS listener).
    #[error("Kafka at {brokers} refused the connection ({connection}): {reported}")]
    Refused {
        /// The bootstrap servers.
        brokers: String,
        /// How the client connected: the non-secret connection properties.
        connection: String,
        /// What the client reported: listener, stage, mechanism.
        reported: String,
    },
    /// A step of a Kafka transaction failed
    /// ([`txn_failure`](Self::txn_failure) tells what may follow).
    #[error("{step} failed: {source}")]
    Transaction {
        /// What was being done.
        step: &'static str,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// A transaction step did not return long after its own timeout: the
    /// producer is wedged (librdkafka can wait forever for a group
    /// coordinator that came back while it was not looking:
    /// confluentinc/librdkafka#5456). It can only be replaced.
    #[error("{step} did not return within {after:?}: the transactional producer is stuck")]
    Stuck {
        /// What was being done.
        step: &'static str,
        /// How long it was given.
        after: std::time::Duration,
    },
    /// Any other client error.
    #[error(transparent)]
    Client(#[from] rdkafka::error::KafkaError),
}

impl KafkaError {
    /// librdkafka refused to create a client from its configuration. A key
    /// OpenSSL cannot read gets a hint: its own message ("PEM lib") does
    /// not say that the password is the usual cause.
    pub(crate) fn creation(e: rdkafka::error::KafkaError) -> Self {
        let mut message = e.to_string();
        if message.contains("ssl.key.location failed") {
            message.push_str(
                " (the client's private key could not be read: is kafka.security.ssl_key_password \
                 the password of an encrypted ssl_key_file?)",
            );
        }
        Self::Config(message)
    }

    /// Bounded label for metrics (`error_type`).
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Delivery { .. } => "delivery",
            Self::Commit(_) => "commit",
            Self::Admin { .. } => "admin",
            Self::Unreachable { .. } => "unreachable",
            Self::Refused { .. } => "refused",
            Self::Transaction { .. } | Self::Stuck { .. } => "transaction",
            Self::Client(_) => "client",
        }
    }
}
