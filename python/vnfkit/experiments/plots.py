"""Figures of the scale-out experiment (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scale(out: dict[str, Any], d: Path) -> list[Path]:
    """Figure A.1 (load on A and A' over time, per strategy) and A.2 (latency and switch bandwidth
    over time, migration avoidance vs the baselines); plus the elastic scenario's loads."""
    plt = _plt()
    res = out["_results"]
    written = []
    names = [n for n in out["strategies"]]
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 2.6 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        r = res[name]
        tr = r.transfers[0] if r.transfers else None
        ax.plot(r.t_s, r.load_pps[:, 0] / 1e6, label="A", color="tab:blue")
        if tr is not None:
            ax.plot(r.t_s, r.load_pps[:, tr.dst] / 1e6, label="A'", color="tab:orange")
            ax.axvline(tr.started_s, color="grey", ls=":", lw=1)
            if tr.converged_s is not None:
                ax.axvline(tr.converged_s, color="green", ls="--", lw=1, label="converged")
        cap = 1.0
        ax.axhline(cap, color="red", lw=0.8, ls="-.", label="instance capacity")
        s = out["strategies"][name]
        imb = s["imbalance"]
        win = s["imbalance_window_s"]
        ax.set_title(f"{name}: imbalance {imb * 100:.1f} % (last {win:g} s)" if imb is not None else name,
                     fontsize=10)
        ax.set_ylabel("offered load (Mpps)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, ncol=4)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle("Figure A.1: load on A and A' over time (2 000 new flows/s, 1.49 Mpps)", fontsize=11)
    fig.tight_layout()
    p = d / "scale_a1_load.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    colors = {"migration-avoidance": "tab:blue", "never-migrate": "tab:red", "always-migrate": "tab:green"}
    for name in names:
        r = res[name]
        ax1.plot(r.t_s, r.latency_us, label=name, color=colors.get(name))
        ax2.plot(r.t_s, r.hw_gbps, label=f"{name}: hardware switch", color=colors.get(name))
        ax2.plot(r.t_s, r.sw_gbps, label=f"{name}: software switches", color=colors.get(name), ls="--", lw=1)
    ax1.set_yscale("log")
    ax1.set_ylabel("mean packet latency (us, log)")
    ax1.set_title("Figure A.2 (top): modelled per-packet latency (switch hops + links + queueing at the instance)",
                  fontsize=10)
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=8)
    ax2.set_ylabel("switch throughput (Gbps)")
    ax2.set_xlabel("time (s)")
    ax2.set_title("Figure A.2 (bottom): switch bandwidth, every pass counted (a detour crosses the hardware "
                  "switch twice)", fontsize=10)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    p = d / "scale_a2_latency_bandwidth.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    if "elastic" in res:
        r = res["elastic"]
        fig, ax = plt.subplots(figsize=(9, 3.5))
        used = np.flatnonzero(r.load_pps.max(axis=0) > 0)
        for i in used:
            ax.plot(r.t_s, r.load_pps[:, i] / 1e6, label=f"instance {i}")
        for t, e in r.events:
            if e.startswith(("split", "scale in")):
                ax.axvline(t, color="grey", ls=":", lw=1)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("offered load (Mpps)")
        ax.set_title(f"elastic: load x1 / x1.8 / x0.4; {r.affinity_violations} affinity violations", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = d / "scale_elastic.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written


__all__ = ["plot_scale"]
