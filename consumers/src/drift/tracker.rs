//! Event-time windows of a model's cases and scores: each event counted in
//! the windows its time falls in, a window closed once the watermark has
//! passed its end by the allowed lateness, and a closed window judged
//! against the thresholds into a `health.drift_report` v1.
//!
//! The watermark is the smallest, over the input partitions, of the latest
//! event time each has delivered: a window closes only once every
//! partition has moved past it, so a backlog read unevenly across
//! partitions loses nothing. A partition that delivered nothing for
//! `idle_ms` (wall clock) stops holding it back, as a Flink source's
//! idleness does; when every partition is idle, the latest event time of
//! all stands for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
#[cfg(test)]
use vigie_core::health::FeatureKind;
use vigie_core::health::{DriftReport, DriftStatus, DriftThresholds, FeatureDrift};

use crate::drift::profile::ReferenceProfile;
use crate::drift::window::{FeatureStatistics, Window};
use crate::sinks::scorer::FeatureSource;

/// The windows' shape, in milliseconds of event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Length of a window.
    pub size_ms: i64,
    /// Distance between two windows' starts: `size_ms` for tumbling
    /// windows, less for sliding ones (an event then counts in
    /// `size_ms / slide_ms` windows).
    pub slide_ms: i64,
    /// How long after its end (in watermark time) a window still takes
    /// late events.
    pub lateness_ms: i64,
    /// Wall-clock time after which a partition that delivered nothing no
    /// longer holds the watermark back.
    pub idle_ms: i64,
}

/// Where an event came from: the cases or the scores, and the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A partition of the cases' topic.
    Cases(i32),
    /// A partition of the scores' topic.
    Scores(i32),
}

impl Input {
    fn key(self) -> String {
        match self {
            Self::Cases(p) => format!("cases/{p}"),
            Self::Scores(p) => format!("scores/{p}"),
        }
    }
}

/// One input partition's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Clock {
    /// The latest event time it delivered.
    event_ms: i64,
    /// When (wall clock) it last delivered one.
    seen_ms: i64,
}

/// Everything a restart needs: stored with each batch's offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerState {
    /// The model whose profile the windows are binned by.
    pub model_name: String,
    /// Its version.
    pub model_version: String,
    /// Per input partition (`cases/3`, `scores/0`).
    clocks: BTreeMap<String, Clock>,
    /// The end of the last window closed: a window ending at or before it
    /// takes no more events.
    closed_until_ms: Option<i64>,
    /// The open windows, by start.
    windows: BTreeMap<i64, Window>,
    /// Cases that came after every window they belong to had closed.
    pub late_cases: u64,
    /// The same for scores.
    pub late_scores: u64,
}

/// The windows of one model, and how they are judged.
#[derive(Debug, Clone)]
pub struct Tracker {
    profile: Arc<ReferenceProfile>,
    spec: WindowSpec,
    thresholds: DriftThresholds,
    state: TrackerState,
    /// How many partitions the member holds, and since when (wall
    /// clock): until each has delivered an event or `idle_ms` has passed,
    /// no window closes.
    assigned: (usize, i64),
}

impl Tracker {
    /// No window yet, for the model `name` `version` of `profile`.
    #[must_use]
    pub fn new(
        profile: Arc<ReferenceProfile>,
        (name, version): (&str, &str),
        spec: WindowSpec,
        thresholds: DriftThresholds,
    ) -> Self {
        Self {
            profile,
            spec,
            thresholds,
            state: TrackerState {
                model_name: name.to_owned(),
                model_version: version.to_owned(),
                clocks: BTreeMap::new(),
                closed_until_ms: None,
                windows: BTreeMap::new(),
                late_cases: 0,
                late_scores: 0,
            },
            assigned: (0, 0),
        }
    }

