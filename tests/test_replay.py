"""Replay: damaged, truncated, tampered or mismatched logs are reported as DivergenceError naming
the packet and the variable; a faithful replay forces the logged outcomes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from _shm import ShmStates
from vnfkit import state as vs

U64 = np.uint64
_master = vs.SharedState  # what workload() records on; the fixture below also runs it in shared memory


@pytest.fixture(autouse=True, params=["heap", "shm"])
def master_state(request):
    """Every test records its master run once on a heap state and once on a shared-memory one."""
    global _master
    states = ShmStates()
    _master = vs.SharedState if request.param == "heap" else states
    try:
        yield request.param
    finally:
        _master = vs.SharedState
        left = states.finish()
    assert not left, f"shared-memory segments left behind: {left}"


def declare(s):
    return s.counters("hits", 32), s.port_pool("nat", 40000, 40063), s.registers("flag", 2)


def workload(seed=0, threads=2, batches=4, size=64):
    """Two racing workers; returns (snapshot before, inputs, outputs, chunks per thread, final image)."""
    s = _master()
    cnt, pool, reg = declare(s)
    snap = s.snapshot()
    rng = np.random.default_rng(seed)
    inputs = [[(rng.integers(0, 32, size).astype(U64), (np.arange(size, dtype=U64) + U64(t * 10_000 + b * size)))
               for b in range(batches)] for t in range(threads)]
    outs = [[] for _ in range(threads)]
    chunks = [[] for _ in range(threads)]

    def work(t):
        ctx = s.context(t)
        for keys, pids in inputs[t]:
            outs[t].append(step(cnt, pool, reg, ctx, keys, pids))
            chunks[t].append(ctx.drain_chunk())

    ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    [th.start() for th in ths]
    [th.join() for th in ths]
    return snap, inputs, outs, chunks, s.snapshot()


def step(cnt, pool, reg, ctx, keys, pids):
    a = cnt.add(ctx, keys, np.ones(len(keys), np.int64), pids)
    p = pool.allocate(ctx, pids[:4].copy())
    ok = pool.release(ctx, p[p != 0], pids[: int((p != 0).sum())].copy())
    f = reg.fetch_add(ctx, (keys[:8] % U64(2)).copy(), np.ones(8, np.uint32), pids[:8].copy())
    return a, p, ok, f


def replay(snap, inputs, chunks_flat, alter=None):
    s = vs.SharedState()
    cnt, pool, reg = declare(s)
    s.restore(snap)
    rp = vs.Replayer(s, chunks_flat)
    got = []
    for t in range(len(inputs)):
        ctx = rp.context(t)
        for b, (keys, pids) in enumerate(inputs[t]):
            if alter:
                keys, pids = alter(t, b, keys, pids)
            got.append(step(cnt, pool, reg, ctx, keys, pids))
    rp.finish()
    return s, got


def test_faithful_replay_matches():
    snap, inputs, outs, chunks, final = workload()
    s, got = replay(snap, inputs, [c for tc in chunks for c in tc])
    flat = [o for to in outs for o in to]
    for g, o in zip(got, flat):
        for x, y in zip(g, o):
            np.testing.assert_array_equal(x, y)
    assert s.snapshot() == final


def test_chunks_may_arrive_concatenated_and_out_of_order():
    snap, inputs, outs, chunks, final = workload(seed=1)
    blob = b"".join(reversed([c for tc in chunks for c in tc]))
    s, _ = replay(snap, inputs, blob)
    assert s.snapshot() == final


def test_flipped_byte_is_a_crc_divergence():
    snap, inputs, _, chunks, _ = workload()
    bad = bytearray(chunks[0][1])
    bad[40] ^= 0x01
    flat = [c for tc in chunks for c in tc]
    flat[1] = bytes(bad)
    with pytest.raises(vs.DivergenceError, match="CRC32C"):
        replay(snap, inputs, flat)


def test_truncated_chunk_bytes_are_a_divergence():
    snap, inputs, _, chunks, _ = workload()
    flat = [c for tc in chunks for c in tc]
    flat[-1] = flat[-1][:-7]
    with pytest.raises(vs.DivergenceError, match="truncated"):
        replay(snap, inputs, flat)
    with pytest.raises(vs.DivergenceError, match="magic"):
        vs.parse_log_chunks(b"x" * 40)


def test_truncated_log_names_packet_and_variable():
    snap, inputs, _, chunks, _ = workload()
    flat = chunks[0] + chunks[1][:-1]  # thread 1's last chunk never reached storage
    with pytest.raises(vs.DivergenceError, match=r"packet 10192 asks for counter.add on 'hits'.*no more records"):
        replay(snap, inputs, flat)


def test_missing_middle_chunk_is_a_gap():
    snap, inputs, _, chunks, _ = workload()
    flat = chunks[0][:1] + chunks[0][2:] + chunks[1]
    with pytest.raises(vs.DivergenceError, match="missing"):
        replay(snap, inputs, flat)


def test_different_key_or_packet_diverges():
    snap, inputs, _, chunks, _ = workload()
    flat = [c for tc in chunks for c in tc]

    def other_key(t, b, keys, pids):
        if t == 1 and b == 2:
            keys = keys.copy()
            keys[5] = (keys[5] + U64(1)) % U64(32)
        return keys, pids

    with pytest.raises(vs.DivergenceError, match=r"packet 10133, variable 'hits'\[\d+\].*asks for key"):
        replay(snap, inputs, flat, other_key)

    def other_packet(t, b, keys, pids):
        if t == 0 and b == 1:
            pids = pids.copy()
            pids[0] = U64(999_999)
        return keys, pids

    with pytest.raises(vs.DivergenceError, match=r"packet 999999 asks for counter.add on 'hits', but the log has packet 64"):
        replay(snap, inputs, flat, other_packet)


def test_execution_that_skips_accesses_fails_at_finish():
    snap, inputs, _, chunks, _ = workload()
    s = vs.SharedState()
    cnt, pool, reg = declare(s)
    s.restore(snap)
    rp = vs.Replayer(s, [c for tc in chunks for c in tc])
    ctx = rp.context(0)
    keys, pids = inputs[0][0]
    step(cnt, pool, reg, ctx, keys, pids)
    with pytest.raises(vs.DivergenceError, match="never asked for"):
        rp.finish()


def _retampered(chunks, thread, mutate):
    """Rewrite one thread's records and re-frame them with a valid CRC (an adversarial log)."""
    recs = vs.log_records(chunks[thread])[thread].copy()
    mutate(recs)
    first = vs.parse_log_chunks(chunks[thread][0])[0][1]
    return vs.encode_log_chunk(thread, first, recs)


