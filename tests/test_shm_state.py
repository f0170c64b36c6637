"""Shared aggregate state in POSIX shared memory, used by real worker processes (multiprocessing):
declare-or-map across processes, mismatches named, exact totals of two racing processes, their
logs read from the segment (also of a worker that was SIGKILLed) and replayed to the same values
and a bit-identical final image, full logs, and no /dev/shm segment left behind."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import numpy as np
import pytest

from _replay import _same, record_and_replay
from _shm import leftovers, shm_states  # noqa: F401 (fixture)
from vnfkit import _core as vs_core
from vnfkit import state as vs
from vnfkit import traffic
from vnfkit.runtime import iter_batches
from vnfkit.vnf import Context

U64 = np.uint64
LO, HI = 30000, 30999  # 1 000 ports, two sub-pools (even / odd index)
BATCHES, SIZE = 12, 512

MP = mp.get_context("spawn")  # workers start from scratch and attach by name, as the runtime's do


def declare(ctx):
    """What every worker's setup declares (through the VNF author's Context)."""
    sub = (np.arange(HI - LO + 1) % 2).astype(np.uint16)
    return (ctx.counters("hits", slots=64), ctx.counters("per_src", slots=1024, keyed=True),
            ctx.port_pool("ports", lo=LO, hi=HI, subpool_of=sub))


def inputs(worker, b):
    rng = np.random.default_rng(worker * 1000 + b)
    keys = rng.integers(0, 700, SIZE).astype(U64)
    deltas = rng.integers(1, 6, SIZE).astype(np.int64)
    pids = (U64(worker) << U64(40)) + np.arange(b * SIZE, (b + 1) * SIZE, dtype=U64)
    return keys, deltas, pids


def step(hits, per_src, pool, sc, worker, b, held):
    """One batch: counter adds on both counters, 24 allocations from the worker's sub-pool, and
    releases of half of them plus the oldest port still held."""
    keys, deltas, pids = inputs(worker, b)
    h = hits.add(sc, keys % U64(64), deltas, pids)
    k = per_src.add(sc, keys, deltas, pids)
    ports = pool.allocate(sc, pids[:24].copy(), np.full(24, worker, np.uint16))
    got = ports[ports != 0]
    rel = list(got[1::2])
    held.extend(got[0::2])
    if len(held) > 40:
        rel.append(held.pop(0))
    rel = np.array(rel, np.uint16)
    ok = pool.release(sc, rel, pids[24:24 + len(rel)].copy())
    return h, k, ports, ok


def worker_main(name, worker, out_q, die_after=None):
    """A worker process: attach the segment, declare through a Context, run the batches."""
    shared = vs.SharedState.attach_shm(name)
    ctx = Context(worker, 2, shared=shared)
    hits, per_src, pool = declare(ctx)
    held = []
    results = []
    for b in range(BATCHES):
        results.append(step(hits, per_src, pool, ctx.state, worker, b, held))
        if die_after is not None and b + 1 == die_after:
            os.kill(os.getpid(), signal.SIGKILL)
    out_q.put((worker, results, [int(p) for p in held]))


def run_workers(name, die_after=None):
    q = MP.Queue()
    procs = [MP.Process(target=worker_main, args=(name, w, q, die_after)) for w in range(2)]
    for p in procs:
        p.start()
    try:
        got = {} if die_after is not None else dict((w, (r, h)) for w, r, h in (q.get(timeout=120) for _ in procs))
        for p in procs:
            p.join(timeout=120)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return got, [p.exitcode for p in procs]


def test_declare_creates_or_maps_and_mismatches_name_the_variable(shm_states):
    a = shm_states(4 << 20)
    assert a.shm_name.startswith("vnfkit-test-") and a.is_owner and os.path.exists(f"/dev/shm/{a.shm_name}")
    c = a.counters("x", 16)
    b = vs.SharedState.attach_shm(a.shm_name)
    assert not b.is_owner and len(b) == 1
    cb = b.counters("x", 16)
    assert cb.id == c.id
    ctx = a.context(0, logged=False)
    c.add(ctx, np.array([3, 3], U64), np.array([5, 6], np.int64), np.arange(2, dtype=U64))
    assert cb.get(3) == 11
    with pytest.raises(ValueError, match=r"'x' already exists as counters\(slots=16.*not counters\(slots=32"):
        b.counters("x", 32)
    with pytest.raises(ValueError, match="'x' already exists as counters, not port_pool"):
        b.port_pool("x", 100, 200)
    with pytest.raises(ValueError, match="'tb'.*rate_per_s"):
        a.token_buckets("tb", 2, 10.0, 4)
        b.token_buckets("tb", 2, 20.0, 4)
    with pytest.raises(ValueError, match="already exists"):
        vs.SharedState.create_shm(a.shm_name, 4 << 20)
    with pytest.raises(ValueError, match="vnfkit-"):
        vs.SharedState.create_shm("other", 4 << 20)
    assert a.snapshot() == b.snapshot()
    with a:
        pass  # the context manager closes: the owner unlinks
    assert a.closed and not os.path.exists(f"/dev/shm/{a.shm_name}")
    assert cb.get(3) == 11  # still mapped
    with pytest.raises(ValueError, match="no shared-memory state"):
        vs.SharedState.attach_shm(a.shm_name)
    with pytest.raises(ValueError, match="closed"):
        a.counters("y", 4)


def test_a_shm_state_pickles_as_its_name_and_a_heap_state_refuses(shm_states):
    import pickle

    s = shm_states(4 << 20)
    s.counters("x", 4).get(0)
    again = pickle.loads(pickle.dumps(s))
    assert again.shm_name == s.shm_name and not again.is_owner and len(again) == 1
    with pytest.raises(TypeError, match="cannot cross a process boundary"):
        pickle.dumps(vs.SharedState())


def test_full_shm_log_raises_before_any_effect_and_is_counted(shm_states):
    s = shm_states(4 << 20, log_records=64)
    c = s.counters("x", 4)
    ctx = s.context(0)
    assert ctx.log_in_shared_memory and ctx.log_capacity == 64
    k, d, p = np.ones(40, U64), np.ones(40, np.int64), np.arange(40, dtype=U64)
    c.add(ctx, k, d, p)
    with pytest.raises(vs.LogFullError, match="worker 0 is full"):
        c.add(ctx, k, d, p)
    assert c.get(1) == 40 and ctx.log_full_events == 1 and ctx.position == 40
    ctx.drain_chunk()
    c.add(ctx, k, d, p)
    assert c.get(1) == 80 and ctx.position == 80


def test_two_worker_processes_race_exactly_and_their_logs_replay(shm_states):
    s = shm_states(32 << 20)
    # the parent declares (no log slot taken) and keeps its views of the memory the workers race on
    hits, per_src, pool = declare(Context(0, 2, shared=s, logged=False))
    snap0 = s.snapshot()
    got, codes = run_workers(s.shm_name)
    assert codes == [0, 0]
    # exact totals
    want_hits = np.zeros(64, np.int64)
    want_src: dict[int, int] = {}
    for w in range(2):
        for b in range(BATCHES):
            keys, deltas, _ = inputs(w, b)
            np.add.at(want_hits, (keys % U64(64)).astype(np.intp), deltas)
            for key, dl in zip(keys.tolist(), deltas.tolist()):
                want_src[key] = want_src.get(key, 0) + dl
    assert [hits.get(i) for i in range(64)] == want_hits.tolist()
    k, v = per_src.items()
    assert dict(zip(k.tolist(), v.tolist())) == want_src
    # no port handed to both workers at once; what is still held is exactly what the pool says
    held = [p for w in range(2) for p in got[w][1]]
    assert len(set(held)) == len(held) and pool.allocated_count == len(held)
    assert all(pool.is_allocated(p) for p in held)
    # logs read from the segment after the workers exited, replayed on a heap backup
    assert all(s.log_range(w) == (0, int(s.positions()[w])) for w in range(2))
    chunks = [s.log_chunk(w) for w in range(2)]
    final = s.snapshot()
    backup = vs.SharedState()
    bh, bk, bp = declare(Context(0, 2, shared=backup))
    backup.restore(snap0)
    rp = vs.Replayer(backup, chunks)
    for w in range(2):
        sc, bheld = rp.context(w), []
        for b in range(BATCHES):
            again = step(bh, bk, bp, sc, w, b, bheld)
            for x, y in zip(again, got[w][0][b]):
                np.testing.assert_array_equal(x, y)  # every returned value reproduced
    rp.finish()
    assert backup.snapshot() == final  # bit-identical final image


def test_a_killed_workers_log_is_read_from_the_segment(shm_states):
    s = shm_states(32 << 20)
    declare(Context(0, 2, shared=s, logged=False))
    _, codes = run_workers(s.shm_name, die_after=5)
    assert codes == [-signal.SIGKILL, -signal.SIGKILL]
    for w in range(2):
        first, recs = s.read_log(w)
        assert first == 0 and len(recs) > 0
        # the log holds all of the 5 batches the worker finished: 2 * SIZE counter adds each
        adds = recs[recs["op"] == 1]
        assert len(adds) == 5 * 2 * SIZE
        tail_first, tail = s.read_log(w, from_position=100)
        assert tail_first == 100 and np.array_equal(tail, recs[100:])
        with pytest.raises(ValueError, match="beyond the end"):
            s.read_log(w, from_position=len(recs) + 1)
        # one slice of it framed in one call: what read_log + encode_log_chunk frame
        assert s.log_chunk_range(w, 100, 140) == vs_core.encode_log_chunk(w, 100, recs[100:140])
        assert s.log_chunk_range(w, 7, 7) == vs_core.encode_log_chunk(w, 7, recs[7:7])
        with pytest.raises(ValueError, match="to_position: worker .* log ends at"):
            s.log_chunk_range(w, 100, len(recs) + 1)
        with pytest.raises(ValueError, match="to_position: 99 is before from_position 100"):
            s.log_chunk_range(w, 100, 99)
    # the streaming master's records over these logs: the bytes recovery.backup.encode_det frames
    from vnfkit.recovery.backup import decode_det, encode_det

    n0, n1 = len(s.read_log(0)[1]), len(s.read_log(1)[1])
    line, head, rows = 2 + 4 * 2, 2, 4
    board = np.zeros(2 * line, dtype=np.uint64)
    commit = vs_core.StreamCommit(2, board, line, head, rows, 0)
    commit.dispatched(0, 0, 0, [1, 1])  # input 0: one (empty) slab on each queue
    commit.dispatched(1, 0, 0, [0, 1])
    for q, k, clock in ((0, 0, [3, 0]), (1, 0, [3, n1 - 5]), (1, 1, [n0, n1])):
        at = q * line + head + k * 2
        board[at:at + 2] = clock
        board[q * line] = k + 1
    empty = vs_core.PacketBatch([])
    commit.take([(0, empty), (1, empty), (1, vs_core.PacketBatch([]))], 1)
    (s0, r0), (s1, r1) = commit.cut_records(s)
    assert (s0, r0) == (0, encode_det(0, [s.log_chunk_range(0, 0, 3), s.log_chunk_range(1, 0, n1 - 5)]))
    assert decode_det(r1) == (1, [b"", s.log_chunk_range(1, n1 - 5, n1)]) and commit.bound == [3, n1]
    # the vector clock written in place (a board's row), zero past the last worker
    words = np.full(9, 7, dtype=np.uint64)
    s.positions_into(words, 3, 4)
    assert words[3:5].tolist() == s.positions().tolist() == [n0, n1]
    assert words[5:7].tolist() == [0, 0] and words[:3].tolist() == [7] * 3 and words[7:].tolist() == [7] * 2
    flat = memoryview(bytearray(72)).cast("Q")
    s.positions_into(flat, 0, 2)
    assert list(flat[:2]) == [n0, n1]
    # a replacement worker takes over the dead worker's log and continues its positions
    ctx = vs.SharedState.attach_shm(s.shm_name).context(0)
    assert ctx.position == len(s.read_log(0)[1]) and ctx.log_in_shared_memory


def test_a_live_worker_log_cannot_be_taken_twice(shm_states):
    s = shm_states(4 << 20, log_records=1024)
    s.context(3)
    other = vs.SharedState.attach_shm(s.shm_name)
    with pytest.raises(ValueError, match="worker 3 .*in use by process"):
        other.context(3)
    with pytest.raises(ValueError, match="thread: must be <"):
        s.context(s.max_workers)


def test_thread_workers_over_shm_replay_like_over_the_heap(shm_states):
    """The middlebox replay check (two racing Runner workers, then a replay of their logs) with the
    master's state in shared memory."""
    from vnfkit.nfs.monitor import Monitor
    from vnfkit.nfs.qos import QoS
    from vnfkit.nfs.simplenat import SimpleNAT

    b = traffic.generate(200, 3000, seed=5)
    b.parse()
    qos = {"classes": [{"name": "tcp", "proto": "tcp", "rate_pps": 20_000, "burst": 25}]}
    for cls, cfg in ((Monitor, {}), (SimpleNAT, {}), (QoS, qos)):
        decided, replayed, master, backup = record_and_replay(cls, cfg, iter_batches(b, 256), shared=shm_states())
        assert _same(decided, replayed) and backup == master, cls.__name__


