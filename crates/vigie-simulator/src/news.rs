//! Simulated WHO Disease Outbreak News articles, the low-volume text source
//! whose articles get revised after publication.
//!
//! Article `index` is a pure function of the seed and the index; index 0 is
//! the newest article and each following index was published a few days
//! earlier. Revisions keep the article's URL (its natural key, hence its
//! event id) and change its text, hence its content hash.

use std::ops::Range;

use chrono::{Datelike, Days, NaiveDate};
use vigie_core::health::{ContentHash, HttpUrl, OutbreakNews};

use crate::checked;
use crate::error::ConfigError;
use crate::sample::{Draw, Weighted, derive_key, splitmix64};

/// Address under which WHO publishes Disease Outbreak News.
pub const DEFAULT_BASE_URL: &str = "https://www.who.int/emergencies/disease-outbreak-news";

/// Domain of the per-article draws.
const ARTICLE_DOMAIN: u64 = 0x5748_4f5f_444f_4e00;
/// Domain of the per-article revision draws.
const EDIT_DOMAIN: u64 = 0x5748_4f5f_4544_4954;
/// Domain of the publication spacing.
const SPACING_DOMAIN: u64 = 0x5748_4f5f_5350_4143;

/// Articles are `SPACING` days apart on average, never on the same day.
const SPACING: u64 = 3;

/// One disease: WHO's name for it, countries where it is reported, the range
/// of case counts an article reports, the range of fatality (per thousand),
/// and how often it appears.
struct Disease {
    name: &'static str,
    countries: &'static [&'static str],
    cases: (u64, u64),
    fatality_per_mille: (i64, i64),
    weight: u32,
}

