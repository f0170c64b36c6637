"""Fault tolerance on the process master (2 worker processes): its cost, its pauses, its failover.

- ``test_stream_cost``: MazuNAT through the *streaming* FT master (:mod:`vnfkit.recovery.ft_runner`),
  no FT against checkpoint + replay (50 ms checkpoints, in-process storage) on the same trace in one
  run, interleaved, ``VNFKIT_BENCH_ROUNDS`` rounds each (default 3): closed-loop throughput (median)
  and its loss in %; replay with no checkpoint during the run (the cost of logging and output
  commit alone); then open loop at one offered load for both, half the lower of the two closed-loop
  rates (so neither queues up), p50/p99 latency (arrival to release) of both and the p50 added;
  next to them, the process runtime's own closed loop (``ProcessRunner.run``, no FT, outputs
  counted natively) on the same batches, interleaved too, and the replay loss against it (the
  honest no-FT baseline: the streaming master's own no-FT loop is slower); and, on a box with two
  CPUs, no FT and replay again with the master on the first and both workers on the second
  (``master_cpus`` / ``worker_cpus``: the master is the bottleneck here). Input batches of
  ``VNFKIT_BENCH_STREAM_BATCH`` packets (default 128; both sides alike), ``VNFKIT_BENCH_STREAM_PACKETS``
  packets of 3 000 flows (default 300 000: long enough for several checkpoints in every run). Asserts
  every packet released once, nothing held, a checkpoint at least every two intervals of every
  replay run, and run() processed every packet.
- ``test_stream_latency_placed``: open loop at fixed offered loads (``VNFKIT_BENCH_LATENCY_KPPS``,
  default 300, 600 and 1 200 kpps), the master on the first CPU and both workers on the second, no
  FT and checkpoint + replay interleaved, ``VNFKIT_BENCH_ROUNDS`` rounds each; the median over
  rounds of each p50 and p99 (arrival to release), the p50 added by replay at each load and its
  rounds. Asserts every packet released once.
- ``test_stream_cost_others``: the throughput loss of the other middleboxes with a recovery workload
  (against the streaming no-FT loop and against the runtime's ``run()``).
- ``test_stream_failover``: SIGKILL of one worker of the streaming master at random points, traffic
  paced at ``VNFKIT_BENCH_RATE`` (default 1.49 Mpps) with a hot backup, per storage backend
  (memory, file, Redis), heartbeat timeout ``VNFKIT_BENCH_HEARTBEAT_MS`` (default 0: the pidfd
  alone); asserts every trial correct and reports detect / restore / replay, the rate the master
  took the traffic in at, and how many trials a heartbeat suspicion fenced before the kill.
- ``test_stream_failover_offered``: the same failover with the offered load actually taken in:
  ``VNFKIT_BENCH_OFFERED_PACKETS`` packets per trial (default 150 000, 100 ms at 1.49 Mpps: the crash
  falls after a checkpoint interval or more), in-process storage, the master on the first CPU and
  both workers on the second, once with a *warm* backup (it restores each checkpoint as it becomes
  stable; the failover replays what came after) and once with a *hot* one (it also replays every
  stable input, every 5 ms, in the master's process); asserts every trial correct and reports the
  rate taken in and the recovery split of each.
- ``test_stream_checkpoint_large_tables``: the streaming master's checkpoints with large tables:
  MazuNAT (endpoint-dependent, ``max_flows`` 262 144) loaded with ``VNFKIT_BENCH_CKPT_FLOWS`` flows
  per worker (default 100 000), then four more packets of every flow in a closed loop, checkpoint +
  replay, 50 ms checkpoints, the master on the first CPU and the workers on the second, once per
  way of writing the worker images (``VNFKIT_BENCH_LARGE_IMAGES``, default ``auto,fork``: ``auto``
  is deltas for MazuNAT). Per checkpoint of the steady phase: the stream's pause (drain + the
  shared-state image), the slowest worker's stall for its image, and the master's own work once
  the images are in (reading them, building the record, the group commit); each worker's
  pre-copy stalls (wall, CPU, size; ``VNFKIT_BENCH_PRECOPY_PACKETS`` sets ``precopy_packets``, unset
  its default, 0 off); and the phase's rate.
  Asserts every packet released once, nothing held, each worker holding its flows, and at least
  two checkpoints in the steady phase.
- ``test_checkpoint_pause``: pauses of shipped (``sync``), copy-on-write (``fork``) and
  dirty-tracking (``delta``: each worker writes what changed, the master keeps the images)
  checkpoints with ``VNFKIT_BENCH_CKPT_FLOWS`` flows per worker (default 100 000); asserts every
  checkpoint was taken (and, in fork mode, every image collected) and every packet released.
- ``test_failover``: the closed-loop process master (one ``run()`` per batch), SIGKILL at random
  points with a hot backup; asserts every trial recovered correctly and reports detect / restore / replay.

Figures on a shared 2-core box are indicative. Run:
``PYTHONPATH=python python -m pytest benches/bench_recovery.py``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

from vnfkit.recovery.ft_trial import runtime_cost, stream_cost, stream_trial
from vnfkit.recovery.process_master import process_trial, random_process_trials
from vnfkit.recovery.trials import summarize
from vnfkit.recovery.workloads import workload

CKPT_FLOWS = int(os.environ.get("VNFKIT_BENCH_CKPT_FLOWS", "100000"))
TRIALS = int(os.environ.get("VNFKIT_BENCH_TRIALS", "20"))
ROUNDS = int(os.environ.get("VNFKIT_BENCH_ROUNDS", "3"))
RATE = float(os.environ.get("VNFKIT_BENCH_RATE", "1.49e6"))
#: how the workers write their checkpoint images in the failover benches (ft_board.WORKER_IMAGES)
WORKER_IMAGES = os.environ.get("VNFKIT_BENCH_WORKER_IMAGES", "auto")
# long enough for several 50 ms checkpoints inside every closed-loop run on this box
STREAM_PACKETS = int(os.environ.get("VNFKIT_BENCH_STREAM_PACKETS", "300000"))
FAILOVER_PACKETS = int(os.environ.get("VNFKIT_BENCH_FAILOVER_PACKETS", "30000"))
CHECKPOINT_S = 0.050
OFFERED_PACKETS = int(os.environ.get("VNFKIT_BENCH_OFFERED_PACKETS", "150000"))
STREAM_BATCH = int(os.environ.get("VNFKIT_BENCH_STREAM_BATCH", "128"))
#: CPUs of the placed stream-cost runs: the master's and the workers' (the first two this process may use)
PLACE = sorted(os.sched_getaffinity(0))[:2]


def _pct(xs: list[float], scale: float = 1e3) -> dict[str, float]:
    """Percentiles of `xs` times `scale` (seconds to ms by default)."""
    a = np.asarray(xs) * scale
    return {k: round(float(np.percentile(a, q)), 3) for k, q in (("p50", 50), ("p99", 99), ("p99.9", 99.9))} | {
        "max": round(float(a.max()), 3), "n": len(xs)}


@pytest.mark.parametrize("mode", ["sync", "fork", "delta"])
def test_checkpoint_pause(benchmark, mode):
    w = workload("monitor", packets=2 * 2 * CKPT_FLOWS, flows=2 * CKPT_FLOWS, batch=4096, seed=12)
    out = {}

    def run() -> None:
        out["r"] = process_trial(w, None, strategy="replay", checkpoint_every=4, checkpoint_mode=mode,
                                 oracle=False)

    benchmark.pedantic(run, rounds=1, iterations=1)
    r = out["r"]
    assert r.released_master == sum(len(b) for b in w.batches)
    assert len(r.checkpoint_pauses_s) == 1 + len(w.batches) // 4 >= 2
    benchmark.extra_info["flows_per_worker"] = CKPT_FLOWS
    benchmark.extra_info["pause_ms"] = _pct(r.checkpoint_pauses_s[1:])  # the first cut is of empty tables
    if mode in ("fork", "delta"):  # delta: the slowest worker's own stop per checkpoint
        benchmark.extra_info["fork_ms"] = _pct(r.checkpoint_fork_s[1:])


def test_failover(benchmark):
    out = {}

    def run() -> None:
        out["rs"] = random_process_trials("mazunat", "replay", TRIALS, seed=13, packets=20_000,
                                          checkpoint_interval_s=0.050, backup_mode="hot")

    benchmark.pedantic(run, rounds=1, iterations=1)
    s = summarize(out["rs"])
    assert s["correct"] == TRIALS, s
    for k in ("recovery_ms", "detect_ms", "handover_ms", "restore_ms", "replay_ms"):
        benchmark.extra_info[k] = {q: round(v, 2) for q, v in s[k].items()}


def _parsed(nf: str, packets: int, seed: int):
    w = workload(nf, packets=packets, flows=max(10, min(3000, packets // 20)), batch=STREAM_BATCH, seed=seed)
    for b in w.batches:
        b.parse()
    return w


def _checked(r: dict, n: int) -> dict:
    assert r["released"] == n and r["held"] == 0, r
    assert not r["events"], r["events"]
    return r


def _runtime(w, n: int) -> dict:
    r = runtime_cost(w)
    assert r["packets"] == n, r
    return r


def _loss(w, rounds: int, n: int) -> tuple[dict, dict]:
    """Interleaved runtime run() / no-FT / replay closed-loop runs of one trace; median pps of each."""
    runs: dict[str, list[dict]] = {"run": [], "none": [], "replay": []}
    for i in range(rounds):
        runs["run"].append(_runtime(w, n))
        for strategy in _pair_order(i):
            runs[strategy].append(_checked(stream_cost(w, strategy), n))
    for r in runs["replay"]:
        # the first checkpoint is taken before any input; the run itself must take them as they fall
        # due (at least one per two intervals: an interval stretches while the images are written)
        due = int(r["seconds"] / (2 * CHECKPOINT_S))
        assert r["checkpoints"] - 1 >= due, (r["checkpoints"], r["seconds"])
    med = {k: float(np.median([r["pps"] for r in v])) for k, v in runs.items()}
    return med, runs


def _pair_order(i: int) -> tuple[str, str]:
    """The order of round i's two runs: no FT first in even rounds, replay first in odd ones, so a
    drift in the box's speed within a round does not favour either."""
    return ("none", "replay") if i % 2 == 0 else ("replay", "none")


