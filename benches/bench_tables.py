"""Flow-table benchmarks: FlowTable lookups/inserts at 10 k and 1 M entries, steering lookups
(RangeTable + ExceptionTable), each next to a pure-Python dict/bisect baseline run in the same
session. One core, driven from Python in batches of BATCH keys.

    PYTHONPATH=python python -m pytest -q benches/bench_tables.py --benchmark-only
    (rates: see extra_info "mops" = million operations per second; "bytes_per_entry")

The ``peer_*`` benches do exactly the work of the DPDK ``rte_hash`` peer harness
(../shared/peers/, README there), so the two can be run minutes apart and compared: capacity
1 000 000 and 16 384, half full (500 000 / 8 192 random IPv4 5-tuples), 2 097 152 random-order
lookups of stored keys (hits) and of absent keys (misses), the keys in one contiguous array in
lookup order, FlowTable.lookup called from Python in batches of 4 096. The same figures as
``name value unit`` lines (median of 5 runs, like the peer harness):

    PYTHONPATH=python taskset -c 0 python benches/bench_tables.py [cap1M_fill50 cap16k_fill50]

and side by side with the peer's DPDK program (built by ../shared/peers/build.sh), alternating the
two ``--runs`` times and printing each run's ratio to rte_hash's best burst and the spread:

    PYTHONPATH=python taskset -c 0 python benches/bench_tables.py --vs-peer --runs 3 cap1M_fill50

Interleaved pass by pass with our own rte_hash program (benches/peer/, built by
benches/peer/build.sh against Debian's libdpdk-dev), the ratio's median and spread in one run:

    PYTHONPATH=python taskset -c 0 python benches/peer/vs_rte_hash.py --reps 9 cap1M_fill50

Under --benchmark-disable (CI smoke) the 1 M case shrinks to 20 k entries so it runs in seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS threads would spin on the 2nd core

import bisect

import numpy as np
import pytest

from vnfkit.tables import NO_SLOT, NO_TARGET, ExceptionTable, FlowTable, RangeTable, make_keys, steer

BATCH = 4096
N_QUERIES = 1 << 18  # engine queries per round
N_BASELINE = 1 << 16  # dict baseline queries per round (pure Python is slow)
VALUE = np.dtype([("ext_port", "<u2"), ("pkts", "<u8")])
SIZES = {"10k": 10_000, "1M": 1_000_000}


def keys(n: int, off: int = 0) -> np.ndarray:
    i = np.arange(off, off + n, dtype=np.uint64)
    return make_keys((i * 2654435761) & 0xFFFFFFFF, 0x0B000001 + (i >> 16), i & 0xFFFF, 443, 6)


def batches(a: np.ndarray) -> list[np.ndarray]:
    return [a[s:s + BATCH] for s in range(0, len(a), BATCH)]


_cache: dict[int, dict] = {}


def world(n: int) -> dict:
    """Keys, a filled FlowTable and the equivalent dict for an n-entry table (built once)."""
    if n not in _cache:
        k = keys(n)
        t = FlowTable(n, VALUE, idle_timeout_s=30)
        slots, new = t.lookup_or_insert(k, np.arange(n, dtype=np.uint32), 1)
        assert new.all()
        rng = np.random.default_rng(7)
        qi = rng.integers(0, n, N_QUERIES)
        hits = k[qi]
        misses = keys(N_QUERIES, off=1 << 40)
        d = {kk.tobytes(): int(s) for kk, s in zip(k, slots)}
        _cache[n] = dict(keys=k, table=t, slots=slots, qi=qi, hits=batches(hits), hit_slots=slots[qi],
                         misses=batches(misses), dict=d,
                         hit_bytes=[x.tobytes() for x in hits[:N_BASELINE]],
                         miss_bytes=[x.tobytes() for x in misses[:N_BASELINE]])
    return _cache[n]


def size_of(label: str, benchmark) -> int:
    return 20_000 if (benchmark.disabled and label == "1M") else SIZES[label]


def report(benchmark, ops: int, **extra) -> None:
    benchmark.extra_info["ops"] = ops
    benchmark.extra_info.update(extra)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and not benchmark.disabled:
        benchmark.extra_info["mops"] = round(ops / stats.stats.mean / 1e6, 2)


# ------------------------------------------------------------------------------- FlowTable lookups


@pytest.mark.parametrize("label", list(SIZES))
@pytest.mark.benchmark(group="flow_table_lookup_hit")
def test_flow_lookup_hits_engine(benchmark, label):
    w = world(size_of(label, benchmark))
    t = w["table"]

    def run():
        return [t.lookup(b) for b in w["hits"]]

    out = benchmark(run)
    np.testing.assert_array_equal(np.concatenate(out), w["hit_slots"])
    report(benchmark, N_QUERIES, entries=len(t), bytes_per_entry=t.stats()["bytes_per_entry"])


@pytest.mark.parametrize("label", list(SIZES))
@pytest.mark.benchmark(group="flow_table_lookup_hit")
def test_flow_lookup_hits_dict_baseline(benchmark, label):
    w = world(size_of(label, benchmark))
    d, q = w["dict"], w["hit_bytes"]

    def run():
        get = d.get
        return [get(k, NO_SLOT) for k in q]

    out = benchmark(run)
    assert out == w["hit_slots"][:N_BASELINE].tolist()
    report(benchmark, N_BASELINE, entries=len(d))


@pytest.mark.parametrize("label", list(SIZES))
@pytest.mark.benchmark(group="flow_table_lookup_miss")
def test_flow_lookup_misses_engine(benchmark, label):
    w = world(size_of(label, benchmark))
    t = w["table"]

    def run():
        return [t.lookup(b) for b in w["misses"]]

    out = benchmark(run)
    assert (np.concatenate(out) == NO_SLOT).all()
    report(benchmark, N_QUERIES, entries=len(t))


@pytest.mark.parametrize("label", list(SIZES))
@pytest.mark.benchmark(group="flow_table_lookup_miss")
def test_flow_lookup_misses_dict_baseline(benchmark, label):
    w = world(size_of(label, benchmark))
    d, q = w["dict"], w["miss_bytes"]

    def run():
        get = d.get
        return [get(k, NO_SLOT) for k in q]

    out = benchmark(run)
    assert set(out) == {NO_SLOT}
    report(benchmark, N_BASELINE, entries=len(d))


@pytest.mark.parametrize("label", list(SIZES))
@pytest.mark.benchmark(group="flow_table_lookup_or_insert_hit")
def test_flow_lookup_or_insert_hits_engine(benchmark, label):
    """The per-packet VNF path on established flows: find, refresh the timer, count a packet."""
    w = world(size_of(label, benchmark))
    t = w["table"]
    ids = np.zeros(BATCH, dtype=np.uint32)
    ts = np.full(BATCH, 2, dtype=np.uint64)
    pkts = t.values["pkts"]

    def run():
        out = []
        for b in w["hits"]:
            slots, _ = t._t.lookup_or_insert(b, ids[: len(b)], ts[: len(b)], None)
            out.append(slots)
        return out

    out = benchmark(run)
    np.testing.assert_array_equal(np.concatenate(out), w["hit_slots"])
    assert len(t) == len(w["keys"]) and pkts.base is not None
    report(benchmark, N_QUERIES, entries=len(t))


# ------------------------------------------------- the rte_hash peer harness's workload, side by side

PEER_TABLES = {"cap1M_fill50": (1_000_000, 500_000), "cap16k_fill50": (16_384, 8_192)}
PEER_STREAM = 1 << 21  # lookups per run


def random_keys(n: int, rng: np.random.Generator) -> np.ndarray:
    """n random IPv4 5-tuples (random addresses and ports, TCP or UDP), like the peer's keys."""
    a = rng.integers(0, 2**32, (n, 2), dtype=np.uint64)
    b = rng.integers(0, 2**32, n, dtype=np.uint64)
    return make_keys(a[:, 0], a[:, 1], b & 0xFFFF, (b >> 16) & 0xFFFF, np.where(rng.integers(0, 2, n), 6, 17))