const DISEASES: &[Disease] = &[
    Disease {
        name: "Cholera",
        countries: &[
            "Haiti",
            "Malawi",
            "Mozambique",
            "Somalia",
            "Sudan",
            "Yemen",
            "Zambia",
            "Nigeria",
            "Afghanistan",
            "Democratic Republic of the Congo",
        ],
        cases: (50, 20_000),
        fatality_per_mille: (5, 30),
        weight: 12,
    },
    Disease {
        name: "Mpox",
        countries: &[
            "Democratic Republic of the Congo",
            "Burundi",
            "Uganda",
            "Kenya",
            "Rwanda",
            "Sweden",
            "Thailand",
            "Sierra Leone",
        ],
        cases: (5, 3_000),
        fatality_per_mille: (5, 40),
        weight: 10,
    },
    Disease {
        name: "Marburg virus disease",
        countries: &[
            "Rwanda",
            "Equatorial Guinea",
            "United Republic of Tanzania",
            "Ghana",
            "Uganda",
            "Ethiopia",
        ],
        cases: (1, 70),
        fatality_per_mille: (200, 600),
        weight: 5,
    },
    Disease {
        name: "Avian Influenza A(H5N1)",
        countries: &[
            "Cambodia",
            "Viet Nam",
            "Chile",
            "Ecuador",
            "United States of America",
            "India",
            "Mexico",
        ],
        cases: (1, 4),
        fatality_per_mille: (0, 600),
        weight: 10,
    },
    Disease {
        name: "Dengue",
        countries: &[
            "Brazil",
            "Bangladesh",
            "Peru",
            "Sudan",
            "Chad",
            "Burkina Faso",
            "Sri Lanka",
        ],
        cases: (1_000, 300_000),
        fatality_per_mille: (1, 5),
        weight: 8,
    },
    Disease {
        name: "Ebola virus disease",
        countries: &["Democratic Republic of the Congo", "Uganda", "Guinea"],
        cases: (1, 300),
        fatality_per_mille: (300, 600),
        weight: 5,
    },
    Disease {
        name: "Yellow fever",
        countries: &[
            "Colombia",
            "Peru",
            "Cameroon",
            "Nigeria",
            "Ghana",
            "Bolivia (Plurinational State of)",
        ],
        cases: (3, 200),
        fatality_per_mille: (100, 400),
        weight: 6,
    },
    Disease {
        name: "Middle East respiratory syndrome coronavirus (MERS-CoV)",
        countries: &["Saudi Arabia", "Qatar", "United Arab Emirates", "Oman"],
        cases: (1, 12),
        fatality_per_mille: (200, 400),
        weight: 6,
    },
    Disease {
        name: "Nipah virus infection",
        countries: &["Bangladesh", "India"],
        cases: (1, 20),
        fatality_per_mille: (400, 750),
        weight: 3,
    },
    Disease {
        name: "Lassa fever",
        countries: &["Nigeria", "Liberia", "Sierra Leone", "Guinea", "Benin"],
        cases: (5, 800),
        fatality_per_mille: (100, 250),
        weight: 4,
    },
    Disease {
        name: "Diphtheria",
        countries: &["Nigeria", "Guinea", "Niger", "Yemen"],
        cases: (20, 5_000),
        fatality_per_mille: (30, 150),
        weight: 4,
    },
    Disease {
        name: "Meningitis",
        countries: &["Niger", "Nigeria", "Chad", "Burkina Faso"],
        cases: (50, 3_000),
        fatality_per_mille: (50, 120),
        weight: 3,
    },
    Disease {
        name: "Circulating vaccine-derived poliovirus type 2 (cVDPV2)",
        countries: &["Pakistan", "Afghanistan", "Chad", "Yemen", "Algeria"],
        cases: (1, 20),
        fatality_per_mille: (0, 0),
        weight: 5,
    },
    Disease {
        name: "Oropouche virus disease",
        countries: &[
            "Brazil",
            "Peru",
            "Cuba",
            "Bolivia (Plurinational State of)",
            "Colombia",
        ],
        cases: (20, 8_000),
        fatality_per_mille: (0, 1),
        weight: 3,
    },
    Disease {
        name: "Rift Valley fever",
        countries: &["Kenya", "Mauritania", "Senegal", "Rwanda"],
        cases: (5, 300),
        fatality_per_mille: (50, 200),
        weight: 3,
    },
    Disease {
        name: "Plague",
        countries: &["Madagascar", "Democratic Republic of the Congo", "Peru"],
        cases: (5, 500),
        fatality_per_mille: (50, 200),
        weight: 2,
    },
    Disease {
        name: "Chikungunya",
        countries: &["Sri Lanka", "Mauritius", "Paraguay", "Brazil", "Bangladesh"],
        cases: (50, 50_000),
        fatality_per_mille: (0, 1),
        weight: 3,
    },
    Disease {
        name: "Avian Influenza A(H9N2)",
        countries: &["China", "India", "Ghana", "Viet Nam"],
        cases: (1, 3),
        fatality_per_mille: (0, 0),
        weight: 4,
    },
];

const AFFECTED_GROUPS: &[&str] = &[
    "children under five years of age",
    "adults aged 20 to 49 years",
    "health workers",
    "people living in camps for displaced persons",
    "agricultural workers",
];

const RESPONSES: &[&str] = &[
    "The national authorities have activated an incident management system and deployed rapid response teams.",
    "Surveillance, contact tracing and case management have been strengthened in the affected areas.",
    "WHO is supporting the national response with supplies, technical expertise and risk communication.",
    "A reactive vaccination campaign is being planned in the affected districts.",
];

/// What an article is about; whether one country, several, or a global
/// overview.
enum Scope {
    One,
    Several,
    Global,
}

/// An article with the figures its revisions build on.
struct Draft {
    article: OutbreakNews,
    cases: u64,
    deaths: u64,
}

/// Generator of WHO Disease Outbreak News articles.
///
/// The same seed, base URL and latest date always give the same articles;
/// changing the algorithm or its tables changes them.
#[derive(Debug, Clone)]
pub struct NewsGenerator {
    seed: u64,
    base_url: String,
    latest: NaiveDate,
    key: [u8; 32],
    spacing_key: u64,
    diseases: Weighted<usize>,
}

