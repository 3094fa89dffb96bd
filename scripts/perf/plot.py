#!/usr/bin/env python3
"""Plots for docs/performance.md, from the load tool's CSV output.

  plot.py latency SAMPLES.csv OUT.png      # histogram of per-request latency (bench load --csv)
  plot.py sweep SWEEP.csv OUT.png          # throughput and p99 vs connections (scripts/perf/sweep.sh)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def latency(samples_csv, out_png):
    values = []
    with open(samples_csv) as f:
        for row in csv.DictReader(f):
            if row["status"] == "200":
                values.append(int(row["latency_us"]) / 1000.0)
    if not values:
        sys.exit(f"{samples_csv}: no successful samples")
    values.sort()
    q = lambda p: values[min(len(values) - 1, int(p * len(values)))]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist(values, bins=100, range=(0, q(0.999) * 1.2), color="#3465a4")
    for p, style in ((0.5, "-"), (0.99, "--"), (0.999, ":")):
        ax.axvline(q(p), color="#cc0000", linestyle=style, label=f"p{p * 100:g} = {q(p):.2f} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title(f"Signing latency over mTLS, {len(values)} requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


def sweep(sweep_csv, out_png):
    rows = list(csv.DictReader(open(sweep_csv)))
    conns = [int(r["connections"]) for r in rows]
    thr = [float(r["throughput"]) for r in rows]
    raw = [float(r["raw_blst"]) for r in rows]
    p99 = [float(r["p99_ms"]) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(conns, thr, "o-", label="end-to-end signatures/s (mTLS, fsync'd DB, HSM unseal)")
    ax.plot(conns, raw, "s--", label="raw blst sign/s, same cores, same run")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent connections")
    ax.set_ylabel("signatures per second")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(conns, p99, "^:", color="#cc0000", label="p99 latency (ms)")
    ax2.set_ylabel("p99 latency (ms)")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax.set_title("Throughput vs concurrency")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("latency", "sweep"):
        sys.exit(__doc__)
    {"latency": latency, "sweep": sweep}[sys.argv[1]](sys.argv[2], sys.argv[3])