def peer_world(label: str, small: bool = False) -> dict:
    """The peer workload: a table filled with random keys, a hit stream and a miss stream."""
    ck = ("peer", label, small)
    if ck not in _cache:
        capacity, fill = PEER_TABLES[label]
        stream = PEER_STREAM // 16 if small else PEER_STREAM
        rng = np.random.default_rng(2)
        stored = random_keys(fill, rng)
        stored = stored[np.unique(stored.view("V40"), return_index=True)[1]]  # random keys may collide
        t = FlowTable(capacity, np.uint64)
        slots, new = t.lookup_or_insert(stored, np.arange(len(stored), dtype=np.uint32), 1)
        assert new.all() and len(t) == len(stored)
        qi = rng.integers(0, len(stored), stream)
        hits = np.ascontiguousarray(stored[qi])
        misses = random_keys(stream, rng)
        absent = ~np.isin(misses.view("V40"), stored.view("V40"))
        misses = np.ascontiguousarray(misses[absent])
        _cache[ck] = dict(table=t, hits=hits, hit_slots=slots[qi], misses=misses, entries=len(stored))
    return _cache[ck]


def peer_lookups(t: FlowTable, stream: np.ndarray) -> list[np.ndarray]:
    """The timed work: FlowTable.lookup over a contiguous key stream in batches of BATCH."""
    lookup = t.lookup
    return [lookup(stream[s:s + BATCH]) for s in range(0, len(stream), BATCH)]


