//! The CDC case rows over Socrata's SODA 2.1 API
//! (`/resource/n8mc-b4w4.json`): the query parameters a producer pages with,
//! SODA-style errors, and the JSON of a page written by hand, since a page
//! can hold 50,000 rows.

use std::io::Write;
use std::ops::Range;

use chrono::{Days, NaiveDate, NaiveDateTime};
use vigie_core::health::{Case, CurrentStatus, YesNo};

use super::config::Updates;

use crate::CaseGenerator;
use crate::sample::splitmix64;

/// Path of the data set's SODA resource.
pub const CASES_PATH: &str = "/resource/n8mc-b4w4.json";

/// `$limit` when the query gives none.
pub const DEFAULT_LIMIT: u64 = 1_000;
/// Largest `$limit` accepted.
pub const MAX_LIMIT: u64 = 50_000;

/// `:created_at` and `:updated_at` of row 0; row `i` is `i` milliseconds
/// later (`i / k` with `rows_per_timestamp = k`).
pub const ROW_EPOCH: NaiveDateTime = match NaiveDate::from_ymd_opt(2024, 1, 1) {
    Some(date) => match date.and_hms_opt(0, 0, 0) {
        Some(at) => at,
        None => NaiveDateTime::MIN,
    },
    None => NaiveDateTime::MIN,
};

/// The floating-timestamp format of `:updated_at`.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.f";

/// A request SODA refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SodaError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl SodaError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "query.compiler.malformed",
            message: message.into(),
        }
    }

    pub(crate) fn bad_token() -> Self {
        Self {
            status: 403,
            code: "permission_denied",
            message: "Invalid app_token specified".to_owned(),
        }
    }

    /// The JSON body, as Socrata writes its errors.
    pub(crate) fn body(&self) -> Vec<u8> {
        serde_json::json!({"code": self.code, "error": true, "message": self.message})
            .to_string()
            .into_bytes()
    }
}

/// The order a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// No `$order`, `:id`, or `:updated_at,:id`: the served order, rows
    /// that share an `:updated_at` by `:id`.
    Served,
    /// `:updated_at` alone: rows that share an `:updated_at` come in no
    /// defined order, which differs with `$offset`, `$limit` and `$where`
    /// as a database's top-N sort does.
    UpdatedAt,
}

/// A `$where` on `:updated_at`, or on `:updated_at` and `:id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Since {
    /// `:updated_at > 'TS'`
    After(NaiveDateTime),
    /// `:updated_at >= 'TS'`
    AtOrAfter(NaiveDateTime),
    /// `:updated_at > 'TS' OR (:updated_at = 'TS' AND :id > 'ID')`: the
    /// rows after a (`:updated_at`, `:id`) key.
    AfterKey(NaiveDateTime, String),
}

/// Nanoseconds from [`ROW_EPOCH`] to `at`.
fn nanos_since_epoch(at: NaiveDateTime) -> i128 {
    let delta = at - ROW_EPOCH;
    i128::from(delta.num_seconds()) * 1_000_000_000 + i128::from(delta.subsec_nanos())
}

impl Since {
    /// The first timestamp (in milliseconds from [`ROW_EPOCH`], the
    /// `:updated_at` of a timestamp's rows) the comparison keeps whole,
    /// computed from the timestamp rather than by scanning.
    pub(crate) fn first_timestamp(&self) -> u64 {
        let (at, strict) = match self {
            Since::After(at) | Since::AfterKey(at, _) => (*at, true),
            Since::AtOrAfter(at) => (*at, false),
        };
        let nanos = nanos_since_epoch(at);
        // Timestamp t is at t ms: the first strictly after `nanos` is
        // floor(nanos / 1ms) + 1, the first at or after it ceil(nanos / 1ms).
        let first = if strict {
            nanos.div_euclid(1_000_000) + 1
        } else {
            -((-nanos).div_euclid(1_000_000))
        };
        u64::try_from(first.max(0)).unwrap_or(u64::MAX)
    }

    /// The served position of the first row the comparison keeps.
    pub(crate) fn first_position(&self, layout: &Layout<'_>) -> u64 {
        let whole = self.first_timestamp().saturating_mul(layout.per_timestamp);
        match self {
            Since::After(_) | Since::AtOrAfter(_) => whole,
            Since::AfterKey(at, id) => {
                let nanos = nanos_since_epoch(*at);
                if nanos < 0 || nanos % 1_000_000 != 0 {
                    // No row has this `:updated_at`: the rows after it.
                    return whole;
                }
                let Ok(timestamp) = u64::try_from(nanos / 1_000_000) else {
                    return whole;
                };
                timestamp
                    .saturating_mul(layout.per_timestamp)
                    .saturating_add(layout.ids_at_most(timestamp, id))
            }
        }
    }
}

/// Where each row is served. `per_timestamp` (k) rows share each
/// `:updated_at`: row `index` is updated at [`ROW_EPOCH`] plus `index / k`
/// milliseconds (timestamp `index / k`). The served order is by
/// (`:updated_at`, `:id`): served position `p` is the `p % k`-th smallest
/// id of timestamp `p / k`. With k = 1, position and index are the same.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout<'a> {
    pub(crate) generator: &'a CaseGenerator,
    /// Rows per timestamp, at least 1.
    pub(crate) per_timestamp: u64,
    /// Rows of the data set (the last timestamp may have fewer than k).
    pub(crate) rows: u64,
    /// Rows that are new versions of earlier ones (one row per timestamp).
    pub(crate) updates: Option<Updates>,
}

