"""Replay's "one valid interleaving" check for counters, against logs that are tampered yet keep a
valid CRC and balance as a per-slot multiset (what the check used to compare)."""

from __future__ import annotations

import numpy as np
import pytest

from vnfkit import state as vs

U64 = np.uint64


def record(steps):
    """Run (thread, delta) adds on counter slot 0 one after the other; returns snapshot, chunks."""
    s = vs.SharedState()
    c = s.counters("hits", 4)
    snap = s.snapshot()
    ctxs = {}
    for i, (t, d) in enumerate(steps):
        ctx = ctxs.setdefault(t, s.context(t))
        c.add(ctx, np.zeros(1, U64), np.array([d], np.int64), np.array([i], U64))
    return snap, {t: ctx.drain_chunk() for t, ctx in ctxs.items()}, c.get(0)


def replay(snap, steps, chunks):
    s = vs.SharedState()
    c = s.counters("hits", 4)
    s.restore(snap)
    rp = vs.Replayer(s, list(chunks.values()))
    for i, (t, d) in enumerate(steps):
        c.add(rp.context(t), np.zeros(1, U64), np.array([d], np.int64), np.array([i], U64))
    rp.finish()
    return c.get(0)


def tampered(chunk, thread, mutate):
    ((t, first, recs),) = vs.parse_log_chunks(chunk)
    assert t == thread
    recs = recs.copy()
    mutate(recs["value"])
    return vs.encode_log_chunk(thread, first, recs)


STEPS = [(0, 1), (0, 0), (1, 1), (0, 1)]  # thread 0 sees 1, 1, then 3; thread 1 sees 2


def test_faithful_log_replays():
    snap, chunks, final = record(STEPS)
    assert replay(snap, STEPS, chunks) == final == 3


def test_add_of_zero_that_saw_a_value_never_held_diverges():
    snap, chunks, _ = record(STEPS)

    def fake(v):
        v[1] = 123456  # the add of 0 "saw" 123456: pre == post, so a multiset still balances

    chunks[0] = tampered(chunks[0], 0, fake)
    with pytest.raises(vs.DivergenceError, match=r"'hits'\[0\].*sequence of additions.*own order"):
        replay(snap, STEPS, chunks)


def test_thread_running_backwards_diverges():
    snap, chunks, _ = record(STEPS)

    def swap(v):
        v[0], v[2] = int(v[2]), int(v[0])  # thread 0's first and last adds exchange what they saw

    chunks[0] = tampered(chunks[0], 0, swap)
    with pytest.raises(vs.DivergenceError, match="sequence of additions"):
        replay(snap, STEPS, chunks)


def test_two_racing_threads_replay_with_recurring_values():
    """+1/-1 from two real threads: values recur, the check must still find the order."""
    import threading

    s = vs.SharedState()
    c = s.counters("gauge", 2)
    snap = s.snapshot()
    n = 2000
    deltas = [np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.int64) for _ in range(2)]
    pids = [np.arange(n, dtype=U64) + U64(t * n) for t in range(2)]
    chunks = [b""] * 2

    def work(t):
        ctx = s.context(t)
        for i in range(0, n, 8):
            c.add(ctx, np.zeros(8, U64), deltas[t][i:i + 8], pids[t][i:i + 8])
        chunks[t] = ctx.drain_chunk()

    ths = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    [th.start() for th in ths]
    [th.join() for th in ths]
    b = vs.SharedState()
    c2 = b.counters("gauge", 2)
    b.restore(snap)
    rp = vs.Replayer(b, chunks)
    for t in range(2):
        ctx = rp.context(t)
        for i in range(0, n, 8):
            c2.add(ctx, np.zeros(8, U64), deltas[t][i:i + 8], pids[t][i:i + 8])
    rp.finish()
    assert c2.get(0) == c.get(0) == 0
