"""The shared-memory SlabRing between two real processes: order, contents, sleep/wake, stop."""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os

import numpy as np
import pytest

from vnfkit import _core, traffic
from vnfkit.runtime._segments import SHM_DIR, Segment, attach


def _echo_worker(path: str, max_packets: int, count: int) -> None:
    mem = attach(path)
    ring = _core.SlabRing(mem, create=False, max_packets=max_packets)
    seen = 0
    while seen < count:
        if not (ring.input_ready or ring.wait_input(1.0)):
            if ring.stopped:
                break
            continue
        b = ring.input()
        b.port[:] = (b.packet_id % 65535 + 1).astype(np.uint16)  # in place, into shared memory
        ring.complete(b)
        del b
        seen += 1


def test_atomics_are_lock_free() -> None:
    assert _core.ATOMICS_LOCK_FREE


def test_two_processes_exchange_batches_in_order() -> None:
    slots, slab = 4, 1 << 18
    seg = Segment("test", _core.SlabRing.required_bytes(slots, slab))
    try:
        ring = _core.SlabRing(seg.map, create=True, slots=slots, slab_bytes=slab, max_packets=128)
        src = traffic.generate(flows=50, packets=128 * 40, seed=5)
        src.parse()
        src.packet_id[:] = np.arange(len(src), dtype=np.uint64)
        n_batches = len(src) // 128
        p = mp.get_context("spawn").Process(target=_echo_worker, args=(seg.path, 128, n_batches))
        p.start()
        released = 0
        filled = 0
        idx = np.arange(len(src), dtype=np.uint32)
        while released < n_batches:
            if filled < n_batches and ring.can_fill():
                k = ring.append(src, idx, filled * 128, (filled + 1) * 128, _core.now_ns())
                assert k == 128
                ring.commit()
                filled += 1
                continue
            assert ring.wait_output(5.0), "worker gave no output within 5 s"
            out = ring.output(copy=True)
            want = src.select(idx[released * 128:(released + 1) * 128])
            assert out.to_list() == want.to_list()
            assert (out.packet_id == want.packet_id).all()
            assert (out.port == (want.packet_id % 65535 + 1)).all()
            assert (ring.output_arrival() > 0).all()
            ring.release()
            released += 1
        p.join(10)
        assert p.exitcode == 0
    finally:
        seg.close()
    assert not os.path.exists(seg.path)


def test_attach_rejects_memory_that_is_not_a_ring() -> None:
    seg = Segment("junk", 1 << 16)
    try:
        with pytest.raises(ValueError, match="not a vnfkit ring"):
            _core.SlabRing(seg.map, create=False)
    finally:
        seg.close()


def test_bad_ring_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="slots"):
        _core.SlabRing.required_bytes(3, 4096)
    seg = Segment("small", 1 << 16)
    try:
        with pytest.raises(ValueError, match="slab_bytes"):
            _core.SlabRing(seg.map, create=True, slots=2, slab_bytes=8192, max_packets=1024)
    finally:
        seg.close()
    assert not any(f.startswith(f"vnfkit-{os.getpid()}-") for f in os.listdir(SHM_DIR))


def _rss_kb(path: str) -> int:
    """Resident kB of this process's mapping of `path` (from /proc/self/smaps)."""
    found = False
    with open("/proc/self/smaps") as f:
        for line in f:
            if path in line:
                found = True
            elif found and line.startswith("Rss:"):
                return int(line.split()[1])
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.skipif(not hasattr(mmap, "MAP_POPULATE"), reason="MAP_POPULATE is Linux-only")
def test_populated_segments_are_resident_before_first_use() -> None:
    """Ring segments are pre-faulted (creator and attacher), so no slab faults in the packet path."""
    for populate in (False, True):
        seg = Segment("pop", 4 << 20, populate=populate)
        try:
            m = attach(seg.path, populate=populate)
            rss = _rss_kb(seg.path)
            assert rss >= 4 << 10 if populate else rss == 0
            m.close()
        finally:
            seg.close()
