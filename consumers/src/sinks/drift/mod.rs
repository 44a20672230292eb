//! `drift`: the drift of a model's cases and scores against its reference
//! profile, window by window. It consumes the cases and the scores
//! (`health.case` and `health.case_score` v1) in its own group, counts them
//! in event-time windows ([`Tracker`]), and for each window closed
//! publishes a `health.drift_report` v1 (every statistic per feature, the
//! thresholds, the verdict) and sets its Prometheus gauges.
//!
//! Exactly once, with Kafka transactions: a batch's reports, the open
//! windows (one record per group on the compacted `state_topic`) and the
//! batch's offsets commit together. A restart reads the group's last
//! committed state back and resumes from the offsets committed with it,
//! so no window is counted twice, skipped or reported twice.
//!
//! One member per group: the state is the group's, so a second member
//! would split the partitions and not the windows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use vigie_core::health::{DriftReport, DriftStatus, DriftThresholds};
use vigie_core::{Envelope, Event};
use vigie_kafka::{EventProducer, OutRecord};

use crate::drift::{Input, ReferenceProfile, Tracker, TrackerState, WindowSpec};
use crate::sink::{Accepted, BatchContext, Rejected, Rejects, Sink, SinkError, SinkSpec};
use crate::sinks::scorer::version_key;
use crate::transaction::TxnCommits;

/// The registry entry.
pub const SPEC: SinkSpec = SinkSpec {
    name: "drift",
    about: "drift of the cases and scores against the model's reference profile, per event-time window",
    secrets: &[],
    check: |section| crate::sink::parse::<DriftConfig>(section)?.check(),
    build: |args| {
        Box::pin(async move {
            let config: DriftConfig = args.config()?;
            config
                .check()
                .map_err(|e| SinkError::Fatal(format!("consumers.sinks.{}: {e}", args.name)))?;
            let txn = crate::transaction::member_transactions(
                "drift",
                config.transactional_id.as_deref(),
                &args.kafka.group,
                config.transaction_timeout_ms,
            );
            // Registering the transactional id first aborts what an earlier
            // run of this member left open, so the state read next is the
            // last one committed.
            let producer = args.kafka.transactional(&txn).await?;
            let mut sink = DriftSink::new(&config, producer, args.registry)?;
            sink.txn = sink.txn.renewing(args.kafka.clone(), txn);
            sink.state_key = args.kafka.group.clone();
            sink.restore(&args.kafka.cluster).await?;
            Ok(Box::new(sink) as Box<dyn Sink>)
        })
    },
};

/// The `[consumers.sinks.drift]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// The model whose reference profile the windows are compared with:
    /// a directory holding its `metadata.json`, or a directory of versions
    /// of which the highest is used, as the scorer's `model_dir`; a newer
    /// one is taken up while running.
    pub model_dir: PathBuf,
    /// How often to look for a newer model version, in milliseconds
    /// (between batches). On a newer version the windows start afresh
    /// against its profile; the open windows of the old one are dropped.
    pub reload_check_ms: u64,
    /// Length of a window, in seconds of event time (the envelopes'
    /// `ingested_at`).
    pub window_secs: u64,
    /// Distance between two windows' starts; unset: `window_secs`
    /// (tumbling windows). Less gives sliding windows.
    pub slide_secs: Option<u64>,
    /// How long after its end a window still takes late events, in
    /// seconds of event time.
    pub allowed_lateness_secs: u64,
    /// A partition that delivered nothing for this long (wall clock) no
    /// longer holds the windows open.
    pub idle_partition_secs: u64,
    /// A window (or a feature) with fewer values is `insufficient`, not
    /// judged.
    pub min_cases: u64,
    /// A population stability index from this value on is `warn`.
    pub psi_warn: f64,
    /// A population stability index from this value on is `alert`.
    pub psi_alert: f64,
    /// Where the reports are published.
    pub report_topic: String,
    /// The compacted topic holding each group's open windows.
    pub state_topic: String,
    /// The producer's `transactional.id`; default `vigie-drift-<group>-<host
    /// name>`.
    pub transactional_id: Option<String>,
    /// How long the broker keeps a transaction open before aborting it.
    pub transaction_timeout_ms: u64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::from("models/hosp_risk"),
            reload_check_ms: 5_000,
            window_secs: 900,
            slide_secs: None,
            allowed_lateness_secs: 60,
            idle_partition_secs: 60,
            min_cases: 5_000,
            psi_warn: 0.03,
            psi_alert: 0.05,
            report_topic: "health.drift_report.v1".into(),
            state_topic: "vigie.drift_state.v1".into(),
            transactional_id: None,
            transaction_timeout_ms: 10_000,
        }
    }
}

