//! Fault injection: rules that make every Nth request to an endpoint fail
//! (or misbehave) the way real upstream servers do, so that producers'
//! retry, resume and de-duplication paths can be tested on demand.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::config::InvalidSetting;

/// An upstream endpoint of the simulator, as fault rules and the request
/// counts of the manifest name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// The SODA case rows, `/resource/n8mc-b4w4.json`.
    Cases,
    /// The WHO daily CSV.
    Who,
    /// A Disease Outbreak News listing page.
    NewsListing,
    /// A Disease Outbreak News article page.
    NewsArticle,
    /// Every request to one of the four endpoints above, counted together
    /// (only in fault rules).
    Any,
}

impl Endpoint {
    /// The four endpoints a request can be counted against.
    pub const SERVED: [Endpoint; 4] = [
        Endpoint::Cases,
        Endpoint::Who,
        Endpoint::NewsListing,
        Endpoint::NewsArticle,
    ];

    /// The name used in configuration files and in the manifest.
    pub const fn as_str(self) -> &'static str {
        match self {
            Endpoint::Cases => "cases",
            Endpoint::Who => "who",
            Endpoint::NewsListing => "news_listing",
            Endpoint::NewsArticle => "news_article",
            Endpoint::Any => "any",
        }
    }

    fn is_news(self) -> bool {
        matches!(self, Endpoint::NewsListing | Endpoint::NewsArticle)
    }
}

/// What an injected fault does to the response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    from = "KindFields"
)]
pub enum FaultKind {
    /// `429 Too Many Requests` with a `Retry-After` header.
    TooManyRequests {
        /// Value of `Retry-After`, in seconds.
        retry_after_seconds: u64,
    },
    /// A 5xx status with a short plain-text body.
    ServerError {
        /// The status, 500 to 599 (typically 500, 502 or 503).
        status: u16,
    },
    /// The correct response, after a delay.
    Slow {
        /// The delay, in milliseconds.
        delay_ms: u64,
    },
    /// The connection is closed without a complete response: the body
    /// fails before its first byte.
    Reset,
    /// `Content-Length` announces the full body but only about half of it
    /// is sent before the connection is closed.
    Truncated,
    /// SODA only: the page starts `rows` rows before the one asked for, so
    /// those rows are served twice across pages (the page still ends where
    /// it would have, so no row is skipped).
    RepeatRows {
        /// How many rows earlier the page starts.
        rows: u64,
    },
    /// News only: from this request on, every HTML page uses the changed
    /// layout (sticky until `set_layout_changed(false)`).
    LayoutChange,
}

/// How [`FaultKind`] is read: serde does not refuse unknown fields beside
/// the tag of a unit variant, so the field-less kinds are read as empty
/// structs.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum KindFields {
    TooManyRequests { retry_after_seconds: u64 },
    ServerError { status: u16 },
    Slow { delay_ms: u64 },
    Reset {},
    Truncated {},
    RepeatRows { rows: u64 },
    LayoutChange {},
}

impl From<KindFields> for FaultKind {
    fn from(fields: KindFields) -> Self {
        match fields {
            KindFields::TooManyRequests {
                retry_after_seconds,
            } => FaultKind::TooManyRequests {
                retry_after_seconds,
            },
            KindFields::ServerError { status } => FaultKind::ServerError { status },
            KindFields::Slow { delay_ms } => FaultKind::Slow { delay_ms },
            KindFields::Reset {} => FaultKind::Reset,
            KindFields::Truncated {} => FaultKind::Truncated,
            KindFields::RepeatRows { rows } => FaultKind::RepeatRows { rows },
            KindFields::LayoutChange {} => FaultKind::LayoutChange,
        }
    }
}

impl FaultKind {
    /// Every kind's name, in the order of the manifest.
    pub const NAMES: [&'static str; 7] = [
        "too_many_requests",
        "server_error",
        "slow",
        "reset",
        "truncated",
        "repeat_rows",
        "layout_change",
    ];

    /// The kind's name, as in configuration files and the manifest.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.slot()]
    }

    fn slot(&self) -> usize {
        match self {
            FaultKind::TooManyRequests { .. } => 0,
            FaultKind::ServerError { .. } => 1,
            FaultKind::Slow { .. } => 2,
            FaultKind::Reset => 3,
            FaultKind::Truncated => 4,
            FaultKind::RepeatRows { .. } => 5,
            FaultKind::LayoutChange => 6,
        }
    }

    /// Whether this kind means anything on a request to `endpoint`.
    fn applies_to(&self, endpoint: Endpoint) -> bool {
        match self {
            FaultKind::RepeatRows { .. } => endpoint == Endpoint::Cases,
            FaultKind::LayoutChange => endpoint.is_news(),
            _ => true,
        }
    }
}

/// Inject `kind` into every `every`th request to `endpoint`.
///
/// Requests are counted per rule from the moment the rule is added (for
/// rules of the configuration, from the start), 1-based: with `every = 3`
/// the 3rd, 6th, 9th... matching requests get the fault, until it has been
/// injected `times` times. Only one fault is injected per request: when
/// several rules are due, the first added wins and the others' turn passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Which endpoint's requests are counted.
    pub endpoint: Endpoint,
    /// What the fault does; its fields sit next to `kind` in the rule.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Inject on every `every`th request, at least 1.
    pub every: u64,
    /// Stop after this many injections; `None` never stops.
    #[serde(default)]
    pub times: Option<u64>,
}

