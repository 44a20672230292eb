//! The HTTP client every source fetches through: a request timeout, a cap
//! on the response size, and retries with exponential backoff and full
//! jitter that honour `Retry-After`.

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use governor::DefaultDirectRateLimiter;
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::SourceMetrics;

/// The `[producers.http]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whole-request timeout (connect, headers and body), milliseconds.
    pub timeout_ms: u64,
    /// Connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Largest response body accepted, bytes; a larger one is an error that
    /// names the URL, not a silent cut.
    pub max_response_bytes: u64,
    /// Attempts per request, the first included, before the poll fails.
    pub max_attempts: u32,
    /// First backoff delay, milliseconds; doubled after each failure.
    pub backoff_initial_ms: u64,
    /// Longest backoff delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` honoured, seconds; a longer one is capped.
    pub retry_after_max_s: u64,
    /// The `User-Agent` sent with every request.
    pub user_agent: String,
    /// PEM file of CA certificates trusted for HTTPS, beside the webpki
    /// roots and the system's (a private CA, a proxy's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            max_response_bytes: 256 << 20,
            max_attempts: 10,
            backoff_initial_ms: 200,
            backoff_max_ms: 30_000,
            retry_after_max_s: 300,
            user_agent: concat!(
                "vigie/",
                env!("CARGO_PKG_VERSION"),
                " (+https://github.com/vigie)"
            )
            .to_owned(),
            ca_file: None,
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every attempt failed with a retryable error; the last one is given.
    #[error("GET {url}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The body is larger than `max_response_bytes`.
    #[error(
        "GET {url}: the response exceeds max_response_bytes ({limit} bytes); ask for smaller pages or raise the limit"
    )]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The upstream answered with a status that retrying cannot fix.
    #[error("GET {url}: HTTP {status}: {excerpt}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body, for the log.
        excerpt: String,
    },
    /// The client could not be built or the request not made (a bad URL).
    #[error("GET {url}: {message}")]
    Request {
        /// The URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The client could not be built from the settings.
    #[error("HTTP client: {0}")]
    Client(String),
    /// Shutdown was requested while waiting.
    #[error("stopped")]
    Cancelled,
}

impl FetchError {
    /// The status, for callers that treat some (404) as a normal answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A successful response: status 2xx and the whole body.
#[derive(Debug)]
pub struct Fetched {
    /// The status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body, complete.
    pub body: Bytes,
}

/// What one attempt gave, classified.
enum Attempt {
    Done(Fetched),
    /// Worth another attempt; `wait` is the server's `Retry-After`.
    Retry {
        kind: &'static str,
        error: String,
        wait: Option<Duration>,
    },
    Fatal(FetchError),
}

/// The shared client of a source.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    config: HttpConfig,
    metrics: SourceMetrics,
    source: &'static str,
}

