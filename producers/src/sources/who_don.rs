//! `who-don`: a scraper of WHO Disease Outbreak News. It reads the
//! paginated listing, then each article page, with an HTML parser and CSS
//! selectors from configuration. It obeys robots.txt (rules and
//! `Crawl-delay`), keeps to a per-host request rate, and detects changes by
//! content hash: an unchanged article produces nothing, an edited one a new
//! version (same event id, newer `ingested_at`). An article with an invalid
//! value is dead-lettered once per version of its content (what the
//! selectors find, not the page around it). The state holds
//! the articles of the last complete cycle through the listing (and of the
//! current one): an article no longer listed is forgotten, and produced
//! again, same event id, should it come back. A page whose layout no
//! longer matches the selectors is counted (`parse` errors), logged with its
//! URL and kept in the quarantine directory; nothing is produced from it.
//!
//! Options (`[producers.sources.who-don.options]`):
//! - `requests_per_second` (default 2): per-host rate, lowered further by a
//!   robots.txt `Crawl-delay`;
//! - `max_pages` (default: all): listing pages read per cycle;
//! - `selectors`: the CSS selectors (see [`Selectors`]).

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::Url;
use scraper::{Html, Selector};
use serde::Deserialize;
use tracing::{debug, warn};
use vigie_core::health::{ContentHash, OutbreakNews};

use super::{REFUSED, digest, outgoing};
use crate::checkpoint::Checkpoint;
use crate::source::{Poll, PollContext, Reject, Source, SourceConfig, SourceError, SourceSpec};

/// Registry entry.
pub const SPEC: SourceSpec = SourceSpec {
    name: NAME,
    about: "WHO Disease Outbreak News articles, scraped from HTML",
    build,
};

const NAME: &str = "who-don";

/// The CSS selectors the scraper reads pages with. The defaults match the
/// simulator's pages; pointing the scraper at another site is a matter of
/// changing them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selectors {
    /// Links to articles on a listing page (`href` attribute).
    pub article_link: String,
    /// The link to the next listing page (`href` attribute).
    pub next_page: String,
    /// Article title.
    pub title: String,
    /// Publication date: its `datetime` attribute (`YYYY-MM-DD`).
    pub published: String,
    /// Disease.
    pub disease: String,
    /// Each country; none is valid (articles about several regions list
    /// none).
    pub country: String,
    /// Summary paragraphs, joined by a blank line.
    pub summary: String,
}

impl Default for Selectors {
    fn default() -> Self {
        Self {
            article_link: "ul.don-list li.don-item a.don-link".into(),
            next_page: "nav.pagination a[rel=next]".into(),
            title: "article.don-article h1.don-title".into(),
            published: "article.don-article time.don-published".into(),
            disease: "article.don-article dd.don-disease".into(),
            country: "article.don-article dd.don-countries li".into(),
            summary: "article.don-article section.don-summary p".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    requests_per_second: f64,
    max_pages: Option<u64>,
    selectors: Selectors,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests_per_second: 2.0,
            max_pages: None,
            selectors: Selectors::default(),
        }
    }
}

/// Compiled selectors.
#[derive(Debug)]
pub struct Compiled {
    article_link: Selector,
    next_page: Selector,
    title: Selector,
    published: Selector,
    disease: Selector,
    country: Selector,
    summary: Selector,
}

impl Compiled {
    /// Compiles every selector; an error names the bad one.
    pub fn new(s: &Selectors) -> Result<Self, SourceError> {
        let c = |name: &str, css: &str| {
            Selector::parse(css).map_err(|e| {
                SourceError::Config(format!(
                    "producers.sources.{NAME}.options.selectors.{name}: `{css}` is not a CSS selector: {e}"
                ))
            })
        };
        Ok(Self {
            article_link: c("article_link", &s.article_link)?,
            next_page: c("next_page", &s.next_page)?,
            title: c("title", &s.title)?,
            published: c("published", &s.published)?,
            disease: c("disease", &s.disease)?,
            country: c("country", &s.country)?,
            summary: c("summary", &s.summary)?,
        })
    }
}

struct WhoDon {
    listing: Url,
    options: Options,
    selectors: Compiled,
    limiter: Arc<DefaultDirectRateLimiter>,
    period: Duration,
    robots: Option<texting_robots::Robot>,
}

fn build(config: &SourceConfig) -> Result<Box<dyn Source>, SourceError> {
    let options: Options = config.options(NAME)?;
    if !(options.requests_per_second > 0.0 && options.requests_per_second.is_finite()) {
        return Err(SourceError::Config(format!(
            "producers.sources.{NAME}.options.requests_per_second: must be above 0, not {}",
            options.requests_per_second
        )));
    }
    let listing = Url::parse(&config.url).map_err(|e| {
        SourceError::Config(format!(
            "producers.sources.{NAME}.url: `{}` is not a URL: {e}",
            config.url
        ))
    })?;
    let period = Duration::from_secs_f64(1.0 / options.requests_per_second);
    Ok(Box::new(WhoDon {
        listing,
        selectors: Compiled::new(&options.selectors)?,
        options,
        limiter: Arc::new(limiter(period)),
        period,
        robots: None,
    }))
}

