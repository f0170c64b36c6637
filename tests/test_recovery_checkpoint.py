"""Checkpoints: FlowTable restore in place keeps every view valid; VNF snapshot()/restore() of the
four batch middleboxes round-trips their Python-side state; a full checkpoint restored into a twin
master makes it continue exactly like the original; checkpoint pause is measured."""

from __future__ import annotations

import numpy as np
import pytest

from vnfkit import traffic
from vnfkit.recovery.checkpoint import Checkpoint, restore_checkpoint, take_checkpoint
from vnfkit.recovery.workloads import NFS, workload
from vnfkit.tables import FlowTable, SnapshotError, make_keys
from vnfkit.runtime import Runner
from vnfkit.vnf import VNF

DT = np.dtype([("a", "<u8"), ("b", "<u4")])


def test_flow_table_restore_in_place_keeps_views_valid():
    t = FlowTable(64, DT, idle_timeout_s=10)
    keys = make_keys(np.arange(1, 11), 2, 3, 4)
    slots, _ = t.lookup_or_insert(keys, ts_ns=5)
    t.values["a"][slots] = np.arange(10)
    image = t.snapshot()
    view, col = t.values, t.values["a"]  # cached views, as a VNF keeps them
    more, _ = t.lookup_or_insert(make_keys(np.arange(100, 120), 2, 3, 4), ts_ns=6)
    col[slots] += 100
    t.remove(keys[:3])
    t.restore_in_place(image)
    assert t.snapshot() == image  # bit for bit the table of the snapshot
    assert len(t) == 10 and t.values is view
    assert col[slots].tolist() == list(range(10))  # the old view shows the restored records
    # it behaves like a table restored from scratch from then on
    fresh = FlowTable.restore(image)
    for tab in (t, fresh):
        assert (tab.lookup(make_keys(np.arange(100, 120), 2, 3, 4)) == 0xFFFFFFFF).all()
        np.testing.assert_array_equal(tab.lookup(keys), slots)
        tab.lookup_or_insert(make_keys(np.arange(50, 60), 2, 3, 4), ts_ns=7)
    assert t.snapshot() == fresh.snapshot()
    assert len(t.expire(10 * 10**9 + 6)) == 10 and len(fresh.expire(10 * 10**9 + 6)) == 10


def test_flow_table_restore_in_place_refuses_other_shapes_and_leaves_the_table_alone():
    t = FlowTable(64, DT)
    t.lookup_or_insert(make_keys(np.arange(1, 5), 2), ts_ns=1)
    before = t.snapshot()
    with pytest.raises(SnapshotError, match="capacity"):
        t.restore_in_place(FlowTable(128, DT).snapshot())
    with pytest.raises(SnapshotError, match="dtype"):
        t.restore_in_place(FlowTable(64, np.dtype([("x", "<u4"), ("y", "<u8")])).snapshot())
    with pytest.raises(SnapshotError):
        t.restore_in_place(before[:-5])
    assert t.snapshot() == before


@pytest.mark.parametrize("nf", NFS)
def test_vnf_snapshot_restore_round_trip_via_checkpoint(nf):
    w = workload(nf, packets=3000, flows=200, batch=128, seed=3)
    first, second = w.batches[:12], w.batches[12:]
    for b in w.batches:
        b.parse()
    master = Runner(w.vnf, queues=2, config=w.config, parse=False)
    master.run(first)
    ck = Checkpoint.from_bytes(take_checkpoint(master.vnfs, master.contexts, master.shared, epoch=0,
                                               next_input=len(first), last_packet_id=0).to_bytes())
    twin = Runner(w.vnf, queues=2, config=w.config, parse=False)
    views = [{n: t.values for n, t in ctx.tables.items()} for ctx in twin.contexts]
    restore_checkpoint(ck, twin.vnfs, twin.contexts, twin.shared)
    assert [v.snapshot().keys() for v in twin.vnfs] == [v.snapshot().keys() for v in master.vnfs]
    for va, vb in zip(master.vnfs, twin.vnfs):
        assert va.stats() == vb.stats()
    # same state, same future: continuing both on one thread (no races) gives identical decisions
    master.close()
    twin.close()
    outs = []
    for r in (master, twin):
        got = []
        for b in second:
            c = b.select(np.arange(len(b), dtype=np.uint32))
            for q, idx in enumerate(r.classifier.classify(c)):
                sub = c.select(idx)
                r.vnfs[q].process(sub, r.contexts[q])
                got.append((q, sub.port.tolist(), sub.to_list()))
        outs.append(got)
    assert outs[0] == outs[1] and sum(len(x[1]) for x in outs[0]) == sum(len(b) for b in second)
    assert [v.stats() for v in master.vnfs] == [v.stats() for v in twin.vnfs]
    for ctx, v in zip(twin.contexts, views):  # views taken before the restore still see the tables
        for n, t in ctx.tables.items():
            assert t.values is v[n]


def test_default_vnf_snapshot_is_empty_and_restore_refuses_state():
    v = VNF()
    assert v.snapshot() == {}
    v.restore({})
    with pytest.raises(ValueError, match="no Python-side state"):
        v.restore({"x": 1})


