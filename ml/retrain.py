#!/usr/bin/env python3
"""Retrain hosp_risk when the drift component reports an alert.

    scripts/retrain                    # the same, with .vigie/ml-venv's python
    python ml/retrain.py --brokers 127.0.0.1:9092 [--force] [--cases 200000]

1. The trigger: the newest `health.drift_report` (by window end) of the
   version in use, the newest version under --models (the scorer's rule),
   read from --reports. Nothing is done unless its status is `alert`, or
   --force is given.
2. The fresh data: the last --cases cases of --cases-topic
   (`read_committed`), spread over its partitions as they hold them.
3. `dvc repro` of ml/retrain/dvc.yaml in a run folder under --runs: the
   candidate version (the next minor version) trained on the fresh cases'
   training split, and both models evaluated on their test split.
4. The validation: the candidate is installed only if its test AUC is not
   below the current model's on the same rows. It is copied next to the
   others under a temporary name and renamed into place, so that a scorer
   watching --models (it looks every `reload_check_ms`) sees it whole and
   moves to it.

Prints one JSON line: what was decided and why; the run folder keeps the
data, the pipeline, its lock file, both evaluations and `retrain.json`.
Exit status: 0 when nothing was to be done or the candidate was installed,
3 when the candidate was refused, 1 on an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

ML_DIR = Path(__file__).resolve().parent
REPO_ROOT = ML_DIR.parent
REFUSED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default=os.environ.get("VIGIE__KAFKA__BROKERS", "127.0.0.1:9092"))
    ap.add_argument("--reports", default="health.drift_report.v1", help="the drift reports' topic")
    ap.add_argument("--cases-topic", default="health.case.v1", help="the cases' topic")
    ap.add_argument("--cases", type=int, default=200_000, help="fresh cases to train on")
    ap.add_argument("--models", default=str(REPO_ROOT / "models" / "hosp_risk"),
                    help="the model's version directories, as the scorer reads them")
    ap.add_argument("--runs", default=str(REPO_ROOT / ".vigie" / "retrain"),
                    help="where each run's folder is made")
    ap.add_argument("--seed", type=int, default=42, help="training seed")
    ap.add_argument("--force", action="store_true", help="retrain without an alert")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to read a topic to its end")
    return ap.parse_args(argv)


def version_key(name: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in name.split("."))
    except ValueError:
        return None


def current_version(models: Path) -> Path:
    """The newest version directory with a model.onnx: the scorer's rule."""
    if not models.is_dir():
        raise SystemExit(f"--models {models}: no such directory")
    found = [(version_key(d.name), d) for d in models.iterdir() if (d / "model.onnx").is_file()]
    found = [(k, d) for k, d in found if k is not None]
    if not found:
        raise SystemExit(f"no model version under {models}")
    return max(found)[1]


def next_version(models: Path, current: str) -> str:
    """The next minor version above every version present."""
    keys = [version_key(d.name) for d in models.iterdir()]
    newest = max([k for k in keys if k is not None] + [version_key(current)])
    return f"{newest[0]}.{newest[1] + 1}.0"


def read_tail(brokers: str, topic: str, count: int | None, timeout: float) -> list[bytes]:
    """The committed records of `topic`: all of them, or about the last
    `count` spread over the partitions as they hold them."""
    c = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "vigie-retrain",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    })
    try:
        meta = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            raise SystemExit(f"no topic {topic} on {brokers}")
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                 for p in meta.partitions}
        total = sum(high - low for low, high in marks.values())
        starts = []
        for p, (low, high) in marks.items():
            take = high - low if count is None or total == 0 else -(-(high - low) * count // total)
            starts.append(TopicPartition(topic, p, max(low, high - take)))
        pending = {tp.partition for tp in starts if tp.offset < marks[tp.partition][1]}
        c.assign(starts)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{topic}: not read to its end in {timeout} s")
            msg = c.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise SystemExit(f"{topic}: {msg.error()}")
            out.append(msg.value())
        return out
    finally:
        c.close()


def latest_report(records: list[bytes], name: str, version: str) -> dict | None:
    """The drift report of `name` `version` with the latest window end."""
    best = None
    for raw in records:
        try:
            env = json.loads(raw)
        except ValueError:
            continue
        data = env.get("data") or {}
        if env.get("schema") != "health.drift_report" or (data.get("model_name"), data.get("model_version")) != (name, version):
            continue
        if best is None or data["window_end"] > best["window_end"]:
            best = data
    return best


def run(cmd: list[str], cwd: Path, env: dict) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = Path(args.models).resolve()
    current = current_version(models)
    meta = json.loads((current / "metadata.json").read_text(encoding="utf-8"))
    name, version = meta["name"], meta["version"]
    result: dict = {"model": name, "current": version}

    report = latest_report(read_tail(args.brokers, args.reports, None, args.timeout), name, version)
    result["trigger"] = None if report is None else {
        k: report[k] for k in ("window_start", "window_end", "status", "cases")
    }
    if report is not None:
        result["trigger"]["alerted"] = [f["feature"] for f in report["features"] if f["status"] == "alert"]
    if not args.force and (report is None or report["status"] != "alert"):
        result["decision"] = "nothing to do: the latest drift report of the version in use is not an alert"
        print(json.dumps(result))
        return 0

    candidate = next_version(models, version)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = Path(args.runs).resolve() / f"{stamp}-{name}-{candidate}"
    (work / "data").mkdir(parents=True)
    (work / "ml").mkdir()
    for f in ("train.py", "evaluate.py", "hosp_features.py"):
        shutil.copy2(ML_DIR / f, work / "ml" / f)
    shutil.copy2(ML_DIR / "retrain" / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(current, work / "current")
    (work / "params.yaml").write_text(f"seed: {args.seed}\nversion: \"{candidate}\"\n", encoding="utf-8")
    cases = read_tail(args.brokers, args.cases_topic, args.cases, args.timeout)
    with open(work / "data" / "cases.ndjson", "wb") as f:
        for raw in cases:
            f.write(raw.rstrip(b"\n") + b"\n")
    result.update({"candidate": candidate, "run": str(work), "fresh_cases": len(cases)})

    # dvc and python from this interpreter's environment (.vigie/ml-venv).
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               DVC_NO_ANALYTICS="1")
    run(["dvc", "init", "--no-scm", "--quiet"], work, env)
    run(["dvc", "repro", "--quiet"], work, env)

    cur = json.loads((work / "metrics" / "current.json").read_text(encoding="utf-8"))
    new = json.loads((work / "metrics" / "candidate.json").read_text(encoding="utf-8"))
    if cur["data"]["rows_test"] != new["data"]["rows_test"]:
        raise SystemExit("the two evaluations did not run on the same test rows")
    result["auc"] = {"current": cur["metrics"]["auc"], "candidate": new["metrics"]["auc"],
                     "test_rows": new["data"]["rows_test"]}
    if new["metrics"]["auc"] < cur["metrics"]["auc"]:
        result["decision"] = f"refused: the candidate's AUC is below the current model's on the same {new['data']['rows_test']} rows"
        status = REFUSED
    else:
        target = models / candidate
        staging = models / f".{candidate}.incoming"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(work / "candidate" / candidate, staging)
        staging.rename(target)
        result["installed"] = str(target)
        result["decision"] = f"installed {name} {candidate}: AUC not below the current model's on the same rows"
        status = 0
    (work / "retrain.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