impl DriftConfig {
    /// The values make sense together; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.window_secs == 0 {
            return Err("window_secs must be at least 1".into());
        }
        if let Some(slide) = self.slide_secs
            && (slide == 0 || slide > self.window_secs)
        {
            return Err(format!(
                "slide_secs must be between 1 and window_secs ({}), got {slide}",
                self.window_secs
            ));
        }
        for (key, v) in [("psi_warn", self.psi_warn), ("psi_alert", self.psi_alert)] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{key} must be a number from 0 on, got {v}"));
            }
        }
        if self.psi_warn > self.psi_alert {
            return Err(format!(
                "psi_warn ({}) must not be above psi_alert ({})",
                self.psi_warn, self.psi_alert
            ));
        }
        Ok(())
    }

    /// The windows' shape.
    #[must_use]
    pub fn spec(&self) -> WindowSpec {
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        WindowSpec {
            size_ms: ms(self.window_secs),
            slide_ms: ms(self.slide_secs.unwrap_or(self.window_secs)),
            lateness_ms: ms(self.allowed_lateness_secs),
            idle_ms: ms(self.idle_partition_secs),
        }
    }

    /// The thresholds of the verdicts.
    #[must_use]
    pub fn thresholds(&self) -> DriftThresholds {
        DriftThresholds {
            psi_warn: self.psi_warn,
            psi_alert: self.psi_alert,
            min_cases: self.min_cases,
        }
    }
}

