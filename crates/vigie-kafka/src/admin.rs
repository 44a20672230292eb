//! Topic administration: create topics, and their dead-letter twins, from
//! configuration. Creating a topic that exists is not an error, so start-up
//! can always call it.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::dlq::dlq_topic;
use crate::error::KafkaError;

/// One topic as declared in `infra/topics.toml` or the `[[topics]]` config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name, `<domain>.<entity>.v<N>`.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor.
    #[serde(default = "one")]
    pub replication: i32,
    /// Retention in milliseconds (`retention.ms`); broker default when unset.
    #[serde(default)]
    pub retention_ms: Option<i64>,
    /// `delete` or `compact` (`cleanup.policy`); broker default when unset.
    #[serde(default)]
    pub cleanup_policy: Option<String>,
    /// Also create the `<name>.dlq` twin with the same settings.
    #[serde(default = "yes")]
    pub dlq: bool,
    /// Other topic-level configs, passed through.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

fn one() -> i32 {
    1
}
fn yes() -> bool {
    true
}

/// What `ensure_topics` did for one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicOutcome {
    /// The topic was created.
    Created,
    /// The topic was already there.
    Existed,
}

impl TopicSpec {
    /// A spec with `partitions` and defaults for the rest.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication: 1,
            retention_ms: None,
            cleanup_policy: None,
            dlq: true,
            config: BTreeMap::new(),
        }
    }

    fn configs(&self) -> Vec<(String, String)> {
        let mut c: Vec<(String, String)> = self.config.clone().into_iter().collect();
        if let Some(r) = self.retention_ms {
            c.push(("retention.ms".into(), r.to_string()));
        }
        if let Some(p) = &self.cleanup_policy {
            c.push(("cleanup.policy".into(), p.clone()));
        }
        c
    }
}

/// Creates every topic (and its DLQ twin where asked) that does not exist yet.
pub async fn ensure_topics(
    cluster: &Cluster,
    specs: &[TopicSpec],
) -> Result<Vec<(String, TopicOutcome)>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cluster
        .client_config()
        .create()
        .map_err(KafkaError::creation)?;
    let mut names = Vec::new();
    let mut configs = Vec::new();
    for s in specs {
        if s.partitions < 1 {
            return Err(KafkaError::Admin {
                what: s.name.clone(),
                message: format!("partitions must be at least 1, got {}", s.partitions),
            });
        }
        names.push((s.name.clone(), s));
        configs.push(s.configs());
        if s.dlq {
            names.push((dlq_topic(&s.name), s));
            configs.push(s.configs());
        }
    }
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .zip(&configs)
        .map(|((name, s), cfg)| {
            let mut t = NewTopic::new(name, s.partitions, TopicReplication::Fixed(s.replication));
            for (k, v) in cfg {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &opts).await?;
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(name) => out.push((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                out.push((name, TopicOutcome::Existed))
            }
            Err((name, code)) => {
                return Err(KafkaError::Admin {
                    what: name,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// A real round trip to the cluster (a metadata request), for `/readyz` and
/// the first contact of every command: see [`Cluster::check`].
pub async fn ping(cluster: &Cluster, timeout: Duration) -> Result<(), KafkaError> {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || cluster.check(timeout))
        .await
        .map_err(|e| KafkaError::Admin {
            what: "ping".into(),
            message: e.to_string(),
        })?
}
