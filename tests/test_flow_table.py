"""FlowTable: per-flow state with stable slots, batch lookup-or-insert, expiry on packet time,
Fold(A) range queries, snapshots -- checked against a small pure-Python reference model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vnfkit
from vnfkit import _core
from vnfkit.tables import EXPIRED_CLOSED, EXPIRED_IDLE, NO_SLOT, FlowTable, SnapshotError, make_keys

FIN, SYN, RST = 0x01, 0x02, 0x04
NAT = np.dtype([("ext_port", "<u2"), ("pkts", "<u8")])


def universe(n: int) -> np.ndarray:
    """n distinct keys; odd ones TCP, even ones UDP."""
    i = np.arange(n)
    return make_keys(0x0A000000 + i, 0xC0A80001, 1000 + i, 80, np.where(i % 2, 6, 17))


class RefFlowTable:
    """Reference: dict of flows + the documented LIFO free-slot stack."""

    def __init__(self, capacity, idle_ns, close_ns):
        self.cap, self.idle, self.close = capacity, idle_ns, close_ns
        self.flows: dict[bytes, dict] = {}
        self.free = list(range(capacity - 1, -1, -1))
        self.failed = 0
        self.expired = 0

    def deadline(self, e):
        t = self.idle
        if e["closing"] and self.close is not None:
            t = self.close if t is None else min(t, self.close)
        return None if t is None else e["last"] + t

    def lookup_or_insert(self, keys, ids, ts, flags):
        slots, new = [], []
        for k, fid, t, f in zip(keys, ids, ts, flags):
            kb = k.tobytes()
            closes = k["proto"] == 6 and (f & (FIN | RST)) != 0
            e = self.flows.get(kb)
            if e is not None:
                e["last"] = max(e["last"], int(t))
                e["closing"] |= bool(closes)
                slots.append(e["slot"]); new.append(False)
            elif self.free:
                s = self.free.pop()
                self.flows[kb] = dict(slot=s, last=int(t), closing=bool(closes), fid=int(fid))
                slots.append(s); new.append(True)
            else:
                self.failed += 1
                slots.append(NO_SLOT); new.append(False)
        return slots, new

    def expire(self, now):
        due = [(self.deadline(e), kb) for kb, e in self.flows.items()
               if self.deadline(e) is not None and self.deadline(e) <= now]
        due.sort()
        out = []
        for d, kb in due:
            e = self.flows.pop(kb)
            self.free.append(e["slot"])
            out.append((kb, e["slot"], d, EXPIRED_CLOSED if e["closing"] else EXPIRED_IDLE))
        self.expired += len(out)
        return out

    def remove(self, keys):
        out = []
        for k in keys:
            e = self.flows.pop(k.tobytes(), None)
            if e is not None:
                self.free.append(e["slot"])
            out.append(e is not None)
        return out


op = st.one_of(
    st.tuples(st.just("pkts"), st.lists(st.tuples(st.integers(0, 11), st.integers(0, 5_000),
                                                  st.sampled_from([0, SYN, FIN, RST, 0x10])), max_size=12)),
    st.tuples(st.just("expire"), st.integers(0, 6_000)),
    st.tuples(st.just("remove"), st.lists(st.integers(0, 11), max_size=4)),
)


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(op, max_size=25), cap=st.integers(1, 8),
       idle=st.sampled_from([None, 700, 2_000]), close=st.sampled_from([None, 100, 5_000]),
       tick=st.sampled_from([None, 1e-9, 3e-7]))
def test_matches_reference_model(ops, cap, idle, close, tick):
    keys = universe(12)
    t = FlowTable(cap, NAT, idle_timeout_s=None if idle is None else idle / 1e9,
                  tcp_close_timeout_s=None if close is None else close / 1e9, tick_s=tick)
    ref = RefFlowTable(cap, idle, close)
    clock = 0
    for kind, arg in ops:
        if kind == "pkts":
            idx = np.array([a for a, _, _ in arg], dtype=np.int64)
            ts = np.array([clock + d for _, d, _ in arg], dtype=np.uint64)
            fl = np.array([f for _, _, f in arg], dtype=np.uint8)
            ids = (idx * 7).astype(np.uint32)
            k = keys[idx]
            slots, new = t.lookup_or_insert(k, ids, ts, fl)
            rs, rn = ref.lookup_or_insert(k, ids, ts, fl)
            assert slots.tolist() == rs and new.tolist() == rn
            ok = slots != NO_SLOT
            np.add.at(t.values["pkts"], slots[ok], 1)
        elif kind == "expire":
            clock = max(clock, arg)
            got = t.expire(arg)
            want = ref.expire(arg)
            assert [(r["key"].tobytes(), int(r["slot"]), int(r["deadline_ns"]), int(r["reason"])) for r in got] == want
        else:
            k = keys[np.array(arg, dtype=np.int64)]
            assert t.remove(k).tolist() == ref.remove(k)
        assert len(t) == len(ref.flows)
        snap = t.to_numpy()
        assert {r["key"].tobytes(): int(r["slot"]) for r in snap} == {kb: e["slot"] for kb, e in ref.flows.items()}
        for r in snap:
            e = ref.flows[r["key"].tobytes()]
            assert r["last_ts"] == e["last"] and bool(r["closing"]) == e["closing"] and r["flow_id"] == e["fid"]
            d = t.deadline(int(r["slot"]))
            assert d == ref.deadline(e)
    s = t.stats()
    assert s["failed_inserts"] == ref.failed and s["expirations"] == ref.expired
    # Round trip at the end of every example: identical contents and identical future behaviour.
    r2 = FlowTable.restore(t.snapshot())
    np.testing.assert_array_equal(r2.to_numpy(), t.to_numpy())
    assert r2.stats() == t.stats()
    a = t.lookup_or_insert(keys, ts_ns=clock + 10)
    b = r2.lookup_or_insert(keys, ts_ns=clock + 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_full_table_fails_inserts_visibly_and_evicts_nothing():
    t = FlowTable(3, NAT)
    keys = universe(5)
    slots, new = t.lookup_or_insert(keys)
    assert slots.tolist() == [0, 1, 2, NO_SLOT, NO_SLOT]
    assert new.tolist() == [True, True, True, False, False]
    s = t.stats()
    assert s["failed_inserts"] == 2 and s["size"] == 3 and s["load"] == 1.0
    # existing flows still hit; the refused ones still miss
    assert t.lookup(keys).tolist() == [0, 1, 2, NO_SLOT, NO_SLOT]
    t.remove(keys[1:2])
    slots, new = t.lookup_or_insert(keys[3:4])
    assert slots.tolist() == [1] and new.tolist() == [True]


def test_values_are_a_writable_view_and_slots_are_stable():
    t = FlowTable(16, NAT, idle_timeout_s=10)
    keys = universe(6)
    slots, _ = t.lookup_or_insert(keys, ts_ns=1)
    t.values["ext_port"][slots] = np.arange(6) + 40000
    for rnd in range(3):
        s2, new = t.lookup_or_insert(np.ascontiguousarray(keys[::-1]), ts_ns=2 + rnd)
        assert not new.any()
        np.testing.assert_array_equal(s2, slots[::-1])
        t.values["pkts"][s2] += 1
    assert t.values["ext_port"][slots].tolist() == list(range(40000, 40006))
    assert t.values["pkts"][slots].tolist() == [3] * 6
    assert t.values.base is not None  # a view over engine memory, not a copy
    t.remove(keys[:1])
    s3, new = t.lookup_or_insert(universe(7)[6:], ts_ns=9)
    assert new.all() and s3[0] == slots[0] and t.values["pkts"][s3[0]] == 0  # reused slot is zeroed


def test_batch_form_uses_key_flow_id_ts_and_tcp_flags_columns():
    n = 4
    b = _core.PacketBatch([b"\0" * 64] * n, ts_ns=np.array([10, 20, 30, 40], dtype=np.uint64))
    b.key[:] = universe(2)[[1, 1, 0, 1]]  # key 1 is TCP
    b.flow_id[:] = [5, 5, 9, 5]
    b.tcp_flags[:] = [SYN, 0x10, 0, FIN]
    t = FlowTable(8, 4, idle_timeout_s=1.0, tcp_close_timeout_s=1e-6)
    slots, new = t.lookup_or_insert(b)
    assert slots.tolist() == [0, 0, 1, 0] and new.tolist() == [True, False, True, False]
    rows = {int(r["slot"]): r for r in t.to_numpy()}
    assert rows[0]["last_ts"] == 40 and rows[0]["closing"] and rows[0]["flow_id"] == 5
    assert not rows[1]["closing"]
    assert t.deadline(0) == 40 + 1000 and t.deadline(1) == 30 + 10**9
    exp = t.expire(1040)
    assert exp["slot"].tolist() == [0] and exp["reason"].tolist() == [EXPIRED_CLOSED]
    assert exp["value"].dtype == t.value_dtype
    exp = t.expire(10**9 + 30)
    assert exp["slot"].tolist() == [1] and exp["reason"].tolist() == [EXPIRED_IDLE]
    st_ = t.stats()
    assert st_["expired_closed"] == 1 and st_["expired_idle"] == 1 and len(t) == 0


def test_expired_entries_carry_their_state_and_expiry_is_replayable():
    def run():
        t = FlowTable(64, NAT, idle_timeout_s=1e-6)
        keys = universe(10)
        ts = np.arange(10, dtype=np.uint64) * 100
        slots, _ = t.lookup_or_insert(keys, np.arange(10, dtype=np.uint32), ts)
        t.values["ext_port"][slots] = 5000 + np.arange(10)
        return t.expire(1500)

    a, b = run(), run()
    np.testing.assert_array_equal(a, b)
    assert a["value"]["ext_port"].tolist() == [5000, 5001, 5002, 5003, 5004, 5005]
    assert a["deadline_ns"].tolist() == [1000, 1100, 1200, 1300, 1400, 1500]


def test_far_future_expiry_wraps_the_wheel_correctly():
    t = FlowTable(4, 8, idle_timeout_s=3600.0, tick_s=1e-3)  # wheel horizon ~4 s << 1 h
    t.lookup_or_insert(universe(1), ts_ns=0)
    for now in range(0, 3600 * 10**9, 7 * 10**9 + 13):
        assert len(t.expire(now)) == 0
    assert t.expire(3600 * 10**9 - 1).size == 0
    assert t.expire(3600 * 10**9)["slot"].tolist() == [0]


def test_active_in_range_is_fold_of_a_flow_id_range():
    t = FlowTable(64, 8)
    keys = universe(20)
    ids = (np.arange(20, dtype=np.uint32) * 1000)
    t.lookup_or_insert(keys, ids, np.arange(20, dtype=np.uint64))
    got = t.active_in_range(3000, 7000)
    assert sorted(k.tobytes() for k in got) == sorted(k.tobytes() for k in keys[3:8])
    got = t.active_in_range(3000, 7000, since_ns=5)
    assert sorted(k.tobytes() for k in got) == sorted(k.tobytes() for k in keys[5:8])
    assert t.active_slots_in_range(0, 2**32 - 1).tolist() == list(range(20))
    with pytest.raises(ValueError, match="lo must be <= hi"):
        t.active_in_range(5, 4)


def test_snapshot_rejects_truncated_and_corrupted_images():
    t = FlowTable(32, NAT, idle_timeout_s=5)
    t.lookup_or_insert(universe(9), ts_ns=7)
    img = t.snapshot()
    for cut in (0, 10, len(img) // 2, len(img) - 1):
        with pytest.raises(SnapshotError):
            FlowTable.restore(img[:cut])
    bad = bytearray(img)
    bad[len(img) // 2] ^= 0x40
    with pytest.raises(SnapshotError, match="(?i)crc|checksum"):
        FlowTable.restore(bytes(bad))
    with pytest.raises(SnapshotError, match="flow_table"):
        FlowTable.restore(vnfkit.RangeTable([(0, 9, 1)]).snapshot())
    assert issubclass(SnapshotError, ValueError) and vnfkit.SnapshotError is _core.SnapshotError
    with pytest.raises(TypeError):
        FlowTable.restore("not bytes")  # type: ignore[arg-type]


def test_bad_config_and_bad_arguments():
    with pytest.raises(ValueError, match="capacity"):
        FlowTable(0)
    with pytest.raises(ValueError, match="idle_timeout_s"):
        FlowTable(4, idle_timeout_s=0)
    with pytest.raises(ValueError, match="value_dtype"):
        FlowTable(4, 0)
    with pytest.raises(TypeError, match="object"):
        FlowTable(4, np.dtype(object))
    t = FlowTable(4)
    with pytest.raises(TypeError, match="FLOW_KEY_DTYPE"):
        t.lookup(np.zeros(3, dtype=np.uint64))
    with pytest.raises(TypeError, match="C-contiguous"):
        t.lookup(universe(6)[::2])
    with pytest.raises(TypeError, match="ts_ns"):
        t.lookup_or_insert(universe(2), ts_ns=np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="flow_ids"):
        t.lookup_or_insert(universe(2), flow_ids=np.zeros(3, dtype=np.uint32))
    with pytest.raises(TypeError, match="PacketBatch"):
        t.lookup([1, 2])  # type: ignore[arg-type]


def test_stats_report_memory_and_hit_rates():
    t = FlowTable(1000, NAT)
    keys = universe(10)
    t.lookup_or_insert(keys)
    t.lookup(universe(20))
    s = t.stats()
    assert s["inserts"] == 10 and s["hits"] == 10 and s["misses"] == 20 and s["lookups"] == 30
    assert 64 + NAT.itemsize <= s["bytes_per_entry"] < 200
    t.clear()
    assert len(t) == 0 and t.lookup(keys).tolist() == [NO_SLOT] * 10


def test_indices_equal_gathered_keys() -> None:
    """lookup / lookup_or_insert with indices act exactly like the calls on keys[indices]."""
    rng = np.random.default_rng(3)
    a, b = FlowTable(64, np.uint32), FlowTable(64, np.uint32)
    for _ in range(30):
        m = int(rng.integers(1, 40))
        k = make_keys(0x0A000000 + rng.integers(0, 80, m), 0x0B000001, rng.integers(1, 9, m), 80)
        ts = rng.integers(0, 1000, m).astype(np.uint64)
        ids = rng.integers(0, 1 << 32, m, dtype=np.uint64).astype(np.uint32)
        fl = rng.integers(0, 8, m).astype(np.uint8)
        idx = rng.integers(0, m, int(rng.integers(0, 50))).astype(np.uint32)
        sa, na = a.lookup_or_insert(k[idx], ids[idx], ts[idx], fl[idx])
        sb, nb = b.lookup_or_insert(k, ids, ts, fl, indices=idx)
        assert np.array_equal(sa, sb) and np.array_equal(na, nb)
        assert np.array_equal(a.lookup(k[idx]), b.lookup(k, idx))
    assert a.stats() == b.stats()
    assert np.array_equal(a._entries, b._entries)
    with pytest.raises(ValueError, match="indices: 5 is out of range"):
        b.lookup(k[:5], np.array([5], np.uint32))
    with pytest.raises(TypeError, match="indices"):
        b.lookup(k, np.array([0], np.int64))
