"""Baseline of `scripts/bench scorer`: Python onnxruntime scoring envelopes.

    python3 ml/bench_score.py --model DIR --input events.ndjson --batch 512

Reads every line first, then times the loop only (the model load excluded,
as on the Rust side): JSON decoding of the envelope, the feature encoding
of hosp_features, one onnxruntime run per batch, and a JSON score event per
row. Prints the seconds of the loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hosp_features  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    meta = json.loads((args.model / "metadata.json").read_text())
    session = ort.InferenceSession(str(args.model / "model.onnx"), providers=["CPUExecutionProvider"])
    lines = args.input.read_bytes().splitlines()
    out = 0
    start = time.perf_counter()
    for i in range(0, len(lines), args.batch):
        envs = [json.loads(line) for line in lines[i : i + args.batch]]
        x = hosp_features.encode([e["data"] for e in envs], meta["features"])
        probs = np.asarray(session.run([meta["output_name"]], {meta["input_name"]: x})[0])
        for e, p in zip(envs, probs[:, meta["score_column"]]):
            out += len(json.dumps({
                "id": str(uuid.uuid4()), "schema": "health.case_score", "schema_version": 1,
                "source": "scorer", "data": {"case_event_id": e["id"], "model_name": meta["name"],
                "model_version": meta["version"], "score": float(p)},
            }))
    print(time.perf_counter() - start)


if __name__ == "__main__":
    main()