/// The name, version and reference profile of the newest version under
/// `dir` (see [`DriftConfig::model_dir`]).
pub fn newest_profile(dir: &Path) -> Result<(String, String, ReferenceProfile), String> {
    #[derive(Deserialize)]
    struct Named {
        name: String,
        version: String,
    }
    let version = crate::sinks::scorer::versions(dir)
        .into_iter()
        .next()
        .ok_or_else(|| {
            format!(
                "no model in {} (a model.onnx, or version directories holding one)",
                dir.display()
            )
        })?;
    let path = version.join("metadata.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let profile = ReferenceProfile::from_metadata(&text)
        .map_err(|e| format!("{}: no valid reference_profile: {e}", path.display()))?;
    let named: Named =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((named.name, named.version, profile))
}

/// DLQ reason: the drift component reads cases and scores only.
pub const REASON_UNSUPPORTED: &str = "unsupported_schema";

/// The Prometheus series of the drift component.
#[derive(Clone)]
struct Gauges {
    statistic: GaugeVec,
    feature_status: GaugeVec,
    status: GaugeVec,
    window_end: GaugeVec,
    windows: IntCounterVec,
    late: IntCounterVec,
    other_model: IntCounterVec,
    dropped: IntCounterVec,
    open: IntGauge,
}

/// A status as a gauge's value: -1 insufficient, 0 ok, 1 warn, 2 alert.
fn level(s: DriftStatus) -> f64 {
    match s {
        DriftStatus::Insufficient => -1.0,
        DriftStatus::Ok => 0.0,
        DriftStatus::Warn => 1.0,
        DriftStatus::Alert => 2.0,
    }
}

impl Gauges {
    fn register(registry: &Registry, thresholds: DriftThresholds) -> Result<Self, SinkError> {
        let fatal = |e: prometheus::Error| SinkError::Fatal(format!("drift metrics: {e}"));
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).map_err(fatal)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).map_err(fatal)
        };
        let model = ["model", "version"];
        let g = Self {
            statistic: gauge(
                "vigie_drift_statistic",
                "A statistic of the last window evaluated, per feature (psi, jensen_shannon, ks_statistic, ks_p_value).",
                &["model", "version", "feature", "statistic"],
            )?,
            feature_status: gauge(
                "vigie_drift_feature_status",
                "Verdict of the last window per feature: -1 insufficient, 0 ok, 1 warn, 2 alert.",
                &["model", "version", "feature"],
            )?,
            status: gauge(
                "vigie_drift_status",
                "Verdict of the last window evaluated: -1 insufficient, 0 ok, 1 warn, 2 alert.",
                &model,
            )?,
            window_end: gauge(
                "vigie_drift_window_end_seconds",
                "End (event time) of the last window evaluated, in seconds since the epoch.",
                &model,
            )?,
            windows: counter(
                "vigie_drift_windows_total",
                "Windows evaluated, by verdict.",
                &["model", "version", "status"],
            )?,
            late: counter(
                "vigie_drift_late_events_total",
                "Events that came after every window they belong to had closed (not counted), by input.",
                &["input"],
            )?,
            other_model: counter(
                "vigie_drift_other_model_scores_total",
                "Scores of another model or version than the profile's (not counted).",
                &["model", "version"],
            )?,
            dropped: counter(
                "vigie_drift_windows_dropped_total",
                "Open windows of a model version dropped, not evaluated, when a newer version was taken up.",
                &model,
            )?,
            open: IntGauge::new("vigie_drift_open_windows", "Windows open.").map_err(fatal)?,
        };
        let threshold = gauge(
            "vigie_drift_threshold",
            "The thresholds the verdicts are judged by.",
            &["statistic", "level"],
        )?;
        threshold
            .with_label_values(&["psi", "warn"])
            .set(thresholds.psi_warn);
        threshold
            .with_label_values(&["psi", "alert"])
            .set(thresholds.psi_alert);
        #[allow(clippy::cast_precision_loss)]
        threshold
            .with_label_values(&["cases", "min"])
            .set(thresholds.min_cases as f64);
        for input in ["cases", "scores"] {
            g.late.with_label_values(&[input]);
        }
        for c in [
            Box::new(g.statistic.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(g.feature_status.clone()),
            Box::new(g.status.clone()),
            Box::new(g.window_end.clone()),
            Box::new(g.windows.clone()),
            Box::new(g.late.clone()),
            Box::new(g.other_model.clone()),
            Box::new(g.dropped.clone()),
            Box::new(g.open.clone()),
            Box::new(threshold),
        ] {
            registry.register(c).map_err(fatal)?;
        }
        Ok(g)
    }

    /// Sets the gauges from the reports of a batch, committed.
    fn report(&self, reports: &[DriftReport]) {
        for r in reports {
            let model = [r.model_name.as_str(), r.model_version.as_str()];
            for f in &r.features {
                let labels = |stat| [model[0], model[1], f.feature.as_str(), stat];
                for (stat, v) in [
                    ("psi", f.psi),
                    ("jensen_shannon", f.jensen_shannon),
                    ("ks_statistic", f.ks_statistic),
                    ("ks_p_value", f.ks_p_value),
                ] {
                    self.statistic
                        .with_label_values(&labels(stat))
                        .set(v.unwrap_or(f64::NAN));
                }
                self.feature_status
                    .with_label_values(&[model[0], model[1], f.feature.as_str()])
                    .set(level(f.status));
            }
            self.status.with_label_values(&model).set(level(r.status));
            #[allow(clippy::cast_precision_loss)]
            self.window_end
                .with_label_values(&model)
                .set(r.window_end.timestamp_millis() as f64 / 1000.0);
            self.windows
                .with_label_values(&[model[0], model[1], r.status.as_str()])
                .inc();
        }
    }
}

/// The drift sink.
pub struct DriftSink {
    tracker: Tracker,
    config: DriftConfig,
    producer: EventProducer,
    txn: TxnCommits,
    gauges: Gauges,
    /// The state record's key: the consumer group.
    state_key: String,
    /// When the model directory was last looked at for a newer version.
    last_check: Instant,
}