    /// Takes up a stored state, if it is of the same model version and
    /// its windows have this profile's bins (`Err` says why not). Every
    /// partition counts as just seen at `now_ms`: a restart does not make
    /// the partitions not yet read idle.
    pub fn restore(&mut self, mut state: TrackerState, now_ms: i64) -> Result<(), String> {
        if (state.model_name.as_str(), state.model_version.as_str())
            != (
                self.state.model_name.as_str(),
                self.state.model_version.as_str(),
            )
        {
            return Err(format!(
                "it is of model {} {}, not {} {}",
                state.model_name,
                state.model_version,
                self.state.model_name,
                self.state.model_version
            ));
        }
        if !state.windows.values().all(|w| w.fits(&self.profile)) {
            return Err("its windows do not have the profile's bins".into());
        }
        for clock in state.clocks.values_mut() {
            clock.seen_ms = now_ms;
        }
        self.state = state;
        self.assigned.1 = now_ms;
        Ok(())
    }

    /// The state to store.
    #[must_use]
    pub fn state(&self) -> &TrackerState {
        &self.state
    }

    /// Windows open.
    #[must_use]
    pub fn open_windows(&self) -> usize {
        self.state.windows.len()
    }

    /// Counts a case at event time `at`, read from `input` at wall-clock
    /// `now_ms`; `false` when every window it belongs to has closed (it
    /// is counted as late).
    pub fn add_case(
        &mut self,
        input: Input,
        at: DateTime<Utc>,
        now_ms: i64,
        case: &(impl FeatureSource + ?Sized),
    ) -> bool {
        let profile = Arc::clone(&self.profile);
        let counted = self.each_window(input, at, now_ms, |w| w.add_case(&profile, case));
        if !counted {
            self.state.late_cases += 1;
        }
        counted
    }

    /// Counts a score, as [`add_case`](Self::add_case) a case.
    pub fn add_score(&mut self, input: Input, at: DateTime<Utc>, now_ms: i64, score: f64) -> bool {
        let profile = Arc::clone(&self.profile);
        let counted = self.each_window(input, at, now_ms, |w| w.add_score(&profile, score));
        if !counted {
            self.state.late_scores += 1;
        }
        counted
    }

    /// Runs `add` on every open window `at` falls in (opening them), after
    /// moving `input`'s clock; `false` if there was none.
    fn each_window(
        &mut self,
        input: Input,
        at: DateTime<Utc>,
        now_ms: i64,
        mut add: impl FnMut(&mut Window),
    ) -> bool {
        let t = at.timestamp_millis();
        let clock = self.state.clocks.entry(input.key()).or_insert(Clock {
            event_ms: t,
            seen_ms: now_ms,
        });
        clock.event_ms = clock.event_ms.max(t);
        clock.seen_ms = now_ms;
        let WindowSpec {
            size_ms, slide_ms, ..
        } = self.spec;
        let closed = self.state.closed_until_ms.unwrap_or(i64::MIN);
        let mut start = t.div_euclid(slide_ms) * slide_ms;
        let mut counted = false;
        while start > t - size_ms {
            if start + size_ms > closed {
                let w = self
                    .state
                    .windows
                    .entry(start)
                    .or_insert_with(|| Window::new(&self.profile));
                add(w);
                counted = true;
            }
            start -= slide_ms;
        }
        counted
    }

    /// The member holds `partitions` partitions at wall-clock `now_ms`.
    pub fn assigned(&mut self, partitions: usize, now_ms: i64) {
        if partitions != self.assigned.0 {
            self.assigned = (partitions, now_ms);
        }
    }

    /// The watermark at wall-clock `now_ms`: `None` before any event, and
    /// while a partition the member holds has delivered none, for
    /// `idle_ms` after it got it.
    #[must_use]
    pub fn watermark(&self, now_ms: i64) -> Option<i64> {
        let (held, since) = self.assigned;
        if held > self.state.clocks.len() && now_ms - since < self.spec.idle_ms {
            return None;
        }
        let clocks = self.state.clocks.values();
        let active = clocks
            .clone()
            .filter(|c| now_ms - c.seen_ms < self.spec.idle_ms)
            .map(|c| c.event_ms)
            .min();
        active.or_else(|| clocks.map(|c| c.event_ms).max())
    }

