//! The three sources against the simulator (in-process, over real HTTP) and
//! the real broker: faults recovered from, every row once, growth, edits,
//! robots.txt, the rate limit and a layout change.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use vigie_kafka::{EventProducer, KafkaMetrics, ProducerConfig};
use vigie_producers::{
    CheckpointStore, HttpConfig, RunStats, SourceConfig, SourceMetrics, SourceRunner,
};
use vigie_simulator::server::{
    CASES_PATH, Endpoint, FaultKind, FaultRule, NEWS_PATH, RunningSimulator, SimConfig, Simulator,
    WHO_CSV_PATH,
};
use vigie_simulator::{CaseGenConfig, CaseGenerator, CountryDayGenerator, NewsGenerator};
use vigie_testkit::{broker, create_topic_and_dlq, read_topic, topic_len, unique_name};

const DEADLINE: Duration = Duration::from_secs(60);

async fn simulator(config: SimConfig) -> RunningSimulator {
    Simulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator")
}

/// The simulator serving `rows` case rows of generator `seed`, with `faults`.
async fn cases_simulator(seed: u64, rows: u64, faults: Vec<FaultRule>) -> RunningSimulator {
    simulator(SimConfig {
        seed,
        cases: vigie_simulator::server::CasesSim {
            rows,
            ..Default::default()
        },
        faults,
        ..SimConfig::default()
    })
    .await
}

/// A source's topic (and DLQ twin) on the durable broker, whose watermarks
/// are right, so that counts can be checked exactly.
async fn topic(prefix: &str) -> String {
    let b = broker();
    let topic = unique_name(prefix);
    create_topic_and_dlq(&b.bootstrap, &topic, 3).await;
    topic
}

struct Run<'a> {
    name: &'static str,
    url: String,
    topic: &'a str,
    options: &'a str,
    state: &'a std::path::Path,
    metrics: SourceMetrics,
    /// `producers.http.ca_file`.
    ca_file: Option<std::path::PathBuf>,
}

impl<'a> Run<'a> {
    /// A `cdc-cases` run against the simulator's case endpoint.
    fn cases(
        sim: &RunningSimulator,
        topic: &'a str,
        options: &'a str,
        state: &'a std::path::Path,
        metrics: &SourceMetrics,
    ) -> Self {
        Self {
            name: "cdc-cases",
            url: format!("{}{CASES_PATH}", sim.base_url()),
            topic,
            options,
            state,
            metrics: metrics.clone(),
            ca_file: None,
        }
    }

    /// Runs the source until it has caught up.
    async fn go(&self) -> RunStats {
        let spec = vigie_producers::spec(self.name).unwrap();
        let source = (spec.build)(&self.config()).expect("source");
        self.go_with(source).await
    }

    fn config(&self) -> SourceConfig {
        SourceConfig {
            url: self.url.clone(),
            topic: self.topic.to_owned(),
            poll_interval_ms: 0,
            options: toml::from_str(self.options).expect("options"),
        }
    }

    /// Runs `source` in this run's place until it has caught up.
    async fn go_with(&self, source: Box<dyn vigie_producers::Source>) -> RunStats {
        self.try_go_with(source).await.expect("run")
    }

    /// [`Run::go_with`], its error returned.
    async fn try_go_with(
        &self,
        source: Box<dyn vigie_producers::Source>,
    ) -> Result<RunStats, vigie_producers::RunError> {
        let config = self.config();
        let runner = SourceRunner {
            config,
            http: HttpConfig {
                backoff_initial_ms: 10,
                backoff_max_ms: 200,
                timeout_ms: 5_000,
                user_agent: "vigie-test/1".into(),
                ca_file: self.ca_file.clone(),
                ..HttpConfig::default()
            },
            checkpoints: CheckpointStore::open(self.state.join("checkpoints")).unwrap(),
            quarantine_dir: self.state.join("quarantine"),
            metrics: self.metrics.clone(),
            until_caught_up: true,
        };
        let producer = EventProducer::new(
            &vigie_kafka::Cluster::new(&broker().bootstrap),
            &ProducerConfig::default(),
            KafkaMetrics::unregistered(),
        )
        .unwrap();
        tokio::time::timeout(DEADLINE, runner.run(source, &producer, &Default::default()))
            .await
            .expect("the source catches up in time")
    }
}