def test_monitor_restore_rejects_wrong_exports():
    from vnfkit.nfs.monitor import Monitor
    from vnfkit.state import SharedState
    from vnfkit.vnf import Context

    m = Monitor()
    m.setup(Context(0, 1, shared=SharedState()))
    with pytest.raises(ValueError, match="FLOW_RECORD_DTYPE"):
        m.restore({"exports": np.zeros(3), "stats": {}})
    with pytest.raises(TypeError, match="unknown config key"):
        m.restore({"bogus": 1})


def test_checkpoint_pause_of_a_100k_flow_table_is_measured():
    """Indicative: the synchronous in-process snapshot of one worker with 100 k live flows."""
    import time

    t = FlowTable(1 << 17, np.dtype([("p", "<u8"), ("b", "<u8")]))
    keys = make_keys(np.arange(1, 100_001), 7, 1, 2)
    t.lookup_or_insert(keys, ts_ns=1)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        img = t.snapshot()
        times.append(time.perf_counter() - t0)
    assert len(img) > 100_000 * 64 and len(FlowTable.restore(img)) == 100_000
    print(f"100k-flow FlowTable snapshot: min {min(times) * 1e3:.2f} ms, max {max(times) * 1e3:.2f} ms")
    assert traffic is not None


def _big_master(flows=100_000):
    from vnfkit.state import SharedState
    from vnfkit.vnf import Context

    ctx = Context(0, 1, shared=SharedState())
    t = ctx.flow_table("t", capacity=1 << 17, value_dtype=np.dtype([("p", "<u8"), ("b", "<u8")]))
    slots, _ = t.lookup_or_insert(make_keys(np.arange(1, flows + 1), 7, 1, 2), ts_ns=1)
    t.values["p"][slots] = np.arange(flows)
    return [VNF()], [ctx], ctx.shared, t


def test_forked_checkpoint_is_consistent_at_the_fork_and_pauses_only_for_fork(tmp_path):
    import time

    from vnfkit.recovery.cow import fork_checkpoint

    vnfs, ctxs, shared, t = _big_master()
    sync_pause = []
    for _ in range(3):
        sync_pause.append(take_checkpoint(vnfs, ctxs, shared, epoch=0, next_input=0, last_packet_id=0).pause_s)
    fk = fork_checkpoint(vnfs, ctxs, shared, tmp_path / "ck", epoch=1, next_input=5, last_packet_id=9)
    t.values["p"][:] += 1  # the master goes on writing: the child's image must not see it
    t0 = time.perf_counter()
    blob = fk.wait()
    wait_s = time.perf_counter() - t0
    ck = Checkpoint.from_bytes(blob)
    assert ck.epoch == 1 and ck.next_input == 5
    twin_vnfs, twin_ctxs, twin_shared, tt = _big_master(10)
    restore_checkpoint(ck, twin_vnfs, twin_ctxs, twin_shared)
    live = tt.live_slots()
    assert len(live) == 100_000 and (tt.values["p"][live] == np.arange(100_000)).all()
    print(f"100k flows: synchronous pause {min(sync_pause) * 1e3:.2f}-{max(sync_pause) * 1e3:.2f} ms, "
          f"fork pause {fk.pause_s * 1e3:.2f} ms (child done {wait_s * 1e3:.1f} ms later)")


def test_an_image_diff_carries_just_the_changed_blocks_and_patches_back_exactly():
    import numpy as np

    from vnfkit.recovery.checkpoint import DIFF_BLOCK, image_diff, image_patch

    rng = np.random.default_rng(5)
    for n in (0, 7, 64, 1000, 777_403):
        old = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        new = bytearray(old)
        for i in rng.integers(0, max(1, n), min(n, 40)):
            new[int(i)] ^= 0x5A
        new = bytes(new)
        d = image_diff(old, new)
        assert image_patch(old, d) == new
        changed = {i // DIFF_BLOCK for i in range(n) if old[i] != new[i] and i < n // DIFF_BLOCK * DIFF_BLOCK}
        assert len(d) == 32 + len(changed) * (4 + DIFF_BLOCK) + n % DIFF_BLOCK
        assert image_patch(old, image_diff(old, old)) == old
    old, new = bytes(1000), bytes(999) + b"\x01"
    d = image_diff(old, new)
    with pytest.raises(ValueError, match="applied to one of 999"):
        image_patch(old[:-1], d)
    with pytest.raises(ValueError, match="header"):
        image_patch(old, b"VNFKDIFF")
    with pytest.raises(ValueError, match="bad header"):
        image_patch(old, b"X" * 8 + d[8:])
    with pytest.raises(ValueError, match="length does not match"):
        image_patch(old, d + b"\x00")
    with pytest.raises(ValueError, match="equal lengths"):
        image_diff(old, new[:-1])
    with pytest.raises(ValueError, match="block"):
        image_diff(old, new, block=12)
    assert image_patch(old, image_diff(old, new, block=128)) == new
    import struct
    bad = bytearray(image_diff(bytes(128), bytes(127) + b"\x02"))
    struct.pack_into("<I", bad, 32, 7)  # block 7 of a 2-block image
    with pytest.raises(ValueError, match="past the image"):
        image_patch(bytes(128), bytes(bad))
