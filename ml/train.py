#!/usr/bin/env python3
"""Train the hosp_risk model (P(hosp_yn = Yes)) and export it to ONNX.

    python3 ml/train.py                               # runs vigie export (200000 rows, seed 42)
    python3 ml/train.py --data ml/data/cases.ndjson   # reads an NDJSON export
    python3 ml/train.py --count 50000 --seed 7 --version 1.1.0

Writes models/hosp_risk/<version>/model.onnx and metadata.json (nothing
else). Same data + same arguments give byte-identical files.
"""

from __future__ import annotations

import os

# Single-threaded numerics: reproducible and modest on shared CPUs.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hosp_features as hf  # noqa: E402

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
LABEL_OUTPUT = "label"
SCORE_COLUMN = 1
PARITY_TOL = 1e-5
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="NDJSON file of health.case envelopes; without it, "
                    "`vigie simulate export` is run with --count/--seed")
    ap.add_argument("--count", type=int, default=200_000, help="rows to export (without --data)")
    ap.add_argument("--seed", type=int, default=42, help="export seed and training seed")
    ap.add_argument("--version", default="1.0.0", help="model version (output sub-directory)")
    ap.add_argument("--out-root", default=str(hf.REPO_ROOT / "models" / hf.MODEL_NAME),
                    help="parent of the version directory")
    ap.add_argument("--vigie-bin", help="vigie binary (default: $VIGIE_BIN or target/debug/vigie)")
    ap.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength")
    ap.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging even if importable")
    return ap.parse_args(argv)


