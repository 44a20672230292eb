"""Shared pieces of the hosp_risk training and evaluation scripts.

Everything here is deterministic: the same input rows give the same
arrays, spec and profile, whatever their order in the file.

The feature encoding implemented by `encode` is the contract that the Rust
scorer reproduces from `metadata.json` (see ml/README.md, "Encoding
contract").
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

ML_DIR = Path(__file__).resolve().parent
REPO_ROOT = ML_DIR.parent

MODEL_NAME = "hosp_risk"
SCHEMA = "health.case"
TARGET_FIELD = "hosp_yn"
LABELS = {"Yes": 1, "No": 0}

CATEGORICAL_FEATURES = [
    "age_group",
    "sex",
    "race",
    "ethnicity",
    "res_state",
    "underlying_conditions_yn",
    "symptom_status",
    "exposure_yn",
    "current_status",
]
NUMERIC_FEATURE = "case_onset_interval"
NUMERIC_MISSING_VALUE = 0.0
# Fixed bin edges (weeks) of the reference histogram of case_onset_interval.
NUMERIC_HIST_EDGES = [-8, -4, -2, -1, 0, 1, 2, 4, 8, 16, 32, 64]

TEST_FRACTION = 0.2
SCORE_BINS = 20
CALIBRATION_BINS = 10

MISSING_BUCKET = "__missing__"
UNKNOWN_BUCKET = "__unknown__"

FLOAT_DIGITS = 6


# --------------------------------------------------------------------------
# Paths and JSON
# --------------------------------------------------------------------------

def rel(path: Path | str) -> str:
    """Path relative to the repository root when inside it (no machine paths)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return Path(path).as_posix()


def rnd(x: float | None, digits: int = FLOAT_DIGITS) -> float | None:
    """Round a float for stable JSON output; None/NaN stay None."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return None
    r = round(x, digits)
    return 0.0 if r == 0 else r  # no "-0.0"


def dump_json(obj: Any) -> str:
    """Stable JSON text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Data loading
# --------------------------------------------------------------------------

def vigie_binary(explicit: str | None = None) -> Path:
    """The vigie binary; built with cargo when missing."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("VIGIE_BIN")
    if env:
        return Path(env)
    path = REPO_ROOT / "target" / "debug" / "vigie"
    if not path.exists():
        cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
        print(f"[hosp_risk] {rel(path)} missing: cargo build -q -p vigie", file=sys.stderr)
        subprocess.run([cargo, "build", "-q", "-p", "vigie"], cwd=REPO_ROOT, check=True)
    return path


def export_lines(count: int, seed: int, vigie_bin: str | None = None) -> Iterator[str]:
    """Run `vigie simulate export --dataset cases` and yield its NDJSON lines."""
    binary = vigie_binary(vigie_bin)
    cmd = [str(binary), "simulate", "export", "--dataset", "cases",
           "--count", str(count), "--seed", str(seed)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, encoding="utf-8")
    assert proc.stdout is not None
    try:
        yield from proc.stdout
    finally:
        proc.stdout.close()
        rc = proc.wait()
        if rc != 0:
            raise RuntimeError(f"vigie simulate export exited with {rc}")


def file_lines(path: Path) -> Iterator[str]:
    with open(path, "r", encoding="utf-8") as fh:
        yield from fh


def canonical(data: dict) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class Dataset:
    """Labelled rows (hosp_yn in {Yes, No}) sorted by row_id."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.counts = {
            "lines_read": 0,
            "rows_other_schema": 0,
            "rows_without_row_id": 0,
            "rows_duplicate_row_id": 0,
            "rows_unlabelled": 0,
            "rows_labelled": 0,
        }
        self.row_ids_sha256 = ""
        self.data_sha256 = ""


