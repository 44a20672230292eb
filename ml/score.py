"""Scores rows with Python onnxruntime, for the parity test of the Rust scorer.

    python3 ml/score.py --model models/hosp_risk/1.0.0 --input rows.ndjson --output scores.json

Each input line is a case's `data` object (not an envelope); rows may hold
unknown categories or miss fields. The encoding is `hosp_features.encode`,
the contract the Rust scorer reproduces. Output: a JSON array of floats,
the score (`probabilities[:, score_column]`) of each row, in input order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hosp_features  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()

    meta = json.loads((args.model / "metadata.json").read_text())
    rows = [json.loads(line) for line in args.input.read_text().splitlines() if line.strip()]
    session = ort.InferenceSession(str(args.model / "model.onnx"), providers=["CPUExecutionProvider"])
    scores: list[float] = []
    for i in range(0, len(rows), args.batch):
        x = hosp_features.encode(rows[i : i + args.batch], meta["features"])
        probs = session.run([meta["output_name"]], {meta["input_name"]: x})[0]
        scores.extend(float(p) for p in np.asarray(probs)[:, meta["score_column"]])
    args.output.write_text(json.dumps(scores))


if __name__ == "__main__":
    main()