def _paired_loss(none: list[float], replay: list[float]) -> dict[str, Any]:
    """Throughput loss of each round's replay run against the same round's no-FT run (%): the two
    ran back to back, so a slow spell of the shared box hits both. Median and every round, sorted."""
    loss = [100 * (1 - r / b) for b, r in zip(none, replay)]
    return {"median": round(float(np.median(loss)), 1), "rounds": sorted(round(x, 1) for x in loss)}


def _cpu(runs: dict[str, list[dict]]) -> dict[str, Any]:
    """CPU time per packet (ns) of the master's thread and of the workers, per strategy: median and
    every round, sorted; and how much replay adds to each (% of the no-FT median). CPU time leaves
    out the time a shared box's other tenants take, so it varies less than throughput does."""
    out: dict[str, Any] = {}
    for who in ("master", "workers"):
        per = {k: [r["cpu_ns_per_packet"][who] for r in runs[k]] for k in ("none", "replay")}
        if any(x is None for v in per.values() for x in v):
            continue
        med = {k: float(np.median(v)) for k, v in per.items()}
        out[who] = {k: {"median": round(med[k], 1), "rounds": sorted(round(x) for x in v)} for k, v in per.items()}
        out[who]["replay_adds_pct"] = round(100 * (med["replay"] / med["none"] - 1), 1)
    return out