    /// Closes every window the watermark has passed by the allowed
    /// lateness, in window order, and judges each.
    pub fn close_due(&mut self, now_ms: i64) -> Vec<DriftReport> {
        let Some(watermark) = self.watermark(now_ms) else {
            return Vec::new();
        };
        let size = self.spec.size_ms;
        // The windows due are those starting at or before this: a prefix.
        let last_due = watermark
            .saturating_sub(size)
            .saturating_sub(self.spec.lateness_ms);
        let open = self.state.windows.split_off(&last_due.saturating_add(1));
        let due = std::mem::replace(&mut self.state.windows, open);
        if let Some(&start) = due.keys().next_back() {
            let end = start + size;
            self.state.closed_until_ms =
                Some(self.state.closed_until_ms.map_or(end, |c| c.max(end)));
        }
        due.iter().map(|(start, w)| self.judge(*start, w)).collect()
    }

    /// The report of the window starting at `start`.
    #[must_use]
    pub fn judge(&self, start: i64, w: &Window) -> DriftReport {
        let t = self.thresholds;
        let features: Vec<FeatureDrift> = w
            .statistics(&self.profile)
            .into_iter()
            .map(|s| feature_drift(s, &t))
            .collect();
        let status = if w.cases() < t.min_cases {
            DriftStatus::Insufficient
        } else {
            features
                .iter()
                .map(|f| f.status)
                .max()
                .unwrap_or(DriftStatus::Insufficient)
        };
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        DriftReport {
            model_name: self.state.model_name.clone(),
            model_version: self.state.model_version.clone(),
            window_start: at(start),
            window_end: at(start + self.spec.size_ms),
            cases: w.cases(),
            scores: w.scores(),
            status,
            thresholds: t,
            features,
        }
    }
}

