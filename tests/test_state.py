"""Shared aggregate state: real OS threads racing (GIL released) give exact totals, and a replay of
their determinant logs on a fresh copy reproduces every returned value and the final state bit for
bit; semantics checked against small pure-Python references; bad input rejected by name."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vnfkit
from vnfkit import state as vs

U64 = np.uint64


def declare(s: vs.SharedState, pool_hi: int = 50_599):
    return {
        "direct": s.counters("direct", 64),
        "keyed": s.counters("per_src24", 512, keyed=True),
        "pool": s.port_pool("ports", 50_000, pool_hi, np.arange(pool_hi - 50_000 + 1, dtype=np.uint16) % 2),
        "rl": s.token_buckets("rl", 16, rate_per_s=1e6, burst=8),
        "reg": s.registers("reg", 8, initial=7),
    }


def run_batch(v, ctx, keys, deltas, pids, held):
    """One batch of a worker: every kind of shared access. Returns all outcomes."""
    n = len(pids)
    out = {}
    out["direct"] = v["direct"].add(ctx, keys % U64(64), deltas, pids)
    out["keyed"] = v["keyed"].add(ctx, keys, deltas, pids)
    out["read"] = v["keyed"].read(ctx, keys[::3].copy(), pids[::3].copy())
    sub = (keys % U64(2)).astype(np.uint16)
    ports = v["pool"].allocate(ctx, pids, sub)
    out["ports"] = ports
    held.extend(int(p) for p in ports if p)
    # release about half of what this worker holds (plus one double free now and then)
    rel = np.array(held[: len(held) // 2], dtype=np.uint16)
    del held[: len(held) // 2]
    if len(rel) and keys[0] % U64(5) == 0:
        rel = np.append(rel, rel[0])  # double free -> False, logged
    out["released"] = v["pool"].release(ctx, rel, (pids[: len(rel)] if len(rel) <= n else np.resize(pids, len(rel))).copy())
    out["rl"] = v["rl"].consume(ctx, keys % U64(16), pids * U64(200), pids)
    out["reg_add"] = v["reg"].fetch_add(ctx, keys % U64(8), np.ones(n, np.uint32), pids)
    out["reg_cas"] = v["reg"].compare_exchange(
        ctx, keys % U64(8), np.full(n, 9, np.uint32), np.full(n, 1, np.uint32), pids
    )
    out["reg_xchg"] = v["reg"].exchange(ctx, (keys[:4] % U64(8)).copy(), np.full(min(n, 4), 3, np.uint32), pids[:4].copy())
    out["reg_load"] = v["reg"].load(ctx, keys % U64(8), pids)
    out["now"] = ctx.now_ns(pids)
    out["rand"] = ctx.random_u64(pids)
    return out


def make_inputs(seed: int, threads: int, batches: int, size: int):
    rng = np.random.default_rng(seed)
    inputs = []
    for t in range(threads):
        tb = []
        for b in range(batches):
            keys = rng.integers(0, 400, size).astype(U64)
            deltas = rng.integers(-5, 50, size).astype(np.int64)
            pids = (np.arange(size, dtype=U64) + U64((t << 40) | (b * size)))
            tb.append((keys, deltas, pids))
        inputs.append(tb)
    return inputs


def run_threads(s, v, inputs):
    threads = len(inputs)
    outs = [[] for _ in range(threads)]
    chunks = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def work(t):
        ctx = s.context(t)
        held: list[int] = []
        barrier.wait()
        for keys, deltas, pids in inputs[t]:
            outs[t].append(run_batch(v, ctx, keys, deltas, pids, held))
            chunks[t].append(ctx.drain_chunk())

    ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return outs, chunks


@pytest.mark.parametrize("seed", range(12))
def test_threads_race_exact_totals_and_replay_is_bit_for_bit(seed):
    s = vs.SharedState()
    v = declare(s)
    snap0 = s.snapshot()
    threads = 2 + seed % 2
    inputs = make_inputs(seed, threads, batches=6, size=700)
    outs, chunks = run_threads(s, v, inputs)

    # exact totals under the race
    all_keys = np.concatenate([k for tb in inputs for k, _, _ in tb])
    all_d = np.concatenate([d for tb in inputs for _, d, _ in tb])
    ref = {}
    for k, d in zip(all_keys.tolist(), all_d.tolist()):
        ref[k] = ref.get(k, 0) + d
    keys, vals = v["keyed"].items()
    assert dict(zip(keys.tolist(), vals.astype(np.int64).tolist())) == ref
    direct_ref = np.zeros(64, np.int64)
    np.add.at(direct_ref, (all_keys % U64(64)).astype(np.int64), all_d)
    assert [v["direct"].get(i) for i in range(64)] == (direct_ref.astype(np.uint64)).tolist()
    # the pool: exactly the ports handed out and not released are allocated, never one twice
    handed = [p for to in outs for o in to for p in o["ports"].tolist() if p]
    assert v["pool"].allocated_count == len(handed) - sum(int(o["released"].sum()) for to in outs for o in to)
    total_adds = sum(len(p) for tb in inputs for _, _, p in tb)
    assert sum(v["reg"].version(i) for i in range(8)) >= total_adds  # every fetch_add bumped a version
    final = s.snapshot()

    # replay on a fresh copy, one thread after the other, on this thread
    s2 = vs.SharedState()
    v2 = declare(s2)
    s2.restore(snap0)
    rp = vs.Replayer(s2, [c for tc in chunks for c in tc])
    order = list(range(threads))[:: (-1 if seed % 2 else 1)]
    for t in order:
        ctx = rp.context(t)
        held: list[int] = []
        for (keys, deltas, pids), expect in zip(inputs[t], outs[t]):
            got = run_batch(v2, ctx, keys, deltas, pids, held)
            for name in expect:
                np.testing.assert_array_equal(got[name], expect[name], err_msg=name)
    rp.finish()
    assert s2.snapshot() == final


def test_exports():
    assert vnfkit.SharedState is vs.SharedState
    assert issubclass(vnfkit.DivergenceError, RuntimeError)


def test_pool_exhaustion_is_reported_and_counted():
    s = vs.SharedState()
    pool = s.port_pool("p", 1000, 1009)
    ctx = s.context(0)
    ports = pool.allocate(ctx, np.arange(14, dtype=U64))
    assert sorted(ports[ports != 0].tolist()) == list(range(1000, 1010))
    assert (ports == vs.PORT_EXHAUSTED).sum() == 4
    assert pool.exhausted_events == 4 and pool.free_count() == 0
    ok = pool.release(ctx, np.array([1003, 1003], np.uint16), np.array([20, 21], U64))
    assert ok.tolist() == [True, False]
    assert pool.allocate(ctx, np.array([22], U64)).tolist() == [1003]


def test_pool_subpools_hand_out_only_their_ports():
    s = vs.SharedState()
    sub = (np.arange(64) % 4).astype(np.uint16)  # e.g. which queue each port's RSS hash maps to
    pool = s.port_pool("p", 2000, 2063, sub)
    ctx = s.context(0, logged=False)
    assert pool.subpools == 4
    want = np.array([3] * 16 + [3], np.uint16)
    ports = pool.allocate(ctx, np.arange(17, dtype=U64), want)
    assert all((p - 2000) % 4 == 3 for p in ports[:16].tolist()) and ports[16] == 0
    assert pool.free_count(3) == 0 and pool.free_count(0) == 16


def test_keyed_counters_full_table_is_reported():
    s = vs.SharedState()
    c = s.counters("c", 4, keyed=True)
    ctx = s.context(0)
    out = c.add(ctx, np.arange(6, dtype=U64), np.ones(6, np.int64), np.arange(6, dtype=U64))
    assert (out == vs.COUNTER_FULL).sum() == 2 and c.full_events == 2
    assert c.read(ctx, np.array([1, 99], U64), np.array([7, 8], U64)).tolist() == [1, 0]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(1, 3)), min_size=1, max_size=60),
    st.floats(1e3, 1e6),
    st.integers(1, 10),
)
def test_token_bucket_matches_gcra_reference(ops, rate, burst):
    s = vs.SharedState()
    tb = s.token_buckets("tb", 4, rate_per_s=rate, burst=burst)
    ctx = s.context(0)
    interval = tb.ns_per_token
    tat = [0] * 4
    now_clock = 0
    expect = []
    rows = []
    for b, dt, cost in ops:
        now_clock += dt
        t = max(tat[b], now_clock)
        nxt = t + cost * interval
        ok = nxt - now_clock <= burst * interval
        if ok:
            tat[b] = nxt
        expect.append(ok)
        rows.append((b, now_clock, cost))
    arr = np.array(rows, dtype=np.uint64)
    got = tb.consume(ctx, arr[:, 0].copy(), arr[:, 1].copy(), np.arange(len(rows), dtype=U64), arr[:, 2].astype(np.uint32))
    assert got.tolist() == expect


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["load", "store", "xchg", "add", "cas"]), st.integers(0, 2),
                          st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40))
def test_registers_match_reference(ops):
    s = vs.SharedState()
    r = s.registers("r", 3, initial=2)
    ctx = s.context(0)
    ref = [2, 2, 2]
    ver = [0, 0, 0]
    for i, (op, slot, a, b) in enumerate(ops):
        sl = np.array([slot], U64)
        pid = np.array([i], U64)
        av = np.array([a], np.uint32)
        if op == "load":
            seen = r.load(ctx, sl, pid)
        elif op == "store":
            seen = r.store(ctx, sl, av, pid)
        elif op == "xchg":
            seen = r.exchange(ctx, sl, av, pid)
        elif op == "add":
            seen = r.fetch_add(ctx, sl, av, pid)
        else:
            seen = r.compare_exchange(ctx, sl, av, np.array([b], np.uint32), pid)
        assert seen.tolist() == [ref[slot]]
        new = {"store": a, "xchg": a, "add": ref[slot] + a, "cas": b if ref[slot] == a else None, "load": None}[op]
        if new is not None:
            ref[slot] = new
            ver[slot] += 1
    assert [r.get(i) for i in range(3)] == ref and [r.version(i) for i in range(3)] == ver


def test_unlogged_context_appends_nothing_logged_one_record_per_access():
    s = vs.SharedState()
    c = s.counters("c", 8)
    u, lg = s.context(0, logged=False), s.context(1)
    k = np.arange(8, dtype=U64)
    c.add(u, k, np.ones(8, np.int64), k)
    c.add(lg, k, np.ones(8, np.int64), k)
    assert u.position == 0 and lg.position == 8 and lg.held == 8
    assert s.positions().tolist() == [0, 8]
    blob = lg.drain_chunk()
    assert len(blob) == 24 + 8 * vs.DETERMINANT_BYTES + 4 and lg.held == 0 and lg.position == 8
    recs = vs.log_records(blob)[1]
    assert recs["value"].tolist() == [2] * 8 and recs["packet_id"].tolist() == list(range(8))
    assert {vs.OPS[o] for o in recs["op"].tolist()} == {"counter.add"}
    assert u.mode == "unlogged" and lg.mode == "logged"
    with pytest.raises(ValueError, match="mode"):
        s.context(0, logged=True)


def test_snapshot_restore_every_type():
    s = vs.SharedState()
    v = declare(s)
    ctx = s.context(0)
    held: list[int] = []
    keys, deltas, pids = make_inputs(3, 1, 1, 200)[0][0]
    run_batch(v, ctx, keys, deltas, pids, held)
    for name, obj in v.items():
        img = obj.snapshot()
        s2 = vs.SharedState()
        o2 = declare(s2)[name]
        o2.restore(img)
        assert o2.snapshot() == img, name
    s3 = vs.SharedState()
    declare(s3)
    s3.restore(s.snapshot())
    assert s3.snapshot() == s.snapshot()
    with pytest.raises(ValueError, match="counters"):
        v["direct"].restore(v["pool"].snapshot())
    with pytest.raises(ValueError):
        v["direct"].restore(v["direct"].snapshot()[:-1])
    other = vs.SharedState()
    other.counters("direct", 64)
    with pytest.raises(ValueError, match="variables"):
        other.restore(s.snapshot())


def test_bad_arguments_are_rejected_by_name():
    s = vs.SharedState()
    c = s.counters("c", 8)
    kc = s.counters("k", 8, keyed=True)
    pool = s.port_pool("p", 100, 110)
    tb = s.token_buckets("t", 2, 10.0, 2)
    r = s.registers("r", 2)
    ctx = s.context(0)
    k = np.arange(3, dtype=U64)
    d = np.ones(3, np.int64)
    with pytest.raises(TypeError, match="keys"):
        c.add(ctx, k.astype(np.int64), d, k)
    with pytest.raises(TypeError, match="deltas"):
        c.add(ctx, k, d.astype(np.int32), k)
    with pytest.raises(TypeError, match="packet_ids"):
        c.add(ctx, k, d, np.arange(6, dtype=U64)[::2])
    with pytest.raises(TypeError):
        c.add(ctx, [0, 1, 2], d, k)
    with pytest.raises(ValueError, match="deltas"):
        c.add(ctx, k, d[:2].copy(), k)
    with pytest.raises(ValueError, match="keys"):
        c.add(ctx, np.array([8], U64), np.ones(1, np.int64), np.zeros(1, U64))
    with pytest.raises(ValueError, match="keys"):
        kc.add(ctx, np.array([2**64 - 1], U64), np.ones(1, np.int64), np.zeros(1, U64))
    with pytest.raises(ValueError, match="ports"):
        pool.release(ctx, np.array([99], np.uint16), np.zeros(1, U64))
    with pytest.raises(ValueError, match="subpool"):
        pool.allocate(ctx, np.zeros(1, U64), np.array([1], np.uint16))
    with pytest.raises(TypeError, match="subpool"):
        pool.allocate(ctx, np.zeros(1, U64), [0])
    with pytest.raises(ValueError, match="buckets"):
        tb.consume(ctx, np.array([2], U64), np.zeros(1, U64), np.zeros(1, U64))
    with pytest.raises(ValueError, match="slots"):
        r.load(ctx, np.array([5], U64), np.zeros(1, U64))
    with pytest.raises(ValueError, match="desired|values"):
        r.store(ctx, np.array([1], U64), np.zeros(0, np.uint32), np.zeros(1, U64))
    assert ctx.position == 0  # nothing logged by rejected calls
    with pytest.raises(ValueError, match="already exists"):
        s.counters("c", 4)
    with pytest.raises(ValueError, match="slots"):
        s.counters("z", 0)
    with pytest.raises(ValueError, match="lo"):
        s.port_pool("p0", 0, 10)
    with pytest.raises(ValueError, match="hi"):
        s.port_pool("p1", 10, 5)
    with pytest.raises(ValueError, match="subpool_of"):
        s.port_pool("p2", 10, 20, np.zeros(3, np.uint16))
    with pytest.raises(ValueError, match="rate_per_s"):
        s.token_buckets("t1", 1, 0.0, 1)
    with pytest.raises(ValueError, match="burst"):
        s.token_buckets("t2", 1, 1.0, 0.5)
    with pytest.raises(ValueError, match="thread"):
        s.context(5000)


def test_threads_racing_on_a_small_pool_never_share_a_port():
    s = vs.SharedState()
    pool = s.port_pool("p", 30_000, 30_999)
    got: list[np.ndarray] = [np.empty(0, np.uint16)] * 3
    barrier = threading.Barrier(3)

    def work(t):
        ctx = s.context(t)
        barrier.wait()
        parts = [pool.allocate(ctx, np.arange(100, dtype=U64) + U64(t * 10_000 + i * 100)) for i in range(5)]
        got[t] = np.concatenate(parts)

    ths = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    [th.start() for th in ths]
    [th.join() for th in ths]
    ports = np.concatenate(got)
    handed = ports[ports != 0]
    assert len(handed) == 1000 and len(np.unique(handed)) == 1000
    assert (ports == 0).sum() == 500 == pool.exhausted_events


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 1), st.integers(0, 11)), max_size=80))
def test_pool_matches_set_reference(ops):
    s = vs.SharedState()
    sub = (np.arange(12) % 2).astype(np.uint16)
    pool = s.port_pool("p", 500, 511, sub)
    ctx = s.context(0)
    held: set[int] = set()
    for i, (alloc, sp, off) in enumerate(ops):
        pid = np.array([i], U64)
        if alloc:
            port = int(pool.allocate(ctx, pid, np.array([sp], np.uint16))[0])
            free_in_sub = [p for p in range(500, 512) if (p - 500) % 2 == sp and p not in held]
            if free_in_sub:
                assert port in free_in_sub
                held.add(port)
            else:
                assert port == vs.PORT_EXHAUSTED
        else:
            port = 500 + off
            ok = bool(pool.release(ctx, np.array([port], np.uint16), pid)[0])
            assert ok == (port in held)
            held.discard(port)
        assert pool.allocated_count == len(held)
        assert pool.free_count(0) + pool.free_count(1) == 12 - len(held)
