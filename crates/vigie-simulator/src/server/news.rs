//! The WHO Disease Outbreak News site: paginated listing, article pages
//! showing each article's current revision, `robots.txt`, and a second
//! ("changed") layout that the original CSS selectors do not match.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::NaiveDate;
use vigie_core::health::OutbreakNews;

use super::config::NewsSim;
use super::faults::lock;
use crate::NewsGenerator;

/// Path of the listing.
pub const NEWS_PATH: &str = "/emergencies/disease-outbreak-news";
/// Path prefix of the articles, followed by their `{yyyy}-DON{nnn}` slug.
pub const NEWS_ITEM_PREFIX: &str = "/emergencies/disease-outbreak-news/item/";

/// The Disease Outbreak News pages of a running simulator.
#[derive(Debug)]
pub(crate) struct NewsSite {
    generator: NewsGenerator,
    articles: u64,
    page_size: usize,
    /// Article index by slug.
    slugs: HashMap<String, u64>,
    /// Path of each article, by index.
    paths: Vec<String>,
    /// Current revision of the edited articles.
    revisions: Mutex<BTreeMap<u64, u32>>,
    layout_changed: AtomicBool,
    robots: String,
    /// Articles whose publication date is not machine-readable.
    undated: BTreeSet<u64>,
}

impl NewsSite {
    /// The site of `config`, whose articles are published under
    /// `generator`'s base URL (the server's `NEWS_PATH`).
    pub(crate) fn new(generator: NewsGenerator, config: &NewsSim) -> Self {
        let articles = config.articles.min(generator.capacity());
        let paths: Vec<String> = (0..articles)
            .map(|index| {
                let url = generator.url(index);
                let slug = url.as_str().rsplit('/').next().unwrap_or_default();
                format!("{NEWS_ITEM_PREFIX}{slug}")
            })
            .collect();
        let slugs = paths
            .iter()
            .zip(0..)
            .map(|(path, index)| (path[NEWS_ITEM_PREFIX.len()..].to_owned(), index))
            .collect();
        Self {
            generator,
            articles,
            page_size: config.page_size.max(1),
            slugs,
            paths,
            revisions: Mutex::new(BTreeMap::new()),
            layout_changed: AtomicBool::new(false),
            robots: robots_txt(config),
            undated: config.undated_articles.iter().copied().collect(),
        }
    }

    /// Number of articles published.
    pub(crate) fn articles(&self) -> u64 {
        self.articles
    }

    /// Current revision of every edited article.
    pub(crate) fn revisions(&self) -> BTreeMap<u64, u32> {
        lock(&self.revisions).clone()
    }

    /// Bumps article `index`'s revision; `None` if there is no such
    /// article.
    pub(crate) fn edit(&self, index: u64) -> Option<u32> {
        if index >= self.articles {
            return None;
        }
        let mut revisions = lock(&self.revisions);
        let revision = revisions.entry(index).or_insert(0);
        *revision = revision.saturating_add(1);
        Some(*revision)
    }

    /// Article `index` as currently published.
    pub(crate) fn current(&self, index: u64) -> OutbreakNews {
        let revision = lock(&self.revisions).get(&index).copied().unwrap_or(0);
        self.generator.edited(index, revision)
    }

    pub(crate) fn layout_changed(&self) -> bool {
        self.layout_changed.load(Ordering::Relaxed)
    }

    pub(crate) fn set_layout_changed(&self, changed: bool) {
        self.layout_changed.store(changed, Ordering::Relaxed);
    }

    /// The index of the article at `slug`, if published.
    pub(crate) fn index_of(&self, slug: &str) -> Option<u64> {
        self.slugs.get(slug).copied()
    }

    pub(crate) fn robots(&self) -> &str {
        &self.robots
    }