def test_shared_buffer_is_one_region_for_every_process(shm_states):
    s = shm_states(4 << 20)
    buf = Context(0, 1, shared=s, logged=False).shared_buffer("blob", 4096)
    view = np.frombuffer(buf, np.uint8)
    assert buf.nbytes == 4096 and not view.any()
    view[:4] = [1, 2, 3, 4]
    other = vs.SharedState.attach_shm(s.shm_name)
    assert bytes(memoryview(other.buffer("blob", 4096))[:4]) == b"\x01\x02\x03\x04"
    with pytest.raises(ValueError, match="'blob'.*nbytes=4096.*not buffer\\(nbytes=8192"):
        other.buffer("blob", 8192)


def _frames(seed):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    rng = np.random.default_rng(seed)
    body = bytes(rng.integers(0, 256, 3000, dtype=np.uint8))  # the content both workers send
    return [bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000 + i, dport=80, flags="PA")
                  / (b"GET /%d HTTP/1.1\r\n" % i + body[i * 7:i * 7 + 1200])) for i in range(20)]


def wanopt_worker(name, worker, out_q):
    """A worker process encoding with the encoder cache shared through the segment."""
    from vnfkit import _core
    from vnfkit.nfs.wanopt import WanOptimizer

    shared = vs.SharedState.attach_shm(name)
    ctx = Context(worker, 2, shared=shared, logged=False)
    enc = WanOptimizer()
    enc.setup(ctx, cache_size=1 << 18, isolate_queues=False)
    b = _core.PacketBatch(_frames(1))
    b.parse()
    enc.process(b, ctx)
    out_q.put((worker, enc.stats(), [b.packet(i) for i in range(len(b))]))


