"""FlowTable against DPDK's rte_hash on the same workload, interleaved pass by pass in one run.

The rte_hash side is our own program, ``rte_hash_peer`` (benches/peer/rte_hash_peer.c; build it
with ``benches/peer/build.sh``, which needs Debian's ``libdpdk-dev``). It is started once as a
child process, builds its table and key streams, and then runs one timed lookup pass per command.
This script builds the FlowTable side (bench_tables.peer_world: the same capacity, fill, stream
length, random keys, random-order hits and absent misses) and alternates: in each repetition one
FlowTable pass and one rte_hash pass per burst size (32 and 64), the order flipped every other
repetition, so load that drifts on a shared box hits both sides alike. A repetition's ratio is
FlowTable's rate over rte_hash's best burst *of that repetition*; the median and spread of those
ratios are what it reports. Every pass is checked (FlowTable: the slots it returned; rte_hash:
the positions, checked by the program itself).

    PYTHONPATH=python taskset -c 0 python benches/peer/vs_rte_hash.py --reps 9 cap1M_fill50
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import bench_tables as bt  # noqa: E402  (the FlowTable side of the workload lives there)

DEFAULT_BINARY = HERE.parent.parent / "build" / "peer" / "rte_hash_peer"
BURSTS = (32, 64)
SEED = 7


class Peer:
    """The rte_hash_peer child process: one table and its two key streams."""

    def __init__(self, binary: str | os.PathLike, capacity: int, fill: int, stream: int):
        cpu = sorted(os.sched_getaffinity(0))[0]
        pin = ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []
        self.proc = subprocess.Popen([*pin, str(binary), str(capacity), str(fill), str(stream), str(SEED)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        first = self._line()
        if not first.startswith("ready "):
            raise RuntimeError(f"rte_hash_peer did not start: {first.strip()!r}")
        self.entries, self.stream = (int(x) for x in first.split()[1:3])

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"rte_hash_peer exited (status {self.proc.wait()}): {err.strip()[-300:]}")
        return line

    def rate(self, what: str, burst: int) -> float:
        """One timed pass: million lookups per second (the program has checked every result)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{what} {burst}\n")
        self.proc.stdin.flush()
        line = self._line().split()
        if line[0] != "ok":
            raise RuntimeError("rte_hash_peer: " + " ".join(line))
        return int(line[3]) / float(line[4]) / 1e6

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def ours(w: dict, what: str) -> float:
    """One timed FlowTable pass: million lookups per second, results checked."""
    stream = w["hits"] if what == "hit" else w["misses"]
    t0 = time.perf_counter()
    out = bt.peer_lookups(w["table"], stream)
    secs = time.perf_counter() - t0
    got = np.concatenate(out)
    ok = (got == w["hit_slots"]).all() if what == "hit" else (got == bt.NO_SLOT).all()
    if not ok:
        raise RuntimeError(f"FlowTable {what}: wrong lookup results")
    return len(stream) / secs / 1e6


def compare(binary: str | os.PathLike, label: str, reps: int, small: bool = False) -> dict[str, dict]:
    """Interleaved passes of both; per op: the FlowTable and rte_hash rates and the ratios."""
    w = bt.peer_world(label, small=small)
    capacity, _ = bt.PEER_TABLES[label]
    peer = Peer(binary, capacity, w["entries"], len(w["hits"]))
    res: dict[str, dict] = {}
    try:
        for rep in range(reps):
            for what in ("hit", "miss"):
                r = res.setdefault(what, {"ours": [], **{b: [] for b in BURSTS}, "ratio": []})
                if rep % 2 == 0:
                    mine = ours(w, what)
                    theirs = {b: peer.rate(what, b) for b in BURSTS}
                else:
                    theirs = {b: peer.rate(what, b) for b in reversed(BURSTS)}
                    mine = ours(w, what)
                r["ours"].append(mine)
                for b in BURSTS:
                    r[b].append(theirs[b])
                r["ratio"].append(mine / max(theirs.values()))
    finally:
        peer.close()
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labels", nargs="*", help=f"tables, of {', '.join(bt.PEER_TABLES)} (default: cap1M_fill50)")
    ap.add_argument("--reps", type=int, default=9, help="interleaved repetitions (default 9)")
    ap.add_argument("--peer", default=str(DEFAULT_BINARY), help=f"the rte_hash_peer program (default {DEFAULT_BINARY})")
    a = ap.parse_args(argv)
    if a.reps < 1:
        ap.error("--reps must be >= 1")
    unknown = [x for x in a.labels if x not in bt.PEER_TABLES]
    if unknown:
        ap.error(f"unknown table {unknown[0]!r} (known: {', '.join(bt.PEER_TABLES)})")
    if not os.access(a.peer, os.X_OK):
        print(f"vs_rte_hash: {a.peer} is not an executable (build it with benches/peer/build.sh)", file=sys.stderr)
        return 1
    for label in a.labels or ["cap1M_fill50"]:
        for what, r in compare(a.peer, label, a.reps).items():
            med = {k: float(np.median(v)) for k, v in r.items()}
            print(f"{label} {what}: FlowTable {med['ours']:.1f} M/s, rte_hash bulk32 {med[32]:.1f} / bulk64 "
                  f"{med[64]:.1f} M/s (medians of {a.reps}); ratio to the best burst: median {med['ratio']:.2f}, "
                  f"min {min(r['ratio']):.2f}, max {max(r['ratio']):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
