"""ExceptionTable: exact-match flow -> target with a hard capacity (a switch's 2 048 entries) or
unbounded, checked against a dict reference; and steer() = exceptions first, then ranges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnfkit import _core
from vnfkit.tables import (NO_TARGET, ExceptionTable, RangeTable, SnapshotError, TableFullError, make_keys,
                           steer)


def universe(n):
    i = np.arange(n)
    return make_keys(0x0A000000 + i, 0x0B000000 + (i % 3), 1000 + i, 443, 6)


op = st.one_of(
    st.tuples(st.just("insert"), st.lists(st.tuples(st.integers(0, 15), st.integers(0, 9)), max_size=6)),
    st.tuples(st.just("remove"), st.lists(st.integers(0, 15), max_size=6)),
)


@settings(max_examples=120, deadline=None)
@given(ops=st.lists(op, max_size=20), cap=st.one_of(st.none(), st.integers(1, 6)), strict=st.booleans())
def test_matches_dict_reference(ops, cap, strict):
    keys = universe(16)
    t = ExceptionTable(cap)
    ref: dict[bytes, int] = {}
    failed = 0
    for kind, arg in ops:
        if kind == "insert":
            idx = np.array([a for a, _ in arg], dtype=np.int64)
            tg = np.array([b for _, b in arg], dtype=np.uint32)
            k = keys[idx]
            new = {kb for kb in (x.tobytes() for x in k) if kb not in ref}
            if strict and cap is not None and len(ref) + len(new) > cap:
                with pytest.raises(TableFullError, match="nothing inserted"):
                    t.insert(k, tg)
                failed += len(ref) + len(new) - cap
            else:
                ok = t.insert(k, tg, strict=strict)
                want = []
                for x, v in zip(k, tg):
                    kb = x.tobytes()
                    if kb in ref or cap is None or len(ref) < cap:
                        ref[kb] = int(v)
                        want.append(True)
                    else:
                        failed += 1
                        want.append(False)
                assert ok.tolist() == want
        else:
            k = keys[np.array(arg, dtype=np.int64)]
            want = []
            for x in k:
                want.append(ref.pop(x.tobytes(), None) is not None)
            assert t.remove(k).tolist() == want
        assert len(t) == len(ref)
        assert dict(t.items()) == ref
        assert t.lookup(keys).tolist() == [ref.get(x.tobytes(), NO_TARGET) for x in keys]
    assert t.stats()["failed_inserts"] == failed
    r = ExceptionTable.restore(t.snapshot())
    assert dict(r.items()) == ref and r.capacity == t.capacity and r.stats() == t.stats()


def test_hardware_capacity_2048_fails_visibly_never_evicts():
    hw = ExceptionTable(capacity=2048)
    keys = universe(2100)
    with pytest.raises(TableFullError, match="2100 new keys"):
        hw.insert(keys, 1)
    assert len(hw) == 0 and hw.stats()["failed_inserts"] == 52
    assert hw.insert(keys[:2048], 1).all()
    ok = hw.insert(keys[2040:], 2, strict=False)
    assert ok.tolist() == [True] * 8 + [False] * 52  # re-targets fit, new keys do not
    assert hw.stats()["failed_inserts"] == 104
    assert (hw.lookup(keys[:2040]) == 1).all() and (hw.lookup(keys[2040:2048]) == 2).all()
    assert (hw.lookup(keys[2048:]) == NO_TARGET).all()


def test_unbounded_software_table_grows():
    sw = ExceptionTable()
    keys = universe(20000)
    tg = np.arange(20000, dtype=np.uint32)
    assert sw.insert(keys, tg).all()
    assert sw.capacity is None and len(sw) == 20000
    np.testing.assert_array_equal(sw.lookup(keys), tg)
    assert sw.remove(keys[::2].copy()).all()
    np.testing.assert_array_equal(sw.lookup(keys[1::2].copy()), tg[1::2])
    assert (sw.lookup(keys[::2].copy()) == NO_TARGET).all()
    arr = sw.to_numpy()
    assert sorted(arr["target"].tolist()) == tg[1::2].tolist()


def test_steer_prefers_exceptions_then_ranges():
    keys = universe(6)
    ids = np.array([0, 100, 200, 300, 400, 2**31], dtype=np.uint32)
    ranges = RangeTable([(0, 2**31 - 1, 0), (2**31, 2**32 - 1, 1)])
    hw, sw = ExceptionTable(2048), ExceptionTable()
    hw.insert(keys[1:2], 7)
    sw.insert(keys[1:3], 8)
    b = _core.PacketBatch([b"\0" * 60] * 6)
    b.key[:] = keys
    b.flow_id[:] = ids
    assert steer(b, ranges=ranges, exceptions=[hw, sw]).tolist() == [0, 7, 8, 0, 0, 1]
    assert steer(keys, ids, ranges=ranges).tolist() == [0, 0, 0, 0, 0, 1]
    assert steer(keys, ids, ranges=RangeTable([(50, 60, 3)])).tolist() == [NO_TARGET] * 6


def test_bad_arguments():
    t = ExceptionTable(4)
    with pytest.raises(ValueError, match="capacity"):
        ExceptionTable(0)
    with pytest.raises(ValueError, match="reserved"):
        t.insert(universe(1), NO_TARGET)
    with pytest.raises(ValueError, match="reserved"):
        t.insert(universe(2), np.array([1, NO_TARGET], dtype=np.uint32))
    assert len(t) == 0
    with pytest.raises(TypeError, match="targets"):
        t.insert(universe(2), np.array([1, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="length"):
        t.insert(universe(2), np.array([1], dtype=np.uint32))
    with pytest.raises(TypeError, match="FLOW_KEY_DTYPE"):
        t.lookup(np.zeros(2, dtype=np.uint32))


def test_snapshot_rejects_corruption():
    t = ExceptionTable(16)
    t.insert(universe(5), 3)
    img = t.snapshot()
    bad = bytearray(img)
    bad[30] ^= 0xFF
    with pytest.raises(SnapshotError):
        ExceptionTable.restore(bytes(bad))
    with pytest.raises(SnapshotError):
        ExceptionTable.restore(img[: len(img) - 1])