def load_rows(lines: Iterable[str]) -> Dataset:
    """Parse NDJSON envelopes (or bare `data` rows), keep labelled case rows.

    Rows are sorted by row_id so that the result depends on the set of rows,
    not on their order in the file. Later duplicates of a row_id are dropped.
    """
    ds = Dataset()
    seen: set[str] = set()
    keep: list[tuple[str, dict, str]] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        ds.counts["lines_read"] += 1
        obj = json.loads(line)
        if isinstance(obj.get("data"), dict) and "schema" in obj:
            if obj.get("schema") != SCHEMA:
                ds.counts["rows_other_schema"] += 1
                continue
            data = obj["data"]
        else:
            data = obj
        row_id = data.get("row_id")
        if not isinstance(row_id, str) or not row_id:
            ds.counts["rows_without_row_id"] += 1
            continue
        if row_id in seen:
            ds.counts["rows_duplicate_row_id"] += 1
            continue
        seen.add(row_id)
        if data.get(TARGET_FIELD) not in LABELS:
            ds.counts["rows_unlabelled"] += 1
            continue
        keep.append((row_id, data, canonical(data)))
    keep.sort(key=lambda t: t[0])
    ids_h = hashlib.sha256()
    data_h = hashlib.sha256()
    for row_id, data, canon in keep:
        ids_h.update(row_id.encode("utf-8") + b"\n")
        data_h.update(canon.encode("utf-8") + b"\n")
        ds.rows.append(data)
    ds.counts["rows_labelled"] = len(ds.rows)
    ds.row_ids_sha256 = ids_h.hexdigest()
    ds.data_sha256 = data_h.hexdigest()
    return ds


# --------------------------------------------------------------------------
# Split and labels
# --------------------------------------------------------------------------

def split_rule(test_fraction: float = TEST_FRACTION) -> dict:
    return {
        "method": "sha256_row_id",
        "description": (
            "h = first 8 bytes of sha256(UTF-8 row_id) read as a big-endian u64; "
            "the row is in the test split iff h < threshold"
        ),
        "test_fraction": test_fraction,
        "threshold": int(test_fraction * 2**64),
    }


def is_test(row_id: str, threshold: int) -> bool:
    h = int.from_bytes(hashlib.sha256(row_id.encode("utf-8")).digest()[:8], "big")
    return h < threshold


def split(rows: list[dict], rule: dict) -> tuple[list[dict], list[dict]]:
    train, test = [], []
    for r in rows:
        (test if is_test(r["row_id"], rule["threshold"]) else train).append(r)
    return train, test


def labels(rows: list[dict]) -> np.ndarray:
    return np.array([LABELS[r[TARGET_FIELD]] for r in rows], dtype=np.int64)


# --------------------------------------------------------------------------
# Encoding (the contract)
# --------------------------------------------------------------------------

def _category(value: Any) -> str | None:
    """A categorical value as a string, or None when missing (absent/null)."""
    if value is None:
        return None
    return value if isinstance(value, str) else None


def _numeric(value: Any) -> float | None:
    """A numeric value, or None when missing (absent, null or not a number)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def build_spec(train_rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Feature spec (column layout) from the training rows."""
    spec: list[dict] = []
    names: list[str] = []
    col = 0
    for name in CATEGORICAL_FEATURES:
        cats = sorted({c for r in train_rows if (c := _category(r.get(name))) is not None})
        spec.append({
            "name": name,
            "kind": "one_hot",
            "categories": cats,
            "unknown": "all_zeros",
            "missing": "all_zeros",
            "columns": [col, col + len(cats)],
        })
        names.extend(f"{name}={c}" for c in cats)
        col += len(cats)
    spec.append({
        "name": NUMERIC_FEATURE,
        "kind": "numeric",
        "missing_value": NUMERIC_MISSING_VALUE,
        "column": col,
        "missing_indicator_column": col + 1,
        "missing_indicator_name": f"{NUMERIC_FEATURE}_missing",
    })
    names.extend([NUMERIC_FEATURE, f"{NUMERIC_FEATURE}_missing"])
    return spec, names


def n_features(spec: list[dict]) -> int:
    n = 0
    for f in spec:
        if f["kind"] == "one_hot":
            n = max(n, f["columns"][1])
        else:
            n = max(n, f["column"] + 1, f["missing_indicator_column"] + 1)
    return n


def encode(rows: list[dict], spec: list[dict]) -> np.ndarray:
    """Rows -> float32 [N, D] following the spec (see ml/README.md)."""
    d = n_features(spec)
    x = np.zeros((len(rows), d), dtype=np.float32)
    for f in spec:
        name = f["name"]
        if f["kind"] == "one_hot":
            start = f["columns"][0]
            index = {c: i for i, c in enumerate(f["categories"])}
            for i, r in enumerate(rows):
                c = _category(r.get(name))
                j = index.get(c) if c is not None else None
                if j is not None:  # unknown or missing: all zeros
                    x[i, start + j] = 1.0
        elif f["kind"] == "numeric":
            col, ind = f["column"], f["missing_indicator_column"]
            for i, r in enumerate(rows):
                v = _numeric(r.get(name))
                if v is None:
                    x[i, col] = f["missing_value"]
                    x[i, ind] = 1.0
                else:
                    x[i, col] = v  # float32 cast
        else:
            raise ValueError(f"unknown feature kind {f['kind']!r}")
    return x