impl NewsGenerator {
    /// Publication date of article 0 unless [`with_latest`](Self::with_latest)
    /// says otherwise: fixed, so that the data does not depend on the clock.
    pub const DEFAULT_LATEST: NaiveDate = match NaiveDate::from_ymd_opt(2025, 6, 30) {
        Some(date) => date,
        None => NaiveDate::MIN,
    };

    /// A generator whose article URLs are
    /// `{base_url}/item/{yyyy}-DON{nnn}`, e.g. with [`DEFAULT_BASE_URL`].
    /// A trailing `/` on `base_url` is ignored.
    ///
    /// # Errors
    ///
    /// If that does not give absolute http(s) URLs.
    pub fn new(seed: u64, base_url: &str) -> Result<Self, ConfigError> {
        let base = base_url.trim_end_matches('/');
        if format!("{base}/item/2024-DON001")
            .parse::<HttpUrl>()
            .is_err()
        {
            return Err(ConfigError::BaseUrl(base_url.to_owned()));
        }
        Ok(Self {
            seed,
            base_url: base.to_owned(),
            latest: Self::DEFAULT_LATEST,
            key: derive_key(seed, ARTICLE_DOMAIN),
            spacing_key: splitmix64(seed ^ SPACING_DOMAIN),
            diseases: Weighted::new(
                DISEASES
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (i, u64::from(d.weight))),
            ),
        })
    }

    /// The same generator with article 0 published on `latest`.
    ///
    /// # Errors
    ///
    /// If `latest` is outside the years 1 to 9999.
    pub fn with_latest(mut self, latest: NaiveDate) -> Result<Self, ConfigError> {
        if !(1..=9999).contains(&latest.year()) {
            return Err(ConfigError::StartDate(latest));
        }
        self.latest = latest;
        Ok(self)
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Publication date of article 0.
    pub fn latest(&self) -> NaiveDate {
        self.latest
    }

    /// How many articles can be generated: going back about three days per
    /// article from [`latest`](Self::latest), all of them are published in
    /// year 1 or later (about 246,000 articles with the default latest date).
    pub fn capacity(&self) -> u64 {
        let days = self.latest.num_days_from_ce() - 1;
        // `days` is non-negative: `latest` is in year 1 or later.
        (days as u64) / SPACING + 1
    }

    /// Publication date of article `index`: strictly earlier for each
    /// following index.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`capacity`](Self::capacity).
    pub fn published_on(&self, index: u64) -> NaiveDate {
        assert!(
            index < self.capacity(),
            "article {index} is beyond the {} available",
            self.capacity()
        );
        self.date_of(index)
    }

    /// Canonical URL of article `index`. Articles are numbered within their
    /// publication year, the oldest of the year being `DON001`.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`capacity`](Self::capacity).
    pub fn url(&self, index: u64) -> HttpUrl {
        let year = self.published_on(index).year();
        // Later indices are older; the last one of the same year is number 1.
        let last = self.capacity() - 1;
        let mut oldest = index;
        while oldest < last && self.date_of(oldest + 1).year() == year {
            oldest += 1;
        }
        let number = oldest - index + 1;
        checked(format!("{}/item/{year:04}-DON{number:03}", self.base_url))
    }

    /// Article `index`, as first published.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`capacity`](Self::capacity).
    pub fn article(&self, index: u64) -> OutbreakNews {
        self.draft(index).article
    }

    /// Article `index` after `revision` revisions: same URL, title, date,
    /// disease and countries, with an update paragraph appended to the
    /// summary that differs for each revision, hence a different content
    /// hash. Revision 0 is the article as first published.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`capacity`](Self::capacity).
    pub fn edited(&self, index: u64, revision: u32) -> OutbreakNews {
        let Draft {
            mut article,
            cases,
            deaths,
        } = self.draft(index);
        if revision == 0 {
            return article;
        }
        let mut d = Draw::new(&derive_key(self.seed, EDIT_DOMAIN), index);
        let cases_per_revision = 1 + d.below(cases / 5 + 1);
        let deaths_per_revision = d.below(deaths / 5 + 1);
        let as_of = article
            .published_on
            .checked_add_days(Days::new(7 * u64::from(revision)))
            .unwrap_or(article.published_on);
        let update = format!(
            " Update {revision}: as of {}, a cumulative total of {} has been reported, {}.",
            long_date(as_of),
            counted(
                cases + cases_per_revision * u64::from(revision),
                "case",
                "cases"
            ),
            deaths_clause(deaths + deaths_per_revision * u64::from(revision)),
        );
        article.summary.push_str(&update);
        article.content_hash = content_hash(&article.title, &article.summary);
        article
    }

    /// Articles of `range`, in index order (newest first).
    ///
    /// # Panics
    ///
    /// If the range goes beyond [`capacity`](Self::capacity).
    pub fn articles(&self, range: Range<u64>) -> impl Iterator<Item = OutbreakNews> {
        range.map(|index| self.article(index))
    }

    /// Days between `latest` and article `index`'s publication: 0 for
    /// article 0, else between `SPACING × (index - 1) + 1` and
    /// `SPACING × index`, so strictly increasing with the index.
    fn days_back(&self, index: u64) -> u64 {
        if index == 0 {
            0
        } else {
            SPACING * index - splitmix64(self.spacing_key ^ index) % SPACING
        }
    }

    fn date_of(&self, index: u64) -> NaiveDate {
        self.latest
            .checked_sub_days(Days::new(self.days_back(index)))
            .unwrap_or(NaiveDate::MIN)
    }

    fn draft(&self, index: u64) -> Draft {
        let published_on = self.published_on(index);
        let url = self.url(index);
        let mut d = Draw::new(&self.key, index);
        // The order of the draws below is part of the data.
        let disease = &DISEASES[self.diseases.pick(&mut d)];
        let scope = match d.below(100) {
            0..85 => Scope::One,
            85..97 if disease.countries.len() >= 2 => Scope::Several,
            85..97 => Scope::One,
            _ => Scope::Global,
        };
        let countries: Vec<String> = match scope {
            Scope::One => vec![pick(&mut d, disease.countries).to_owned()],
            Scope::Several => {
                let wanted = 2 + d.below(3).min(disease.countries.len() as u64 - 2);
                let mut chosen: Vec<String> = Vec::new();
                while (chosen.len() as u64) < wanted {
                    let country = pick(&mut d, disease.countries);
                    if !chosen.iter().any(|c| c == country) {
                        chosen.push(country.to_owned());
                    }
                }
                chosen
            }
            Scope::Global => Vec::new(),
        };
        let title = match scope {
            Scope::One => format!("{} - {}", disease.name, countries[0]),
            Scope::Several => format!("{} - Multi-country", disease.name),
            Scope::Global => format!("{} - Global situation", disease.name),
        };

        // Cube of a uniform: most outbreaks are small, a few are large.
        let (low, high) = disease.cases;
        let u = d.unit();
        let cases = low + ((high - low) as f64 * u * u * u).round() as u64;
        let (fatal_low, fatal_high) = disease.fatality_per_mille;
        let fatality = d.between(fatal_low, fatal_high) as u64;
        let deaths = ((cases * fatality + 500) / 1000).min(cases);
        let reported_on = published_on
            .checked_sub_days(Days::new(2 + d.below(12)))
            .unwrap_or(published_on);

        let mut summary = match scope {
            Scope::One => format!(
                "On {}, the Ministry of Health of {} notified WHO of {} of {}, {}.",
                long_date(reported_on),
                countries[0],
                counted(cases, "case", "cases"),
                disease.name,
                deaths_clause(deaths),
            ),
            Scope::Several => format!(
                "Between {} and {}, {} countries ({}) reported a total of {} of {}, {}.",
                long_date(
                    reported_on
                        .checked_sub_days(Days::new(60))
                        .unwrap_or(reported_on)
                ),
                long_date(reported_on),
                countries.len(),
                countries.join(", "),
                counted(cases, "case", "cases"),
                disease.name,
                deaths_clause(deaths),
            ),
            Scope::Global => format!(
                "Since the beginning of {}, WHO has received reports of {} of {}, {}, \
                 from {} WHO regions.",
                reported_on.year(),
                counted(cases, "case", "cases"),
                disease.name,
                deaths_clause(deaths),
                2 + d.below(5),
            ),
        };
        if deaths > 0 {
            // In tenths of a percent, rounded half up.
            let tenths = (deaths * 10_000 / cases + 5) / 10;
            summary.push_str(&format!(
                " The case fatality ratio is {}.{}%.",
                tenths / 10,
                tenths % 10
            ));
        }
        summary.push(' ');
        summary.push_str(&match d.below(4) {
            0 => format!(
                "The cases were reported from {} districts.",
                2 + d.below(30)
            ),
            1 => format!(
                "Most of the cases are among {}.",
                pick(&mut d, AFFECTED_GROUPS)
            ),
            2 => format!(
                "{} contacts have been identified and are under follow-up.",
                cases * (2 + d.below(15))
            ),
            _ => "Investigations into the source of infection are ongoing.".to_owned(),
        });
        summary.push(' ');
        summary.push_str(pick(&mut d, RESPONSES));
        let national = pick(&mut d, &["moderate", "high", "very high"]);
        let regional = pick(&mut d, &["low", "moderate"]);
        summary.push_str(&format!(
            " WHO assesses the overall public health risk as {national} at the national level \
             and {regional} at the regional and global levels."
        ));

        let content_hash = content_hash(&title, &summary);
        Draft {
            article: OutbreakNews {
                url,
                title,
                published_on,
                disease: disease.name.to_owned(),
                countries,
                summary,
                content_hash,
            },
            cases,
            deaths,
        }
    }
}