def _spread(runs: list[dict]) -> list[float]:
    """kpps of every round, sorted (the spread next to a median)."""
    return sorted(round(r["pps"] / 1e3, 1) for r in runs)


def test_stream_cost(benchmark):
    w = _parsed("mazunat", STREAM_PACKETS, 21)
    out = {}

    def run() -> None:
        med, runs = _loss(w, ROUNDS, STREAM_PACKETS)
        nockpt = [_checked(stream_cost(w, "replay", checkpoint_interval_s=3600.0), STREAM_PACKETS)["pps"]
                  for _ in range(ROUNDS)]
        # the master on a core of its own, both workers on the other (when the box has two)
        placed: dict[str, list[dict]] = {"none": [], "replay": []}
        if len(PLACE) == 2:
            for i in range(ROUNDS):
                for strategy in _pair_order(i):
                    placed[strategy].append(_checked(stream_cost(w, strategy, master_cpus=[PLACE[0]], worker_cpus=[PLACE[1]]),
                                                     STREAM_PACKETS))
        rate = min(med["none"], med["replay"]) / 2  # below what either sustains: latency, not queueing
        lat = {k: [] for k in ("none", "replay")}
        for _ in range(ROUNDS):
            for strategy in ("none", "replay"):
                lat[strategy].append(_checked(stream_cost(w, strategy, rate_pps=rate), STREAM_PACKETS))
        out.update(med=med, runs=runs, nockpt=float(np.median(nockpt)), rate=rate, lat=lat, placed=placed)

    benchmark.pedantic(run, rounds=1, iterations=1)
    med, lat = out["med"], out["lat"]
    p50 = {k: float(np.median([r["latency_us"]["p50"] for r in v])) for k, v in lat.items()}
    p99 = {k: float(np.median([r["latency_us"]["p99"] for r in v])) for k, v in lat.items()}
    pauses = [p for r in out["runs"]["replay"] for p in r["pause_ms"]]
    benchmark.extra_info.update({
        "packets": STREAM_PACKETS, "rounds": ROUNDS, "input_batch": STREAM_BATCH,
        "kpps_runtime_run": round(med["run"] / 1e3, 1),
        "kpps_none": round(med["none"] / 1e3, 1), "kpps_replay": round(med["replay"] / 1e3, 1),
        "kpps_rounds": {k: _spread(v) for k, v in out["runs"].items()},
        "throughput_loss_pct": round(100 * (1 - med["replay"] / med["none"]), 1),
        "throughput_loss_paired_pct": _paired_loss([r["pps"] for r in out["runs"]["none"]],
                                                   [r["pps"] for r in out["runs"]["replay"]]),
        "cpu_ns_per_packet": _cpu(out["runs"]),
        "loss_vs_runtime_run_pct": round(100 * (1 - med["replay"] / med["run"]), 1),
        "none_vs_runtime_run_pct": round(100 * (1 - med["none"] / med["run"]), 1),
        "kpps_replay_no_checkpoint": round(out["nockpt"] / 1e3, 1),
        "loss_no_checkpoint_pct": round(100 * (1 - out["nockpt"] / med["none"]), 1),
        "checkpoint_pause_ms": _pct([p / 1e3 for p in pauses]),
        "checkpoints_per_replay_run": [r["checkpoints"] - 1 for r in out["runs"]["replay"]],
        "replay_run_seconds": [round(r["seconds"], 3) for r in out["runs"]["replay"]],
        "open_loop_kpps": round(out["rate"] / 1e3, 1),
        "p50_us": {k: round(v, 1) for k, v in p50.items()}, "p99_us": {k: round(v, 1) for k, v in p99.items()},
        "p50_added_us": round(p50["replay"] - p50["none"], 1),
    })
    placed = out["placed"]
    if placed["none"]:
        pps = {k: [r["pps"] for r in v] for k, v in placed.items()}
        pn, pr = float(np.median(pps["none"])), float(np.median(pps["replay"]))
        benchmark.extra_info.update({
            "placed_cpus": {"master": PLACE[0], "workers": PLACE[1]},
            "kpps_none_placed": round(pn / 1e3, 1), "kpps_replay_placed": round(pr / 1e3, 1),
            "kpps_placed_rounds": {k: sorted(round(x / 1e3, 1) for x in v) for k, v in pps.items()},
            "throughput_loss_placed_pct": round(100 * (1 - pr / pn), 1),
            "throughput_loss_placed_paired_pct": _paired_loss(pps["none"], pps["replay"]),
            "cpu_ns_per_packet_placed": _cpu(placed),
            # what a checkpoint costs there: the stream's pause, each image's stall of its worker and
            # the master's own work to commit it (the first, whole one, taken before the run, included)
            "checkpoint_placed_ms": {k: _pct([p / 1e3 for r in placed["replay"] for p in r[f]]) for k, f in
                                     (("pause", "pause_ms"), ("image_stall", "image_stall_ms"), ("master_work", "checkpoint_work_ms"))}})