@pytest.mark.parametrize("label", list(PEER_TABLES))
@pytest.mark.benchmark(group="peer_rte_hash_hit")
def test_peer_lookup_hits(benchmark, label):
    w = peer_world(label, small=benchmark.disabled)
    out = benchmark(peer_lookups, w["table"], w["hits"])
    np.testing.assert_array_equal(np.concatenate(out), w["hit_slots"])
    report(benchmark, len(w["hits"]), entries=w["entries"])


@pytest.mark.parametrize("label", list(PEER_TABLES))
@pytest.mark.benchmark(group="peer_rte_hash_miss")
def test_peer_lookup_misses(benchmark, label):
    w = peer_world(label, small=benchmark.disabled)
    out = benchmark(peer_lookups, w["table"], w["misses"])
    assert (np.concatenate(out) == NO_SLOT).all()
    report(benchmark, len(w["misses"]), entries=w["entries"])


def test_peer_interleaved_with_rte_hash(capsys):
    """Both sides interleaved on the same workload (benches/peer/vs_rte_hash.py): every pass checked."""
    import importlib.util
    from pathlib import Path

    here = Path(__file__).resolve().parent / "peer"
    spec = importlib.util.spec_from_file_location("vs_rte_hash", here / "vs_rte_hash.py")
    vs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vs)
    binary = os.environ.get("VNFKIT_RTE_HASH_PEER", str(vs.DEFAULT_BINARY))
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} not built (benches/peer/build.sh, needs libdpdk-dev)")
    res = vs.compare(binary, "cap1M_fill50", reps=2, small=True)
    for what, r in res.items():
        assert len(r["ratio"]) == 2 and all(x > 0 for x in r["ratio"])
        with capsys.disabled():
            print(f"\n[rte_hash peer, small stream] {what}: ratio to the best burst {np.median(r['ratio']):.2f}")


# ------------------------------------------------------------------------------- FlowTable inserts


@pytest.mark.parametrize("label", list(SIZES))
@pytest.mark.benchmark(group="flow_table_insert")
def test_flow_insert_engine(benchmark, label):
    n = size_of(label, benchmark)
    w = world(n)
    kb = batches(w["keys"])
    ids = batches(np.arange(n, dtype=np.uint32))
    ts = np.ones(BATCH, dtype=np.uint64)
    holder = {}

    def setup():
        holder["t"] = FlowTable(n, VALUE, idle_timeout_s=30)
        return (), {}

    def run():
        t = holder["t"]._t
        return sum(int(t.lookup_or_insert(k, i, ts[: len(k)], None)[1].sum()) for k, i in zip(kb, ids))

    inserted = benchmark.pedantic(run, setup=setup, rounds=1 if benchmark.disabled else 5, iterations=1)
    assert inserted == n and len(holder["t"]) == n
    assert holder["t"].stats()["failed_inserts"] == 0
    report(benchmark, n, bytes_per_entry=holder["t"].stats()["bytes_per_entry"])


@pytest.mark.parametrize("label", list(SIZES))
@pytest.mark.benchmark(group="flow_table_insert")
def test_flow_insert_dict_baseline(benchmark, label):
    n = min(size_of(label, benchmark), N_BASELINE * 4)
    kb = [x.tobytes() for x in world(size_of(label, benchmark))["keys"][:n]]

    def run():
        d: dict[bytes, int] = {}
        for k in kb:
            if k not in d:
                d[k] = len(d)
        return d

    d = benchmark(run)
    assert len(d) == n
    report(benchmark, n)


# ------------------------------------------------------------------------------------ steering

N_RANGES = 16