/// Event ids of the records of `topic` (exactly `n` of them).
fn ids(topic: &str, n: usize) -> Vec<String> {
    read_topic(&broker().bootstrap, topic, n, DEADLINE)
        .into_iter()
        .map(|(_, _, _, value, _)| {
            let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn rule(endpoint: Endpoint, kind: FaultKind, every: u64, times: u64) -> FaultRule {
    FaultRule {
        endpoint,
        kind,
        every,
        times: Some(times),
    }
}

/// While a backlog drains, each page is fetched while the one before it is
/// mapped, and the guess of where it starts holds on the simulator's pages:
/// every page requested once, each prefetch used.
#[tokio::test]
async fn cdc_cases_fetch_the_next_page_while_mapping_one() {
    let (rows, page) = (5_000, 1_000);
    let sim = cases_simulator(12, rows, vec![]).await;
    let topic = topic("health.case.v1").await;
    let state = tempfile::tempdir().unwrap();
    let metrics = SourceMetrics::unregistered();
    let options = format!("page_size = {page}");
    let run = Run::cases(&sim, &topic, &options, state.path(), &metrics);
    assert_eq!(run.go().await.events, rows);
    let requests: Vec<String> = sim
        .request_log()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    let distinct: BTreeSet<&String> = requests.iter().collect();
    // Five full pages and the empty one after them.
    assert_eq!(requests.len(), 6, "{requests:#?}");
    assert_eq!(distinct.len(), requests.len(), "a page fetched twice");
    let outcome = |o: &str| {
        metrics
            .prefetches
            .with_label_values(&["cdc-cases", o])
            .get()
    };
    // Every page but the first was fetched ahead.
    assert_eq!(
        (outcome("used"), outcome("wrong_guess"), outcome("dropped")),
        (5, 0, 0)
    );
}

/// Rows that share one `:updated_at` across several pages (2,500 a
/// timestamp, pages of 1,000): keyset paging on (`:updated_at`, `:id`)
/// takes each row once, in the upstream's order, and the guess of the next
/// page (the last row's key) holds.
#[tokio::test]
async fn cdc_cases_take_each_row_of_a_tie_larger_than_a_page_once() {
    let (rows, page) = (7_300, 1_000);
    let sim = simulator(SimConfig {
        seed: 13,
        cases: vigie_simulator::server::CasesSim {
            rows,
            rows_per_timestamp: 2_500,
            ..Default::default()
        },
        ..SimConfig::default()
    })
    .await;
    let topic = topic("health.case.v1").await;
    let state = tempfile::tempdir().unwrap();
    let metrics = SourceMetrics::unregistered();
    let options = format!("page_size = {page}");
    let run = Run::cases(&sim, &topic, &options, state.path(), &metrics);
    assert_eq!(run.go().await.events, rows);
    assert_eq!(topic_len(&broker().bootstrap, &topic), rows as i64);
    let g = CaseGenerator::new(CaseGenConfig {
        seed: 13,
        ..CaseGenConfig::default()
    })
    .unwrap();
    let expected: BTreeSet<String> = (0..rows)
        .map(|i| {
            vigie_simulator::case_envelope(&g, i, Utc::now())
                .id
                .to_string()
        })
        .collect();
    let got: BTreeSet<String> = ids(&topic, rows as usize).into_iter().collect();
    assert_eq!(got, expected, "every row of every tie");
    for request in sim.request_log() {
        let query = &request.path_and_query;
        assert!(query.contains("$order=%3Aupdated_at%2C%3Aid"), "{query}");
        assert!(!query.contains("$offset"), "{query}");
    }
    let outcome = |o: &str| {
        metrics
            .prefetches
            .with_label_values(&["cdc-cases", o])
            .get()
    };
    // Seven full pages, each followed by the prefetched page after it.
    assert_eq!(
        (outcome("used"), outcome("wrong_guess"), outcome("dropped")),
        (7, 0, 0)
    );
    assert_eq!(run.go().await.events, 0, "caught up");
}

#[tokio::test]
async fn cdc_cases_recover_from_every_fault_and_hold_every_row_once() {
    let rows = 3_000;
    let sim = cases_simulator(
        11,
        rows,
        vec![
            rule(
                Endpoint::Cases,
                FaultKind::TooManyRequests {
                    retry_after_seconds: 1,
                },
                3,
                2,
            ),
            rule(
                Endpoint::Cases,
                FaultKind::ServerError { status: 503 },
                4,
                2,
            ),
            rule(Endpoint::Cases, FaultKind::Slow { delay_ms: 100 }, 5, 1),
            rule(Endpoint::Cases, FaultKind::Reset, 7, 1),
            rule(Endpoint::Cases, FaultKind::Truncated, 6, 1),
            rule(Endpoint::Cases, FaultKind::RepeatRows { rows: 40 }, 2, 3),
        ],
    )
    .await;
    let topic = topic("health.case.v1").await;
    let state = tempfile::tempdir().unwrap();
    let metrics = SourceMetrics::unregistered();
    let run = Run::cases(&sim, &topic, "page_size = 250", state.path(), &metrics);
    let stats = run.go().await;

    let injected = sim.manifest().faults_injected;
    for kind in FaultKind::NAMES {
        if kind != "layout_change" {
            assert!(
                injected.get(kind).copied().unwrap_or(0) >= 1,
                "{kind} injected: {injected:?}"
            );
        }
    }
    assert_eq!(
        stats.events,
        sim.manifest().cases.rows_available,
        "the manifest's rows"
    );
    assert_eq!(stats.events, rows);
    assert_eq!(
        topic_len(&broker().bootstrap, &topic),
        rows as i64,
        "no row twice"
    );
    let g = CaseGenerator::new(CaseGenConfig {
        seed: 11,
        ..CaseGenConfig::default()
    })
    .unwrap();
    let expected: BTreeSet<String> = (0..rows)
        .map(|i| {
            vigie_simulator::case_envelope(&g, i, Utc::now())
                .id
                .to_string()
        })
        .collect();
    let got: BTreeSet<String> = ids(&topic, rows as usize).into_iter().collect();
    assert_eq!(got, expected, "every simulated row, by id");
    for kind in ["status_429", "status_5xx", "body"] {
        assert!(
            metrics.errors.with_label_values(&["cdc-cases", kind]).get() >= 1,
            "{kind} counted"
        );
    }
    assert!(
        metrics
            .errors
            .with_label_values(&["cdc-cases", "repeated_row"])
            .get()
            >= 40,
        "repeated rows skipped"
    );

    // Caught up: polling again produces nothing new.
    assert_eq!(run.go().await.events, 0);
}

#[tokio::test]
async fn who_covid_produces_each_new_day_once_as_the_file_grows() {
    let state = tempfile::tempdir().unwrap();
    let topic = topic("health.country_day.v1").await;
    let config = |days| SimConfig {
        seed: 5,
        who: vigie_simulator::server::WhoSim {
            countries: 10,
            initial_days: days,
            day_seconds: 0.0,
            ..Default::default()
        },
        faults: vec![
            rule(Endpoint::Who, FaultKind::ServerError { status: 502 }, 1, 1),
            rule(Endpoint::Who, FaultKind::Truncated, 2, 1),
        ],
        ..SimConfig::default()
    };
    let mut produced = 0;
    // The same data set seen on three days: 5, then 5 again, then 8 days.
    for days in [5, 5, 8] {
        let sim = simulator(config(days)).await;
        let stats = Run {
            name: "who-covid",
            url: format!("{}{WHO_CSV_PATH}", sim.base_url()),
            topic: &topic,
            options: "",
            state: state.path(),
            metrics: SourceMetrics::unregistered(),
            ca_file: None,
        }
        .go()
        .await;
        produced += stats.events;
        let injected = sim.manifest().faults_injected;
        assert_eq!(injected.get("server_error"), Some(&1), "{injected:?}");
        assert_eq!(injected.get("truncated"), Some(&1), "{injected:?}");
        assert_eq!(produced, u64::from(days) * 10, "after {days} days");
    }
    let g = CountryDayGenerator::new(5, vigie_simulator::server::WHO_FIRST_DATE, 10).unwrap();
    let expected: BTreeSet<String> = (0..8)
        .flat_map(|d| vigie_simulator::country_day_envelopes(&g, d, Utc::now()))
        .map(|e| e.id.to_string())
        .collect();
    let got: Vec<String> = ids(&topic, 80);
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(topic_len(&broker().bootstrap, &topic), 80);
}

#[tokio::test]
async fn who_don_obeys_robots_and_the_rate_detects_edits_and_survives_a_layout_change() {
    let seed = 9;
    let sim = simulator(SimConfig {
        seed,
        news: vigie_simulator::server::NewsSim {
            articles: 25,
            page_size: 10,
            ..Default::default()
        },
        ..SimConfig::default()
    })
    .await;
    let g = NewsGenerator::new(seed, &format!("{}{NEWS_PATH}", sim.base_url())).unwrap();
    // Disallow one article through robots.txt: restart the simulator with it.
    let forbidden = g.url(3);
    let forbidden_path = forbidden
        .as_str()
        .trim_start_matches(sim.base_url())
        .to_owned();
    let port = sim.addr();
    sim.shutdown().await;
    let sim = Simulator::start(
        SimConfig {
            seed,
            news: vigie_simulator::server::NewsSim {
                articles: 25,
                page_size: 10,
                robots_disallow: vec![forbidden_path.clone()],
                ..Default::default()
            },
            faults: vec![
                rule(
                    Endpoint::NewsArticle,
                    FaultKind::TooManyRequests {
                        retry_after_seconds: 1,
                    },
                    7,
                    1,
                ),
                rule(Endpoint::NewsListing, FaultKind::Reset, 2, 1),
            ],
            ..SimConfig::default()
        },
        port,
    )
    .await
    .expect("simulator on the same port");

    let topic = topic("health.outbreak_news.v1").await;
    let state = tempfile::tempdir().unwrap();
    let metrics = SourceMetrics::unregistered();
    let rate = 40.0;
    let options = format!("requests_per_second = {rate}");
    let run = Run {
        name: "who-don",
        url: format!("{}{NEWS_PATH}", sim.base_url()),
        topic: &topic,
        options: &options,
        state: state.path(),
        metrics: metrics.clone(),
        ca_file: None,
    };

    // First cycle: every allowed article, once, through a 429 and a reset.
    assert_eq!(run.go().await.events, 24);
    let injected = sim.manifest().faults_injected;
    assert_eq!(injected.get("too_many_requests"), Some(&1), "{injected:?}");
    assert_eq!(injected.get("reset"), Some(&1), "{injected:?}");
    let log = sim.request_log();
    assert!(
        log.iter().all(|r| r.path_and_query != forbidden_path),
        "the disallowed article was fetched"
    );
    assert!(
        log.iter()
            .all(|r| r.user_agent.as_deref() == Some("vigie-test/1"))
    );
    // The rate limit holds: any k consecutive requests span at least k - 1
    // periods. The times are the simulator's arrival times, which jitter
    // with scheduling on a loaded machine: a request delayed on its way
    // shortens the gap after it but not the span, hence a slack of 10 ms,
    // well under the period (a retry that skipped the limiter would come
    // within a millisecond or two).
    let period = Duration::from_secs_f64(1.0 / rate);
    let slack = Duration::from_millis(10);
    for (i, first) in log.iter().enumerate() {
        for (k, last) in log.iter().enumerate().skip(i + 1) {
            let span = last.at.saturating_sub(first.at);
            let want = period * u32::try_from(k - i).unwrap();
            assert!(
                span + slack >= want,
                "{span:?} from {} to {}, {} requests later",
                first.path_and_query,
                last.path_and_query,
                k - i
            );
        }
    }

    // Nothing changed: nothing produced.
    assert_eq!(run.go().await.events, 0);

    // An edit: one new version, same event id, new hash.
    sim.edit_article(5).expect("article 5 is published");
    assert_eq!(run.go().await.events, 1);
    let records = read_topic(&broker().bootstrap, &topic, 25, DEADLINE);
    let of_article_5: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.3).unwrap())
        .filter(|v| v["data"]["url"] == g.url(5).as_str())
        .collect();
    assert_eq!(of_article_5.len(), 2);
    assert_eq!(of_article_5[0]["id"], of_article_5[1]["id"]);
    assert_ne!(
        of_article_5[0]["data"]["content_hash"],
        of_article_5[1]["data"]["content_hash"]
    );
    assert_eq!(
        of_article_5[1]["data"]["content_hash"],
        g.edited(5, 1).content_hash.as_str()
    );

    // The layout changes: parse errors counted, pages kept, nothing produced.
    sim.set_layout_changed(true);
    sim.edit_article(6).unwrap();
    assert_eq!(run.go().await.events, 0);
    assert!(
        metrics
            .errors
            .with_label_values(&["who-don", "parse"])
            .get()
            >= 1
    );
    let kept = std::fs::read_dir(state.path().join("quarantine/who-don"))
        .expect("quarantine")
        .count();
    assert!(kept >= 1, "pages kept for inspection");
    assert_eq!(topic_len(&broker().bootstrap, &topic), 25);
}

/// A source whose one poll refuses a 2 MB page: a scraper keeps a page it
/// cannot map as its dead letter's value.
struct OneBigPage(Option<Vec<u8>>);

#[async_trait::async_trait]
impl vigie_producers::Source for OneBigPage {
    fn name(&self) -> &'static str {
        "who-don"
    }

    async fn poll(
        &mut self,
        at: &vigie_producers::Checkpoint,
        _cx: &vigie_producers::source::PollContext<'_>,
    ) -> Result<vigie_producers::source::Poll, vigie_producers::SourceError> {
        let mut poll = vigie_producers::source::Poll {
            next: at.clone(),
            ..Default::default()
        };
        if let Some(raw) = self.0.take() {
            poll.rejects.push(vigie_producers::source::Reject {
                raw,
                reason: "invalid_value",
                error: "published: not a date".into(),
                url: "http://upstream/don/big".into(),
            });
        }
        Ok(poll)
    }
}

