"""The native dispatcher (_core.Dispatcher) over real SlabRings, with a worker process at the other end.

Checks what the process backend relies on: runner-wide ids, the RSS split, B / T flushing, release
in order per queue, the native counters (drops by reason, latency totals in HdrHistogram's layout),
the collected outputs, the paced schedule, and errors that name the field.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest

from vnfkit import _core, traffic
from vnfkit.classify import MultiQueueClassifier
from vnfkit.hdr import HdrHistogram
from vnfkit.runtime._segments import Segment, attach

SLOTS, SLAB = 4, 1 << 18


def _worker(path: str, max_packets: int) -> None:
    """Port = packet_id % 7 (0 -> dropped with reason policy), until stopped."""
    ring = _core.SlabRing(attach(path), create=False, max_packets=max_packets)
    while True:
        if ring.input_ready or ring.wait_input(0.05):
            b = ring.input()
            b.port[:] = (b.packet_id % 7).astype(np.uint16)
            b.drop[:] = np.where(b.port == 0, 8, 0).astype(np.uint8)
            ring.complete(b)
            del b
        elif ring.stopped:
            return


class Lanes:
    def __init__(self, queues: int, max_packets: int) -> None:
        self.segs = [Segment(f"dtest{q}", _core.SlabRing.required_bytes(SLOTS, SLAB)) for q in range(queues)]
        self.rings = [_core.SlabRing(s.map, create=True, slots=SLOTS, slab_bytes=SLAB, max_packets=max_packets)
                      for s in self.segs]
        ctx = mp.get_context("spawn")
        self.procs = [ctx.Process(target=_worker, args=(s.path, max_packets)) for s in self.segs]
        for p in self.procs:
            p.start()

    def close(self) -> None:
        for r in self.rings:
            r.request_stop()
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        self.rings.clear()
        for s in self.segs:
            s.close()


@pytest.fixture
def lanes2():
    ln = Lanes(2, 64)
    yield ln
    ln.close()


def _drain(d: _core.Dispatcher) -> None:
    deadline = time.monotonic() + 20
    while not d.drain(0.01):
        assert time.monotonic() < deadline, "dispatcher did not drain within 20 s"


def _hist(c: dict) -> HdrHistogram:
    h = HdrHistogram()
    h.add_counts(c["latency_counts"], total=c["latency_total"], overflow=c["latency_overflow"],
                 min=c["latency_min"], max=c["latency_max"])
    return h


def test_dispatch_splits_by_rss_counts_and_collects_in_order(lanes2: Lanes) -> None:
    cl = MultiQueueClassifier(2)
    d = _core.Dispatcher(lanes2.rings, cl, batch_size=64, flush_us=50)
    d.next_id = 1000
    d.set_collect(True)
    src = traffic.generate(flows=200, packets=3000, seed=3)
    ref = src.select(np.arange(len(src), dtype=np.uint32))
    ref.parse()
    want_parts = cl.classify(ref)
    outs: list[tuple[int, _core.PacketBatch]] = []
    assert d.queue_counts() == [0, 0]  # before any batch
    for start in range(0, len(src), 500):
        b = src.select(np.arange(start, min(start + 500, len(src)), dtype=np.uint32))
        while not (d.dispatch(b, _core.now_ns(), 1.0) if not d.busy else d.resume(1.0)):
            outs += d.take_outputs()
        # the split of the batch taken last, as RSS made it
        assert d.queue_counts() == np.bincount(b.queue, minlength=2).tolist()
        outs += d.take_outputs()
    _drain(d)
    outs += d.take_outputs()
    assert d.next_id == 1000 + len(src)
    total = 0
    for q in range(2):
        got = [b for qq, b in outs if qq == q]
        ids = np.concatenate([b.packet_id for b in got]) if got else np.array([], np.uint64)
        # runner-wide ids in arrival order, queue q's packets exactly RSS's split, in order
        assert (ids == 1000 + want_parts[q].astype(np.uint64)).all()
        c = d.counters(q)
        n = len(want_parts[q])
        dropped = int(np.count_nonzero(ids % 7 == 0))
        assert (c["packets"], c["forwarded"]) == (n, n - dropped)
        assert int(c["drops"][8]) == dropped and int(c["drops"].sum()) == dropped
        assert c["slabs"] == len(got) and all(len(b) <= 64 for b in got)
        h = _hist(c)
        assert h.total == n and 0 < h.percentile(50) < 20e9
        total += n
    assert total == len(src)
    d.clear_counters()
    assert d.counters(0)["packets"] == 0 and d.counters(0)["latency_total"] == 0


def test_flush_on_t_commits_a_partial_slab(lanes2: Lanes) -> None:
    d = _core.Dispatcher(lanes2.rings[:1], MultiQueueClassifier(1), batch_size=64, flush_us=200)
    b = traffic.generate(flows=5, packets=10, seed=1)
    assert d.dispatch(b, _core.now_ns(), 1.0)
    assert d.counters(0)["packets"] == 0  # 10 < B: still open
    time.sleep(0.001)
    deadline = time.monotonic() + 10
    while d.counters(0)["packets"] < 10:  # resume() with no batch still releases and flushes on T
        d.resume(0.01)
        assert time.monotonic() < deadline
    assert d.counters(0)["slabs"] == 1
    assert d.counters(0)["latency_min"] >= 200_000  # waited at least T before its slab went


@pytest.mark.parametrize("hold", [True, False])
def test_a_due_partial_slab_waits_while_its_worker_is_busy(hold: bool) -> None:
    """With hold_while_busy, a partial slab past T stays open (and keeps filling) while the worker
    has not finished its previous slab, and goes as soon as it has; without, it goes at T.
    This process plays the worker, so it decides when the first slab is finished."""
    seg = Segment("dhold", _core.SlabRing.required_bytes(SLOTS, SLAB))
    try:
        ring = _core.SlabRing(seg.map, create=True, slots=SLOTS, slab_bytes=SLAB, max_packets=16)
        d = _core.Dispatcher([ring], MultiQueueClassifier(1), batch_size=16, flush_us=100, hold_while_busy=hold)
        assert d.dispatch(traffic.generate(flows=5, packets=16, seed=1), _core.now_ns(), 1.0)  # full: committed
        assert d.dispatch(traffic.generate(flows=5, packets=5, seed=2), _core.now_ns(), 1.0)  # partial: open
        time.sleep(0.002)  # well past T
        assert d.resume(0.01)
        first = ring.input()
        assert len(first) == 16
        ring.complete(first)
        del first
        if hold:
            assert not ring.input_ready  # held while the first slab was being processed
            assert d.dispatch(traffic.generate(flows=3, packets=3, seed=3), _core.now_ns(), 1.0)
            assert d.resume(0.01)  # the worker has caught up: the due slab goes now, with the late packets
        assert ring.input_ready
        second = ring.input()
        assert len(second) == (8 if hold else 5)
        ring.complete(second)
        del second
        _drain(d)
        assert d.counters(0)["packets"] == (24 if hold else 21) and d.counters(0)["slabs"] == 2
        del d, ring
    finally:
        seg.close()


def test_paced_schedule_delays_every_packet_to_its_slot(lanes2: Lanes) -> None:
    d = _core.Dispatcher(lanes2.rings, MultiQueueClassifier(2), batch_size=16, flush_us=20)
    trace = traffic.generate(flows=50, packets=2000, seed=9)
    d.begin_paced(trace, 1000, 1e9 / 200_000, 16)  # 200 kpps: 10 ms
    t0 = time.perf_counter()
    deadline = time.monotonic() + 20
    while not d.pace(0.01):
        assert time.monotonic() < deadline
    _drain(d)
    assert time.perf_counter() - t0 >= 0.009  # the schedule, not as fast as possible
    assert sum(d.counters(q)["packets"] for q in range(2)) == 2000
    assert (trace.packet_id == np.arange(2000, dtype=np.uint64)).all()


def test_errors_name_the_field(lanes2: Lanes) -> None:
    with pytest.raises(TypeError, match="rings"):
        _core.Dispatcher([object()], MultiQueueClassifier(1), batch_size=8, flush_us=50)
    with pytest.raises(TypeError, match="classifier"):
        _core.Dispatcher(lanes2.rings[:1], object(), batch_size=8, flush_us=50)
    with pytest.raises(ValueError, match="classifier"):
        _core.Dispatcher(lanes2.rings, MultiQueueClassifier(1), batch_size=8, flush_us=50)
    with pytest.raises(ValueError, match="batch_size"):
        _core.Dispatcher(lanes2.rings[:1], MultiQueueClassifier(1), batch_size=65, flush_us=50)
    with pytest.raises(ValueError, match="flush_us"):
        _core.Dispatcher(lanes2.rings[:1], MultiQueueClassifier(1), batch_size=8, flush_us=-1)
    with pytest.raises(ValueError, match="spin_us"):
        _core.Dispatcher(lanes2.rings[:1], MultiQueueClassifier(1), batch_size=8, flush_us=50, spin_us=-1)
    d = _core.Dispatcher(lanes2.rings[:1], MultiQueueClassifier(1), batch_size=8, flush_us=50)
    big = _core.PacketBatch.from_arrays(np.zeros(SLAB, np.uint8), np.array([0, SLAB], np.uint32),
                                        np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="slab_bytes"):
        d.dispatch(big, _core.now_ns(), 1.0)
    assert not d.busy and d.next_id == 0  # validated before anything moved
    odd = traffic.generate(flows=1, packets=2, seed=1)
    odd.linktype = 147
    with pytest.raises(ValueError, match="linktype"):
        d.dispatch(odd, _core.now_ns(), 1.0)


def test_hdr_add_counts_matches_record() -> None:
    vals = np.array([0, 1, 2047, 2048, 4095, 4096, 10**6, 123_456_789, 10**12], dtype=np.int64)
    a = HdrHistogram()
    a.record(vals)
    b = HdrHistogram()
    b.add_counts(a._counts, total=a.total, overflow=a.overflow, min=a.min, max=a.max)
    assert [b.percentile(p) for p in (1, 50, 90, 100)] == [a.percentile(p) for p in (1, 50, 90, 100)]
    with pytest.raises(ValueError, match="counts"):
        b.add_counts(np.zeros(3, np.int64), total=0, overflow=0, min=0, max=0)