# --------------------------------------------------------------------------
# Metrics and reference profile
# --------------------------------------------------------------------------

def bin_index(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1]: floor(score * n) clamped to [0, n-1]."""
    s = np.asarray(scores, dtype=np.float64)
    return np.clip(np.floor(s * n_bins), 0, n_bins - 1).astype(np.int64)


def calibration_table(y: np.ndarray, p: np.ndarray, n_bins: int = CALIBRATION_BINS) -> list[dict]:
    idx = bin_index(p, n_bins)
    out = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        out.append({
            "bin": b,
            "lower": rnd(b / n_bins),
            "upper": rnd((b + 1) / n_bins),
            "count": n,
            "mean_predicted": rnd(float(np.mean(p[m], dtype=np.float64))) if n else None,
            "observed_rate": rnd(float(np.mean(y[m], dtype=np.float64))) if n else None,
        })
    return out


def metrics(y: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    p64 = np.asarray(p, dtype=np.float64)
    return {
        "auc": rnd(roc_auc_score(y, p64)),
        "brier": rnd(brier_score_loss(y, p64)),
        "log_loss": rnd(log_loss(y, np.clip(p64, 1e-15, 1 - 1e-15))),
        "base_rate": rnd(float(np.mean(y))),
        "mean_score": rnd(float(np.mean(p64))),
        "n": int(len(y)),
        "positives": int(np.sum(y)),
        "calibration": calibration_table(y, p64),
    }


def score_histogram(p: np.ndarray, n_bins: int = SCORE_BINS) -> dict:
    idx = bin_index(p, n_bins)
    counts = np.bincount(idx, minlength=n_bins).astype(int).tolist()
    total = max(len(p), 1)
    return {
        "bins": n_bins,
        "range": [0.0, 1.0],
        "edges": [rnd(i / n_bins) for i in range(n_bins + 1)],
        "binning": "bin = min(floor(score * bins), bins - 1); score = probabilities[:, 1]",
        "counts": counts,
        "frequencies": [rnd(c / total) for c in counts],
        "n": int(len(p)),
    }


def reference_profile(train_rows: list[dict], spec: list[dict], test_scores: np.ndarray) -> dict:
    n = max(len(train_rows), 1)
    cats: dict[str, Any] = {}
    numeric: dict[str, Any] = {}
    for f in spec:
        name = f["name"]
        if f["kind"] == "one_hot":
            counts = {c: 0 for c in f["categories"]}
            counts[MISSING_BUCKET] = 0
            counts[UNKNOWN_BUCKET] = 0
            for r in train_rows:
                c = _category(r.get(name))
                if c is None:
                    counts[MISSING_BUCKET] += 1
                elif c in counts and c not in (MISSING_BUCKET, UNKNOWN_BUCKET):
                    counts[c] += 1
                else:
                    counts[UNKNOWN_BUCKET] += 1
            cats[name] = {
                "counts": counts,
                "frequencies": {k: rnd(v / n) for k, v in counts.items()},
                "n": len(train_rows),
            }
        else:
            edges = NUMERIC_HIST_EDGES
            missing = under = over = 0
            vals = []
            for r in train_rows:
                v = _numeric(r.get(name))
                if v is None:
                    missing += 1
                elif v < edges[0]:
                    under += 1
                elif v >= edges[-1]:
                    over += 1
                else:
                    vals.append(v)
            counts = np.histogram(np.array(vals, dtype=np.float64), bins=np.array(edges, dtype=np.float64))[0]
            # np.histogram closes the last bin on the right; values equal to the last
            # edge were already sent to overflow, so every bin here is [lo, hi).
            counts = counts.astype(int).tolist()
            numeric[name] = {
                "edges": edges,
                "binning": "bins [edges[i], edges[i+1]); underflow < edges[0]; overflow >= edges[-1]; missing = absent/null",
                "counts": counts,
                "frequencies": [rnd(c / n) for c in counts],
                "missing": missing,
                "missing_frequency": rnd(missing / n),
                "underflow": under,
                "overflow": over,
                "n": len(train_rows),
            }
    return {
        "categorical": cats,
        "numeric": numeric,
        "score": score_histogram(test_scores),
        "note": "categorical and numeric profiles: training split; score histogram: test split",
    }


def onnx_session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