def canonical_command(args: argparse.Namespace) -> list[str]:
    """The invocation, normalised (relative paths, all options explicit)."""
    cmd = ["python3", "ml/train.py"]
    if args.data:
        cmd += ["--data", hf.rel(args.data)]
    else:
        cmd += ["--count", str(args.count)]
    cmd += ["--seed", str(args.seed), "--version", args.version,
            "--out-root", hf.rel(args.out_root), "--C", repr(args.C)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    random.seed(args.seed)
    np.random.seed(args.seed)

    import onnx
    import onnxruntime
    import scipy
    import sklearn
    import skl2onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    # ---- data ---------------------------------------------------------------
    if args.data:
        source = {"kind": "file", "path": hf.rel(args.data)}
        print(f"[train] reading {hf.rel(args.data)}", file=sys.stderr)
        ds = hf.load_rows(hf.file_lines(Path(args.data)))
    else:
        source = {"kind": "vigie simulate export", "dataset": "cases",
                  "count": args.count, "seed": args.seed}
        print(f"[train] vigie simulate export --count {args.count} --seed {args.seed}", file=sys.stderr)
        ds = hf.load_rows(hf.export_lines(args.count, args.seed, args.vigie_bin))
    if not ds.rows:
        raise SystemExit("no labelled rows (hosp_yn in {Yes, No}) in the input")

    rule = hf.split_rule()
    train_rows, test_rows = hf.split(ds.rows, rule)
    y_train, y_test = hf.labels(train_rows), hf.labels(test_rows)
    if len(set(y_train.tolist())) < 2 or len(set(y_test.tolist())) < 2:
        raise SystemExit("both classes must appear in the train and the test split")
    print(f"[train] labelled rows {len(ds.rows)}: train {len(train_rows)}, test {len(test_rows)}",
          file=sys.stderr)

    spec, column_names = hf.build_spec(train_rows)
    d = hf.n_features(spec)
    x_train = hf.encode(train_rows, spec)
    x_test = hf.encode(test_rows, spec)

    # ---- model --------------------------------------------------------------
    clf = LogisticRegression(C=args.C, solver="lbfgs", max_iter=5000, tol=1e-6,
                             random_state=args.seed)
    clf.fit(x_train, y_train)
    if clf.n_iter_[0] >= clf.max_iter:
        raise SystemExit("LogisticRegression did not converge")

    onx = convert_sklearn(
        clf,
        name=hf.MODEL_NAME,  # without a name skl2onnx uses a random uuid
        initial_types=[(INPUT_NAME, FloatTensorType([None, d]))],
        target_opset=TARGET_OPSET,
        options={id(clf): {"zipmap": False}},
    )
    # skl2onnx may list a domain twice in opset_import; keep one entry per domain.
    opsets: dict[str, int] = {}
    for o in onx.opset_import:
        opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    del onx.opset_import[:]
    for domain in sorted(opsets):
        o = onx.opset_import.add()
        o.domain, o.version = domain, opsets[domain]
    onx.doc_string = f"{hf.MODEL_NAME} {args.version}: P(hosp_yn = Yes) = {OUTPUT_NAME}[:, {SCORE_COLUMN}]"
    for k, v in (("name", hf.MODEL_NAME), ("version", args.version),
                 ("score_column", str(SCORE_COLUMN))):
        prop = onx.metadata_props.add()
        prop.key, prop.value = k, v
    onnx.checker.check_model(onx)
    outputs = [o.name for o in onx.graph.output]
    inputs = [i.name for i in onx.graph.input]
    if inputs != [INPUT_NAME] or sorted(outputs) != sorted([LABEL_OUTPUT, OUTPUT_NAME]):
        raise SystemExit(f"unexpected ONNX signature: inputs {inputs}, outputs {outputs}")
    model_bytes = onx.SerializeToString(deterministic=True)

    # ---- parity: onnxruntime vs sklearn on the test split -------------------
    sess = hf.onnx_session(model_bytes)
    probs_onnx, label_onnx = sess.run([OUTPUT_NAME, LABEL_OUTPUT], {INPUT_NAME: x_test})
    probs_skl = clf.predict_proba(x_test)
    if probs_onnx.shape != (len(test_rows), 2):
        raise SystemExit(f"ONNX probabilities have shape {probs_onnx.shape}")
    max_diff = float(np.max(np.abs(probs_onnx.astype(np.float64) - probs_skl)))
    label_agree = float(np.mean(label_onnx.astype(np.int64) == clf.predict(x_test)))
    print(f"[train] ONNX vs sklearn: max |diff| {max_diff:.3g}, label agreement {label_agree:.6f}",
          file=sys.stderr)
    if not max_diff <= PARITY_TOL:
        raise SystemExit(f"PARITY FAILURE: ONNX vs sklearn probabilities differ by {max_diff} > {PARITY_TOL}")

    # ---- metrics and profile (on the ONNX scores, as served) ----------------
    score = probs_onnx[:, SCORE_COLUMN].astype(np.float64)
    m = hf.metrics(y_test, score)
    m["split"] = "test"
    m["onnx_sklearn_max_abs_diff"] = float(f"{max_diff:.3g}")
    train_score = clf.predict_proba(x_train)[:, 1]
    m["train_auc"] = hf.metrics(y_train, train_score)["auc"]
    profile = hf.reference_profile(train_rows, spec, score)

    out_dir = Path(args.out_root) / args.version
    model_path = out_dir / "model.onnx"
    meta_path = out_dir / "metadata.json"

    metadata = {
        "name": hf.MODEL_NAME,
        "version": args.version,
        "created_by": {"script": "ml/train.py", "command": canonical_command(args)},
        "target": {
            "field": hf.TARGET_FIELD,
            "description": "P(hosp_yn == \"Yes\") for a health.case row; trained on rows with "
                           "hosp_yn in {\"Yes\", \"No\"} (Unknown/Missing/NA excluded)",
            "positive": "Yes",
            "negative": "No",
        },
        "input_name": INPUT_NAME,
        "input_dtype": "float32",
        "input_shape": [None, d],
        "output_name": OUTPUT_NAME,
        "label_output_name": LABEL_OUTPUT,
        "score_column": SCORE_COLUMN,
        "features": spec,
        "column_names": column_names,
        "n_features": d,
        "encoding": {
            "row": "the `data` object of a health.case envelope",
            "order": "features in list order; each writes only its own columns; all other entries 0.0",
            "one_hot": "string value equal (exact, case-sensitive) to categories[i] -> column columns[0]+i "
                       "= 1.0; unknown string, absent key, null or non-string -> all zeros",
            "numeric": "JSON number -> float32 in `column`, indicator 0.0; absent key, null or "
                       "non-number -> missing_value in `column`, 1.0 in missing_indicator_column",
        },
        "model": {
            "type": "sklearn.linear_model.LogisticRegression",
            "params": {"C": args.C, "solver": "lbfgs", "penalty": "l2", "max_iter": 5000, "tol": 1e-6},
            "n_iter": int(clf.n_iter_[0]),
            "onnx_opset": opsets,
            "onnx_ir_version": int(onx.ir_version),
            "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
            "onnx_bytes": len(model_bytes),
            "libraries": {
                "numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
                "skl2onnx": skl2onnx.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
        },
        "training_data": {
            "source": source,
            "schema": f"{hf.SCHEMA} v1",
            "seed": args.seed,
            "row_ids_sha256": ds.row_ids_sha256,
            "data_sha256": ds.data_sha256,
            "fingerprint_rule": "row_ids_sha256 = sha256 of each used row_id + '\\n' in sorted order; "
                                "data_sha256 = sha256 of each used row's data object as compact "
                                "sorted-key ASCII JSON + '\\n', in row_id order (envelope fields such "
                                "as ingested_at are excluded)",
            "counts": dict(ds.counts, rows_train=len(train_rows), rows_test=len(test_rows),
                           positives_train=int(y_train.sum()), positives_test=int(y_test.sum())),
            "split": rule,
        },
        "metrics": m,
        "reference_profile": profile,
    }
    meta_bytes = hf.dump_json(metadata).encode("utf-8")
    hf.write_atomic(model_path, model_bytes)
    hf.write_atomic(meta_path, meta_bytes)

    print(f"[train] test AUC {m['auc']:.4f}  Brier {m['brier']:.5f}  base rate {m['base_rate']:.4f}",
          file=sys.stderr)
    print(f"[train] wrote {hf.rel(model_path)} ({len(model_bytes)} bytes) and {hf.rel(meta_path)}",
          file=sys.stderr)

    if not args.no_mlflow:
        log_mlflow(args, metadata, model_path, meta_path)
    return 0


def log_mlflow(args: argparse.Namespace, metadata: dict, model_path: Path, meta_path: Path) -> None:
    try:
        import mlflow
    except ImportError:
        print("[train] mlflow not importable: MLflow logging skipped", file=sys.stderr)
        return
    try:
        store = hf.ML_DIR / "mlruns"
        store.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(store.resolve().as_uri())
        mlflow.set_experiment(hf.MODEL_NAME)
        m = metadata["metrics"]
        td = metadata["training_data"]
        with mlflow.start_run(run_name=f"{hf.MODEL_NAME}-{args.version}"):
            params = {
                "version": args.version, "seed": args.seed, "C": args.C,
                "source": td["source"]["kind"], "count": td["source"].get("count"),
                "data": td["source"].get("path"), "n_features": metadata["n_features"],
                "rows_train": td["counts"]["rows_train"], "rows_test": td["counts"]["rows_test"],
            }
            mlflow.log_params({k: v for k, v in params.items() if v is not None})
            mlflow.log_metrics({k: float(m[k]) for k in
                                ("auc", "brier", "log_loss", "base_rate", "mean_score", "train_auc")})
            mlflow.set_tags({"data_sha256": td["data_sha256"], "onnx_sha256": metadata["model"]["onnx_sha256"]})
            mlflow.log_artifact(str(model_path))
            mlflow.log_artifact(str(meta_path))
        print(f"[train] MLflow run logged to {hf.rel(store)}", file=sys.stderr)
    except Exception as exc:  # tracking must never break training
        print(f"[train] WARNING: MLflow logging failed: {exc!r}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
