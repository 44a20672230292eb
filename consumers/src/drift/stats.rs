//! Drift statistics of a window's histogram against the reference
//! profile's histogram over the same bins.
//!
//! The definitions are those of Evidently's `psi`, `jensenshannon` and `ks`
//! stat tests, on histograms instead of raw samples (the reference exists
//! only as a profile):
//! - **PSI** = Σ (rᵢ − cᵢ) · ln(rᵢ / cᵢ) over the bins' shares, as
//!   Evidently's `get_binned_data(…, feel_zeroes=True)` takes them: over the
//!   bins that either side fills, a side's empty bin given 0.0001, or a
//!   millionth of that side's smallest share when that share is 0.0001 or
//!   less, without renormalising;
//! - **Jensen-Shannon distance**, natural logarithm, as
//!   `scipy.spatial.distance.jensenshannon(r, c)` computes it (what Evidently
//!   reports): √(½ Σ rᵢ ln(rᵢ/mᵢ) + ½ Σ cᵢ ln(cᵢ/mᵢ)), mᵢ = (rᵢ + cᵢ)/2,
//!   in [0, √ln 2];
//! - **KS**: the two-sample Kolmogorov-Smirnov statistic of the two
//!   histograms over their ordered bins, which is `scipy.stats.ks_2samp`'s
//!   on the samples' bin indices; its p-value from the limiting Kolmogorov
//!   distribution, `scipy.special.kolmogorov(√(nm/(n+m)) · D)`.
//!   `ks_2samp(method="asymp")` takes the finite-n distribution of
//!   `round(nm/(n+m))` draws instead (`scipy.stats.kstwo`): the two differ
//!   by O(1/√n).
//!
//! Each returns `None` when either histogram is empty: there is no
//! distribution to compare.

/// The share Evidently gives an empty bin in PSI, where ln 0 is undefined,
/// unless a filled bin's share is this small or smaller.
pub const PSI_EMPTY_SHARE: f64 = 0.0001;

/// Each count's share of the total; `None` when the total is 0.
fn shares(counts: &[f64]) -> Option<Vec<f64>> {
    let total: f64 = counts.iter().sum();
    (total > 0.0).then(|| counts.iter().map(|c| c / total).collect())
}

/// The share an empty bin of `shares` stands for in PSI: [`PSI_EMPTY_SHARE`],
/// or a millionth of the smallest filled share when that is not larger
/// (Evidently's rule, which keeps an empty bin below every filled one).
fn empty_share(shares: &[f64]) -> f64 {
    let smallest = shares
        .iter()
        .copied()
        .filter(|&s| s > 0.0)
        .fold(f64::INFINITY, f64::min);
    if smallest <= PSI_EMPTY_SHARE {
        smallest / 1e6
    } else {
        PSI_EMPTY_SHARE
    }
}

/// The population stability index of `current` against `reference`, two
/// histograms over the same bins (counts). A bin empty on both sides does
/// not count (Evidently's bins are the values either sample holds).
///
/// # Panics
///
/// If the histograms have different lengths.
#[must_use]
pub fn psi(reference: &[f64], current: &[f64]) -> Option<f64> {
    assert_eq!(
        reference.len(),
        current.len(),
        "histograms over the same bins"
    );
    let (r, c) = (shares(reference)?, shares(current)?);
    let (r_empty, c_empty) = (empty_share(&r), empty_share(&c));
    Some(
        r.iter()
            .zip(&c)
            .filter(|&(&r, &c)| r > 0.0 || c > 0.0)
            .map(|(&r, &c)| {
                let r = if r == 0.0 { r_empty } else { r };
                let c = if c == 0.0 { c_empty } else { c };
                (r - c) * (r / c).ln()
            })
            .sum(),
    )
}

/// `x · ln(x / y)`, 0 where `x` is 0 (`scipy.special.rel_entr` for the
/// shares of a mixture, where `y` > 0 whenever `x` > 0).
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 { x * (x / y).ln() } else { 0.0 }
}

/// The Jensen-Shannon distance (natural logarithm) between two histograms
/// over the same bins (counts).
///
/// # Panics
///
/// If the histograms have different lengths.
#[must_use]
pub fn jensen_shannon(reference: &[f64], current: &[f64]) -> Option<f64> {
    assert_eq!(
        reference.len(),
        current.len(),
        "histograms over the same bins"
    );
    let (p, q) = (shares(reference)?, shares(current)?);
    let js: f64 = p
        .iter()
        .zip(&q)
        .map(|(&p, &q)| {
            let m = (p + q) / 2.0;
            rel_entr(p, m) + rel_entr(q, m)
        })
        .sum();
    // Rounding can leave a hair below 0 for identical histograms.
    Some((js / 2.0).max(0.0).sqrt())
}

/// A Kolmogorov-Smirnov test's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ks {
    /// The largest distance between the two empirical distribution
    /// functions.
    pub statistic: f64,
    /// Its asymptotic p-value.
    pub p_value: f64,
}

/// The two-sample Kolmogorov-Smirnov test of two histograms over the same
/// ordered bins (counts).
///
/// # Panics
///
/// If the histograms have different lengths.
#[must_use]
pub fn ks(reference: &[f64], current: &[f64]) -> Option<Ks> {
    assert_eq!(
        reference.len(),
        current.len(),
        "histograms over the same bins"
    );
    let (n, m) = (reference.iter().sum::<f64>(), current.iter().sum::<f64>());
    if n <= 0.0 || m <= 0.0 {
        return None;
    }
    let (mut cum_r, mut cum_c, mut d) = (0.0, 0.0, 0f64);
    for (r, c) in reference.iter().zip(current) {
        cum_r += r;
        cum_c += c;
        d = d.max((cum_r / n - cum_c / m).abs());
    }
    let en = n * m / (n + m);
    Some(Ks {
        statistic: d,
        p_value: kolmogorov_sf(en.sqrt() * d),
    })
}