impl std::fmt::Debug for DriftSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.tracker.state();
        f.debug_struct("DriftSink")
            .field("model", &s.model_name)
            .field("version", &s.model_version)
            .field("open_windows", &self.tracker.open_windows())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl DriftSink {
    /// Loads the profile of the newest model version and registers the
    /// metrics; no window yet.
    pub fn new(
        config: &DriftConfig,
        producer: EventProducer,
        registry: &Registry,
    ) -> Result<Self, SinkError> {
        let (name, version, profile) =
            newest_profile(&config.model_dir).map_err(SinkError::Fatal)?;
        let gauges = Gauges::register(registry, config.thresholds())?;
        let txn = TxnCommits::register(
            registry,
            "vigie_drift_transactions_aborted_total",
            "Transactions of the drift component aborted (its reports and state with them), by cause.",
        )?;
        info!(model = %name, version = %version, window_secs = config.window_secs, "Drift profile loaded");
        Ok(Self {
            tracker: Tracker::new(
                Arc::new(profile),
                (&name, &version),
                config.spec(),
                config.thresholds(),
            ),
            config: config.clone(),
            producer,
            txn,
            gauges,
            state_key: String::new(),
            last_check: Instant::now(),
        })
    }

    /// Between batches, every `reload_check_ms`: takes up a newer version
    /// of the model than the one the windows are binned for, with no window
    /// (the open ones, binned by the old profile, are dropped and counted).
    /// A version whose profile does not load is logged and skipped.
    fn follow_newest(&mut self) {
        if self.last_check.elapsed() < Duration::from_millis(self.config.reload_check_ms) {
            return;
        }
        self.last_check = Instant::now();
        // The directory names first: the newest version's metadata is read
        // only when it is above the one in use, not at every check.
        let newest_dir = crate::sinks::scorer::versions(&self.config.model_dir)
            .into_iter()
            .next();
        let above = newest_dir
            .as_deref()
            .and_then(|d| d.file_name()?.to_str())
            .is_some_and(|d| version_key(d) > version_key(&self.tracker.state().model_version));
        if !above {
            return;
        }
        let (name, version, profile) = match newest_profile(&self.config.model_dir) {
            Ok(newest) => newest,
            Err(e) => {
                warn!(error = %e, "Newest model version not taken up; keeping the current profile");
                return;
            }
        };
        let state = self.tracker.state();
        // Only ever up, as the scorer moves: a newer version of the same
        // model.
        let newer =
            name == state.model_name && version_key(&version) > version_key(&state.model_version);
        if !newer {
            return;
        }
        let dropped = self.tracker.open_windows();
        self.gauges
            .dropped
            .with_label_values(&[&state.model_name, &state.model_version])
            .inc_by(dropped as u64);
        info!(from = %state.model_version, to = %version, dropped_windows = dropped, "Newer model version: windows start afresh against its profile");
        self.tracker = Tracker::new(
            Arc::new(profile),
            (&name, &version),
            self.config.spec(),
            self.config.thresholds(),
        );
        self.gauges.open.set(0);
    }

    /// Takes up the group's last committed state from the state topic.
    async fn restore(&mut self, cluster: &vigie_kafka::Cluster) -> Result<(), SinkError> {
        let topic = &self.config.state_topic;
        let stored = vigie_kafka::changelog::latest_committed(
            cluster,
            topic,
            self.state_key.as_bytes(),
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| {
            SinkError::Fatal(format!(
                "cannot read the drift state from {topic} (created by `vigie topics create`): {e}"
            ))
        })?;
        let Some(bytes) = stored else {
            info!(topic = %topic, group = %self.state_key, "No drift state stored; starting with no window");
            return Ok(());
        };
        let state: TrackerState = serde_json::from_slice(&bytes).map_err(|e| {
            SinkError::Fatal(format!(
                "the drift state of group {} in {topic} does not read: {e}",
                self.state_key
            ))
        })?;
        let (model, version) = (state.model_name.clone(), state.model_version.clone());
        match self.tracker.restore(state, now_ms()) {
            Ok(()) => {
                info!(group = %self.state_key, open_windows = self.tracker.open_windows(), "Drift state restored");
                self.gauges
                    .open
                    .set(gauge_count(self.tracker.open_windows()));
            }
            Err(why) => warn!(
                group = %self.state_key,
                model = %model,
                version = %version,
                "Drift state not taken up ({why}); starting with no window"
            ),
        }
        Ok(())
    }
}