def test_tampered_values_with_valid_crc_are_caught_by_consistency_checks():
    snap, inputs, _, chunks, _ = workload()
    # a counter value changed: the additions no longer chain
    def bump_counter(r):
        i = int(np.nonzero(r["op"] == 1)[0][3])
        r["value"][i] += 5

    flat = [_retampered(chunks, 0, bump_counter)] + chunks[1]
    with pytest.raises(vs.DivergenceError, match="'hits'.*sequence of additions"):
        replay(snap, inputs, flat)

    # the same port handed to two packets: generations collide
    def dup_port(r):
        idx = np.nonzero((r["op"] == 4) & (r["slot"] != 0))[0]
        rel = np.nonzero(r["op"] == 5)[0]
        r["slot"][idx[1]] = r["slot"][idx[0]]
        r["value"][idx[1]] = r["value"][idx[0]]
        r["slot"][rel[1]] = r["slot"][rel[0]]
        r["value"][rel[1]] = r["value"][rel[0]]

    flat = [_retampered(chunks, 0, dup_port)] + chunks[1]
    with pytest.raises(vs.DivergenceError, match="port"):
        replay(snap, inputs, flat)


def test_replay_from_wrong_snapshot_diverges():
    snap, inputs, _, chunks, final = workload()
    with pytest.raises(vs.DivergenceError):
        replay(final, inputs, [c for tc in chunks for c in tc])


def test_clock_and_random_are_forced():
    s = vs.SharedState()
    ctx = s.context(0, seed=42)
    pids = np.arange(5, dtype=U64)
    now, rnd = ctx.now_ns(pids), ctx.random_u64(pids)
    blob = ctx.drain_chunk()
    s2 = vs.SharedState()
    rp = vs.Replayer(s2, blob)
    rc = rp.context(0)
    assert rc.now_ns(pids).tolist() == now.tolist()
    assert rc.random_u64(pids).tolist() == rnd.tolist()
    rp.finish()
    with pytest.raises(vs.DivergenceError, match="clock"):
        vs.Replayer(s2, blob).context(0).random_u64(pids)
    with pytest.raises(ValueError, match="replay"):
        rc.drain_chunk()


def test_start_positions_detect_a_missing_first_chunk():
    snap, inputs, _, chunks, final = workload()
    first1 = vs.parse_log_chunks(chunks[1][0])[0][1]
    s = vs.SharedState()
    declare(s)
    s.restore(snap)
    with pytest.raises(vs.DivergenceError, match="thread 0: records \\[0, "):
        vs.Replayer(s, chunks[0][1:] + chunks[1], start_positions={0: 0, 1: first1})
    rp = vs.Replayer(s, chunks[0] + chunks[1], start_positions={0: 0, 1: first1})
    assert rp.threads == [0, 1] and not rp.finished