/// The survival function of the Kolmogorov distribution, P(K > y) (what
/// `scipy.special.kolmogorov` computes): 2 Σ (−1)ᵏ⁻¹ e^(−2k²y²) for y ≥ 1,
/// and 1 − (√(2π)/y) Σ e^(−(2k−1)²π²/(8y²)) below, where that series
/// converges faster.
#[must_use]
pub fn kolmogorov_sf(y: f64) -> f64 {
    if y <= 0.0 {
        return 1.0;
    }
    if y < 1.0 {
        let a = -std::f64::consts::PI.powi(2) / (8.0 * y * y);
        let mut sum = 0.0;
        for k in (1..).step_by(2).take(50) {
            let term = (a * f64::from(k * k)).exp();
            sum += term;
            if term < 1e-17 * sum {
                break;
            }
        }
        return (1.0 - (2.0 * std::f64::consts::PI).sqrt() / y * sum).clamp(0.0, 1.0);
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100_i32 {
        let term = (-2.0 * f64::from(k * k) * y * y).exp();
        sum += sign * term;
        if term < 1e-17 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy's and scipy's values on seeded histograms
    /// (`ml/drift_fixtures.py`).
    #[test]
    fn the_statistics_match_numpy_and_scipy() {
        #[derive(serde::Deserialize)]
        struct Case {
            name: String,
            reference: Vec<f64>,
            current: Vec<f64>,
            psi: f64,
            jensen_shannon: f64,
            ks_statistic: f64,
            ks_p_value: f64,
        }
        #[derive(serde::Deserialize)]
        struct Fixture {
            cases: Vec<Case>,
        }
        let f: Fixture =
            serde_json::from_str(include_str!("../../tests/fixtures/drift_stats.json")).unwrap();
        assert!(f.cases.len() >= 40);
        let close = |what: &str, name: &str, got: f64, want: f64| {
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{name}: {what} {got} against {want}"
            );
        };
        for c in &f.cases {
            let (r, cur) = (&c.reference, &c.current);
            close("psi", &c.name, psi(r, cur).unwrap(), c.psi);
            close(
                "js",
                &c.name,
                jensen_shannon(r, cur).unwrap(),
                c.jensen_shannon,
            );
            let k = ks(r, cur).unwrap();
            close("ks", &c.name, k.statistic, c.ks_statistic);
            close("ks p", &c.name, k.p_value, c.ks_p_value);
        }
    }

    #[test]
    fn identical_histograms_do_not_drift() {
        let h = [120.0, 0.0, 33.0, 7.0];
        assert_eq!(psi(&h, &h), Some(0.0));
        assert_eq!(jensen_shannon(&h, &h), Some(0.0));
        let k = ks(&h, &h).unwrap();
        assert_eq!(k.statistic, 0.0);
        assert_eq!(k.p_value, 1.0);
        // The same shares at another scale.
        let twice: Vec<f64> = h.iter().map(|x| x * 2.0).collect();
        assert!(psi(&h, &twice).unwrap().abs() < 1e-15);
    }

    #[test]
    fn psi_is_never_negative() {
        let cases: [(&[f64], &[f64]); 4] = [
            (&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]),
            (&[10.0, 0.0], &[0.0, 10.0]),
            (&[5.0, 5.0, 0.0], &[5.0, 5.0, 1.0]),
            (&[1e6, 1.0], &[1.0, 1e6]),
        ];
        for (r, c) in cases {
            assert!(psi(r, c).unwrap() > 0.0, "{r:?} {c:?}");
        }
    }

    #[test]
    fn jensen_shannon_is_symmetric_and_bounded() {
        let (a, b) = ([3.0, 1.0, 0.0, 9.0], [0.0, 4.0, 4.0, 1.0]);
        let ab = jensen_shannon(&a, &b).unwrap();
        assert_eq!(ab, jensen_shannon(&b, &a).unwrap());
        assert!(ab > 0.0 && ab <= 1.0);
        // Disjoint supports: the largest distance, √ln 2.
        let far = jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]).unwrap();
        assert!((far - std::f64::consts::LN_2.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn an_empty_or_one_category_window_does_not_panic() {
        let reference = [10.0, 20.0, 30.0];
        let empty = [0.0, 0.0, 0.0];
        assert_eq!(psi(&reference, &empty), None);
        assert_eq!(jensen_shannon(&reference, &empty), None);
        assert_eq!(ks(&reference, &empty), None);
        assert_eq!(psi(&empty, &reference), None);
        let one = [0.0, 5.0, 0.0];
        assert!(psi(&reference, &one).unwrap().is_finite());
        assert!(jensen_shannon(&reference, &one).unwrap().is_finite());
        let k = ks(&reference, &one).unwrap();
        assert!(k.statistic > 0.0 && (0.0..=1.0).contains(&k.p_value));
    }

    #[test]
    fn kolmogorov_sf_is_continuous_where_its_series_switch() {
        let below = kolmogorov_sf(1.0 - 1e-12);
        let above = kolmogorov_sf(1.0);
        assert!((below - above).abs() < 1e-11, "{below} {above}");
        assert_eq!(kolmogorov_sf(0.0), 1.0);
        assert!(kolmogorov_sf(10.0) < 1e-80);
        // Decreasing.
        let mut last = 1.0;
        for i in 1..400 {
            let v = kolmogorov_sf(f64::from(i) / 100.0);
            assert!(v <= last, "{i}");
            last = v;
        }
    }
}
