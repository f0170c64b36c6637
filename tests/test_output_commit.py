"""Output commit never releases a packet before every log position it depends on is acknowledged,
releases in tag order per queue, and releases everything once storage catches up - with a storage
that acknowledges late, in bursts and out of order (property test against a Python reference)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnfkit import state as vs

U64 = np.uint64
T, Q, MAX = 3, 2, 40


@st.composite
def scenarios(draw):
    # storage acks: each thread's log [0, MAX) cut into chunks, acknowledged in a random order
    acks = []
    for t in range(T):
        cuts = sorted(set(draw(st.lists(st.integers(1, MAX - 1), max_size=6))))
        bounds = [0, *cuts, MAX]
        acks += [("range", t, a, b - a) for a, b in zip(bounds, bounds[1:])]
    acks = draw(st.permutations(acks))
    # occasionally a (possibly stale) cumulative ack instead
    extra = draw(st.lists(st.tuples(st.just("cum"), st.integers(0, T - 1), st.integers(0, MAX), st.just(0)), max_size=3))
    tags = draw(st.lists(st.tuples(st.just("tag"), st.integers(0, Q - 1), st.integers(1, 5),
                                   st.lists(st.integers(0, MAX), min_size=T, max_size=T)), max_size=25))
    releases = [("release", q, 0, 0) for q in range(Q)] * draw(st.integers(1, 8))
    events = draw(st.permutations(acks + extra + tags + releases))
    return events, acks


class Reference:
    def __init__(self):
        self.stable = [set() for _ in range(T)]
        self.cum = [0] * T

    def prefix(self, t):
        p = self.cum[t]
        while p in self.stable[t] or p < self.cum[t]:
            p += 1
        return p


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_never_released_early_in_order_and_eventually_all(sc):
    events, acks = sc
    oc = vs.OutputCommit(T, Q)
    ref = Reference()
    clocks: dict[int, list[int]] = {}
    tagged = [[] for _ in range(Q)]
    released = [[] for _ in range(Q)]
    nxt = 0
    for kind, a, b, c in events:
        if kind == "tag":
            pids = list(range(nxt, nxt + b))
            nxt += b
            for p in pids:
                clocks[p] = c
            tagged[a] += pids
            oc.tag(a, np.array(pids, U64), np.array(c, U64))
        elif kind == "range":
            oc.ack_range(a, b, c)
            ref.stable[a].update(range(b, b + c))
        elif kind == "cum":
            oc.ack(a, b)
            ref.cum[a] = max(ref.cum[a], b)
        else:
            out = oc.release(a).tolist()
            prefixes = [ref.prefix(t) for t in range(T)]
            for p in out:
                assert all(clocks[p][t] <= prefixes[t] for t in range(T)), "released before its dependencies were stable"
            released[a] += out
            # in order, and no stall: the next held packet really is not yet stable
            assert released[a] == tagged[a][: len(released[a])]
            rest = tagged[a][len(released[a]):]
            if rest:
                assert not all(clocks[rest[0]][t] <= prefixes[t] for t in range(T))
    for t in range(T):
        assert oc.acked(t) == ref.prefix(t)
    # storage has now acknowledged everything: all packets leave, in order
    for q in range(Q):
        released[q] += oc.release(q).tolist()
        assert released[q] == tagged[q] and oc.pending(q) == 0


def test_positions_from_shared_state_gate_release():
    s = vs.SharedState()
    c = s.counters("c", 4)
    ctx0, ctx1 = s.context(0), s.context(1)
    k = np.arange(4, dtype=U64)
    c.add(ctx0, k, np.ones(4, np.int64), k)
    c.add(ctx1, k, np.ones(4, np.int64), k + U64(4))
    oc = vs.OutputCommit(threads=2, queues=1)
    oc.tag(0, k, s.positions())  # depends on 4 records of each thread
    ch0 = ctx0.drain_chunk()
    assert oc.release(0).tolist() == []
    oc.ack_range(0, 0, 4)
    assert oc.release(0).tolist() == [] and oc.pending(0) == 4
    oc.ack(1, 3)
    assert oc.release(0).tolist() == []
    oc.ack(1, 4)
    assert oc.release(0).tolist() == [0, 1, 2, 3]
    assert len(ch0) > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="threads"):
        vs.OutputCommit(0, 1)
    oc = vs.OutputCommit(2, 1)
    with pytest.raises(ValueError, match="queue"):
        oc.tag(1, np.zeros(1, U64), np.zeros(2, U64))
    with pytest.raises(ValueError, match="positions"):
        oc.tag(0, np.zeros(1, U64), np.zeros(3, U64))
    with pytest.raises(TypeError, match="positions"):
        oc.tag(0, np.zeros(1, U64), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="thread"):
        oc.ack(2, 1)


def test_release_count_pops_what_release_would_hand_out():
    a, b = vs.OutputCommit(2, 1), vs.OutputCommit(2, 1)
    for oc in (a, b):
        oc.tag(0, np.arange(0, 5, dtype=np.uint64), np.array([3, 0], np.uint64))
        oc.tag(0, np.arange(5, 9, dtype=np.uint64), np.array([4, 2], np.uint64))
    for step in ((0, 3), (1, 1), (0, 4), (1, 2)):
        for oc in (a, b):
            oc.ack(*step)
        assert a.release_count(0) == len(b.release(0))
        assert a.pending(0) == b.pending(0)
    assert a.pending(0) == 0 and a.release_count(0) == 0