impl HttpFetcher {
    /// A client for `source`, whose errors and latencies go to `metrics`.
    pub fn new(
        config: &HttpConfig,
        source: &'static str,
        metrics: SourceMetrics,
    ) -> Result<Self, FetchError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(&config.user_agent)
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms));
        if let Some(path) = &config.ca_file {
            builder = trust_ca_file(builder, path)?;
        }
        let client = builder.build().map_err(|e| FetchError::Client(chain(&e)))?;
        Ok(Self {
            client,
            config: config.clone(),
            metrics,
            source,
        })
    }

    /// The settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// GETs `url` with `headers`, retrying what can be retried.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        shutdown: &CancellationToken,
    ) -> Result<Fetched, FetchError> {
        self.get_paced(url, headers, None, shutdown).await
    }

    /// Like [`get`](Self::get), every attempt (retries included) waiting
    /// for `pace`, a per-host rate limiter.
    pub async fn get_paced(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        pace: Option<&DefaultDirectRateLimiter>,
        shutdown: &CancellationToken,
    ) -> Result<Fetched, FetchError> {
        let mut delay = Duration::from_millis(self.config.backoff_initial_ms);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(limiter) = pace {
                tokio::select! {
                    _ = limiter.until_ready() => {}
                    _ = shutdown.cancelled() => return Err(FetchError::Cancelled),
                }
            }
            let started = Instant::now();
            let outcome = tokio::select! {
                a = self.attempt(url, headers) => a,
                _ = shutdown.cancelled() => return Err(FetchError::Cancelled),
            };
            self.metrics
                .upstream_seconds
                .with_label_values(&[self.source])
                .observe(started.elapsed().as_secs_f64());
            let (kind, error, wait) = match outcome {
                Attempt::Done(f) => return Ok(f),
                Attempt::Fatal(e) => {
                    self.metrics.error(self.source, fatal_kind(&e));
                    return Err(e);
                }
                Attempt::Retry { kind, error, wait } => (kind, error, wait),
            };
            self.metrics.error(self.source, kind);
            if attempt >= self.config.max_attempts {
                return Err(FetchError::Exhausted {
                    url: shown(url),
                    attempts: attempt,
                    last: error,
                });
            }
            // Full jitter below the exponential delay; the server's
            // Retry-After, when given, is a floor (capped by config).
            let jittered = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
            let pause = match wait {
                Some(w) => w.min(Duration::from_secs(self.config.retry_after_max_s)),
                None => jittered,
            };
            warn!(source = self.source, url = shown(url), attempt, kind, error = %error, ?pause, "Upstream request failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return Err(FetchError::Cancelled),
            }
            delay = (delay * 2).min(Duration::from_millis(self.config.backoff_max_ms));
        }
    }

    async fn attempt(&self, url: &str, headers: &[(&str, &str)]) -> Attempt {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return Attempt::Fatal(FetchError::Request {
                    url: shown(url),
                    message: shown(&e.to_string()),
                });
            }
            // A certificate refused is refused again: no retry.
            Err(e) if is_certificate_refusal(&e) => {
                return Attempt::Fatal(FetchError::Request {
                    url: shown(url),
                    message: format!("TLS: {}", shown(&chain(&e))),
                });
            }
            Err(e) => return retry(error_kind(&e), &e, None),
        };
        let status = resp.status();
        if !status.is_success() {
            let wait = retry_after(resp.headers());
            let excerpt = excerpt(resp).await;
            return match status {
                StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                    kind: "status_429",
                    error: format!("HTTP 429: {excerpt}"),
                    wait,
                },
                StatusCode::REQUEST_TIMEOUT => Attempt::Retry {
                    kind: "status_4xx",
                    error: "HTTP 408".into(),
                    wait,
                },
                s if s.is_server_error() => Attempt::Retry {
                    kind: "status_5xx",
                    error: format!("HTTP {}: {excerpt}", s.as_u16()),
                    wait,
                },
                s => Attempt::Fatal(FetchError::Status {
                    url: shown(url),
                    status: s.as_u16(),
                    excerpt,
                }),
            };
        }
        let limit = self.config.max_response_bytes;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Attempt::Fatal(FetchError::TooLarge {
                url: shown(url),
                limit,
            });
        }
        let mut body = BytesMut::with_capacity(
            resp.content_length()
                .map_or(64 << 10, |n| n as usize)
                .min(limit as usize),
        );
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > limit {
                        return Attempt::Fatal(FetchError::TooLarge {
                            url: shown(url),
                            limit,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                // Reset or truncated mid-body: the whole response again.
                Err(e) => return retry(error_kind(&e), &e, None),
            }
        }
        Attempt::Done(Fetched {
            status: status.as_u16(),
            headers: resp.headers().clone(),
            body: body.freeze(),
        })
    }
}

/// Bytes of an error response's body read for its excerpt: an error page
/// of any size (or one that never ends) costs no more than this.
const ERROR_BODY_BYTES: usize = 4096;