def steering_world() -> dict:
    if "steer" not in _cache:
        hw = ExceptionTable(2048)
        hw_keys = keys(2048, off=5_000_000)
        hw.insert(hw_keys, 100)
        sw = ExceptionTable()
        sw_keys = keys(20_000, off=6_000_000)
        sw.insert(sw_keys, 200)
        step = 1 << 28
        rt = RangeTable([(i * step, (i + 1) * step - 1, i) for i in range(N_RANGES)])
        rng = np.random.default_rng(3)
        # traffic: 10% hardware exceptions, 10% software exceptions, 80% range-steered
        parts = [hw_keys[rng.integers(0, 2048, N_QUERIES // 10)], sw_keys[rng.integers(0, 20_000, N_QUERIES // 10)],
                 keys(N_QUERIES - 2 * (N_QUERIES // 10), off=7_000_000)]
        q = np.concatenate(parts)
        perm = rng.permutation(len(q))
        q = q[perm]
        ids = rng.integers(0, 2**32, len(q), dtype=np.uint32)
        want = np.concatenate([np.full(len(parts[0]), 100), np.full(len(parts[1]), 200),
                               np.full(len(parts[2]), -1)])[perm]
        want = np.where(want >= 0, want, ids >> 28).astype(np.uint32)
        hwd = {k.tobytes(): 100 for k in hw_keys}
        swd = {k.tobytes(): 200 for k in sw_keys}
        _cache["steer"] = dict(hw=hw, sw=sw, rt=rt, q=batches(q), ids=batches(ids), want=want, hwd=hwd, swd=swd,
                               q_bytes=[k.tobytes() for k in q[:N_BASELINE]], ids_list=ids[:N_BASELINE].tolist(),
                               los=[lo for lo, _, _ in rt.ranges()], ranges=rt.ranges())
    return _cache["steer"]


@pytest.mark.benchmark(group="steering")
def test_steer_engine(benchmark):
    """Exception tables (hardware 2 048 + software 20 k) then a 16-range RangeTable, per packet."""
    w = steering_world()
    ex = [w["hw"], w["sw"]]

    def run():
        return [steer(k, i, ranges=w["rt"], exceptions=ex) for k, i in zip(w["q"], w["ids"])]

    out = benchmark(run)
    np.testing.assert_array_equal(np.concatenate(out), w["want"])
    report(benchmark, N_QUERIES, hw_bytes_per_entry=w["hw"].stats()["memory_bytes"] / 2048)


@pytest.mark.benchmark(group="steering")
def test_steer_dict_bisect_baseline(benchmark):
    w = steering_world()
    hwd, swd, los, ranges = w["hwd"], w["swd"], w["los"], w["ranges"]

    def run():
        out = []
        for k, fid in zip(w["q_bytes"], w["ids_list"]):
            t = hwd.get(k)
            if t is None:
                t = swd.get(k)
            if t is None:
                j = bisect.bisect_right(los, fid) - 1
                t = ranges[j][2] if j >= 0 and fid <= ranges[j][1] else NO_TARGET
            out.append(t)
        return out

    out = benchmark(run)
    assert out == w["want"][:N_BASELINE].tolist()
    report(benchmark, N_BASELINE)


@pytest.mark.benchmark(group="range_table")
def test_range_lookup_engine(benchmark):
    w = steering_world()
    rt = w["rt"]

    def run():
        return [rt.lookup(i) for i in w["ids"]]

    out = benchmark(run)
    np.testing.assert_array_equal(np.concatenate(out), np.concatenate(w["ids"]) >> 28)
    report(benchmark, N_QUERIES)


@pytest.mark.benchmark(group="exception_table")
def test_exception_lookup_engine(benchmark):
    w = steering_world()
    hw = w["hw"]

    def run():
        return [hw.lookup(k) for k in w["q"]]

    out = np.concatenate(benchmark(run))
    assert ((out == 100) == (w["want"] == 100)).all() and set(np.unique(out)) <= {100, NO_TARGET}
    report(benchmark, N_QUERIES, bytes_per_entry=hw.stats()["memory_bytes"] / 2048)


def _peer_figures(reps: int, labels: list[str]) -> dict[str, float]:
    """The peer workload's figures {name: Mops/s} (median of reps runs), each result checked."""
    import time

    figs = {}
    for label in labels:
        w = peer_world(label)
        for what, stream in (("hit", w["hits"]), ("miss", w["misses"])):
            secs = []
            for _ in range(reps):
                t0 = time.perf_counter()
                out = peer_lookups(w["table"], stream)
                secs.append(time.perf_counter() - t0)
                got = np.concatenate(out)
                ok = (got == w["hit_slots"]).all() if what == "hit" else (got == NO_SLOT).all()
                if not ok:
                    raise SystemExit(f"{label} {what}: wrong lookup results")
            figs[f"vnfkit.flow_table.{label}.lookup_batch{BATCH}_{what}"] = len(stream) / float(np.median(secs)) / 1e6
        del _cache[("peer", label, False)]
    return figs


def _run_dpdk_peer(binary: str, reps: int) -> dict[str, float]:
    """Run the peer harness's DPDK program once; its ``name value unit`` lines as {name: value}."""
    import shutil
    import subprocess

    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    r = subprocess.run([*pin, binary], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PEER_REPS": str(reps)})
    if r.returncode != 0:
        raise SystemExit(f"{binary} exited with status {r.returncode}: {r.stderr.strip()[-300:]}")
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            out[parts[0]] = float(parts[1])
    return out


def _vs_peer(binary: str, runs: int, reps: int, labels: list[str]) -> None:
    """Alternate the DPDK peer and the FlowTable on the same workload; print each run's ratio to
    rte_hash's best burst (32 or 64) and the spread over the runs."""
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"--vs-peer: {binary} is not an executable (build it with ../shared/peers/build.sh)")
    ratios: dict[str, list[float]] = {}
    for run in range(1, runs + 1):
        peer = _run_dpdk_peer(binary, reps)
        ours = _peer_figures(reps, labels)
        for label in labels:
            for what in ("hit", "miss"):
                bursts = {b: peer.get(f"dpdk.rte_hash.{label}.lookup_bulk{b}_{what}") for b in (32, 64)}
                if None in bursts.values():
                    raise SystemExit(f"--vs-peer: the peer printed no rte_hash {label} {what} figures")
                best = max(bursts.values())
                mine = ours[f"vnfkit.flow_table.{label}.lookup_batch{BATCH}_{what}"]
                ratio = mine / best
                ratios.setdefault(f"{label}.{what}", []).append(ratio)
                print(f"run {run} {label} {what}: FlowTable {mine:.2f} M/s, rte_hash bulk32 {bursts[32]:.2f} / "
                      f"bulk64 {bursts[64]:.2f} M/s, ratio to the best burst {ratio:.2f}", flush=True)
    for name, rs in ratios.items():
        print(f"ratio {name}: min {min(rs):.2f} median {float(np.median(rs)):.2f} max {max(rs):.2f} "
              f"over {len(rs)} runs")


def _peer_main(argv: list[str]) -> None:
    """``name value unit`` lines of the peer workload, or with --vs-peer the side-by-side ratio."""
    import argparse

    ap = argparse.ArgumentParser(description="FlowTable on the rte_hash peer harness's workload")
    ap.add_argument("labels", nargs="*", help=f"tables, of {', '.join(PEER_TABLES)} (default: all)")
    ap.add_argument("--reps", type=int, default=int(os.environ.get("PEER_REPS", "5")),
                    help="repetitions per figure (median reported)")
    ap.add_argument("--vs-peer", metavar="DPDK_PEER", nargs="?", const=os.path.join(
        os.environ.get("PEER_OUT", "/tmp/vnfkit-peers"), "dpdk_peer"),
                    help="alternate with the peer's DPDK program (default $PEER_OUT/dpdk_peer) and print ratios")
    ap.add_argument("--runs", type=int, default=3, help="with --vs-peer: alternating runs of both")
    a = ap.parse_args(argv)
    if a.reps < 1 or a.runs < 1:
        ap.error("--reps and --runs must be >= 1")
    unknown = [x for x in a.labels if x not in PEER_TABLES]
    if unknown:
        ap.error(f"unknown table {unknown[0]!r} (known: {', '.join(PEER_TABLES)})")
    labels = a.labels or list(PEER_TABLES)
    if a.vs_peer:
        _vs_peer(a.vs_peer, a.runs, a.reps, labels)
        return
    print(f"# vnfkit FlowTable.lookup from Python, batches of {BATCH}, median of {a.reps} runs")
    for name, v in _peer_figures(a.reps, labels).items():
        print(f"{name} {v:.2f} Mops/s")


if __name__ == "__main__":
    import sys

    _peer_main(sys.argv[1:])