fn gauge_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Sink for DriftSink {
    fn commits_in_transaction(&self) -> bool {
        true
    }

    async fn write(
        &mut self,
        events: &[Accepted],
        ctx: &BatchContext<'_>,
        rejects: &mut dyn Rejects,
    ) -> Result<usize, SinkError> {
        self.follow_newest();
        // The batch is counted on a copy, taken up once committed: a batch
        // tried again is counted once.
        let mut next = self.tracker.clone();
        let now = now_ms();
        next.assigned(ctx.assigned.len(), now);
        let mut refused = Vec::new();
        let mut counted = 0usize;
        let mut other_model = Vec::new();
        for ev in events {
            match &ev.event {
                Event::Case(c) => {
                    next.add_case(Input::Cases(ev.partition), c.ingested_at, now, &c.data);
                    counted += 1;
                }
                Event::CaseScore(s) => {
                    let state = next.state();
                    if (s.data.model_name.as_str(), s.data.model_version.as_str())
                        != (state.model_name.as_str(), state.model_version.as_str())
                    {
                        other_model.push((s.data.model_name.clone(), s.data.model_version.clone()));
                        continue;
                    }
                    next.add_score(Input::Scores(ev.partition), s.ingested_at, now, s.data.score);
                    counted += 1;
                }
                other => refused.push(Rejected {
                    index: ev.index,
                    reason: REASON_UNSUPPORTED,
                    error: format!(
                        "the drift component reads health.case and health.case_score v1, not {} v{}",
                        other.schema(),
                        other.schema_version()
                    ),
                }),
            }
        }
        let reports = next.close_due(now);
        let mut out = Vec::with_capacity(reports.len());
        for r in &reports {
            let env = Envelope::new("drift", r.clone(), chrono::Utc::now());
            let bytes = env
                .to_json_bytes()
                .map_err(|e| SinkError::Fatal(format!("a drift report does not encode: {e}")))?;
            out.push((r.model_name.clone(), bytes));
        }
        let state = serde_json::to_vec(next.state())
            .map_err(|e| SinkError::Fatal(format!("the drift state does not encode: {e}")))?;
        let mut records: Vec<OutRecord<'_>> = out
            .iter()
            .map(|(k, v)| OutRecord {
                partition: None,
                topic: &self.config.report_topic,
                key: Some(k.as_bytes()),
                payload: Some(v),
                headers: &[],
                timestamp_ms: None,
            })
            .collect();
        records.push(OutRecord {
            partition: None,
            topic: &self.config.state_topic,
            key: Some(self.state_key.as_bytes()),
            payload: Some(&state),
            headers: &[],
            timestamp_ms: None,
        });
        self.txn
            .commit(&mut self.producer, records, &refused, rejects, ctx)
            .await?;
        let before = self.tracker.state();
        let after = next.state();
        self.gauges
            .late
            .with_label_values(&["cases"])
            .inc_by(after.late_cases - before.late_cases);
        self.gauges
            .late
            .with_label_values(&["scores"])
            .inc_by(after.late_scores - before.late_scores);
        for (name, version) in other_model {
            self.gauges
                .other_model
                .with_label_values(&[&name, &version])
                .inc();
        }
        self.gauges.report(&reports);
        self.gauges.open.set(gauge_count(next.open_windows()));
        for r in &reports {
            info!(
                window_start = %r.window_start,
                window_end = %r.window_end,
                cases = r.cases,
                scores = r.scores,
                status = r.status.as_str(),
                "Drift window evaluated"
            );
        }
        self.tracker = next;
        Ok(counted)
    }
}
