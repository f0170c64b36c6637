"""Shared aggregate state: logged vs unlogged accesses on one core (the logging overhead is their
ratio), on the heap and in a POSIX shared-memory arena (what worker processes use), a numpy
baseline, and the determinant-log bytes per access/packet.

Target (MISSION.md): >= 50 M logged shared accesses/s per core; the study needs 0.1-1 M/s."""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest

from vnfkit import state as vs

U64 = np.uint64
N = 1 << 20  # accesses per call: big batches, as the engine sees them


def _inputs(n=N, slots=4096):
    rng = np.random.default_rng(7)
    keys = rng.integers(0, slots, n).astype(U64)
    deltas = np.ones(n, np.int64)
    pids = np.arange(n, dtype=U64)
    return keys, deltas, pids


_shm_seq = itertools.count()


def _state(backend: str):
    """A heap state, or a shared-memory one sized for one worker whose log holds one call's records
    (callers close it once declared: unlinked at once, the mapping lives as long as the objects, and
    nothing is left in /dev/shm)."""
    if backend == "heap":
        return vs.SharedState()
    return vs.SharedState.create_shm(f"vnfkit-bench-{os.getpid()}-{next(_shm_seq)}", 64 << 20, max_workers=1,
                                     log_records=N)


def _counters(logged: bool, keyed: bool = False, backend: str = "heap"):
    s = _state(backend)
    c = s.counters("per_src", 16384 if keyed else 4096, keyed=keyed)  # keyed: 4096 keys, load 1/4
    ctx = s.context(0, logged=logged)
    s.close()  # unlinks a shared-memory state (no-op on the heap)
    return s, c, ctx


@pytest.mark.parametrize("backend", ["heap", "shm"])
@pytest.mark.parametrize("mode", ["unlogged", "logged"])
@pytest.mark.parametrize("kind", ["direct", "keyed"])
@pytest.mark.benchmark(group="state-counters")
def test_counter_add(benchmark, mode, kind, backend):
    keys, deltas, pids = _inputs()
    s, c, ctx = _counters(mode == "logged", keyed=kind == "keyed", backend=backend)
    assert ctx.log_in_shared_memory == (backend == "shm" and mode == "logged")
    first = c.add(ctx, keys, deltas, pids)  # checked once against numpy
    ctx.reset_log(ctx.position)
    ref = np.bincount(keys.astype(np.intp), minlength=4096)
    k, v = c.items()
    assert len(k) == 4096 and np.array_equal(v, ref[k.astype(np.intp)]) and first.max() == ref.max()

    def run():
        out = c.add(ctx, keys, deltas, pids)
        ctx.reset_log(ctx.position)  # the log is shipped elsewhere; keep memory bounded here
        return out

    out = benchmark(run)
    _, vals = c.items()
    calls = int(vals.sum()) // N
    assert int(vals.sum()) == N * calls and calls >= 2
    assert np.array_equal(vals, calls * ref[k.astype(np.intp)]) and out.max() == vals.max()
    benchmark.extra_info["ops"] = N
    benchmark.extra_info["log_bytes_per_access"] = vs.DETERMINANT_BYTES if mode == "logged" else 0


@pytest.mark.benchmark(group="state-counters")
def test_counter_add_numpy_baseline(benchmark):
    keys, deltas, _ = _inputs()
    acc = np.zeros(4096, np.int64)

    def run():
        np.add.at(acc, keys.astype(np.intp), deltas)

    benchmark(run)
    assert acc.sum() % N == 0 and acc.sum() > 0
    benchmark.extra_info["ops"] = N


@pytest.mark.parametrize("backend", ["heap", "shm"])
@pytest.mark.parametrize("mode", ["unlogged", "logged"])
@pytest.mark.benchmark(group="state-port-pool")
def test_pool_allocate_release(benchmark, mode, backend):
    s = _state(backend)
    pool = s.port_pool("nat", 50000, 65535)
    ctx = s.context(0, logged=mode == "logged")
    s.close()
    pids = np.arange(8192, dtype=U64)

    def run():
        ports = pool.allocate(ctx, pids)
        ok = pool.release(ctx, ports, pids)
        ctx.reset_log(ctx.position)
        return ports, ok

    ports, ok = benchmark(run)
    assert len(set(ports.tolist())) == 8192 and ok.all() and pool.allocated_count == 0
    benchmark.extra_info["ops"] = 2 * 8192