impl Updates {
    /// Whether row `index` is a new version of row `index - distance`.
    pub fn is_update(&self, index: u64) -> bool {
        index >= self.distance && index.is_multiple_of(self.every)
    }

    /// Update rows below `end` (from `distance` on).
    fn updates_below(&self, end: u64) -> u64 {
        let ceil = |n: u64| n.div_ceil(self.every);
        if end <= self.distance {
            0
        } else {
            ceil(end) - ceil(self.distance)
        }
    }

    /// Rows below `index` that a row already available (below `available`)
    /// superseded: those not served any more.
    fn superseded_below(&self, index: u64, available: u64) -> u64 {
        self.updates_below(available.min(index.saturating_add(self.distance)))
    }

    /// Rows served when `available` rows exist.
    fn served(&self, available: u64) -> u64 {
        available - self.updates_below(available)
    }

    /// The row at served position `p`: the smallest index with `p` served
    /// rows before it, itself served.
    fn index_at(&self, p: u64, available: u64) -> u64 {
        let served_through = |i: u64| i + 1 - self.superseded_below(i + 1, available);
        let (mut lo, mut hi) = (p, p + self.updates_below(available));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if served_through(mid) > p {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }
}

/// Row `index` as served: for an update row of `updates`, the row it
/// updates, with other values (`hosp_yn`, `icu_yn`, `current_status` each
/// moved to the next value of its vocabulary).
pub fn served_case(generator: &CaseGenerator, updates: Option<Updates>, index: u64) -> Case {
    match updates {
        Some(u) if u.is_update(index) => {
            let mut row = generator.row(index - u.distance);
            row.hosp_yn = next_value(YesNo::ALL, row.hosp_yn);
            row.icu_yn = next_value(YesNo::ALL, row.icu_yn);
            row.current_status = next_value(CurrentStatus::ALL, row.current_status);
            row
        }
        _ => generator.row(index),
    }
}

/// The value after `v` in its vocabulary `all`, the last one followed by
/// the first.
fn next_value<T: Copy + PartialEq>(all: &[T], v: T) -> T {
    let at = all.iter().position(|x| *x == v).unwrap_or(0);
    all[(at + 1) % all.len()]
}

impl Layout<'_> {
    /// The indices of the rows of `timestamp`.
    fn members(&self, timestamp: u64) -> Range<u64> {
        let start = timestamp.saturating_mul(self.per_timestamp);
        start.min(self.rows)..start.saturating_add(self.per_timestamp).min(self.rows)
    }

    /// The indices of the rows of `timestamp`, by `:id`.
    fn by_id(&self, timestamp: u64) -> Vec<u64> {
        let mut rows: Vec<(u64, u64)> = self
            .members(timestamp)
            .map(|index| (self.generator.row_id_order(index), index))
            .collect();
        rows.sort_unstable();
        rows.into_iter().map(|(_, index)| index).collect()
    }

    /// How many rows of `timestamp` have an `:id` at most `id` (text order).
    fn ids_at_most(&self, timestamp: u64, id: &str) -> u64 {
        let row_id = |index: u64| match self.updates {
            Some(u) if u.is_update(index) => self.generator.row_id(index - u.distance),
            _ => self.generator.row_id(index),
        };
        let at_most = |index: &u64| row_id(*index).as_str() <= id;
        let count = if self.per_timestamp == 1 {
            self.members(timestamp).filter(at_most).count()
        } else {
            self.by_id(timestamp).partition_point(at_most)
        };
        count as u64
    }

    /// The indices of the rows at served `positions`, in order. With
    /// [`Order::UpdatedAt`], the rows of each timestamp from `selected`
    /// on (the first position `$where` keeps) come in an order drawn from
    /// `salt` instead of by `:id`.
    pub(crate) fn rows(
        &self,
        positions: Range<u64>,
        order: Order,
        selected: u64,
        salt: u64,
    ) -> Vec<u64> {
        let k = self.per_timestamp;
        if k == 1 {
            // One row per timestamp: nothing to sort.
            return positions.collect();
        }
        let mut out = Vec::with_capacity(positions.end.saturating_sub(positions.start) as usize);
        let mut position = positions.start;
        while position < positions.end {
            let timestamp = position / k;
            let mut rows = self.by_id(timestamp);
            if order == Order::UpdatedAt {
                let from = if selected / k == timestamp {
                    (selected % k) as usize
                } else if selected / k < timestamp {
                    0
                } else {
                    rows.len()
                };
                let from = from.min(rows.len());
                rows[from..].sort_unstable_by_key(|index| {
                    splitmix64(self.generator.row_id_order(*index) ^ salt)
                });
            }
            let base = timestamp.saturating_mul(k);
            let end = positions.end.min(base.saturating_add(k));
            for p in position..end {
                match rows.get((p - base) as usize) {
                    Some(index) => out.push(*index),
                    None => return out,
                }
            }
            position = end;
        }
        out
    }
}

