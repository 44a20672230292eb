//! The upstream simulator as an HTTP server: the CDC case rows over
//! Socrata's SODA API, the WHO daily CSV and the WHO Disease Outbreak News
//! pages, in their real wire formats, so that pointing a producer at the
//! real upstream is only a change of base URL.
//!
//! Everything served is a pure function of the seed, the configuration and
//! the time since the start (for the sources configured to grow), plus what
//! the control API changed (article edits, layout, faults). Fault rules
//! make chosen requests fail the way real servers do. A test drives it in
//! process through [`RunningSimulator`]; a simulator run as a separate
//! process (`vigie simulate serve`) is driven through the same operations
//! under `/_sim/` (see `docs/simulator.md`).

mod cases;
mod config;
mod control;
mod faults;
mod manifest;
mod metrics;
mod news;
mod who_csv;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{CaseGenConfig, CaseGenerator, ConfigError, CountryDayGenerator, NewsGenerator};

pub use cases::{CASES_PATH, DEFAULT_LIMIT, MAX_LIMIT, ROW_EPOCH, row_timestamp, served_case};
pub use config::{
    CasesSim, InvalidSetting, MAX_CASE_ROWS, MAX_ROWS_PER_TIMESTAMP, NewsSim, SimConfig, Updates,
    WhoSim,
};
pub use faults::{Endpoint, FaultKind, FaultRule};
pub use manifest::{CasesManifest, Manifest, NewsManifest, RequestRecord, WhoManifest};
pub use metrics::SimMetrics;
pub use news::{NEWS_ITEM_PREFIX, NEWS_PATH};
pub use who_csv::{FUTURE_ROW_DAYS, WHO_CSV_HEADER, WHO_CSV_PATH, WHO_FIRST_DATE, served_rows};

use cases::{Layout, PageQuery, SodaError};
use faults::{Faults, lock};
use news::NewsSite;

/// Address `vigie simulate serve` listens on by default.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8088);

/// The request log keeps the latest this many requests.
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// How long a `truncated` response waits between its half body and the
/// failure, so that the half body reaches the client first.
const TRUNCATION_PAUSE: Duration = Duration::from_millis(20);

const JSON: &str = "application/json;charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const CSV: &str = "text/csv";
const TEXT: &str = "text/plain; charset=utf-8";

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is out of range.
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
    /// A generator refused its configuration.
    #[error("cannot build the generators: {0}")]
    Generator(#[from] ConfigError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error of the operating system.
        source: std::io::Error,
    },
}

/// Starts simulators.
#[derive(Debug, Clone, Copy)]
pub struct Simulator;

impl Simulator {
    /// Validates `config`, binds `listen` (port 0 picks a free port) and
    /// serves until [`RunningSimulator::shutdown`] (or until the returned
    /// value is dropped). Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// If the configuration is invalid or the address cannot be bound.
    pub async fn start(
        config: SimConfig,
        listen: SocketAddr,
    ) -> Result<RunningSimulator, StartError> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        let base_url = base_url(addr);
        let token = CancellationToken::new();
        let shared = Arc::new(Shared::new(config, &base_url, token.clone())?);
        let router = router(shared.clone());
        let shutdown = token.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        });
        Ok(RunningSimulator {
            addr,
            base_url,
            shared,
            token,
            task: Some(task),
        })
    }
}