impl FaultRule {
    /// Checks the rule; `key` names it in the error, e.g. `faults[0]`.
    pub(crate) fn validate(&self, key: &str) -> Result<(), InvalidSetting> {
        if self.every == 0 {
            return Err(InvalidSetting::new(format!("{key}.every"), "at least 1"));
        }
        match &self.kind {
            FaultKind::ServerError { status } if !(500..=599).contains(status) => {
                Err(InvalidSetting::new(
                    format!("{key}.status"),
                    "a 5xx status, e.g. 500, 502 or 503",
                ))
            }
            FaultKind::RepeatRows { .. }
                if !matches!(self.endpoint, Endpoint::Cases | Endpoint::Any) =>
            {
                Err(InvalidSetting::new(
                    format!("{key}.kind"),
                    "repeat_rows only applies to the cases endpoint",
                ))
            }
            FaultKind::LayoutChange
                if !(self.endpoint.is_news() || self.endpoint == Endpoint::Any) =>
            {
                Err(InvalidSetting::new(
                    format!("{key}.kind"),
                    "layout_change only applies to the news endpoints",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A rule with its counters.
#[derive(Debug)]
struct ActiveRule {
    rule: FaultRule,
    seen: u64,
    injected: u64,
}

/// The rules of a running simulator and the count of injections per kind.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Mutex<Vec<ActiveRule>>,
    injected: [AtomicU64; 7],
}

impl Faults {
    pub(crate) fn new(rules: impl IntoIterator<Item = FaultRule>) -> Self {
        let faults = Self::default();
        for rule in rules {
            faults.add(rule);
        }
        faults
    }

    pub(crate) fn add(&self, rule: FaultRule) {
        lock(&self.rules).push(ActiveRule {
            rule,
            seen: 0,
            injected: 0,
        });
    }

    /// Counts a request to `endpoint` against every rule and returns the
    /// fault to inject into it, if any.
    pub(crate) fn next(&self, endpoint: Endpoint) -> Option<FaultKind> {
        let mut chosen: Option<FaultKind> = None;
        for active in lock(&self.rules).iter_mut() {
            let rule = &active.rule;
            if rule.endpoint != Endpoint::Any && rule.endpoint != endpoint {
                continue;
            }
            active.seen += 1;
            let due = active.seen % rule.every == 0
                && rule.times.is_none_or(|times| active.injected < times)
                && rule.kind.applies_to(endpoint);
            if due && chosen.is_none() {
                active.injected += 1;
                chosen = Some(rule.kind.clone());
            }
        }
        if let Some(kind) = &chosen {
            self.injected[kind.slot()].fetch_add(1, Ordering::Relaxed);
        }
        chosen
    }

    /// Injections so far, per kind name, every kind present.
    pub(crate) fn injected(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FaultKind::NAMES
            .into_iter()
            .zip(&self.injected)
            .map(|(name, count)| (name, count.load(Ordering::Relaxed)))
    }
}

/// Locks `mutex`, going on with the data if a panicking thread poisoned it:
/// every critical section here leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(endpoint: Endpoint, kind: FaultKind, every: u64, times: Option<u64>) -> FaultRule {
        FaultRule {
            endpoint,
            kind,
            every,
            times,
        }
    }

    #[test]
    fn every_nth_request_until_times() {
        let faults = Faults::new([rule(Endpoint::Cases, FaultKind::Reset, 2, Some(2))]);
        let got: Vec<bool> = (0..8)
            .map(|_| faults.next(Endpoint::Cases).is_some())
            .collect();
        assert_eq!(got, [false, true, false, true, false, false, false, false]);
        // Other endpoints are not counted.
        assert_eq!(faults.next(Endpoint::Who), None);
        let injected: Vec<_> = faults.injected().collect();
        assert_eq!(injected[3], ("reset", 2));
    }

    #[test]
    fn first_due_rule_wins_and_any_counts_everything() {
        let faults = Faults::new([
            rule(Endpoint::Any, FaultKind::Truncated, 2, None),
            rule(Endpoint::Who, FaultKind::Reset, 1, None),
        ]);
        assert_eq!(faults.next(Endpoint::Cases), None);
        assert_eq!(faults.next(Endpoint::Who), Some(FaultKind::Truncated));
        assert_eq!(faults.next(Endpoint::Who), Some(FaultKind::Reset));
    }

    #[test]
    fn kinds_only_apply_where_they_mean_something() {
        let faults = Faults::new([rule(Endpoint::Any, FaultKind::LayoutChange, 1, None)]);
        assert_eq!(faults.next(Endpoint::Cases), None);
        assert_eq!(
            faults.next(Endpoint::NewsArticle),
            Some(FaultKind::LayoutChange)
        );
    }

    #[test]
    fn json_form_has_the_kind_beside_the_rule() {
        let text = r#"{"endpoint":"cases","kind":"server_error","status":503,"every":2}"#;
        let parsed: FaultRule = serde_json::from_str(text).unwrap();
        assert_eq!(
            parsed,
            rule(
                Endpoint::Cases,
                FaultKind::ServerError { status: 503 },
                2,
                None
            )
        );
        let back = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back["kind"], "server_error");
        assert_eq!(back["status"], 503);
        for bad in [
            r#"{"endpoint":"cases","kind":"reset","every":1,"oops":1}"#,
            r#"{"endpoint":"cases","kind":"slow","delay":1,"every":1}"#,
            r#"{"endpoint":"cases","kind":"slow","every":1}"#,
            r#"{"endpoint":"cases","every":1}"#,
        ] {
            assert!(serde_json::from_str::<FaultRule>(bad).is_err(), "{bad}");
        }
        let reset: FaultRule =
            serde_json::from_str(r#"{"endpoint":"any","kind":"reset","every":1,"times":2}"#)
                .unwrap();
        assert_eq!(reset.kind, FaultKind::Reset);
        assert_eq!(
            serde_json::to_string(&reset).unwrap(),
            r#"{"endpoint":"any","kind":"reset","every":1,"times":2}"#
        );
    }
}