/// A validated SODA query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageQuery {
    pub(crate) limit: u64,
    pub(crate) offset: u64,
    pub(crate) order: Order,
    pub(crate) since: Option<Since>,
    /// `$select=:*,*`: the system fields too.
    pub(crate) system_fields: bool,
    /// `$$app_token`, which Socrata accepts instead of the header.
    pub(crate) app_token: Option<String>,
}

impl PageQuery {
    /// Parses the query parameters; anything this simulator does not
    /// implement is refused, naming the parameter.
    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<Self, SodaError> {
        let mut query = PageQuery {
            limit: DEFAULT_LIMIT,
            offset: 0,
            order: Order::Served,
            since: None,
            system_fields: false,
            app_token: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            if seen.contains(&key.as_str()) {
                return Err(SodaError::malformed(format!(
                    "query parameter {key} is given more than once"
                )));
            }
            seen.push(key);
            match key.as_str() {
                "$limit" => {
                    query.limit = parse_count(key, value)?;
                    if query.limit > MAX_LIMIT {
                        return Err(SodaError::malformed(format!(
                            "$limit must be at most {MAX_LIMIT}, got {value}"
                        )));
                    }
                }
                "$offset" => query.offset = parse_count(key, value)?,
                "$order" => query.order = parse_order(value)?,
                "$where" => query.since = Some(parse_where(value)?),
                "$select" => query.system_fields = parse_select(value)?,
                "$$app_token" => query.app_token = Some(value.clone()),
                other => {
                    return Err(SodaError::malformed(format!(
                        "unsupported query parameter {other}: this simulator implements \
                         $limit, $offset, $order, $where and $select"
                    )));
                }
            }
        }
        Ok(query)
    }

    /// The served positions of the page when `available` rows exist,
    /// `first` the first one `$where` keeps, starting `repeat` rows early
    /// when a `repeat_rows` fault is injected.
    pub(crate) fn positions(&self, first: u64, available: u64, repeat: u64) -> Range<u64> {
        let start = first.saturating_add(self.offset);
        let end = start.saturating_add(self.limit).min(available);
        start.saturating_sub(repeat).min(end)..end
    }

    /// The indices of the rows of the page, in the order served.
    pub(crate) fn rows(&self, layout: &Layout<'_>, available: u64, repeat: u64) -> Vec<u64> {
        let first = self
            .since
            .as_ref()
            .map_or(0, |since| since.first_position(layout));
        if let Some(u) = layout.updates {
            // One row per timestamp: positions count the rows still served.
            let first = first.min(available) - u.superseded_below(first, available);
            let positions = self.positions(first, u.served(available), repeat);
            return positions.map(|p| u.index_at(p, available)).collect();
        }
        let positions = self.positions(first, available, repeat);
        // What a top-N sort's order of ties depends on: the query.
        let salt = splitmix64(self.offset ^ splitmix64(self.limit ^ splitmix64(first)));
        layout.rows(positions, self.order, first, salt)
    }
}

fn parse_count(key: &str, value: &str) -> Result<u64, SodaError> {
    value.trim().parse().map_err(|_| {
        SodaError::malformed(format!(
            "{key} must be a non-negative integer, got {value:?}"
        ))
    })
}

/// `:updated_at`, `:id` or `:updated_at,:id`, each optionally ascending.
fn parse_order(value: &str) -> Result<Order, SodaError> {
    let mut columns = Vec::new();
    for term in value.split(',') {
        let mut words = term.split_whitespace();
        let column = words.next().unwrap_or("");
        let ascending = words.next().is_none_or(|d| d.eq_ignore_ascii_case("asc"));
        columns.push((ascending && words.next().is_none()).then_some(column));
    }
    match columns.as_slice() {
        [Some(":updated_at")] => Ok(Order::UpdatedAt),
        [Some(":id")] | [Some(":updated_at"), Some(":id")] => Ok(Order::Served),
        _ => Err(SodaError::malformed(format!(
            "unsupported $order {value:?}: this simulator orders by :updated_at, :id or \
             :updated_at,:id, ascending"
        ))),
    }
}

/// A SoQL token of the `$where` forms accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    /// A column or a keyword, as written.
    Word(&'a str),
    /// `>`, `>=` or `=`.
    Op(&'static str),
    /// A string literal, its `''` read as `'`.
    Text(String),
    Open,
    Close,
}

/// The tokens of `text`, `None` for anything else (an unterminated string,
/// an operator not accepted).
fn tokens(text: &str) -> Option<Vec<Token<'_>>> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Some(out);
        };
        match c {
            '(' | ')' => {
                out.push(if c == '(' { Token::Open } else { Token::Close });
                rest = &rest[1..];
            }
            '>' => match rest.strip_prefix(">=") {
                Some(after) => {
                    out.push(Token::Op(">="));
                    rest = after;
                }
                None => {
                    out.push(Token::Op(">"));
                    rest = &rest[1..];
                }
            },
            '=' => {
                out.push(Token::Op("="));
                rest = &rest[1..];
            }
            '\'' => {
                let mut literal = String::new();
                let mut chars = rest[1..].char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    if c != '\'' {
                        literal.push(c);
                    } else if rest[1 + i + 1..].starts_with('\'') {
                        literal.push('\'');
                        chars.next();
                    } else {
                        end = Some(1 + i + 1);
                        break;
                    }
                }
                out.push(Token::Text(literal));
                rest = &rest[end?..];
            }
            '<' | '!' => return None,
            _ => {
                let end = rest
                    .find(|c: char| c.is_whitespace() || "()'<>=!".contains(c))
                    .unwrap_or(rest.len());
                out.push(Token::Word(&rest[..end]));
                rest = &rest[end..];
            }
        }
    }
}