def test_wanopt_cache_is_shared_by_worker_processes(shm_states):
    """Worker 1 (another process) finds the redundancy in what worker 0 stored: the cache, its
    stamps, fingerprints and atomic write position live in one shared region."""
    from vnfkit import _core
    from vnfkit.nfs.wanopt import WanOptDecoder, WanOptimizer

    s = shm_states(8 << 20)
    q = MP.Queue()
    got = {}
    for w in range(2):  # one after the other: worker 1 must see what worker 0 stored
        p = MP.Process(target=wanopt_worker, args=(s.shm_name, w, q))
        p.start()
        try:
            w_, stats, out = q.get(timeout=120)
            got[w_] = (stats, out)
        finally:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
        assert p.exitcode == 0
    assert got[1][0]["bytes_saved"] > got[0][0]["bytes_saved"] and got[1][0]["shims"] > 0
    enc = WanOptimizer()  # the parent's view of the same cache
    enc.setup(Context(0, 1, shared=s, logged=False), cache_size=1 << 18, isolate_queues=False)
    assert enc.cache.write_position >= 2 * 20 * 1200
    with pytest.raises(ValueError, match="other parameters"):
        WanOptimizer().setup(Context(0, 1, shared=s, logged=False), cache_size=1 << 18, window=16, min_match=32)
    dec = WanOptDecoder()
    dec.setup(Context(0, 1, shared=vs.SharedState(), logged=False), cache_size=1 << 18)
    original = _frames(1)
    for w in range(2):
        b = _core.PacketBatch(got[w][1])
        b.parse()
        dec.process(b, None)
        assert [b.packet(i) for i in range(len(b))] == original
    assert dec.stats()["decode_failures"] == 0


def test_no_segment_of_this_process_is_left():
    assert leftovers() == []