LATENCY_KPPS = [float(x) for x in os.environ.get("VNFKIT_BENCH_LATENCY_KPPS", "300,600,1200").split(",")]


def test_stream_latency_placed(benchmark):
    if len(PLACE) < 2:
        pytest.skip("placement needs two CPUs")
    w = _parsed("mazunat", STREAM_PACKETS // 2, 24)
    out: dict[float, dict[str, list[dict]]] = {}

    def run() -> None:
        for kpps in LATENCY_KPPS:
            out[kpps] = {"none": [], "replay": []}
            for _ in range(ROUNDS):
                for strategy in ("none", "replay"):
                    out[kpps][strategy].append(_checked(stream_cost(w, strategy, rate_pps=kpps * 1e3, master_cpus=[PLACE[0]],
                                                                    worker_cpus=[PLACE[1]]), STREAM_PACKETS // 2))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(packets=STREAM_PACKETS // 2, rounds=ROUNDS, placed_cpus={"master": PLACE[0], "workers": PLACE[1]})
    for kpps, by in out.items():
        p50 = {k: [r["latency_us"]["p50"] for r in v] for k, v in by.items()}
        p99 = {k: [r["latency_us"]["p99"] for r in v] for k, v in by.items()}
        added = [b - a for a, b in zip(p50["none"], p50["replay"])]  # round by round (interleaved)
        benchmark.extra_info[f"{kpps:g}_kpps"] = {
            "p50_us": {k: round(float(np.median(v)), 1) for k, v in p50.items()},
            "p99_us": {k: round(float(np.median(v)), 1) for k, v in p99.items()},
            "p50_added_us_median": round(float(np.median(added)), 1),
            "p50_added_us_rounds": sorted(round(x, 1) for x in added)}


def test_stream_cost_others(benchmark):
    out = {}

    def run() -> None:
        for nf in ("simplenat", "monitor", "adaptive_lb", "qos"):
            w = _parsed(nf, STREAM_PACKETS // 2, 22)
            med, _ = _loss(w, max(1, ROUNDS - 1), STREAM_PACKETS // 2)
            out[nf] = med

    benchmark.pedantic(run, rounds=1, iterations=1)
    for nf, med in out.items():
        benchmark.extra_info[nf] = {"kpps_runtime_run": round(med["run"] / 1e3, 1),
                                    "kpps_none": round(med["none"] / 1e3, 1), "kpps_replay": round(med["replay"] / 1e3, 1),
                                    "throughput_loss_pct": round(100 * (1 - med["replay"] / med["none"]), 1),
                                    "loss_vs_runtime_run_pct": round(100 * (1 - med["replay"] / med["run"]), 1)}


HEARTBEAT_MS = float(os.environ.get("VNFKIT_BENCH_HEARTBEAT_MS", "0"))


@pytest.mark.skipif(len(PLACE) < 2, reason="needs two CPUs: the master on one, the workers on the other")
def test_stream_failover_offered(benchmark):
    trials = max(2, TRIALS // 4)
    rng = np.random.default_rng(23)
    out: dict[str, list] = {"warm": [], "hot": []}

    def run() -> None:
        for t in range(trials):
            w = _parsed("mazunat", OFFERED_PACKETS, int(rng.integers(1 << 30)))
            crash = int(rng.integers(len(w.batches) // 2, len(w.batches) - 2))
            for mode in out:
                out[mode].append(stream_trial(w, crash, kill_worker=t % 2, delay_s=float(rng.uniform(0, 0.002)),
                                              rate_pps=RATE, checkpoint_interval_s=CHECKPOINT_S, backup_mode=mode,
                                              follow_every_s=0.005, master_cpus=[PLACE[0]], worker_cpus=[PLACE[1]],
                                              worker_images=WORKER_IMAGES))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(trials=trials, offered_mpps=RATE / 1e6, packets=OFFERED_PACKETS, worker_images=WORKER_IMAGES,
                                placed_cpus={"master": PLACE[0], "workers": PLACE[1]})
    for mode, rs in out.items():
        s = summarize(rs)
        assert s["correct"] == trials, (mode, s)
        benchmark.extra_info[mode] = {
            "taken_in_kpps": sorted(r.verdict.checked["fed_kpps"] for r in rs),
            "taken_in_kpps_median": float(np.median([r.verdict.checked["fed_kpps"] for r in rs])),
            "replayed_batches_median": float(np.median([r.recovery.replayed_batches for r in rs])),
            **{k: {q: round(v, 2) for q, v in s[k].items()} for k in ("recovery_ms", "detect_ms", "handover_ms", "restore_ms", "replay_ms")}}


def _storage(kind: str, tmp: str):
    """(make one trial's storage, stop everything) for `kind`."""
    from vnfkit.recovery.storage.file import FileStorage
    from vnfkit.recovery.storage.memory import MemoryStorage

    if kind == "memory":
        return MemoryStorage, lambda: None
    if kind == "file":
        count = [0]

        def make():
            count[0] += 1
            return FileStorage(os.path.join(tmp, f"log-{count[0]}"))

        return make, lambda: None
    from vnfkit.recovery.storage.redis import RedisStorage
    from vnfkit.recovery.storage.redis_servers import RedisPair, redis_server_path

    if redis_server_path() is None:
        pytest.skip("redis-server not installed")
    pair = RedisPair()
    count = [0]

    def make_redis():
        count[0] += 1  # a fresh key prefix per trial: each trial starts from empty storage
        return RedisStorage(unix_socket_path=pair.primary_socket, prefix=f"trial{count[0]}", socket_timeout_s=5.0)

    return make_redis, pair.stop


@pytest.mark.parametrize("kind", ["memory", "file", "redis"])
def test_stream_failover(benchmark, kind, tmp_path):
    trials = TRIALS if kind == "memory" else max(2, TRIALS // 4)
    rng = np.random.default_rng(17)
    out = {"rs": []}
    make, stop = _storage(kind, str(tmp_path))

    def run() -> None:
        for t in range(trials):
            w = _parsed("mazunat", FAILOVER_PACKETS, int(rng.integers(1 << 30)))
            crash = int(rng.integers(1, len(w.batches) - 2))
            st = make()
            try:
                out["rs"].append(stream_trial(w, crash, kill_worker=t % 2, delay_s=float(rng.uniform(0, 0.002)),
                                              rate_pps=RATE, checkpoint_interval_s=CHECKPOINT_S, backup_mode="hot",
                                              storage=st, worker_images=WORKER_IMAGES,
                                              heartbeat_timeout_s=HEARTBEAT_MS / 1e3 if HEARTBEAT_MS > 0 else None))
            finally:
                st.close()

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        stop()
    s = summarize(out["rs"])
    assert s["correct"] == trials, s
    benchmark.extra_info.update(storage=kind, trials=trials, offered_mpps=RATE / 1e6, heartbeat_ms=HEARTBEAT_MS,
                                worker_images=WORKER_IMAGES,
                                taken_in_kpps_median=float(np.median([r.verdict.checked["fed_kpps"] for r in out["rs"]])),
                                fenced_before_kill=sum(r.false_suspicions for r in out["rs"]),
                                detected_by_heartbeat=sum(r.verdict.checked["detected_by_heartbeat"] for r in out["rs"]))
    for k in ("recovery_ms", "detect_ms", "handover_ms", "restore_ms", "replay_ms"):
        benchmark.extra_info[k] = {q: round(v, 2) for q, v in s[k].items()}


LARGE_IMAGES = os.environ.get("VNFKIT_BENCH_LARGE_IMAGES", "auto,fork").split(",")
#: packets between a worker's pre-copies with delta images (StreamingMaster's precopy_packets); unset: its default
LARGE_PRECOPY = int(os.environ["VNFKIT_BENCH_PRECOPY_PACKETS"]) if os.environ.get("VNFKIT_BENCH_PRECOPY_PACKETS") else None


def _large_tables_workload():
    """MazuNAT (endpoint-dependent: one address's ports serve every flow; ``max_flows`` 262 144)
    with ``VNFKIT_BENCH_CKPT_FLOWS`` flows per worker: one packet of every flow (the load), then
    four more packets per flow of the same flows (the steady phase), in input batches of 128."""
    from vnfkit import traffic
    from vnfkit.nfs.mazunat import MazuNAT
    from vnfkit.recovery.workloads import Workload

    def split(b):
        return [b.select(np.arange(s, min(s + 128, len(b)), dtype=np.uint32)) for s in range(0, len(b), 128)]

    load = split(traffic.generate(2 * CKPT_FLOWS, 2 * CKPT_FLOWS, seed=1))
    steady = split(traffic.generate(2 * CKPT_FLOWS, 8 * CKPT_FLOWS, seed=1))
    for b in load + steady:
        b.parse()
    return Workload(MazuNAT, {"endpoint_dependent": True, "max_flows": 262144}, load + steady), len(load)


def test_stream_checkpoint_large_tables(benchmark):
    from vnfkit.recovery.ft_runner import StreamingMaster

    if len(PLACE) < 2:
        pytest.skip("placement needs two CPUs")
    w, n_load = _large_tables_workload()
    total = sum(len(b) for b in w.batches)
    out: dict[str, dict] = {}

    def run() -> None:
        for images in LARGE_IMAGES:
            m = StreamingMaster(w.vnf, w.config, queues=2, strategy="replay", batch_size=128, worker_images=images,
                                master_cpus=[PLACE[0]], worker_cpus=[PLACE[1]], precopy_packets=LARGE_PRECOPY)
            try:
                for b in w.batches[:n_load]:
                    m.feed(b)
                m.finish()
                k0 = len(m.checkpoint_pauses_s)  # the steady phase's checkpoints from here
                load_pre = m.precopy_stalls_s(reset=True)[0] if m.precopy_packets else []
                t0 = time.perf_counter()
                for b in w.batches[n_load:]:
                    m.feed(b)
                m.finish()
                wall = time.perf_counter() - t0
                flows = [max(r.values()) for r in m.runner.call_workers(_table_sizes)]
                assert m.released_packets == total and m.held() == 0 and not m.events, (m.released_packets, m.events)
                assert min(flows) >= 0.9 * CKPT_FLOWS, flows  # each worker holds its share of the flows
                n = len(m.checkpoint_work_s)
                assert n - k0 >= 2, "the steady phase took fewer than two checkpoints"
                out[images] = {
                    "worker_images": m.worker_images, "flows_per_worker": flows,
                    "steady_kpps": round((total - sum(len(b) for b in w.batches[:n_load])) / wall / 1e3, 1),
                    "steady_checkpoints": n - k0,
                    "stream_pause_ms": _pct(m.checkpoint_pauses_s[k0:n]),
                    "worker_stall_ms": _pct(m.checkpoint_fork_s[k0:n]),
                    "worker_stall_cpu_ms": _pct(m.checkpoint_fork_cpu_s[k0:n]),
                    "master_work_ms": _pct(m.checkpoint_work_s[k0:n]),
                    "load_master_work_ms": _pct(m.checkpoint_work_s[1:k0]) if k0 > 1 else None,
                    "load_worker_stall_ms": _pct(m.checkpoint_fork_s[1:k0]) if k0 > 1 else None}
                if m.precopy_packets:
                    wall_s, cpu_s, sizes = m.precopy_stalls_s()
                    assert wall_s, "no worker pre-copied"
                    out[images] |= {"precopy_packets": m.precopy_packets, "precopies": len(wall_s),
                                    "precopy_stall_ms": _pct(wall_s), "precopy_stall_cpu_ms": _pct(cpu_s),
                                    "precopy_kib": _pct(sizes, 1 / 1024),
                                    "load_precopy_stall_ms": _pct(load_pre) if load_pre else None}
            finally:
                m.close()

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out)


def _table_sizes(vnf, ctx):
    return {name: len(t) for name, t in ctx.tables.items()}