fn limiter(period: Duration) -> DefaultDirectRateLimiter {
    let quota = Quota::with_period(period.max(Duration::from_millis(1)))
        .expect("a positive period")
        .allow_burst(NonZeroU32::MIN);
    RateLimiter::direct(quota)
}

/// A listing page: article URLs and the next page, if any.
#[derive(Debug, PartialEq, Eq)]
pub struct Listing {
    /// Absolute article URLs, in page order.
    pub articles: Vec<Url>,
    /// The next listing page.
    pub next: Option<Url>,
}

/// Reads a listing page.
pub fn parse_listing(html: &str, page_url: &Url, s: &Compiled) -> Listing {
    let doc = Html::parse_document(html);
    let resolve =
        |el: scraper::ElementRef<'_>| el.value().attr("href").and_then(|h| page_url.join(h).ok());
    Listing {
        articles: doc.select(&s.article_link).filter_map(resolve).collect(),
        next: doc.select(&s.next_page).next().and_then(resolve),
    }
}

/// Why an article page does not give an article.
#[derive(Debug, PartialEq, Eq)]
pub enum ArticleError {
    /// A selector found nothing: the layout changed.
    Layout(String),
    /// The page has the fields, but a value is invalid.
    Value(String),
}

/// The version of an article page's content: a hash of what the selectors
/// find (title, publication date, disease, countries, summary), not of the
/// page around them, so that a page refused for a value is dead-lettered
/// again when its article changes, not when its header or a token does.
pub fn article_version(html: &str, s: &Compiled) -> String {
    let doc = Html::parse_document(html);
    let mut text = String::new();
    for selector in [&s.title, &s.published, &s.disease, &s.country, &s.summary] {
        for el in doc.select(selector) {
            text.extend(el.text());
            if let Some(at) = el.value().attr("datetime") {
                text.push_str(at);
            }
            text.push('\u{1f}');
        }
        text.push('\u{1e}');
    }
    digest(text.as_bytes())
}

/// Reads an article page.
pub fn parse_article(html: &str, url: &Url, s: &Compiled) -> Result<OutbreakNews, ArticleError> {
    let doc = Html::parse_document(html);
    let text = |sel: &Selector, what: &str| {
        doc.select(sel)
            .next()
            .map(|e| e.text().collect::<String>().trim().to_owned())
            .ok_or_else(|| ArticleError::Layout(format!("no {what} (selector matched nothing)")))
    };
    let title = text(&s.title, "title")?;
    let disease = text(&s.disease, "disease")?;
    let published_el = doc.select(&s.published).next().ok_or_else(|| {
        ArticleError::Layout("no publication date (selector matched nothing)".into())
    })?;
    let datetime = published_el.value().attr("datetime").ok_or_else(|| {
        ArticleError::Layout("the publication date has no datetime attribute".into())
    })?;
    let published_on = NaiveDate::parse_from_str(datetime, "%Y-%m-%d")
        .map_err(|_| ArticleError::Value(format!("published: `{datetime}` is not YYYY-MM-DD")))?;
    let countries: Vec<String> = doc
        .select(&s.country)
        .map(|e| e.text().collect::<String>().trim().to_owned())
        .collect();
    let paragraphs: Vec<String> = doc
        .select(&s.summary)
        .map(|e| e.text().collect::<String>())
        .collect();
    if paragraphs.is_empty() {
        return Err(ArticleError::Layout(
            "no summary (selector matched nothing)".into(),
        ));
    }
    let summary = paragraphs.join("\n\n");
    if title.is_empty() || disease.is_empty() || countries.iter().any(String::is_empty) {
        return Err(ArticleError::Value(
            "an empty title, disease or country".into(),
        ));
    }
    Ok(OutbreakNews {
        url: url
            .as_str()
            .parse()
            .map_err(|e| ArticleError::Value(format!("url: {e}")))?,
        content_hash: ContentHash::of_article(&title, &summary),
        title,
        published_on,
        disease,
        countries,
        summary,
    })
}

impl WhoDon {
    /// Fetches at the per-host rate (every attempt counts). robots.txt is
    /// obeyed by the caller.
    async fn get(&self, url: &Url, cx: &PollContext<'_>) -> Result<String, SourceError> {
        let f = cx
            .http
            .get_paced(url.as_str(), &[], Some(&self.limiter), cx.shutdown)
            .await?;
        Ok(String::from_utf8_lossy(&f.body).into_owned())
    }

