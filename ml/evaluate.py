#!/usr/bin/env python3
"""Recompute the hosp_risk metrics from model.onnx + metadata.json + data.

    python3 ml/evaluate.py                                   # models/hosp_risk/1.0.0, ml/data/cases.ndjson
    python3 ml/evaluate.py --model-dir models/hosp_risk/1.0.0 --data other.ndjson
    python3 ml/evaluate.py --count 50000 --seed 7            # runs vigie export instead of --data

Only the ONNX model and the metadata are used: the rows are encoded from
the metadata's `features` spec (the encoding contract), split with the
metadata's split rule, and scored with onnxruntime. Writes ml/metrics.json.
When the data fingerprint equals the one in the metadata, the recomputed
test metrics must equal the recorded ones (exit 1 otherwise).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hosp_features as hf  # noqa: E402

TOL = 1e-6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=str(hf.REPO_ROOT / "models" / hf.MODEL_NAME / "1.0.0"))
    ap.add_argument("--data", help="NDJSON file (default ml/data/cases.ndjson unless --count is given)")
    ap.add_argument("--count", type=int, help="run vigie simulate export with this many rows instead")
    ap.add_argument("--seed", type=int, default=42, help="export seed (with --count)")
    ap.add_argument("--vigie-bin")
    ap.add_argument("--out", default=str(hf.ML_DIR / "metrics.json"))
    args = ap.parse_args(argv)

    model_dir = Path(args.model_dir)
    meta = json.loads((model_dir / "metadata.json").read_text(encoding="utf-8"))
    model_bytes = (model_dir / "model.onnx").read_bytes()
    onnx_sha = hashlib.sha256(model_bytes).hexdigest()
    if onnx_sha != meta["model"]["onnx_sha256"]:
        print(f"[evaluate] ERROR: model.onnx sha256 {onnx_sha} != metadata {meta['model']['onnx_sha256']}",
              file=sys.stderr)
        return 1

    if args.count is not None:
        source = {"kind": "vigie simulate export", "dataset": "cases", "count": args.count, "seed": args.seed}
        ds = hf.load_rows(hf.export_lines(args.count, args.seed, args.vigie_bin))
    else:
        path = Path(args.data) if args.data else hf.ML_DIR / "data" / "cases.ndjson"
        source = {"kind": "file", "path": hf.rel(path)}
        ds = hf.load_rows(hf.file_lines(path))

    rule = meta["training_data"]["split"]
    _, test_rows = hf.split(ds.rows, rule)
    if not test_rows:
        print("[evaluate] ERROR: no labelled test rows", file=sys.stderr)
        return 1
    x = hf.encode(test_rows, meta["features"])
    if x.shape[1] != meta["n_features"]:
        print(f"[evaluate] ERROR: encoded {x.shape[1]} columns, metadata says {meta['n_features']}",
              file=sys.stderr)
        return 1
    y = hf.labels(test_rows)
    sess = hf.onnx_session(model_bytes)
    (probs,) = sess.run([meta["output_name"]], {meta["input_name"]: x})
    score = probs[:, meta["score_column"]].astype(np.float64)
    m = hf.metrics(y, score)
    m["score_histogram"] = hf.score_histogram(score)

    same_data = ds.data_sha256 == meta["training_data"]["data_sha256"]
    result = {
        "model": {"name": meta["name"], "version": meta["version"], "dir": hf.rel(model_dir),
                  "onnx_sha256": onnx_sha},
        "data": {"source": source, "data_sha256": ds.data_sha256, "rows_labelled": len(ds.rows),
                 "rows_test": len(test_rows), "same_as_training_data": same_data},
        "metrics": m,
    }
    hf.write_atomic(Path(args.out), hf.dump_json(result).encode("utf-8"))
    print(f"[evaluate] test AUC {m['auc']:.4f}  Brier {m['brier']:.5f}  base rate {m['base_rate']:.4f}"
          f"  (n={m['n']}) -> {hf.rel(args.out)}", file=sys.stderr)

    if same_data:
        recorded = meta["metrics"]
        bad = [k for k in ("auc", "brier", "base_rate", "log_loss")
               if abs(float(recorded[k]) - float(m[k])) > TOL]
        if recorded["calibration"] != m["calibration"]:
            bad.append("calibration")
        if meta["reference_profile"]["score"]["counts"] != m["score_histogram"]["counts"]:
            bad.append("score_histogram")
        if bad:
            print(f"[evaluate] ERROR: recomputed metrics differ from metadata: {bad}", file=sys.stderr)
            return 1
        print("[evaluate] same data as training: metrics match metadata.json", file=sys.stderr)
    else:
        print("[evaluate] data differs from the training data (fingerprint): no comparison with metadata",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
