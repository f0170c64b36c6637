"""Figures of the rollback-recovery experiment (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .plots import _plt

__all__ = ["plot_recovery"]


def plot_recovery(out: dict[str, Any], d: Path) -> list[Path]:
    """``recovery_a3.png`` (latency CDFs), ``recovery_a4.png`` (throughput, no FT vs replay),
    ``recovery_a5.png`` (replay time by checkpoint interval); ``recovery_table1.png`` is not drawn
    (Table 1 is a table: ``recovery_table1.md``)."""
    plt = _plt()
    written = []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, lat in out["_cdf"].items():
        if name == "checkpoint" or not len(lat):
            continue
        xs = np.sort(lat)
        ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs) * 100, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("per-packet latency (us, log): release - admit")
    ax.set_ylabel("packets (%)")
    ax.set_title("Figure A.3: latency CDF of MazuNAT (study: baseline median ~70 us, replay +30 us, "
                 "buffering +8-9 / +50 ms)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = d / "recovery_a3.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    nfs = list(out["a4"])
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(nfs))
    ax.bar(x - 0.2, [out["a4"][n]["none_pps"] / 1e3 for n in nfs], 0.4, label="no FT")
    ax.bar(x + 0.2, [out["a4"][n]["replay_pps"] / 1e3 for n in nfs], 0.4, label="checkpoint + replay")
    for i, n in enumerate(nfs):
        ax.text(i + 0.2, out["a4"][n]["replay_pps"] / 1e3, f"-{out['a4'][n]['loss_pct']:.0f} %", ha="center",
                va="bottom", fontsize=8)
    ax.set_xticks(x, nfs)
    ax.set_ylabel("throughput (kpps, in-process master)")
    ax.set_title("Figure A.4: throughput without and with replay (study: loss 5.6-30 %)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = d / "recovery_a4.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    ivs = out["config"]["intervals_ms"]
    nfs = list(out["a5"])
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(ivs)
    for j, iv in enumerate(ivs):
        ax.bar(np.arange(len(nfs)) + (j - (len(ivs) - 1) / 2) * w,
               [out["a5"][n][str(iv)]["replay_ms_mean"] for n in nfs], w, label=f"{iv} ms")
    ax.set_xticks(np.arange(len(nfs)), nfs)
    ax.set_ylabel("replay time (ms)")
    ax.set_title("Figure A.5: replay time by checkpoint interval (study: 10-270 ms)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(title="checkpoint interval", fontsize=8)
    fig.tight_layout()
    p = d / "recovery_a5.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    return written
