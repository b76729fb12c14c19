#!/usr/bin/env python3
"""Plots a soak's RSS samples (CSV: seconds,forewarn_kib,sim_kib) as a PNG.

Usage: plot.py RSS_CSV OUT_PNG TITLE [BEFORE_CSV]
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read(path):
    with open(path) as f:
        rows = [r for r in csv.DictReader(f)]
    minutes = [int(r["seconds"]) / 60 for r in rows]
    forewarn = [int(r["forewarn_kib"]) / 1024 for r in rows]
    sim = [int(r["sim_kib"]) / 1024 for r in rows]
    return minutes, forewarn, sim


path, out, title = sys.argv[1], sys.argv[2], sys.argv[3]
fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
if len(sys.argv) > 4:
    m, f, _ = read(sys.argv[4])
    ax.plot(m, f, color="#bbbbbb", label="forewarn before (embedded broker log 10 × 100 MiB per filter)")
m, f, s = read(path)
ax.plot(m, f, color="#1f5fa8", linewidth=2, label="forewarn demo process (RSS)")
ax.plot(m, s, color="#2e8b57", label="forewarn-sim (RSS)")
ax.set_xlabel("minutes")
ax.set_ylabel("MiB")
ax.set_title(title)
ax.set_ylim(bottom=0)
ax.grid(alpha=0.3)
ax.legend(loc="upper left")
fig.tight_layout()
fig.savefig(out)