@pytest.mark.parametrize("mode", ["unlogged", "logged"])
@pytest.mark.benchmark(group="state-token-bucket")
def test_token_bucket_consume(benchmark, mode):
    s = vs.SharedState()
    tb = s.token_buckets("rl", 1024, rate_per_s=1e3, burst=8)
    ctx = s.context(0, logged=mode == "logged")
    keys, _, pids = _inputs(n=1 << 18, slots=1024)
    step = pids * U64(100)
    clock = [0]

    def run():
        clock[0] += 1 << 40  # time moves on between rounds, so buckets refill
        out = tb.consume(ctx, keys, step + U64(clock[0]), pids)
        ctx.reset_log(ctx.position)
        return out

    out = benchmark(run)
    # per bucket ~256 packets over 26 ms: a burst of 8, then one token per ms
    assert out.dtype == np.bool_ and 0.05 < out.mean() < 0.9
    benchmark.extra_info["ops"] = len(keys)


def _best_rate(fn, n, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best / 1e6


@pytest.mark.benchmark(group="state-overhead")
def test_logging_overhead_ratio_and_log_bytes(benchmark, pytestconfig):
    """Logged vs unlogged in the same run, on the heap and in shared memory, plus the bytes shipped
    per access and per packet."""
    keys, deltas, pids = _inputs()
    _, cu, ctx_u = _counters(False)
    _, cl, ctx_l = _counters(True)
    _, su, sctx_u = _counters(False, backend="shm")
    _, sl, sctx_l = _counters(True, backend="shm")
    assert sctx_l.log_in_shared_memory and not ctx_l.log_in_shared_memory
    repeat = 1 if pytestconfig.getoption("benchmark_disable") else 7

    def logged():
        cl.add(ctx_l, keys, deltas, pids)
        ctx_l.reset_log(ctx_l.position)

    def shm_logged():
        sl.add(sctx_l, keys, deltas, pids)
        sctx_l.reset_log(sctx_l.position)

    unlogged_rate = _best_rate(lambda: cu.add(ctx_u, keys, deltas, pids), N, repeat)
    logged_rate = _best_rate(logged, N, repeat)
    shm_unlogged_rate = _best_rate(lambda: su.add(sctx_u, keys, deltas, pids), N, repeat)
    shm_logged_rate = _best_rate(shm_logged, N, repeat)
    # log bytes: one realistic packet = one counter add + one token-bucket check on a 4 KiB batch
    s = vs.SharedState()
    c = s.counters("per_src", 4096)
    tb = s.token_buckets("rl", 4096, rate_per_s=1e6, burst=64)
    ctx = s.context(0)
    b = 4096
    c.add(ctx, keys[:b].copy(), deltas[:b].copy(), pids[:b].copy())
    tb.consume(ctx, keys[:b].copy(), pids[:b] * U64(100), pids[:b].copy())
    chunk = ctx.drain_chunk()
    benchmark.pedantic(logged, rounds=repeat, iterations=1)
    assert len(chunk) == 24 + 2 * b * vs.DETERMINANT_BYTES + 4
    assert vs.log_records(chunk)[0].shape == (2 * b,)
    assert cl.get(0) % cu.get(0) == 0 and cu.get(0) > 0
    assert sl.get(0) == su.get(0) == cu.get(0) and cl.get(0) == 2 * cu.get(0)
    benchmark.extra_info.update(
        ops=N,
        unlogged_M_per_s=round(unlogged_rate, 1),
        logged_M_per_s=round(logged_rate, 1),
        logged_over_unlogged=round(logged_rate / unlogged_rate, 3),
        shm_unlogged_M_per_s=round(shm_unlogged_rate, 1),
        shm_logged_M_per_s=round(shm_logged_rate, 1),
        shm_logged_over_heap_logged=round(shm_logged_rate / logged_rate, 3),
        log_bytes_per_access=len(chunk) / (2 * b),
        log_bytes_per_packet=len(chunk) / b,
    )
    print(f"\nheap: unlogged {unlogged_rate:.1f} M/s, logged {logged_rate:.1f} M/s "
          f"(ratio {logged_rate / unlogged_rate:.3f}); shm: unlogged {shm_unlogged_rate:.1f} M/s, "
          f"logged {shm_logged_rate:.1f} M/s; log bytes/packet {len(chunk) / b:.2f}")