/// The start of an error response's body, as text (300 characters at
/// most); the rest of the body is never read.
async fn excerpt(mut resp: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_BODY_BYTES - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&bytes).chars().take(300).collect()
}

fn retry(kind: &'static str, e: &reqwest::Error, wait: Option<Duration>) -> Attempt {
    // The source chain carries the useful part ("connection reset", ...).
    let error = shown(&chain(e));
    Attempt::Retry { kind, error, wait }
}

/// `text` (a URL, or a message holding one) as shown in errors and logs:
/// without the password of a URL's user info.
fn shown(text: &str) -> String {
    vigie_config::redact_url_passwords(text).into_owned()
}

/// `builder` also trusting the certificates of the PEM file at `path`.
#[cfg(feature = "tls")]
fn trust_ca_file(
    mut builder: reqwest::ClientBuilder,
    path: &std::path::Path,
) -> Result<reqwest::ClientBuilder, FetchError> {
    let refused = |message: String| {
        FetchError::Client(format!(
            "producers.http.ca_file {}: {message}",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| refused(e.to_string()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| refused(format!("not a PEM file of certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(refused("holds no certificate".into()));
    }
    for certificate in certificates {
        builder = builder.add_root_certificate(certificate);
    }
    Ok(builder)
}

/// Without the `tls` feature there is no certificate to trust.
#[cfg(not(feature = "tls"))]
fn trust_ca_file(
    _: reqwest::ClientBuilder,
    path: &std::path::Path,
) -> Result<reqwest::ClientBuilder, FetchError> {
    Err(FetchError::Client(format!(
        "producers.http.ca_file {}: this build has no TLS (the `tls` feature)",
        path.display()
    )))
}

/// Whether the server's certificate was refused (unknown issuer, expired,
/// another name...): a configuration matter, not a passing failure.
fn is_certificate_refusal(e: &reqwest::Error) -> bool {
    e.is_connect() && chain(e).contains("invalid peer certificate")
}

/// An error and its sources, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

fn fatal_kind(e: &FetchError) -> &'static str {
    match e {
        FetchError::TooLarge { .. } => "too_large",
        FetchError::Status { .. } => "status_4xx",
        _ => "request",
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    /// An error page announcing a gigabyte, of which 64 KiB come and then
    /// nothing: the excerpt is read from its start, the rest never waited
    /// for (reading the whole body would wait for ever).
    #[tokio::test]
    async fn an_error_body_is_read_only_for_its_excerpt() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 1000000000\r\n\r\n")
                .await
                .unwrap();
            socket.write_all(&[b'x'; 64 << 10]).await.unwrap();
            // Held open, the rest never sent.
            std::future::pending::<()>().await;
        });
        let fetcher = HttpFetcher::new(
            &HttpConfig::default(),
            "test",
            SourceMetrics::unregistered(),
        )
        .unwrap();
        let url = format!("http://{addr}/rows");
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            fetcher.get(&url, &[], &CancellationToken::new()),
        )
        .await
        .expect("the error comes without the rest of the body")
        .unwrap_err();
        match err {
            FetchError::Status {
                status, excerpt, ..
            } => {
                assert_eq!(status, 404);
                assert_eq!(excerpt, "x".repeat(300));
            }
            other => panic!("{other}"),
        }
        server.abort();
    }

    #[tokio::test]
    async fn a_failed_fetch_names_its_url_without_the_password() {
        // Nothing listens on port 1: the connection is refused.
        let fetcher = HttpFetcher::new(
            &HttpConfig {
                max_attempts: 2,
                backoff_initial_ms: 1,
                backoff_max_ms: 1,
                ..HttpConfig::default()
            },
            "test",
            SourceMetrics::unregistered(),
        )
        .unwrap();
        let err = fetcher
            .get(
                "http://reader:s3cret@127.0.0.1:1/rows",
                &[],
                &CancellationToken::new(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("GET http://reader:***@127.0.0.1:1/rows: gave up after 2 attempts"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
}
