"""RangeTable: validated, non-overlapping flow-ID ranges with split (scale-out) and merge
(scale-in), checked against a plain list reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vnfkit
from vnfkit import _core
from vnfkit.tables import NO_TARGET, RangeTable, SnapshotError

MAX = 2**32 - 1


def ref_find(ranges, i):
    for lo, hi, t in ranges:
        if lo <= i <= hi:
            return t
    return NO_TARGET


def ref_split(ranges, m, new):
    for j, (lo, hi, t) in enumerate(ranges):
        if lo <= m <= hi:
            if lo == m:
                return None
            return ranges[:j] + [(lo, m - 1, t), (m, hi, new)] + ranges[j + 1:]
    return None


def ref_merge(ranges, m, target):
    for j in range(1, len(ranges)):
        if ranges[j][0] == m and ranges[j - 1][1] + 1 == m:
            lo, _, t = ranges[j - 1]
            return ranges[:j - 1] + [(lo, ranges[j][1], t if target is None else target)] + ranges[j + 1:]
    return None


@st.composite
def disjoint_ranges(draw):
    cuts = sorted(set(draw(st.lists(st.integers(0, MAX), min_size=0, max_size=12))))
    out = []
    for a, b in zip(cuts[::2], cuts[1::2]):
        out.append((a, b, draw(st.integers(0, 1000))))
    if draw(st.booleans()) and cuts:  # sometimes contiguous (a partition of a prefix)
        out = [(lo, hi, t) for (lo, _, t), (hi_next, _, _) in zip(out, out[1:] + [(cuts[-1] + 1, 0, 0)])
               for hi in [hi_next - 1] if hi >= lo]
    return out


op = st.one_of(
    st.tuples(st.just("split"), st.integers(0, MAX), st.integers(0, 50)),
    st.tuples(st.just("merge"), st.integers(0, MAX), st.one_of(st.none(), st.integers(0, 50))),
    st.tuples(st.just("split_at_boundary"), st.integers(0, 20), st.integers(0, 50)),
    st.tuples(st.just("merge_at_boundary"), st.integers(0, 20), st.one_of(st.none(), st.integers(0, 50))),
)


@settings(max_examples=150, deadline=None)
@given(start=disjoint_ranges(), ops=st.lists(op, max_size=15), probes=st.lists(st.integers(0, MAX), max_size=20))
def test_split_merge_lookup_match_list_reference(start, ops, probes):
    rt = RangeTable(start)
    ref = list(start)
    for kind, a, b in ops:
        if kind == "split_at_boundary" and ref:
            lo, hi, _ = ref[a % len(ref)]
            a, kind = lo + (hi - lo + 1) // 2, "split"
        if kind == "merge_at_boundary" and ref:
            a, kind = ref[a % len(ref)][0], "merge"
        if kind == "split":
            want = ref_split(ref, a, b)
            if want is None:
                with pytest.raises(ValueError, match="split"):
                    rt.split(a, b)
            else:
                assert rt.split(a, b) == [r[0] for r in want].index(a)
                ref = want
        elif kind == "merge":
            want = ref_merge(ref, a, b)
            if want is None:
                with pytest.raises(ValueError, match="merge"):
                    rt.merge(a, b)
            else:
                rt.merge(a, b)
                ref = want
        assert rt.ranges() == ref  # unchanged on error, exact on success
    edges = [x for lo, hi, _ in ref for x in (lo, hi, max(lo - 1, 0), min(hi + 1, MAX))]
    ids = np.array(probes + edges, dtype=np.uint32)
    assert rt.lookup(ids).tolist() == [ref_find(ref, int(i)) for i in ids]
    assert [rt.find(int(i)) for i in ids[:5]] == [ref_find(ref, int(i)) for i in ids[:5]]
    assert RangeTable.restore(rt.snapshot()).ranges() == ref


@pytest.mark.parametrize(
    "bad, msg",
    [
        ([(0, 10, 1), (5, 20, 2)], "overlaps"),
        ([(0, 10, 1), (10, 20, 2)], "overlaps"),
        ([(20, 30, 1), (0, 10, 2)], "not sorted"),
        ([(5, 4, 1)], "empty"),
        ([(0, 4, NO_TARGET)], "reserved"),
    ],
)
def test_invalid_ranges_are_rejected_and_leave_the_table_unchanged(bad, msg):
    with pytest.raises(ValueError, match=msg):
        RangeTable(bad)
    rt = RangeTable([(0, 99, 7)])
    with pytest.raises(ValueError, match=msg):
        rt.assign(bad)
    assert rt.ranges() == [(0, 99, 7)]


def test_out_of_range_integers_are_type_errors():
    with pytest.raises(TypeError):
        RangeTable([(-1, 5, 1)])
    with pytest.raises(TypeError):
        RangeTable([(0, 2**32, 1)])


def test_scale_out_then_in_as_migration_avoidance_does():
    rt = RangeTable([(0, MAX, 0)])
    assert rt.split(2**31, 1) == 1
    assert rt.split(2**30, 2) == 1
    assert rt.ranges() == [(0, 2**30 - 1, 0), (2**30, 2**31 - 1, 2), (2**31, MAX, 1)]
    with pytest.raises(ValueError, match="empty"):
        rt.split(2**30, 3)  # [X, M) would be empty
    with pytest.raises(ValueError, match="boundary"):
        rt.merge(5)
    assert rt.merge(2**31, target=2) == 1
    assert rt.ranges() == [(0, 2**30 - 1, 0), (2**30, MAX, 2)]
    rt.set_target(0, 9)
    assert rt.to_numpy()["target"].tolist() == [9, 2]
    assert len(rt) == 2 and list(rt) == rt.ranges()


def test_gaps_look_up_as_no_target_and_batches_work():
    rt = RangeTable([(10, 19, 1), (30, 39, 2)])
    b = _core.PacketBatch([b"\0" * 60] * 5)
    b.flow_id[:] = [0, 10, 25, 39, 40]
    assert rt.lookup(b).tolist() == [NO_TARGET, 1, NO_TARGET, 2, NO_TARGET]
    with pytest.raises(TypeError, match="uint32"):
        rt.lookup(np.array([1, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="no range"):
        rt.split(25, 3)


def test_snapshot_round_trip_and_corruption():
    rt = RangeTable([(0, 9, 1), (10, 99, 2)])
    img = rt.snapshot()
    assert RangeTable.restore(img).ranges() == rt.ranges()
    bad = bytearray(img)
    bad[-6] ^= 1
    with pytest.raises(vnfkit.SnapshotError, match="(?i)crc|checksum"):
        RangeTable.restore(bytes(bad))
    with pytest.raises(SnapshotError):
        RangeTable.restore(img[:-3])
    with pytest.raises(SnapshotError, match="range_table"):
        RangeTable.restore(vnfkit.ExceptionTable().snapshot())