    /// Reads robots.txt of the listing's host (once per cycle). A missing
    /// file allows everything.
    async fn load_robots(&mut self, cx: &PollContext<'_>) -> Result<(), SourceError> {
        let robots_url = self.listing.join("/robots.txt").expect("a valid path");
        let body = match self.get(&robots_url, cx).await {
            Ok(b) => b,
            Err(SourceError::Fetch(e)) if matches!(e.status(), Some(404 | 410)) => String::new(),
            Err(e) => return Err(e),
        };
        let robot = texting_robots::Robot::new(&cx.http.config().user_agent, body.as_bytes())
            .map_err(|e| SourceError::Format {
                url: robots_url.to_string(),
                error: format!("unreadable robots.txt: {e}"),
            })?;
        if let Some(delay) = robot.delay {
            let wanted = Duration::from_secs_f64(f64::from(delay));
            if wanted > self.period {
                self.period = wanted;
                self.limiter = Arc::new(limiter(wanted));
            }
        }
        self.robots = Some(robot);
        Ok(())
    }

    fn allowed(&self, url: &Url) -> bool {
        self.robots.as_ref().is_none_or(|r| r.allowed(url.as_str()))
    }

    fn quarantine(&self, dir: &Path, url: &Url, html: &str) {
        let name: String = url
            .path()
            .trim_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = dir.join(NAME);
        let file = dir.join(format!("{name}.html"));
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, html)) {
            warn!(url = %url, error = %e, "Could not keep the page for inspection");
        }
    }
}

#[async_trait::async_trait]
impl Source for WhoDon {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn poll(&mut self, at: &Checkpoint, cx: &PollContext<'_>) -> Result<Poll, SourceError> {
        let page = at.position.max(1);
        if page == 1 || self.robots.is_none() {
            self.load_robots(cx).await?;
        }
        let mut page_url = self.listing.clone();
        if page > 1 {
            page_url
                .query_pairs_mut()
                .append_pair("page", &page.to_string());
        }
        let mut poll = Poll {
            next: at.clone(),
            ..Poll::default()
        };
        if !self.allowed(&page_url) {
            warn!(url = %page_url, "robots.txt disallows the listing page");
            cx.metrics.error(NAME, "robots");
            poll.next.position = 1;
            return Ok(poll);
        }
        let html = self.get(&page_url, cx).await?;
        let listing = parse_listing(&html, &page_url, &self.selectors);
        if listing.articles.is_empty() && listing.next.is_none() && page == 1 {
            // An empty first page is a layout change, not an empty site.
            cx.metrics.error(NAME, "parse");
            warn!(url = %page_url, "Listing page has no article link: the layout may have changed");
            self.quarantine(cx.quarantine, &page_url, &html);
        }
        let now = Utc::now();
        for url in &listing.articles {
            if !self.allowed(url) {
                debug!(url = %url, "robots.txt disallows the article; skipped");
                continue;
            }
            let html = match self.get(url, cx).await {
                Ok(h) => h,
                // Listed but gone: nothing to produce.
                Err(SourceError::Fetch(e)) if e.status() == Some(404) => continue,
                Err(e) => return Err(e),
            };
            poll.next.listed.insert(url.to_string());
            match parse_article(&html, url, &self.selectors) {
                Ok(news) => {
                    if at.seen.get(url.as_str()).map(String::as_str)
                        == Some(news.content_hash.as_str())
                    {
                        continue;
                    }
                    poll.next
                        .seen
                        .insert(url.to_string(), news.content_hash.as_str().to_owned());
                    poll.events.push(outgoing(NAME, news, now));
                }
                Err(ArticleError::Layout(error)) => {
                    cx.metrics.error(NAME, "parse");
                    warn!(url = %url, error, "Article page does not match the selectors: the layout may have changed; page kept");
                    self.quarantine(cx.quarantine, url, &html);
                }
                Err(ArticleError::Value(error)) => {
                    // Once per version of the article, not once per cycle.
                    let version = format!("{REFUSED}{}", article_version(&html, &self.selectors));
                    if at.seen.get(url.as_str()) == Some(&version) {
                        continue;
                    }
                    poll.next.seen.insert(url.to_string(), version);
                    poll.rejects.push(Reject {
                        raw: html.into_bytes(),
                        reason: "invalid_value",
                        error,
                        url: url.to_string(),
                    });
                }
            }
        }
        let more_pages = listing.next.is_some() && self.options.max_pages.is_none_or(|m| page < m);
        if more_pages {
            poll.next.position = page + 1;
            poll.more = true;
        } else {
            poll.next.position = 1;
            // A complete cycle (its last page read as a listing): forget
            // the articles it did not list, so the state is bounded by the
            // listing. A last page with no article link (a layout change)
            // forgets nothing.
            if !listing.articles.is_empty() {
                let listed = std::mem::take(&mut poll.next.listed);
                poll.next.seen.retain(|url, _| listed.contains(url));
            }
        }
        Ok(poll)
    }
}