/// A simulator serving in the background, and the operations tests use to
/// drive it.
#[derive(Debug)]
pub struct RunningSimulator {
    addr: SocketAddr,
    base_url: String,
    shared: Arc<Shared>,
    token: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningSimulator {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, without a trailing `/` (`127.0.0.1` when listening
    /// on every interface).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The configuration it serves.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// When it started: the origin of [`RequestRecord::at`] and of the
    /// growth of the cases and the WHO file.
    pub fn started_at(&self) -> Instant {
        self.shared.started
    }

    /// What it serves now and what it has served.
    pub fn manifest(&self) -> Manifest {
        self.shared.manifest()
    }

    /// Its Prometheus counters (requests by endpoint and status, faults
    /// by endpoint and kind), counting since the start; register them to
    /// serve them on a `/metrics`.
    pub fn metrics(&self) -> &SimMetrics {
        &self.shared.metrics
    }

    /// Publishes a new revision of article `index`: same URL, new summary
    /// and content hash. Returns the new revision, or `None` if no such
    /// article is published.
    pub fn edit_article(&self, index: u64) -> Option<u32> {
        self.shared.news.edit(index)
    }

    /// Switches every HTML page to the changed layout (`true`) or back to
    /// the original one.
    pub fn set_layout_changed(&self, changed: bool) {
        self.shared.news.set_layout_changed(changed);
    }

    /// Adds a fault rule; its requests are counted from now on.
    ///
    /// # Errors
    ///
    /// If the rule is invalid (e.g. `every = 0`).
    pub fn add_fault(&self, rule: FaultRule) -> Result<(), InvalidSetting> {
        rule.validate("fault")?;
        self.shared.faults.add(rule);
        Ok(())
    }

    /// The requests received so far (the latest
    /// [`REQUEST_LOG_CAPACITY`]), in the order their responses were ready.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    /// Stops accepting connections, lets the requests in progress finish
    /// (a `slow` fault's delay is cut short) and waits for the server to
    /// stop.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take()
            && let Ok(Err(error)) = task.await
        {
            tracing::warn!(%error, "Simulator server stopped with an error");
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// `http://` and the address, with a loopback address for an unspecified
/// one.
fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// What requests are counted against in the manifest.
#[derive(Debug, Clone, Copy)]
enum Counted {
    Served(Endpoint),
    Robots,
    NotFound,
}

impl Counted {
    /// Names of the manifest's request counts and of the metrics'
    /// `endpoint` label, by [`slot`](Self::slot).
    const NAMES: [&'static str; 6] = [
        "cases",
        "who",
        "news_listing",
        "news_article",
        "robots_txt",
        "not_found",
    ];

    fn name(self) -> &'static str {
        Self::NAMES[self.slot()]
    }

    fn slot(self) -> usize {
        match self {
            Counted::Served(Endpoint::Cases | Endpoint::Any) => 0,
            Counted::Served(Endpoint::Who) => 1,
            Counted::Served(Endpoint::NewsListing) => 2,
            Counted::Served(Endpoint::NewsArticle) => 3,
            Counted::Robots => 4,
            Counted::NotFound => 5,
        }
    }
}

/// The state every request handler shares.
#[derive(Debug)]
struct Shared {
    config: SimConfig,
    started: Instant,
    shutdown: CancellationToken,
    cases: CaseGenerator,
    who: CountryDayGenerator,
    who_max_days: u32,
    news: NewsSite,
    faults: Faults,
    metrics: SimMetrics,
    requests: [AtomicU64; 6],
    log: std::sync::Mutex<VecDeque<RequestRecord>>,
}

impl Shared {
    fn new(
        config: SimConfig,
        base_url: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, ConfigError> {
        let cases = CaseGenerator::new(CaseGenConfig {
            seed: config.seed,
            drift: config.cases.drift.clone(),
            ..CaseGenConfig::default()
        })?;
        let who = CountryDayGenerator::new(config.seed, WHO_FIRST_DATE, config.who.countries)?;
        let news_generator = NewsGenerator::new(config.seed, &format!("{base_url}{NEWS_PATH}"))?;
        let news = NewsSite::new(news_generator, &config.news);
        Ok(Self {
            faults: Faults::new(config.faults.iter().cloned()),
            metrics: SimMetrics::new(),
            started: Instant::now(),
            shutdown,
            cases,
            who,
            who_max_days: who_csv::max_days(),
            news,
            requests: Default::default(),
            log: Default::default(),
            config,
        })
    }

    /// Case rows visible now: with several rows per timestamp, whole
    /// timestamps only (all of `rows` once grown to it).
    fn rows_available(&self) -> u64 {
        let cases = &self.config.cases;
        let grown = u128::from(cases.rows_per_second) * self.started.elapsed().as_millis() / 1000;
        let grown = u64::try_from(grown).unwrap_or(u64::MAX);
        let available = cases.initial_rows().saturating_add(grown).min(cases.rows);
        if available == cases.rows {
            available
        } else {
            available - available % cases.rows_per_timestamp.max(1)
        }
    }

    /// Where each case row is served.
    fn layout(&self) -> Layout<'_> {
        Layout {
            generator: &self.cases,
            per_timestamp: self.config.cases.rows_per_timestamp.max(1),
            rows: self.config.cases.rows,
            updates: self.config.cases.updates,
        }
    }

    /// Days in the WHO file now.
    fn days_available(&self) -> u32 {
        let who = &self.config.who;
        let grown = if who.day_seconds > 0.0 {
            // Saturates for absurd values, then capped below.
            (self.started.elapsed().as_secs_f64() / who.day_seconds) as u32
        } else {
            0
        };
        who.initial_days
            .saturating_add(grown)
            .min(self.who_max_days)
    }

    fn manifest(&self) -> Manifest {
        let days = self.days_available();
        let countries = self.who.countries();
        Manifest {
            seed: self.config.seed,
            cases: CasesManifest {
                rows_available: self.rows_available(),
                rows_total: self.config.cases.rows,
            },
            who: WhoManifest {
                days_available: days,
                rows_available: u64::from(days) * countries as u64,
                countries,
                first_date: WHO_FIRST_DATE.format("%Y-%m-%d").to_string(),
            },
            news: NewsManifest {
                articles: self.news.articles(),
                revisions: self.news.revisions(),
                layout_changed: self.news.layout_changed(),
            },
            requests: Counted::NAMES
                .iter()
                .zip(&self.requests)
                .map(|(name, n)| ((*name).to_owned(), n.load(Ordering::Relaxed)))
                .collect(),
            faults_injected: self
                .faults
                .injected()
                .map(|(name, n)| (name.to_owned(), n))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn record(&self, record: RequestRecord) {
        let mut log = lock(&self.log);
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }
}

/// A response before any fault touches its body.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    retry_after: Option<u64>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: StatusCode, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            retry_after: None,
            body: body.into(),
        }
    }

    fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self::new(StatusCode::OK, content_type, body)
    }

    fn text(status: StatusCode) -> Self {
        let reason = status.canonical_reason().unwrap_or("Error");
        Self::new(status, TEXT, format!("{} {reason}\n", status.as_u16()))
    }

    fn soda_error(error: &SodaError) -> Self {
        let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(status, JSON, error.body())
    }

    fn into_response(self, fault: Option<&FaultKind>) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        let body = match fault {
            Some(FaultKind::Reset) => Body::from_stream(futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("connection reset by the simulator"))
            })),
            Some(FaultKind::Truncated) => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(self.body.len()));
                let mut body = self.body;
                body.truncate(body.len() / 2);
                let half = futures::stream::iter([Ok(Bytes::from(body))]);
                let failure = futures::stream::once(async {
                    // Lets the half body be flushed before the connection
                    // is closed.
                    tokio::time::sleep(TRUNCATION_PAUSE).await;
                    Err(std::io::Error::other("response truncated by the simulator"))
                });
                Body::from_stream(half.chain(failure))
            }
            _ => Body::from(self.body),
        };
        (self.status, headers, body).into_response()
    }
}