/// SHA-256 (lower-case hex) of an article's normalised text: title and
/// summary with every run of whitespace made a single space and the ends
/// trimmed, joined by a line feed. Whitespace-only changes therefore do not
/// count as revisions; any other change does.
pub fn content_hash(title: &str, summary: &str) -> ContentHash {
    ContentHash::of_article(title, summary)
}

fn pick<'a>(d: &mut Draw, items: &[&'a str]) -> &'a str {
    items[d.below(items.len() as u64) as usize]
}

/// A date as WHO writes it in prose, e.g. `4 March 2024`.
fn long_date(date: NaiveDate) -> String {
    date.format("%-d %B %Y").to_string()
}

/// `including 3 deaths`, or `with no deaths reported`.
fn deaths_clause(deaths: u64) -> String {
    match deaths {
        0 => "with no deaths reported".to_owned(),
        n => format!("including {}", counted(n, "death", "deaths")),
    }
}

/// `1 case`, `12 cases`.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_whitespace_runs_only() {
        let a = content_hash("Cholera - Haiti", "Two  cases.\n Ongoing.");
        let b = content_hash(" Cholera - Haiti ", "Two cases. Ongoing.");
        assert_eq!(a, b);
        assert_ne!(a, content_hash("Cholera - Haiti", "Two cases. ongoing."));
        // Title and summary are kept apart.
        assert_ne!(content_hash("a b", "c"), content_hash("a", "b c"));
        assert_eq!(
            content_hash("", "").as_str(),
            // SHA-256 of "\n".
            "01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        assert!(NewsGenerator::new(1, "ftp://who.int/don").is_err());
        assert!(NewsGenerator::new(1, "who.int").is_err());
        let generator = NewsGenerator::new(1, "https://example.org/don/").unwrap();
        assert_eq!(generator.base_url(), "https://example.org/don");
    }

    #[test]
    fn capacity_is_the_last_valid_index() {
        let latest = NaiveDate::from_ymd_opt(1, 1, 20).unwrap();
        let generator = NewsGenerator::new(1, DEFAULT_BASE_URL)
            .unwrap()
            .with_latest(latest)
            .unwrap();
        let capacity = generator.capacity();
        assert!(capacity > 0);
        let oldest = generator.published_on(capacity - 1);
        assert_eq!(oldest.year(), 1);
        let _ = generator.article(capacity - 1);
    }
}
