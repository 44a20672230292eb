"""Draws a Grafana dashboard's time-series and stat panels to a PNG, from
Prometheus' query_range: the same queries, legends and units as the
dashboard (infra/grafana/dashboards/<name>.json). Run by
scripts/render-dashboard, which makes the virtualenv."""

import argparse
import json
import math
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"ops": "/s", "s": "s", "short": ""}
STATUS = {-1: "insufficient", 0: "ok", 1: "warn", 2: "alert"}


def query_range(base, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    url = f"{base}/api/v1/query_range?{params}"
    with urllib.request.urlopen(url, timeout=30) as r:  # nosec B310
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return body["data"]["result"]


def legend(fmt, labels):
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out.strip() or ",".join(f"{k}={v}" for k, v in labels.items()) or "value"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prometheus", default="http://127.0.0.1:9090")
    p.add_argument("--dashboard", default="overview")
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    base = a.prometheus.rstrip("/")
    # (The only scheme urlopen is given: bandit's B310.)
    if urllib.parse.urlparse(base).scheme not in ("http", "https"):
        sys.exit(f"render: --prometheus {a.prometheus}: an http or https URL")
    board = json.loads((ROOT / "infra/grafana/dashboards" / f"{a.dashboard}.json").read_text())
    out = a.out or ROOT / "docs/images" / f"{a.dashboard}.png"

    end = time.time()
    start = end - a.minutes * 60
    step = max(1, int(a.minutes * 60 / 240))
    rate_interval = f"{max(4 * step, 60)}s"
    panels = [pl for pl in board["panels"] if pl["type"] in ("timeseries", "stat")]
    cols = 3
    rows = math.ceil(len(panels) / cols)
    plt.style.use("dark_background")
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.4 * rows), squeeze=False)
    fig.suptitle(
        f"{board['title']}: last {a.minutes:g} minutes to "
        f"{datetime.fromtimestamp(end, timezone.utc):%Y-%m-%d %H:%M} UTC",
        fontsize=14,
    )
    empty = []
    for ax, panel in zip(axes.flat, panels):
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        ax.set_title(panel["title"], fontsize=11, loc="left")
        lines = 0
        for t in panel["targets"]:
            expr = t["expr"].replace("$__rate_interval", rate_interval)
            for series in query_range(base, expr, start, end, step):
                xs = [datetime.fromtimestamp(float(ts), timezone.utc) for ts, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, linewidth=1.2, label=legend(t.get("legendFormat", ""), series["metric"]))
                lines += 1
        if lines == 0:
            empty.append(panel["title"])
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        if panel["type"] == "stat":
            ax.set_yticks(list(STATUS), [STATUS[k] for k in STATUS])
        elif UNITS.get(unit):
            ax.set_ylabel(UNITS[unit])
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.grid(alpha=0.2)
        if 0 < lines <= 8:
            ax.legend(fontsize=7, loc="upper left")
        elif lines > 8:
            ax.text(0.99, 0.97, f"{lines} series", ha="right", va="top", fontsize=8, transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"{out}: {len(panels)} panels" + (f", no data in: {', '.join(empty)}" if empty else ""))
    sys.exit(0)


if __name__ == "__main__":
    main()