/// `:updated_at > 'TS'`, `:updated_at >= 'TS'`, or the keyset form
/// `:updated_at > 'TS' OR (:updated_at = 'TS' AND :id > 'ID')`; any
/// whitespace between tokens, `''` for a quote inside a literal.
fn parse_where(value: &str) -> Result<Since, SodaError> {
    use Token::{Close, Op, Open, Text, Word};

    let unsupported = || {
        SodaError::malformed(format!(
            "unsupported $where {value:?}: this simulator accepts :updated_at > 'TS', \
             :updated_at >= 'TS' and :updated_at > 'TS' OR (:updated_at = 'TS' AND :id > 'ID'), \
             with TS like 2024-01-01T00:00:00.000"
        ))
    };
    let timestamp = |literal: &str| {
        NaiveDateTime::parse_from_str(literal, TIMESTAMP_FORMAT).map_err(|_| {
            SodaError::malformed(format!(
                "$where: {literal:?} is not a floating timestamp like 2024-01-01T00:00:00.000"
            ))
        })
    };
    let keyword =
        |token: &Token<'_>, word: &str| matches!(token, Word(w) if w.eq_ignore_ascii_case(word));
    let updated_at = |token: &Token<'_>| matches!(token, Word(":updated_at"));
    let mut tokens = tokens(value).ok_or_else(unsupported)?;
    // The parentheses of the keyset form are optional: AND binds tighter
    // than OR.
    if tokens.len() == 13 && tokens[4] == Open && tokens[12] == Close {
        tokens.remove(12);
        tokens.remove(4);
    }
    match tokens.as_slice() {
        [column, Op(op), Text(ts)] if updated_at(column) => {
            let at = timestamp(ts)?;
            Ok(if *op == ">=" {
                Since::AtOrAfter(at)
            } else if *op == ">" {
                Since::After(at)
            } else {
                return Err(unsupported());
            })
        }
        [
            column,
            Op(">"),
            Text(ts),
            or,
            same_column,
            Op("="),
            Text(same_ts),
            and,
            Word(":id"),
            Op(">"),
            Text(id),
        ] if updated_at(column)
            && updated_at(same_column)
            && keyword(or, "or")
            && keyword(and, "and") =>
        {
            let at = timestamp(ts)?;
            if timestamp(same_ts)? != at {
                return Err(SodaError::malformed(format!(
                    "unsupported $where {value:?}: the keyset form compares :updated_at \
                     with the same timestamp twice"
                )));
            }
            Ok(Since::AfterKey(at, id.clone()))
        }
        _ => Err(unsupported()),
    }
}

/// Absent or `*`: the data set's columns; `:*,*`: the system fields too.
fn parse_select(value: &str) -> Result<bool, SodaError> {
    let compact: String = value.split_whitespace().collect();
    match compact.as_str() {
        "*" => Ok(false),
        ":*,*" | "*,:*" => Ok(true),
        _ => Err(SodaError::malformed(format!(
            "unsupported $select {value:?}: this simulator accepts * or :*,*"
        ))),
    }
}

/// Writes the JSON array of `rows` (indices) of `generator`, in that
/// order, `per_timestamp` rows sharing each `:updated_at`.
pub(crate) fn render_page(
    generator: &CaseGenerator,
    rows: &[u64],
    per_timestamp: u64,
    updates: Option<Updates>,
    system: bool,
) -> Vec<u8> {
    let per_timestamp = per_timestamp.max(1);
    let mut out = Vec::with_capacity(64 + rows.len().min(MAX_LIMIT as usize * 2) * 520);
    let mut clock = RowClock::default();
    out.push(b'[');
    for (n, &index) in rows.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b"\n,");
        }
        let row = served_case(generator, updates, index);
        write_row(&mut out, &mut clock, index / per_timestamp, &row, system);
    }
    out.extend_from_slice(b"]\n");
    out
}