/// One feature's statistics and verdict.
fn feature_drift(s: FeatureStatistics, t: &DriftThresholds) -> FeatureDrift {
    let status = match s.psi {
        Some(_) if s.n < t.min_cases => DriftStatus::Insufficient,
        None => DriftStatus::Insufficient,
        Some(psi) if psi >= t.psi_alert => DriftStatus::Alert,
        Some(psi) if psi >= t.psi_warn => DriftStatus::Warn,
        Some(_) => DriftStatus::Ok,
    };
    FeatureDrift {
        feature: s.feature,
        kind: s.kind,
        n: s.n,
        psi: s.psi,
        jensen_shannon: s.jensen_shannon,
        ks_statistic: s.ks.map(|k| k.statistic),
        ks_p_value: s.ks.map(|k| k.p_value),
        status,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use vigie_simulator::{CaseGenConfig, CaseGenerator, Drift};

    use super::*;
    use crate::drift::profile::tests::shipped;
    use crate::sinks::drift::DriftConfig;

    /// A tracker of the shipped model with the drift component's defaults,
    /// but `spec` for the windows.
    fn tracker(spec: WindowSpec) -> Tracker {
        Tracker::new(
            Arc::new(shipped()),
            ("hosp_risk", "1.0.0"),
            spec,
            DriftConfig::default().thresholds(),
        )
    }

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    const SPEC: WindowSpec = WindowSpec {
        size_ms: 60_000,
        slide_ms: 60_000,
        lateness_ms: 5_000,
        idle_ms: 30_000,
    };

    fn case() -> serde_json::Map<String, serde_json::Value> {
        let mut c = serde_json::Map::new();
        c.insert("age_group".into(), "18 to 49 years".into());
        c
    }

    #[test]
    fn a_window_closes_once_every_partition_has_passed_it_by_the_lateness() {
        let mut t = tracker(SPEC);
        assert!(t.add_case(Input::Cases(0), at(10_000), 0, &case()));
        assert!(t.add_case(Input::Cases(1), at(20_000), 0, &case()));
        // Partition 0 is past the window and the lateness, partition 1 not.
        assert!(t.add_case(Input::Cases(0), at(70_000), 0, &case()));
        assert_eq!(t.watermark(0), Some(20_000));
        assert!(t.close_due(0).is_empty());
        // Partition 1 moves on: the first window closes with its 2 cases.
        assert!(t.add_case(Input::Cases(1), at(65_000), 0, &case()));
        let reports = t.close_due(0);
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(
            (
                reports[0].window_start,
                reports[0].window_end,
                reports[0].cases
            ),
            (at(0), at(60_000), 2)
        );
        assert_eq!(reports[0].status, DriftStatus::Insufficient);
        // A case of the closed window is late; one of the open window is not.
        assert!(!t.add_case(Input::Cases(1), at(59_999), 0, &case()));
        assert_eq!(t.state().late_cases, 1);
        assert!(t.add_case(Input::Cases(1), at(60_000), 0, &case()));
        assert_eq!(t.open_windows(), 1);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_windows_open() {
        let mut t = tracker(SPEC);
        t.add_case(Input::Cases(0), at(1_000), 0, &case());
        t.add_score(Input::Scores(3), at(90_000), 0, 0.5);
        assert!(t.close_due(10_000).is_empty(), "partition 0 holds it");
        // 30 s of wall clock later partition 0 is idle.
        assert_eq!(t.close_due(30_000).len(), 1);
        // A restart makes every partition active again.
        let state = t.state().clone();
        let mut again = tracker(SPEC);
        again.restore(state, 100_000).unwrap();
        assert_eq!(again.watermark(100_000), Some(1_000));
    }

    #[test]
    fn a_partition_held_that_delivered_nothing_holds_the_windows_open() {
        let mut t = tracker(SPEC);
        t.assigned(3, 0);
        t.add_case(Input::Cases(0), at(1_000), 0, &case());
        t.add_case(Input::Cases(1), at(90_000), 0, &case());
        t.add_case(Input::Cases(0), at(90_000), 0, &case());
        assert_eq!(t.watermark(10_000), None, "partition 2 not heard of");
        assert!(t.close_due(10_000).is_empty());
        t.add_case(Input::Cases(2), at(80_000), 10_000, &case());
        assert_eq!(t.close_due(10_000).len(), 1);
        // Or, without news of it, once it is idle.
        let mut t = tracker(SPEC);
        t.assigned(2, 0);
        t.add_case(Input::Cases(0), at(1_000), 0, &case());
        t.add_case(Input::Cases(0), at(90_000), 0, &case());
        assert!(t.close_due(29_999).is_empty());
        assert_eq!(t.close_due(30_000).len(), 1);
    }

    #[test]
    fn sliding_windows_count_an_event_in_each_window_it_falls_in() {
        let mut t = tracker(WindowSpec {
            slide_ms: 20_000,
            ..SPEC
        });
        t.add_score(Input::Scores(0), at(45_000), 0, 0.5);
        // Windows starting at 0, 20 s and 40 s hold 45 s.
        assert_eq!(t.open_windows(), 3);
        t.add_score(Input::Scores(0), at(200_000), 0, 0.5);
        let reports = t.close_due(0);
        let starts: Vec<_> = reports.iter().map(|r| r.window_start).collect();
        assert_eq!(starts, [at(0), at(20_000), at(40_000)]);
        assert!(reports.iter().all(|r| r.scores == 1 && r.cases == 0));
    }

    #[test]
    fn a_state_of_another_model_version_is_not_taken_up() {
        let mut t = tracker(SPEC);
        t.add_case(Input::Cases(0), at(1_000), 0, &case());
        let mut state = t.state().clone();
        state.model_version = "2.0.0".into();
        let e = tracker(SPEC).restore(state, 0).unwrap_err();
        assert!(e.contains("2.0.0"), "{e}");
    }

    /// Cases of the simulator (seed 5) at `per_second`, from midnight for
    /// `hours`, spread over 12 partitions in turn, through a tracker with
    /// the drift component's default windows and thresholds; the reports.
    fn simulate(drift: Option<Drift>, per_second: u64, hours: u64) -> Vec<DriftReport> {
        let defaults = DriftConfig::default();
        let mut t = tracker(defaults.spec());
        let g = CaseGenerator::new(CaseGenConfig {
            seed: 5,
            drift,
            ..CaseGenConfig::default()
        })
        .unwrap();
        let n = per_second * 3600 * hours;
        let mut reports = Vec::new();
        for (i, case) in g.rows(0..n).enumerate() {
            let i = i as u64;
            let ms = i64::try_from(i * 1000 / per_second).unwrap();
            let partition = i32::try_from(i % 12).unwrap();
            assert!(t.add_case(Input::Cases(partition), at(ms), 0, &case));
            if i.is_multiple_of(10_000) {
                reports.extend(t.close_due(0));
            }
        }
        reports.extend(t.close_due(0));
        reports
    }

    /// 24 simulated hours of a stable stream at 6 cases per second (5,400
    /// per 15-minute window, over the default minimum of 5,000): not one
    /// alert at the default thresholds. Prints the largest PSI of each
    /// window; the figures of docs/drift.md: `cargo test -p
    /// vigie-consumers --lib drift::tracker -- --nocapture`.
    #[test]
    fn a_stable_day_raises_no_alert_at_the_default_thresholds() {
        let reports = simulate(None, 6, 24);
        // 96 windows closed but the last one.
        assert_eq!(reports.len(), 95);
        let mut largest = (0.0_f64, String::new());
        for r in &reports {
            assert_eq!(r.cases, 5_400);
            for f in r.features.iter().filter(|f| f.kind != FeatureKind::Score) {
                let psi = f.psi.unwrap();
                if psi > largest.0 {
                    largest = (psi, f.feature.clone());
                }
            }
        }
        let statuses: BTreeMap<_, usize> = reports.iter().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.status.as_str()).or_default() += 1;
            m
        });
        eprintln!(
            "stable day: {statuses:?}, largest PSI {:.4} ({})",
            largest.0, largest.1
        );
        assert!(
            reports.iter().all(|r| r.status != DriftStatus::Alert),
            "{statuses:?}"
        );
    }

    /// A moderate drift (`age_group` PSI about 0.1) from the middle of a
    /// window: `age_group` turns to alert within two windows of the
    /// change, and no other feature does.
    #[test]
    fn a_moderate_drift_alerts_within_two_windows_on_its_feature_only() {
        // 6 cases per second: the change at row 6 * 3600 * 3 + 2,700 is
        // 7.5 minutes into the 13th window (3 h 00 to 3 h 15).
        let from_index = 6 * 3600 * 3 + 2_700;
        let reports = simulate(Some(Drift::AgeShiftModerate { from_index }), 6, 4);
        let change = at(3 * 3_600_000 + 450_000);
        let status = |r: &DriftReport, feature: &str| {
            r.features
                .iter()
                .find(|f| f.feature == feature)
                .unwrap()
                .status
        };
        for r in reports.iter().filter(|r| r.window_end <= change) {
            assert_ne!(r.status, DriftStatus::Alert, "before the change: {r:?}");
        }
        let after: Vec<_> = reports.iter().filter(|r| r.window_end > change).collect();
        for r in &after {
            let age = r
                .features
                .iter()
                .find(|f| f.feature == "age_group")
                .unwrap();
            eprintln!(
                "{} age_group psi {:.4} {}",
                r.window_start,
                age.psi.unwrap(),
                age.status.as_str()
            );
        }
        assert!(
            after[..2]
                .iter()
                .any(|r| status(r, "age_group") == DriftStatus::Alert),
            "no alert within 2 windows"
        );
        for r in &after {
            for f in r.features.iter().filter(|f| f.kind != FeatureKind::Score) {
                if f.feature != "age_group" {
                    assert_ne!(f.status, DriftStatus::Alert, "{} {f:?}", r.window_start);
                }
            }
        }
        assert_eq!(
            status(after.last().unwrap(), "age_group"),
            DriftStatus::Alert
        );
    }
}
