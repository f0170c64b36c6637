"""Copy-on-write checkpoints of worker processes: every forked image equals the live state at the
cut and restores bit for bit; huge-page backing of a process's private memory (what makes a fork
cheap); the child leaves nothing behind. No timing bound: pauses are only reported."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from vnfkit import traffic
from vnfkit.nfs.mazunat import MazuNAT
from vnfkit.recovery import hugeheap
from vnfkit.recovery.pause import _verify, measure_fork_pauses, percentiles_ms

from _procs import alive


def _batches(flows: int, packets: int, size: int, seed: int = 1) -> list:
    b = traffic.generate(flows, packets, seed=seed)
    return [b.select(np.arange(s, min(s + size, len(b)), dtype=np.uint32)) for s in range(0, len(b), size)]


@pytest.mark.parametrize("huge", [True, False])
def test_every_forked_image_equals_the_live_state_and_restores_bit_for_bit(tmp_path, monkeypatch, huge):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    cfg = {"endpoint_dependent": True, "max_flows": 8192}
    msgs: list[str] = []
    r = measure_fork_pauses(MazuNAT, cfg, _batches(3000, 3000, 512), _batches(3000, 6000, 256, seed=1),
                            checkpoints=7, verify_every=2, huge_pages=huge, progress=msgs.append)
    assert r.verified == 4  # checkpoints 0, 2, 4, 6 compared with a synchronous image of the same cut
    assert sum(r.flows) == 3000 and min(r.flows) > 0  # both workers held flows
    assert len(r.fork_s) == len(r.fork_cpu_s) == 2 * 6 and all(x > 0 for x in r.fork_s + r.fork_cpu_s)
    assert len(msgs) == 7 and msgs[-1].startswith("checkpoint 7/7")
    s = r.summary()
    assert s["checkpoints"] == 7 and s["fork_ms"]["n"] == 12 and len(s["small_page_kib"]) == 2
    collapsed = [m["collapse"] for m in r.memory]
    assert all((c is not None) == huge for c in collapsed)
    assert not list(tmp_path.iterdir())  # every image file and the directory are gone


def test_verify_catches_an_image_that_differs_from_the_live_state():
    from vnfkit.tables import FlowTable, make_keys

    t = FlowTable(64, np.dtype([("a", "<u8")]))
    t.lookup_or_insert(make_keys(np.arange(1, 5), 2), ts_ns=1)
    live = pickle.dumps(({"t": t.snapshot()}, {"n": np.arange(3)}), protocol=5)
    _verify([({"t": t.snapshot()}, {"n": np.arange(3)})], [live])  # the same: passes
    with pytest.raises(AssertionError, match="VNF state"):
        _verify([({"t": t.snapshot()}, {"n": np.arange(1, 4)})], [live])
    t.lookup_or_insert(make_keys(np.arange(9, 10), 2), ts_ns=2)
    with pytest.raises(AssertionError, match="table images"):
        _verify([({"t": t.snapshot()}, {"n": np.arange(3)})], [live])
    with pytest.raises(AssertionError, match="no forked image"):
        _verify([None], [live])


def test_measure_fork_pauses_rejects_bad_arguments():
    with pytest.raises(ValueError, match="checkpoints"):
        measure_fork_pauses(MazuNAT, {}, [], _batches(10, 10, 10), checkpoints=0)
    with pytest.raises(ValueError, match="verify_every"):
        measure_fork_pauses(MazuNAT, {}, [], _batches(10, 10, 10), checkpoints=1, verify_every=True)
    with pytest.raises(ValueError, match="traffic"):
        measure_fork_pauses(MazuNAT, {}, [], [], checkpoints=1)


def test_percentiles_ms():
    p = percentiles_ms([0.001] * 999 + [0.5])
    assert p["p50"] == 1.0 and p["max"] == 500.0 and p["n"] == 1000 and p["p99"] == 1.0
    assert percentiles_ms([]) == {"n": 0}


def test_collapse_moves_a_big_private_mapping_to_huge_pages():
    with pytest.raises(ValueError, match="min_bytes"):
        hugeheap.collapse_private_memory(4096)
    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("no /proc/self/smaps")
    import mmap

    m = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # plain 4 KiB pages
    try:
        m.write(b"\x01" * (16 << 20))  # every page mapped
        before = hugeheap.small_page_kib()
        rep = hugeheap.collapse_private_memory(8 << 20)
        if not rep.supported or rep.refused_bytes == rep.asked_bytes:
            pytest.skip("this kernel does not collapse into transparent huge pages")
        assert rep.mappings >= 1 and rep.asked_bytes >= 14 << 20
        assert rep.small_kib_after <= before - 8 * 1024  # at least half of the mapping moved
        assert m[:16] == b"\x01" * 16 and m[-16:] == b"\x01" * 16  # contents unchanged
    finally:
        m.close()


def test_fork_child_runs_without_the_cyclic_collector_and_leaves_nothing(tmp_path):
    from vnfkit.recovery.cow import _fork_writing_timed

    path = str(tmp_path / "img")
    pid, wall_s, cpu_s = _fork_writing_timed(path, lambda: pickle.dumps(__import__("gc").isenabled()))
    _, status = os.waitpid(pid, 0)
    assert status == 0 and wall_s > 0 and cpu_s >= 0
    assert pickle.loads(open(path, "rb").read()) is False  # the child's collector was off
    assert not alive(pid) and sorted(os.listdir(tmp_path)) == ["img"]  # no temporary file left