/// The `:updated_at` text of timestamp `timestamp`: [`ROW_EPOCH`] plus
/// that many milliseconds. It is row `timestamp`'s with one row per
/// timestamp (the default); with `k` rows per timestamp, row `i`'s is
/// `row_timestamp(i / k)`.
pub fn row_timestamp(timestamp: u64) -> String {
    let mut out = Vec::new();
    RowClock::default().write(&mut out, timestamp);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes row timestamps, formatting each day's date only once.
#[derive(Default)]
struct RowClock {
    day: Option<(u64, String)>,
}

impl RowClock {
    /// Writes the time `millis` milliseconds after [`ROW_EPOCH`].
    fn write(&mut self, out: &mut Vec<u8>, millis: u64) {
        let seconds = millis / 1000;
        let day = seconds / 86_400;
        if self.day.as_ref().is_none_or(|(d, _)| *d != day) {
            let date = ROW_EPOCH
                .date()
                .checked_add_days(Days::new(day))
                .unwrap_or(NaiveDate::MAX);
            self.day = Some((day, date.format("%Y-%m-%d").to_string()));
        }
        if let Some((_, date)) = &self.day {
            out.extend_from_slice(date.as_bytes());
        }
        let in_day = seconds % 86_400;
        out.push(b'T');
        two_digits(out, in_day / 3600);
        out.push(b':');
        two_digits(out, in_day / 60 % 60);
        out.push(b':');
        two_digits(out, in_day % 60);
        out.push(b'.');
        let millis = millis % 1000;
        out.extend_from_slice(&[
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
        ]);
    }
}

fn two_digits(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
}

/// `,"key":"value"` for a value that needs no JSON escaping (vocabulary
/// strings, codes, digits).
fn plain(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":\"");
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// Writes `row`, updated `at` milliseconds after [`ROW_EPOCH`].
fn write_row(out: &mut Vec<u8>, clock: &mut RowClock, at: u64, row: &Case, system: bool) {
    out.push(b'{');
    if system {
        // Row ids use a 32-symbol alphabet and `-._`: nothing to escape.
        out.extend_from_slice(b"\":id\":\"");
        out.extend_from_slice(row.row_id.as_str().as_bytes());
        out.extend_from_slice(b"\",\":created_at\":\"");
        clock.write(out, at);
        out.extend_from_slice(b"\",\":updated_at\":\"");
        clock.write(out, at);
        out.extend_from_slice(b"\",");
    }
    out.extend_from_slice(b"\"case_month\":\"");
    // `YYYY-MM`; the writes to a Vec cannot fail.
    let _ = write!(out, "{}", row.case_month);
    out.push(b'"');
    plain(out, "res_state", row.res_state.as_str());
    if let Some(fips) = &row.state_fips_code {
        plain(out, "state_fips_code", fips.as_str());
    }
    match &row.res_county {
        Some(county) => {
            out.extend_from_slice(b",\"res_county\":");
            let _ = serde_json::to_writer(&mut *out, county);
        }
        None => plain(out, "res_county", "NA"),
    }
    plain(
        out,
        "county_fips_code",
        row.county_fips_code.as_ref().map_or("NA", |f| f.as_str()),
    );
    plain(out, "age_group", row.age_group.as_str());
    plain(out, "sex", row.sex.as_str());
    plain(out, "race", row.race.as_str());
    plain(out, "ethnicity", row.ethnicity.as_str());
    for (key, weeks) in [
        (
            "case_positive_specimen_interval",
            row.case_positive_specimen_interval,
        ),
        ("case_onset_interval", row.case_onset_interval),
    ] {
        if let Some(weeks) = weeks {
            let _ = write!(out, ",\"{key}\":\"{weeks}\"");
        }
    }
    plain(out, "process", row.process.as_str());
    plain(out, "exposure_yn", row.exposure_yn.as_str());
    plain(out, "current_status", row.current_status.as_str());
    plain(out, "symptom_status", row.symptom_status.as_str());
    plain(out, "hosp_yn", row.hosp_yn.as_str());
    plain(out, "icu_yn", row.icu_yn.as_str());
    plain(out, "death_yn", row.death_yn.as_str());
    plain(
        out,
        "underlying_conditions_yn",
        row.underlying_conditions_yn.as_str(),
    );
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use vigie_core::health::{
        AgeGroup, CurrentStatus, Ethnicity, Process, Race, Sex, SymptomStatus, YesNo,
    };

    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, TIMESTAMP_FORMAT).unwrap()
    }

    #[test]
    fn timestamps_are_row_milliseconds() {
        assert_eq!(row_timestamp(0), "2024-01-01T00:00:00.000");
        assert_eq!(row_timestamp(1), "2024-01-01T00:00:00.001");
        assert_eq!(
            row_timestamp(86_400_000 + 3_723_045),
            "2024-01-02T01:02:03.045"
        );
        let mut clock = RowClock::default();
        for index in [5, 86_399_999, 86_400_000, 7, 1 << 40] {
            let mut out = Vec::new();
            clock.write(&mut out, index);
            let expected = ROW_EPOCH + chrono::TimeDelta::milliseconds(index as i64);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
            );
        }
    }

    #[test]
    fn first_timestamp_from_the_timestamp() {
        let after = |ts: &str| Since::After(at(ts)).first_timestamp();
        let from = |ts: &str| Since::AtOrAfter(at(ts)).first_timestamp();
        assert_eq!(after("2024-01-01T00:00:00.000"), 1);
        assert_eq!(from("2024-01-01T00:00:00.000"), 0);
        assert_eq!(after("2024-01-01T00:00:01.234"), 1235);
        assert_eq!(from("2024-01-01T00:00:01.234"), 1234);
        assert_eq!(after("2024-01-01T00:00:01.2345"), 1235);
        assert_eq!(from("2024-01-01T00:00:01.2345"), 1235);
        assert_eq!(after("2024-01-01T00:00:01"), 1001);
        assert_eq!(after("2023-12-31T23:59:59.999"), 0);
        assert_eq!(from("2023-06-01T00:00:00"), 0);
        for index in [0, 1, 999, 86_400_001] {
            assert_eq!(after(&row_timestamp(index)), index + 1);
            assert_eq!(from(&row_timestamp(index)), index);
        }
    }

    fn generator() -> CaseGenerator {
        CaseGenerator::new(crate::CaseGenConfig {
            seed: 42,
            ..crate::CaseGenConfig::default()
        })
        .unwrap()
    }

    fn layout(generator: &CaseGenerator, per_timestamp: u64, rows: u64) -> Layout<'_> {
        Layout {
            generator,
            per_timestamp,
            rows,
            updates: None,
        }
    }

    /// A SoQL string literal.
    fn quoted(text: &str) -> String {
        format!("'{}'", text.replace('\'', "''"))
    }

    fn keyset(ts: &str, id: &str) -> String {
        format!(
            ":updated_at > {ts} OR (:updated_at = {ts} AND :id > {id})",
            ts = quoted(ts),
            id = quoted(id)
        )
    }

    #[test]
    fn queries_parse_or_name_the_parameter() {
        let q = PageQuery::parse(&pairs(&[
            ("$limit", "50000"),
            ("$offset", "10"),
            ("$order", ":updated_at ASC"),
            ("$where", ":updated_at >= '2024-01-01T00:00:00.010'"),
            ("$select", ":*,*"),
        ]))
        .unwrap();
        assert_eq!((q.limit, q.offset, q.system_fields), (50_000, 10, true));
        assert_eq!(q.order, Order::UpdatedAt);
        let g = generator();
        let one = layout(&g, 1, 1_000_000);
        let rows = |available, repeat| q.rows(&one, available, repeat);
        assert_eq!(rows(1_000_000, 0), (20..50_020).collect::<Vec<_>>());
        assert_eq!(rows(30, 0), (20..30).collect::<Vec<_>>());
        assert_eq!(rows(15, 0), Vec::<u64>::new());
        assert_eq!(rows(1_000_000, 5), (15..50_020).collect::<Vec<_>>());
        assert_eq!(rows(22, 5), (15..22).collect::<Vec<_>>());
        assert_eq!(q.positions(0, 12, 50), 0..12);
        for (key, value) in [
            ("$limit", "50001"),
            ("$limit", "-1"),
            ("$offset", "x"),
            ("$order", ":id DESC"),
            ("$order", ":updated_at DESC,:id"),
            ("$order", ":updated_at,:id DESC"),
            ("$order", ":id,:updated_at"),
            ("$order", ":updated_at,,:id"),
            ("$order", "case_month"),
            ("$where", "res_state = 'CA'"),
            ("$where", ":updated_at > 2024-01-01"),
            ("$where", ":updated_at > 'yesterday'"),
            ("$select", "res_state"),
            ("res_state", "CA"),
            ("$q", "x"),
        ] {
            let err = PageQuery::parse(&pairs(&[(key, value)])).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(err.message.contains(key), "{key}: {}", err.message);
        }
        let twice = PageQuery::parse(&pairs(&[("$limit", "1"), ("$limit", "2")]));
        assert!(twice.unwrap_err().message.contains("$limit"));
    }

    #[test]
    fn order_accepts_the_keyset_columns() {
        for (value, order) in [
            (":updated_at", Order::UpdatedAt),
            (" :updated_at  asc ", Order::UpdatedAt),
            (":id", Order::Served),
            (":id ASC", Order::Served),
            (":updated_at,:id", Order::Served),
            (":updated_at ASC, :id ASC", Order::Served),
            (" :updated_at , :id", Order::Served),
        ] {
            assert_eq!(parse_order(value), Ok(order), "{value}");
        }
    }

    #[test]
    fn where_accepts_three_forms_and_soql_quoting() {
        let ts = "2024-01-01T00:00:00.010";
        assert_eq!(
            parse_where(&format!(":updated_at > '{ts}'")),
            Ok(Since::After(at(ts)))
        );
        assert_eq!(
            parse_where(&format!("  :updated_at>='{ts}'  ")),
            Ok(Since::AtOrAfter(at(ts)))
        );
        let key = Since::AfterKey(at(ts), "row-abcd.efgh_ijkm".into());
        for text in [
            keyset(ts, "row-abcd.efgh_ijkm"),
            format!(":updated_at>'{ts}' or(:updated_at='{ts}' and :id>'row-abcd.efgh_ijkm')"),
            format!(
                "\n:updated_at  >  '{ts}'\tOR\t( :updated_at = '{ts}' AND :id > 'row-abcd.efgh_ijkm' )\n"
            ),
            // AND binds tighter than OR: the parentheses may go.
            format!(":updated_at > '{ts}' OR :updated_at = '{ts}' AND :id > 'row-abcd.efgh_ijkm'"),
        ] {
            assert_eq!(parse_where(&text), Ok(key.clone()), "{text}");
        }
        // A quote inside the id is written twice; the id is taken as text.
        for id in ["it's", "''", "a'b'c", "x) OR (1 = 1", "éŧ'"] {
            assert_eq!(
                parse_where(&keyset(ts, id)),
                Ok(Since::AfterKey(at(ts), id.to_owned())),
                "{id}"
            );
        }
        for bad in [
            format!(":updated_at < '{ts}'"),
            format!(":updated_at = '{ts}'"),
            format!(":updated_at != '{ts}'"),
            format!(":id > '{ts}'"),
            format!(":updated_at > '{ts}"),
            format!(":updated_at > '{ts}' AND :id > 'x'"),
            format!(":updated_at > '{ts}' OR (:updated_at = '{ts}' AND :id > 'x'"),
            format!(":updated_at > '{ts}' OR (:updated_at = '{ts}' AND :id >= 'x')"),
            format!(":updated_at > '{ts}' OR (:updated_at = '{ts}' AND :id > x)"),
            format!(":updated_at > '{ts}' OR (:updated_at > '{ts}' AND :id > 'x')"),
            format!(":updated_at >= '{ts}' OR (:updated_at = '{ts}' AND :id > 'x')"),
            format!(":updated_at > '{ts}' XOR (:updated_at = '{ts}' AND :id > 'x')"),
            // Two timestamps: not the keyset of one row.
            keyset(ts, "x").replacen(ts, "2024-01-01T00:00:00.011", 1),
            ":updated_at > 'it''s' OR (:updated_at = 'it''s' AND :id > 'x')".to_owned(),
            format!(":updated_at > '{ts}' OR (:updated_at = '{ts}' AND :id > 'x') OR 1"),
        ] {
            let err = parse_where(&bad).unwrap_err();
            assert_eq!(err.status, 400, "{bad}");
            assert!(err.message.contains("$where"), "{bad}: {}", err.message);
        }
    }

    /// The row ids of `indices`.
    fn row_ids(g: &CaseGenerator, indices: &[u64]) -> Vec<String> {
        indices.iter().map(|i| g.row_id(*i)).collect()
    }

    #[test]
    fn ties_are_served_by_id_and_keyset_pages_visit_every_row_once() {
        let g = generator();
        let (k, rows) = (7, 100);
        let ties = layout(&g, k, rows);
        // Every position once, each timestamp's rows by id.
        let all = ties.rows(0..rows, Order::Served, 0, 0);
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..rows).collect::<Vec<_>>());
        let keys: Vec<(u64, String)> = all.iter().map(|&i| (i / k, g.row_id(i))).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_ne!(
            all,
            (0..rows).collect::<Vec<_>>(),
            "ids are not in index order"
        );

        // Pages of 3 by keyset, as cdc-cases asks for them.
        let mut seen = Vec::new();
        let mut key: Option<(String, String)> = None;
        loop {
            let mut query = vec![
                ("$select".to_owned(), ":*,*".to_owned()),
                ("$order".to_owned(), ":updated_at,:id".to_owned()),
                ("$limit".to_owned(), "3".to_owned()),
            ];
            if let Some((ts, id)) = &key {
                query.push(("$where".to_owned(), keyset(ts, id)));
            }
            let page = PageQuery::parse(&query).unwrap().rows(&ties, rows, 0);
            let Some(&last) = page.last() else { break };
            assert!(page.len() <= 3);
            key = Some((row_timestamp(last / k), g.row_id(last)));
            seen.extend(page);
        }
        assert_eq!(seen, all, "every row once, in (:updated_at, :id) order");

        // The keyset of each row starts right after it.
        for (p, &index) in all.iter().enumerate() {
            let since = Since::AfterKey(at(&row_timestamp(index / k)), g.row_id(index));
            assert_eq!(since.first_position(&ties), p as u64 + 1);
        }
        // An id between two of a timestamp's, or before or after all of them.
        let t3 = at(&row_timestamp(3));
        let third = &row_ids(&g, &all[21..28]);
        let between = format!("{}0", third[2]);
        assert_eq!(Since::AfterKey(t3, between).first_position(&ties), 24);
        assert_eq!(Since::AfterKey(t3, String::new()).first_position(&ties), 21);
        assert_eq!(Since::AfterKey(t3, "z".into()).first_position(&ties), 28);
        assert_eq!(Since::After(t3).first_position(&ties), 28);
        assert_eq!(Since::AtOrAfter(t3).first_position(&ties), 21);
        // A time between timestamps: every row after it.
        let between = at("2024-01-01T00:00:00.0035");
        assert_eq!(
            Since::AfterKey(between, "z".into()).first_position(&ties),
            28
        );
        let before = at("2023-12-31T00:00:00.000");
        assert_eq!(Since::AfterKey(before, "z".into()).first_position(&ties), 0);
        // The last timestamp has 100 - 14 × 7 = 2 rows.
        assert_eq!(ties.rows(98..105, Order::Served, 0, 0).len(), 2);
    }

    /// Updates every 5 rows, 3 rows back: rows 5, 10, 15... are new
    /// versions of rows 2, 7, 12..., which are served only until their
    /// update is available; keyset pages and offsets count the rows served.
    #[test]
    fn an_updated_row_is_served_at_its_new_place_only() {
        let g = generator();
        let mut l = layout(&g, 1, 30);
        l.updates = Some(Updates {
            every: 5,
            distance: 3,
        });
        let all = |available: u64| {
            PageQuery::parse(&pairs(&[("$limit", "100")]))
                .unwrap()
                .rows(&l, available, 0)
        };
        let without = |available: u64, gone: &[u64]| -> Vec<u64> {
            (0..available).filter(|i| !gone.contains(i)).collect()
        };
        assert_eq!(all(30), without(30, &[2, 7, 12, 17, 22]));
        assert_eq!(all(8), without(8, &[2]), "row 7's update is not there yet");
        assert_eq!(all(10), without(10, &[2]));
        assert_eq!(all(11), without(11, &[2, 7]));
        // After the key of row 6: row 7 is gone, row 8 comes next.
        let id = |i: u64| served_case(&g, l.updates, i).row_id.as_str().to_owned();
        let after = |i: u64, limit: &str| {
            let query = pairs(&[
                ("$where", &keyset(&row_timestamp(i), &id(i))),
                ("$limit", limit),
            ]);
            PageQuery::parse(&query).unwrap().rows(&l, 30, 0)
        };
        assert_eq!(after(6, "4"), [8, 9, 10, 11]);
        // After an update row's key (its id is the updated row's).
        assert_eq!(after(10, "3"), [11, 13, 14]);
        // After a row superseded since it was read: the rows after it.
        assert_eq!(after(7, "2"), [8, 9]);
        let q = PageQuery::parse(&pairs(&[("$limit", "3"), ("$offset", "5")])).unwrap();
        assert_eq!(q.rows(&l, 30, 0), [6, 8, 9]);
        // An update carries the updated row's id and other values.
        let (old, new) = (
            served_case(&g, l.updates, 7),
            served_case(&g, l.updates, 10),
        );
        assert_eq!(old.row_id, new.row_id);
        assert_ne!(old.hosp_yn, new.hosp_yn);
        assert_ne!(old.current_status, new.current_status);
        assert_eq!(old.case_month, new.case_month);
    }

    #[test]
    fn ties_without_an_id_order_differ_between_pages() {
        let g = generator();
        let (k, rows) = (2_500, 10_000);
        let ties = layout(&g, k, rows);
        let page = |offset: u64| {
            let query = pairs(&[
                ("$order", ":updated_at"),
                ("$limit", "1000"),
                ("$offset", &offset.to_string()),
            ]);
            PageQuery::parse(&query).unwrap().rows(&ties, rows, 0)
        };
        // The same request, the same rows.
        assert_eq!(page(1_000), page(1_000));
        // Offset paging over a tie: rows repeated, others never served.
        let served: Vec<u64> = [0, 1_000, 2_000].into_iter().flat_map(page).collect();
        let distinct: std::collections::HashSet<u64> = served.iter().copied().collect();
        assert_eq!(served.len(), 3_000);
        assert!(distinct.len() < 2_900, "{} distinct", distinct.len());
        assert!(served.iter().take(2_500).all(|i| *i < 2_500));
        // With :id as tie-breaker, offset paging is exact.
        let by_id = |offset: u64| {
            let query = pairs(&[
                ("$order", ":updated_at, :id"),
                ("$limit", "1000"),
                ("$offset", &offset.to_string()),
            ]);
            PageQuery::parse(&query).unwrap().rows(&ties, rows, 0)
        };
        let served: Vec<u64> = (0..10).flat_map(|p| by_id(p * 1_000)).collect();
        assert_eq!(served, ties.rows(0..rows, Order::Served, 0, 0));
        // One row per timestamp: the same rows whatever the order.
        let one = layout(&g, 1, rows);
        let q = PageQuery::parse(&pairs(&[("$order", ":updated_at"), ("$offset", "7")])).unwrap();
        assert_eq!(q.rows(&one, rows, 0), (7..1_007).collect::<Vec<_>>());
    }

    #[test]
    fn rows_are_written_as_socrata_does() {
        let row = Case {
            row_id: "row-abcd.efgh_ijkm".parse().unwrap(),
            case_month: "2021-03".parse().unwrap(),
            res_state: "CA".parse().unwrap(),
            state_fips_code: None,
            res_county: Some("O'BRIEN \"X\"".into()),
            county_fips_code: None,
            age_group: AgeGroup::Age18To49,
            sex: Sex::Female,
            race: Race::NativeHawaiianPacificIslander,
            ethnicity: Ethnicity::Unknown,
            case_positive_specimen_interval: Some(-2),
            case_onset_interval: None,
            process: Process::Missing,
            exposure_yn: YesNo::Yes,
            current_status: CurrentStatus::Probable,
            symptom_status: SymptomStatus::NA,
            hosp_yn: YesNo::No,
            icu_yn: YesNo::Unknown,
            death_yn: YesNo::Missing,
            underlying_conditions_yn: YesNo::NA,
        };
        let mut out = Vec::new();
        write_row(&mut out, &mut RowClock::default(), 3, &row, true);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let object = value.as_object().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(r#"{":id":"row-abcd.efgh_ijkm",":created_at":"#));
        assert!(text.find(r#"":updated_at""#) < text.find(r#""case_month""#));
        assert!(text.ends_with(r#""underlying_conditions_yn":"NA"}"#));
        assert!(!object.contains_key("state_fips_code"));
        assert!(!object.contains_key("case_onset_interval"));
        assert_eq!(value["res_county"], "O'BRIEN \"X\"");
        assert_eq!(value["county_fips_code"], "NA");
        assert_eq!(value["case_positive_specimen_interval"], "-2");
        assert_eq!(value[":updated_at"], "2024-01-01T00:00:00.003");
        assert!(object.values().all(serde_json::Value::is_string));
    }
}
