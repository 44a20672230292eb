//! Properties of the simulated WHO Disease Outbreak News articles.

use std::collections::HashSet;

use chrono::{TimeZone, Utc};
use vigie_simulator::{DEFAULT_BASE_URL, NewsGenerator, news_envelope};

fn generator(seed: u64) -> NewsGenerator {
    NewsGenerator::new(seed, DEFAULT_BASE_URL).unwrap()
}

#[test]
fn articles_are_deterministic() {
    let a = generator(3);
    let b = generator(3);
    for index in [0, 1, 17, 199] {
        assert_eq!(a.article(index), b.article(index));
    }
    let other = generator(4);
    assert_ne!(a.article(0).summary, other.article(0).summary);
}

#[test]
fn articles_go_back_in_time_with_unique_urls() {
    let generator = generator(5);
    let articles: Vec<_> = generator.articles(0..1_000).collect();
    assert_eq!(articles[0].published_on, NewsGenerator::DEFAULT_LATEST);
    for pair in articles.windows(2) {
        assert!(pair[0].published_on > pair[1].published_on);
    }
    let urls: HashSet<&str> = articles.iter().map(|a| a.url.as_str()).collect();
    assert_eq!(urls.len(), articles.len());
    for article in &articles {
        let url = article.url.as_str();
        let item = url
            .strip_prefix(&format!("{DEFAULT_BASE_URL}/item/"))
            .unwrap();
        let (year, number) = item.split_once("-DON").unwrap();
        assert_eq!(year, article.published_on.format("%Y").to_string());
        assert!(number.len() >= 3 && number.bytes().all(|b| b.is_ascii_digit()));
        assert!(article.title.starts_with(&article.disease));
        assert!(article.title.contains(" - "));
        assert!(!article.summary.is_empty());
    }
    let single = articles.iter().find(|a| a.countries.len() == 1).unwrap();
    assert_eq!(
        single.title,
        format!("{} - {}", single.disease, single.countries[0])
    );
    let diseases: HashSet<&str> = articles.iter().map(|a| a.disease.as_str()).collect();
    assert!(diseases.len() >= 10, "{diseases:?}");
}

#[test]
fn edited_articles_keep_their_url_and_id_but_not_their_hash() {
    let generator = generator(6);
    let at = Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap();
    for index in 0..50 {
        let original = generator.article(index);
        assert_eq!(generator.edited(index, 0), original);
        let mut hashes = HashSet::from([original.content_hash.clone()]);
        for revision in 1..4 {
            let edited = generator.edited(index, revision);
            assert_eq!(edited.url, original.url);
            assert_eq!(edited.title, original.title);
            assert_eq!(edited.published_on, original.published_on);
            assert_ne!(edited.summary, original.summary);
            assert!(hashes.insert(edited.content_hash.clone()));
            assert_eq!(edited, generator.edited(index, revision));
            assert_eq!(
                news_envelope(&generator, index, revision, at).id,
                news_envelope(&generator, index, 0, at).id
            );
        }
    }
}

#[test]
fn article_numbers_count_within_the_year() {
    let generator = generator(7);
    let articles: Vec<_> = generator.articles(0..300).collect();
    // Within a year, newer articles have higher numbers; the oldest is 001.
    let number = |url: &str| -> u32 { url.rsplit("-DON").next().unwrap().parse().unwrap() };
    for pair in articles.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        let (n_newer, n_older) = (number(newer.url.as_str()), number(older.url.as_str()));
        if newer.published_on.format("%Y").to_string()
            == older.published_on.format("%Y").to_string()
        {
            assert_eq!(n_newer, n_older + 1);
        } else {
            assert_eq!(n_newer, 1);
        }
    }
}

/// Pins the data: if this fails, the generated articles changed, which must
/// be a deliberate decision (then update the fingerprint).
#[test]
fn data_is_pinned() {
    use sha2::{Digest, Sha256};
    let generator = generator(42);
    let mut hasher = Sha256::new();
    for index in 0..50 {
        hasher.update(serde_json::to_vec(&generator.edited(index, index as u32 % 3)).unwrap());
    }
    let fingerprint: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        fingerprint,
        "d1bdeada1a1ca0e4d95ecea158992c5bef8966fbf93ecb34b3731ff2508ae078"
    );
}
