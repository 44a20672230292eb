"""Evidently's drift statistics on the windows of Vigie's drift component.

The input is what `Window::histograms` gives for each window (JSON:
`{"windows": [[histograms, ...], ...]}`): per feature and for the score,
the reference's and the window's counts over the profile's bins, with the
bins' labels. Each side is expanded back into rows (a bin's label repeated
its count times), so that Evidently sees every value of the window as a
user's DataFrame would hold it, binned as the profile bins it:

- a categorical feature, and every bin of a numeric feature or of the
  score (the absent values a bin of their own), as a categorical column,
  on which Evidently's `psi` and `jensenshannon` stat tests run;
- the ordered bins of a numeric feature and of the score as a numerical
  column of bin indices, absent values NaN, on which its `ks` test runs.

The cases and the scores are two datasets, since a window holds different
numbers of each. Evidently is run through `Report([ValueDrift(...)])`.

    python ml/drift_evidently.py compare WINDOWS.json   # every value, JSON
    python ml/drift_evidently.py bench WINDOWS.json     # seconds of Report.run

(the Python of `.vigie/evidently-venv`, which scripts/setup makes from
ml/requirements-evidently.txt.)
"""

import json
import sys
import time

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import ValueDrift

# The numerical twin of a column, which KS runs on.
KS = "#ks"


def frames(hists, side):
    """The cases' and the scores' DataFrames of one side of a window."""
    cases, scores = {}, {}
    for h in hists:
        counts = np.asarray(h[side], dtype=np.int64)
        if counts.sum() == 0:
            continue
        target = scores if h["kind"] == "score" else cases
        target[h["feature"]] = np.repeat(np.asarray(h["labels"], dtype=object), counts)
        if h["ordered"]:
            index = np.arange(len(counts), dtype=float)
            index[h["ordered"]:] = np.nan
            target[h["feature"] + KS] = np.repeat(index, counts)
    return pd.DataFrame(cases), pd.DataFrame(scores)


def plan(frame):
    """The data definition and the metrics of one DataFrame's columns."""
    categorical = [c for c in frame.columns if not c.endswith(KS)]
    numerical = [c for c in frame.columns if c.endswith(KS)]
    metrics = [ValueDrift(column=c, method=m) for c in categorical for m in ("psi", "jensenshannon")]
    metrics += [ValueDrift(column=c, method="ks") for c in numerical]
    return DataDefinition(categorical_columns=categorical, numerical_columns=numerical), metrics


def runs(window):
    """(report, current, reference) for the cases and for the scores of a
    window, each side present."""
    (ref_cases, ref_scores), (cur_cases, cur_scores) = frames(window, "reference"), frames(window, "current")
    out = []
    for ref, cur in ((ref_cases, cur_cases), (ref_scores, cur_scores)):
        if cur.empty or ref.empty:
            continue
        definition, metrics = plan(ref)
        out.append((
            Report(metrics),
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        ))
    return out


def compare(windows):
    out = []
    for window in windows:
        values = {}
        for report, current, reference in runs(window):
            snapshot = report.run(current_data=current, reference_data=reference)
            for m in snapshot.dict()["metrics"]:
                column, method = m["config"]["column"], m["config"]["method"]
                name = {"psi": "psi", "jensenshannon": "jensen_shannon", "ks": "ks_p_value"}[method]
                values.setdefault(column.removesuffix(KS), {})[name] = float(m["value"])
        out.append(values)
    return {"evidently": __import__("evidently").__version__, "windows": out}


def bench(windows):
    # The datasets are made first; only Report.run is timed (no rendering,
    # no snapshot serialisation).
    prepared = [runs(w) for w in windows]
    start = time.perf_counter()
    for window in prepared:
        for report, current, reference in window:
            report.run(current_data=current, reference_data=reference)
    return {"seconds": time.perf_counter() - start}


def main():
    mode, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        windows = json.load(f)["windows"]
    result = {"compare": compare, "bench": bench}[mode](windows)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
