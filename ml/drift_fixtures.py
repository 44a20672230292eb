"""Reference values of the drift statistics (consumers/src/drift/stats.rs),
computed with numpy and scipy on seeded histograms, written to
consumers/tests/fixtures/drift_stats.json; consumers/tests/drift_stats.rs
checks Vigie's statistics against them to 1e-9.

    python3 ml/drift_fixtures.py      # numpy and scipy of ml/requirements.txt

Definitions (Evidently's stat tests, on histograms):
- psi: shares over the bins either side fills, an empty bin's share 0.0001
  (or a millionth of its side's smallest share when that is 0.0001 or
  less), sum((r - c) * ln(r / c));
- jensen_shannon: scipy.spatial.distance.jensenshannon(r, c) (natural log);
- ks_statistic: scipy.stats.ks_2samp on the samples' bin indices;
- ks_p_value: scipy.special.kolmogorov(sqrt(n m / (n + m)) * D), the
  limiting distribution; ks_2samp's own asymptotic p-value (kstwo with
  round(n m / (n + m)) draws) is recorded beside it as ks_2samp_p_value.
"""

import json
import pathlib

import numpy as np
from scipy import special, stats
from scipy.spatial import distance

OUT = pathlib.Path(__file__).resolve().parent.parent / "consumers/tests/fixtures/drift_stats.json"


def psi(r, c):
    # Evidently's get_binned_data(feel_zeroes=True): the bins either side
    # fills, a side's empty bin given 0.0001, or a millionth of that side's
    # smallest share when that share is 0.0001 or less.
    keep = (r > 0) | (c > 0)
    r = r[keep] / r.sum()
    c = c[keep] / c.sum()

    def fill(s):
        low = s[s != 0].min()
        return np.where(s == 0, low / 10**6 if low <= 0.0001 else 0.0001, s)

    r, c = fill(r), fill(c)
    return float(np.sum((r - c) * np.log(r / c)))


def case(name, r, c):
    r = np.asarray(r, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    idx = np.arange(len(r))
    d, p2 = stats.ks_2samp(np.repeat(idx, r), np.repeat(idx, c), method="asymp")
    n, m = r.sum(), c.sum()
    return {
        "name": name,
        "reference": r.tolist(),
        "current": c.tolist(),
        "psi": psi(r.astype(float), c.astype(float)),
        "jensen_shannon": float(distance.jensenshannon(r, c)),
        "ks_statistic": float(d),
        "ks_p_value": float(special.kolmogorov(np.sqrt(n * m / (n + m)) * d)),
        "ks_2samp_p_value": float(p2),
    }


def main():
    rng = np.random.default_rng(20261207)
    cases = []
    for i in range(40):
        k = int(rng.integers(2, 25))
        p = rng.dirichlet(np.ones(k))
        r = rng.multinomial(int(rng.integers(1_000, 120_000)), p)
        shift = rng.dirichlet(np.ones(k))
        q = (1 - i / 40) * p + (i / 40) * shift
        m = int([1, 30, 500, 5_000, 20_000][i % 5])
        c = rng.multinomial(m, q)
        cases.append(case(f"random-{i}", r, c))
    cases.append(case("identical", [500, 0, 250, 250], [500, 0, 250, 250]))
    cases.append(case("disjoint", [10, 0, 0], [0, 0, 7]))
    cases.append(case("one-category-window", [300, 200, 100, 5], [0, 42, 0, 0]))
    cases.append(case("moderate-shift", [2500, 2500, 2500, 2500], [3100, 2500, 2500, 1900]))
    # A filled share of 0.0001 or less on either side: the empty bins get a
    # millionth of it.
    cases.append(case("rare-reference-bin", [100000, 5, 3000, 0], [900, 0, 100, 1]))
    cases.append(case("rare-window-bin", [4000, 3000, 2000, 1000], [15000, 4999, 1, 0]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    head = {"generator": "ml/drift_fixtures.py", "numpy": np.__version__,
            "scipy": __import__("scipy").__version__}
    lines = ",\n".join("  " + json.dumps(c) for c in cases)
    OUT.write_text(json.dumps(head)[:-1] + ', "cases": [\n' + lines + "\n]}\n")
    print(f"{len(cases)} cases -> {OUT}")


if __name__ == "__main__":
    main()