#[tokio::test]
async fn a_page_over_the_brokers_limit_still_gets_a_dead_letter_that_fits() {
    use sha2::Digest;
    use vigie_kafka::dlq::{
        DLQ_MAX_VALUE_BYTES, H_ORIGINAL_SHA256, H_ORIGINAL_SIZE, H_STAGE, H_URL,
    };
    let topic = topic("health.outbreak_news.v1").await;
    let state = tempfile::tempdir().unwrap();
    // Over the broker's default 1 MB limit: published whole, it is refused.
    let page: Vec<u8> = (0..2_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let run = Run {
        name: "who-don",
        url: "http://upstream/don".into(),
        topic: &topic,
        options: "",
        state: state.path(),
        metrics: SourceMetrics::unregistered(),
        ca_file: None,
    };
    let stats = run.go_with(Box::new(OneBigPage(Some(page.clone())))).await;
    assert_eq!(stats.rejects, 1);
    let letters = read_topic(
        &broker().bootstrap,
        &vigie_kafka::dlq_topic(&topic),
        1,
        DEADLINE,
    );
    let (_, _, _, value, headers) = &letters[0];
    let h: std::collections::BTreeMap<&str, &[u8]> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert!(value.len() <= DLQ_MAX_VALUE_BYTES, "{} bytes", value.len());
    assert_eq!(value[..], page[..value.len()], "the page's start");
    assert_eq!(h[H_ORIGINAL_SIZE], b"2000000");
    let sha: String = sha2::Sha256::digest(&page)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(h[H_ORIGINAL_SHA256], sha.as_bytes());
    assert_eq!(h[H_STAGE], b"source:who-don");
    assert_eq!(h[H_URL], b"http://upstream/don/big");
}

/// An article with an invalid value is dead-lettered once per version of
/// its page, not once per cycle; the state forgets the articles a complete
/// cycle no longer lists.
#[tokio::test]
async fn who_don_dead_letters_a_bad_article_once_per_version_and_keeps_only_listed_state() {
    let sim = simulator(SimConfig {
        seed: 12,
        news: vigie_simulator::server::NewsSim {
            articles: 12,
            page_size: 5,
            undated_articles: vec![2],
            ..Default::default()
        },
        ..SimConfig::default()
    })
    .await;
    let topic = topic("health.outbreak_news.v1").await;
    let dlq = format!("{topic}.dlq");
    let state = tempfile::tempdir().unwrap();
    let run = |options: &'static str| Run {
        name: "who-don",
        url: format!("{}{NEWS_PATH}", sim.base_url()),
        topic: &topic,
        options,
        state: state.path(),
        metrics: SourceMetrics::unregistered(),
        ca_file: None,
    };
    let all = run("requests_per_second = 200");
    let b = &broker().bootstrap;
    assert_eq!(all.go().await.events, 11);
    assert_eq!(topic_len(b, &dlq), 1);
    let dead = read_topic(b, &dlq, 1, DEADLINE);
    let page = String::from_utf8(dead[0].3.clone()).unwrap();
    assert!(page.contains("don-published"), "the page itself: {page}");
    // A second cycle: the same page is not dead-lettered again.
    assert_eq!(all.go().await.events, 0);
    assert_eq!(topic_len(b, &dlq), 1);
    // A new version of it is, once.
    sim.edit_article(2).unwrap();
    assert_eq!(all.go().await.events, 0);
    assert_eq!(all.go().await.events, 0);
    assert_eq!(topic_len(b, &dlq), 2);

    let checkpoint = |state: &std::path::Path| {
        CheckpointStore::open(state.join("checkpoints"))
            .unwrap()
            .load("who-don")
            .unwrap()
    };
    let cp = checkpoint(state.path());
    assert_eq!(cp.seen.len(), 12, "{:?}", cp.seen.keys());
    assert!(cp.listed.is_empty(), "a complete cycle clears its list");
    // Cycles of one page list 5 articles: the state keeps those alone.
    let first_page = run("requests_per_second = 200\nmax_pages = 1");
    assert_eq!(first_page.go().await.events, 0);
    let cp = checkpoint(state.path());
    let listed = NewsGenerator::new(12, &format!("{}{NEWS_PATH}", sim.base_url())).unwrap();
    let expected: BTreeSet<String> = (0..5).map(|i| listed.url(i).to_string()).collect();
    assert_eq!(cp.seen.keys().cloned().collect::<BTreeSet<_>>(), expected);
    // Back to the whole listing: the forgotten articles come again, same ids.
    assert_eq!(all.go().await.events, 7);
    assert_eq!(
        topic_len(b, &dlq),
        2,
        "the bad page, listed first, was kept"
    );
}