    /// Listing page `page` (1-based): an empty list past the end.
    pub(crate) fn listing(&self, page: u64) -> String {
        let size = self.page_size as u64;
        let start = page
            .saturating_sub(1)
            .saturating_mul(size)
            .min(self.articles);
        let end = start.saturating_add(size).min(self.articles);
        let has_next = end < self.articles;
        let changed = self.layout_changed();
        let mut html = String::new();
        page_start(&mut html, "Disease Outbreak News");
        if changed {
            html.push_str("<div class=\"sf-page-header\"><span class=\"sf-page-header__title\">Disease Outbreak News</span></div>\n");
            html.push_str("<div class=\"sf-item-list\">\n");
        } else {
            html.push_str("<h1>Disease Outbreak News</h1>\n<ul class=\"don-list\">\n");
        }
        for index in start..end {
            let article = self.generator.article(index);
            let path = &self.paths[index as usize];
            let title = escape(&article.title);
            let (iso, long) = dates(article.published_on);
            if changed {
                let _ = writeln!(
                    html,
                    "<div class=\"sf-list-vertical__item\"><a class=\"sf-list-vertical__title\" \
                     href=\"{path}\"><span class=\"sf-list-vertical__heading\">{title}</span></a> \
                     <span class=\"sf-list-vertical__timestamp\" data-date=\"{iso}\">{long}</span></div>"
                );
            } else {
                let _ = writeln!(
                    html,
                    "<li class=\"don-item\"><a class=\"don-link\" href=\"{path}\">{title}</a> \
                     <time class=\"don-date\" datetime=\"{iso}\">{long}</time></li>"
                );
            }
        }
        html.push_str(if changed { "</div>\n" } else { "</ul>\n" });
        if has_next {
            let next = page.saturating_add(1).max(2);
            if changed {
                let _ = writeln!(
                    html,
                    "<div class=\"sf-pager\"><a class=\"sf-pager__link\" href=\"?page={next}\">Next page</a></div>"
                );
            } else {
                let _ = writeln!(
                    html,
                    "<nav class=\"pagination\"><a rel=\"next\" href=\"?page={next}\">Next</a></nav>"
                );
            }
        }
        page_end(&mut html);
        html
    }

    /// The page of article `index`, at its current revision.
    pub(crate) fn article(&self, index: u64) -> String {
        let article = self.current(index);
        let title = escape(&article.title);
        let disease = escape(&article.disease);
        let summary = escape(&article.summary);
        let (mut iso, long) = dates(article.published_on);
        if self.undated.contains(&index) {
            // The long form where the ISO date belongs: a value the page's
            // reader must refuse.
            iso.clone_from(&long);
        }
        let mut html = String::new();
        page_start(&mut html, &article.title);
        if self.layout_changed() {
            let countries = escape(&article.countries.join(", "));
            let _ = writeln!(
                html,
                "<div class=\"sf-detail-body-wrapper\"><h2 class=\"sf-headline\">{title}</h2>\
                 <div class=\"sf-meta\"><span class=\"sf-meta__date\" data-date=\"{iso}\">{long}</span> \
                 <span class=\"sf-meta__disease\">{disease}</span> \
                 <span class=\"sf-meta__countries\">{countries}</span></div>\
                 <div class=\"sf-detail-content\"><p>{summary}</p></div></div>"
            );
        } else {
            let mut countries = String::new();
            for country in &article.countries {
                let _ = write!(countries, "<li>{}</li>", escape(country));
            }
            let _ = writeln!(
                html,
                "<article class=\"don-article\"><h1 class=\"don-title\">{title}</h1>\
                 <time class=\"don-published\" datetime=\"{iso}\">{long}</time>\
                 <dl><dt>Disease</dt><dd class=\"don-disease\">{disease}</dd>\
                 <dt>Countries</dt><dd class=\"don-countries\"><ul>{countries}</ul></dd></dl>\
                 <section class=\"don-summary\"><p>{summary}</p></section></article>"
            );
        }
        page_end(&mut html);
        html
    }
}

fn page_start(html: &mut String, title: &str) {
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{} | World Health Organization</title>\n</head>\n<body>\n<main>\n",
        escape(title)
    );
}

fn page_end(html: &mut String) {
    html.push_str("</main>\n</body>\n</html>\n");
}

/// `2025-06-30` and `30 June 2025`.
fn dates(date: NaiveDate) -> (String, String) {
    (
        date.format("%Y-%m-%d").to_string(),
        date.format("%-d %B %Y").to_string(),
    )
}

/// `robots.txt` of the site.
fn robots_txt(config: &NewsSim) -> String {
    let mut text = String::from("User-agent: *\n");
    if config.robots_disallow.is_empty() {
        // An empty rule allows everything.
        text.push_str("Disallow:\n");
    }
    for prefix in &config.robots_disallow {
        let _ = writeln!(text, "Disallow: {prefix}");
    }
    if let Some(delay) = config.crawl_delay_seconds {
        let _ = writeln!(text, "Crawl-delay: {delay}");
    }
    text
}

/// Text made safe for HTML content and attribute values: an HTML parser
/// gives back exactly `text`.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape(r#"a & b < c > d "e" 'f' é"#),
            "a &amp; b &lt; c &gt; d &quot;e&quot; &#39;f&#39; é"
        );
    }

    #[test]
    fn robots_lists_prefixes_and_delay() {
        let config = NewsSim {
            robots_disallow: vec!["/a".into(), "/b/c".into()],
            crawl_delay_seconds: Some(1.5),
            ..NewsSim::default()
        };
        assert_eq!(
            robots_txt(&config),
            "User-agent: *\nDisallow: /a\nDisallow: /b/c\nCrawl-delay: 1.5\n"
        );
        assert_eq!(
            robots_txt(&NewsSim::default()),
            "User-agent: *\nDisallow:\n"
        );
    }
}
