#!/usr/bin/env python3
"""Render the panels of docs/grafana/keystake-signer.json to a PNG from recorded scrapes.

Grafana is not installable from the package registries this project may use, so this script
stands in for it: it reads each panel's PromQL expression from the dashboard JSON, evaluates the
few expression forms the dashboard uses (instant gauge, `sum by (...) (rate(m[w]))`,
`histogram_quantile(q, sum by (le, ...) (rate(m_bucket[w])))`) over a series of real `/metrics`
scrapes, and plots them with matplotlib. It refuses any other expression form (so the PNG can
never show something the dashboard does not).

Usage: render_dashboard.py DASHBOARD.json SCRAPES.jsonl OUT.png
SCRAPES.jsonl: one line per scrape, {"t": unix_seconds, "text": "<Prometheus exposition text>"}.
"""
import json
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text):
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = dict(LABEL.findall(m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def selector(text):
    m = re.fullmatch(r'(\w+)(\{(.*)\})?', text.strip())
    if not m:
        raise ValueError(f"unsupported selector {text!r}")
    return m.group(1), dict(LABEL.findall(m.group(3) or ""))


def matches(name, labels, want_name, want_labels):
    return name == want_name and all(labels.get(k) == v for k, v in want_labels.items())


def window_seconds(text):
    m = re.fullmatch(r'(\d+)([smh])', text)
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def rate_by(scrapes, metric, by, window):
    """{group labels tuple: [(t, per-second rate)]} of sum by (by) (rate(metric[window]))."""
    name, want = selector(metric)
    series = defaultdict(list)
    for i, (t, samples) in enumerate(scrapes):
        earlier = [j for j in range(i) if scrapes[j][0] <= t - window]
        if not earlier:
            continue
        t0, old = scrapes[earlier[-1]]
        now_sum, old_sum = defaultdict(float), defaultdict(float)
        for n, labels, v in samples:
            if matches(n, labels, name, want):
                now_sum[tuple(labels.get(k, "") for k in by)] += v
        for n, labels, v in old:
            if matches(n, labels, name, want):
                old_sum[tuple(labels.get(k, "") for k in by)] += v
        for key, v in now_sum.items():
            series[key].append((t, max(0.0, v - old_sum.get(key, 0.0)) / (t - t0)))
    return series


def quantile(q, buckets):
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-12)
        prev_le, prev_count = le, count
    return prev_le


def evaluate(expr, scrapes):
    expr = expr.strip()
    m = re.fullmatch(r'histogram_quantile\(([\d.]+),\s*sum by \(([\w, ]+)\) \(rate\(([^\[]+)\[(\w+)\]\)\)\)', expr)
    if m:
        q, by = float(m.group(1)), [b.strip() for b in m.group(2).split(",")]
        rates = rate_by(scrapes, m.group(3), by, window_seconds(m.group(4)))
        rest = [b for b in by if b != "le"]
        grouped = defaultdict(lambda: defaultdict(list))
        for key, points in rates.items():
            labels = dict(zip(by, key))
            le = float(labels["le"].replace("+Inf", "inf"))
            for t, v in points:
                grouped[tuple(labels[k] for k in rest)][t].append((le, v))
        return {k: [(t, quantile(q, b)) for t, b in sorted(ts.items()) if quantile(q, b) is not None]
                for k, ts in grouped.items()}, rest
    m = re.fullmatch(r'sum by \(([\w, ]+)\) \(rate\(([^\[]+)\[(\w+)\]\)\)', expr)
    if m:
        by = [b.strip() for b in m.group(1).split(",")]
        return rate_by(scrapes, m.group(2), by, window_seconds(m.group(3))), by
    name, want = selector(expr)
    series = defaultdict(list)
    for t, samples in scrapes:
        for n, labels, v in samples:
            if matches(n, labels, name, want):
                series[tuple(sorted(labels.items()))].append((t, v))
    return series, None


def legend(fmt, key, by):
    if by is None:
        labels = dict(key)
    else:
        labels = dict(zip(by, key))
    return re.sub(r'\{\{(\w+)\}\}', lambda m: labels.get(m.group(1), ""), fmt) or "value"


def main():
    dashboard = json.load(open(sys.argv[1]))
    scrapes = []
    for line in open(sys.argv[2]):
        record = json.loads(line)
        scrapes.append((record["t"], parse(record["text"])))
    start = scrapes[0][0]
    panels = dashboard["panels"]
    fig, axes = plt.subplots(4, 2, figsize=(16, 15))
    fig.suptitle(f'{dashboard["title"]} — rendered from {len(scrapes)} real /metrics scrapes '
                 f'over {scrapes[-1][0] - start:.0f} s', fontsize=14)
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"])
        for target in panel["targets"]:
            series, by = evaluate(target["expr"], scrapes)
            for key, points in sorted(series.items()):
                if not points:
                    continue
                ax.plot([t - start for t, _ in points], [v for _, v in points],
                        label=legend(target.get("legendFormat", ""), key, by))
        ax.set_xlabel("seconds since start")
        ax.set_ylabel(panel["fieldConfig"]["defaults"].get("unit", ""))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(sys.argv[3], dpi=80)


if __name__ == "__main__":
    main()