/// A certificate authority and a certificate it signed for 127.0.0.1, made
/// for the test: the CA's PEM, the certificate and its key.
fn test_pki() -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Vigie test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    (
        ca.pem(),
        leaf.der().clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
}

/// An HTTPS front for `backend`: TLS with `cert` and `key`, the bytes
/// relayed to the plain server behind. Returns its address.
async fn https_front(
    backend: SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> SocketAddr {
    // ring is the one crypto provider built in, hence the default.
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// `cdc-cases` over HTTPS: a certificate its CA bundle does not vouch for
/// stops the source at once with an error naming the URL and the refusal
/// (no retries); with the test CA in `producers.http.ca_file`, every row
/// comes through.
#[tokio::test]
async fn cdc_cases_over_https_trust_the_configured_ca_and_refuse_an_unknown_one() {
    const ROWS: u64 = 2_500;
    let sim = cases_simulator(31, ROWS, Vec::new()).await;
    let (ca_pem, cert, key) = test_pki();
    let front = https_front(sim.addr(), cert, key).await;
    let state = tempfile::tempdir().unwrap();
    let ca_file = state.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let topic = topic("health.case.v1").await;
    let metrics = SourceMetrics::unregistered();
    let mut run = Run::cases(&sim, &topic, "page_size = 1000", state.path(), &metrics);
    run.url = format!("https://127.0.0.1:{}{CASES_PATH}", front.port());

    let spec = vigie_producers::spec("cdc-cases").unwrap();
    let err = run
        .try_go_with((spec.build)(&run.config()).unwrap())
        .await
        .expect_err("an unknown CA is refused")
        .to_string();
    assert!(err.contains(&run.url), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(!err.contains("gave up after"), "not retried: {err}");
    assert_eq!(topic_len(&broker().bootstrap, &topic), 0);

    run.ca_file = Some(ca_file);
    assert_eq!(run.go().await.events, ROWS);
    assert_eq!(ids(&topic, ROWS as usize).len(), ROWS as usize);
}