/// Counts, faults, renders, logs: the path every request to an upstream
/// endpoint takes. `render` gets the fault to apply when it is one that
/// changes the content (`repeat_rows`).
async fn respond<F, Fut>(
    shared: Arc<Shared>,
    counted: Counted,
    uri: &Uri,
    headers: &HeaderMap,
    render: F,
) -> Response
where
    F: FnOnce(Option<FaultKind>) -> Fut,
    Fut: Future<Output = Reply>,
{
    let at = shared.started.elapsed();
    shared.requests[counted.slot()].fetch_add(1, Ordering::Relaxed);
    let fault = match counted {
        Counted::Served(endpoint) => {
            let fault = shared.faults.next(endpoint);
            if let Some(kind) = &fault {
                shared.metrics.count_fault(endpoint, kind);
            }
            fault
        }
        Counted::Robots | Counted::NotFound => None,
    };
    let reply = match &fault {
        Some(FaultKind::TooManyRequests {
            retry_after_seconds,
        }) => Reply {
            retry_after: Some(*retry_after_seconds),
            ..Reply::text(StatusCode::TOO_MANY_REQUESTS)
        },
        Some(FaultKind::ServerError { status }) => {
            Reply::text(StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Some(FaultKind::Slow { delay_ms }) => {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(*delay_ms)) => {}
                () = shared.shutdown.cancelled() => {}
            }
            render(None).await
        }
        Some(FaultKind::LayoutChange) => {
            shared.news.set_layout_changed(true);
            render(None).await
        }
        Some(kind @ FaultKind::RepeatRows { .. }) => render(Some(kind.clone())).await,
        Some(FaultKind::Reset | FaultKind::Truncated) | None => render(None).await,
    };
    shared
        .metrics
        .count_request(counted.name(), reply.status.as_u16());
    shared.record(RequestRecord {
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        user_agent: headers
            .get(USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        at,
        status: reply.status.as_u16(),
        fault: fault.as_ref().map(|kind| kind.name().to_owned()),
    });
    reply.into_response(fault.as_ref())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(CASES_PATH, get(cases_page))
        .route(WHO_CSV_PATH, get(who_file))
        .route(NEWS_PATH, get(news_listing))
        .route(&format!("{NEWS_ITEM_PREFIX}{{slug}}"), get(news_article))
        .route("/robots.txt", get(robots_txt))
        .merge(control::routes())
        .fallback(not_found)
        .with_state(shared)
}

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

async fn cases_page(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    query: Pairs,
) -> Response {
    let parsed = match &query {
        Ok(Query(pairs)) => PageQuery::parse(pairs),
        Err(rejection) => Err(SodaError {
            status: 400,
            code: "query.compiler.malformed",
            message: format!("malformed query string: {rejection}"),
        }),
    };
    let token = headers
        .get("x-app-token")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let state = shared.clone();
    respond(
        shared,
        Counted::Served(Endpoint::Cases),
        &uri,
        &headers,
        |fault| async move {
            let query = match parsed {
                Ok(query) => query,
                Err(error) => return Reply::soda_error(&error),
            };
            if let Some(expected) = &state.config.cases.app_token {
                let sent = token.as_ref().or(query.app_token.as_ref());
                if sent.is_some_and(|sent| sent != expected) {
                    return Reply::soda_error(&SodaError::bad_token());
                }
            }
            let repeat = match fault {
                Some(FaultKind::RepeatRows { rows }) => rows,
                _ => 0,
            };
            let available = state.rows_available();
            let render = tokio::task::spawn_blocking(move || {
                let layout = state.layout();
                let rows = query.rows(&layout, available, repeat);
                let system = query.system_fields;
                cases::render_page(
                    &state.cases,
                    &rows,
                    layout.per_timestamp,
                    layout.updates,
                    system,
                )
            });
            match render.await {
                Ok(body) => Reply::ok(JSON, body),
                Err(_) => Reply::text(StatusCode::INTERNAL_SERVER_ERROR),
            }
        },
    )
    .await
}

async fn who_file(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    let state = shared.clone();
    respond(
        shared,
        Counted::Served(Endpoint::Who),
        &uri,
        &headers,
        |_| async move {
            let days = state.days_available();
            let render = tokio::task::spawn_blocking(move || {
                who_csv::render(&state.who, days, &state.config.who)
            });
            match render.await {
                Ok(body) => Reply::ok(CSV, body),
                Err(_) => Reply::text(StatusCode::INTERNAL_SERVER_ERROR),
            }
        },
    )
    .await
}

async fn news_listing(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    query: Pairs,
) -> Response {
    let page = match &query {
        Ok(Query(pairs)) => match pairs.iter().find(|(key, _)| key == "page") {
            None => Some(1),
            Some((_, value)) => value.parse::<u64>().ok().filter(|page| *page >= 1),
        },
        Err(_) => None,
    };
    let state = shared.clone();
    respond(
        shared,
        Counted::Served(Endpoint::NewsListing),
        &uri,
        &headers,
        |_| async move {
            match page {
                Some(page) => Reply::ok(HTML, state.news.listing(page)),
                None => Reply::text(StatusCode::BAD_REQUEST),
            }
        },
    )
    .await
}

async fn news_article(
    State(shared): State<Arc<Shared>>,
    Path(slug): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let state = shared.clone();
    respond(
        shared,
        Counted::Served(Endpoint::NewsArticle),
        &uri,
        &headers,
        |_| async move {
            match state.news.index_of(&slug) {
                Some(index) => Reply::ok(HTML, state.news.article(index)),
                None => Reply::new(StatusCode::NOT_FOUND, HTML, not_found_page()),
            }
        },
    )
    .await
}

async fn robots_txt(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    let state = shared.clone();
    respond(shared, Counted::Robots, &uri, &headers, |_| async move {
        Reply::ok(TEXT, state.news.robots().to_owned())
    })
    .await
}

async fn not_found(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    respond(shared, Counted::NotFound, &uri, &headers, |_| async {
        Reply::text(StatusCode::NOT_FOUND)
    })
    .await
}

fn not_found_page() -> &'static str {
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
     <title>Page not found | World Health Organization</title>\n</head>\n<body>\n<main>\n\
     <h1>Page not found</h1>\n</main>\n</body>\n</html>\n"
}
