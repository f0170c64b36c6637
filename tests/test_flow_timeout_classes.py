"""FlowTable timeout classes: per-protocol idle timeouts (tcp / tcp_closing / udp / icmp), chosen
by protocol or per packet at insert, moved on FIN/RST or explicitly, stale detection for packets
that arrive after a flow's deadline, touch() by slot for the reply direction, and snapshots --
checked against a small reference model on random traffic."""

from __future__ import annotations

import numpy as np
import pytest

from vnfkit.tables import EXPIRED_CLOSED, EXPIRED_IDLE, FlowTable, SnapshotError, make_keys

S = 1_000_000_000
CLASSES = {"tcp": 86400, "tcp_closing": 240, "udp": 300, "icmp": 60}


def k(i, proto=6):
    return make_keys(0x0A000000 + np.asarray(i), 0x0B000001, 1000 + np.asarray(i), 80, proto)


def table(**kw):
    return FlowTable(64, np.uint64, timeout_classes=CLASSES, **kw)


def test_class_by_protocol_and_fin_moves_to_closing():
    t = table()
    assert t.timeout_classes == {"tcp": 86400 * S, "tcp_closing": 240 * S, "udp": 300 * S, "icmp": 60 * S}
    keys = np.concatenate([k([1], 6), k([2], 17), k([3], 1), k([4], 6)])
    slots, new = t.lookup_or_insert(keys, ts_ns=np.zeros(4, np.uint64))
    assert new.all()
    assert [t.deadline(int(s)) for s in slots] == [86400 * S, 300 * S, 60 * S, 86400 * S]
    assert t.timeout_class_of(slots).tolist() == [0, 2, 3, 0]
    # FIN on flow 4 at 10 s: tcp -> tcp_closing, deadline 250 s
    s4, _ = t.lookup_or_insert(k([4]), ts_ns=np.array([10 * S], np.uint64), tcp_flags=np.array([0x01], np.uint8))
    assert t.timeout_class_of(s4).tolist() == [1] and t.deadline(int(s4[0])) == 250 * S
    e = t.expire(250 * S)
    assert e["slot"].tolist() == [int(slots[2]), int(s4[0])]  # icmp at 60 s, closing tcp at 250 s
    assert e["reason"].tolist() == [EXPIRED_IDLE, EXPIRED_CLOSED]
    assert e["timeout_class"].tolist() == [3, 1]
    assert t.expire(300 * S)["slot"].tolist() == [int(slots[1])]
    assert len(t) == 1


def test_explicit_class_per_packet_and_set_timeout_class():
    t = table()
    keys = k(np.arange(4), 17)
    cls = np.array([0, 1, 2, 3], np.uint8)
    slots, _ = t.lookup_or_insert(keys, ts_ns=0, timeout_class=cls)
    assert [t.deadline(int(s)) for s in slots] == [86400 * S, 240 * S, 300 * S, 60 * S]
    s2, _ = t.lookup_or_insert(k([9], 6), ts_ns=0, timeout_class="icmp")
    assert t.deadline(int(s2[0])) == 60 * S
    t.set_timeout_class(slots[:1], "icmp")
    assert t.deadline(int(slots[0])) == 60 * S
    assert sorted(t.expire(60 * S)["slot"].tolist()) == sorted([int(slots[0]), int(slots[3]), int(s2[0])])
    with pytest.raises(ValueError, match="timeout_class: no class named 'gre'"):
        t.lookup_or_insert(k([20]), ts_ns=0, timeout_class="gre")
    with pytest.raises(ValueError, match="timeout_class: 7 is not a class"):
        t.lookup_or_insert(k([20]), ts_ns=0, timeout_class=np.array([7], np.uint8))
    assert t.lookup(k([20]))[0] == 0xFFFFFFFF  # nothing was inserted by the rejected calls
    with pytest.raises(ValueError, match="slots: 63 is not a live slot"):
        t.set_timeout_class(np.array([63], np.uint32), "tcp")


def test_stale_packets_and_touch_by_slot():
    t = table()
    slots, _ = t.lookup_or_insert(k([1, 2], 17), ts_ns=0)
    # a packet at the deadline finds the flow stale; the flow's later packets in the call do not
    keys = k([1, 1, 2], 17)
    s, new, stale = t.lookup_or_insert(keys, ts_ns=np.array([300 * S, 301 * S, 299 * S], np.uint64),
                                       report_stale=True)
    assert not new.any() and stale.tolist() == [True, False, False]
    # touch: the reply direction refreshes by slot; rows of a column via indices
    ts = np.array([0, 0, 601 * S, 598 * S], np.uint64)
    st, n = t.touch(np.array([slots[0], slots[1]], np.uint32), ts, indices=np.array([2, 3], np.uint32))
    assert n == 1 and st.tolist() == [True, False]  # flow 1: 301+300 = 601 s; flow 2: 599 s > 598 s
    assert t.deadline(int(slots[0])) == 901 * S and t.deadline(int(slots[1])) == 898 * S
    with pytest.raises(ValueError, match="not a live slot"):
        t.touch(np.array([40], np.uint32), np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="ts_ns: length 1 differs from the number of slots 2"):
        t.touch(slots, np.zeros(1, np.uint64))


def test_touch_with_fin_moves_tcp_class():
    t = table()
    s, _ = t.lookup_or_insert(k([1], 6), ts_ns=0)
    st, n = t.touch(s, np.array([5 * S], np.uint64), np.array([0x04], np.uint8))  # RST from the reply side
    assert n == 0 and t.timeout_class_of(s).tolist() == [1] and t.deadline(int(s[0])) == 245 * S


def test_custom_on_close_and_protocol_classes():
    t = FlowTable(16, np.uint64, timeout_classes=[("long", None), ("short", 1.0), ("done", 0.5)],
                  on_close={"long": "done"}, protocol_classes={17: "short"})
    s, _ = t.lookup_or_insert(np.concatenate([k([1], 6), k([2], 17)]), ts_ns=0)
    assert t.deadline(int(s[0])) is None and t.deadline(int(s[1])) == S  # tcp -> first class (never)
    t.lookup_or_insert(k([1], 6), ts_ns=np.array([S], np.uint64), tcp_flags=np.array([1], np.uint8))
    assert t.deadline(int(s[0])) == S + S // 2


@pytest.mark.parametrize("bad, exc, msg", [
    (dict(timeout_classes={}), ValueError, "must name at least one class"),
    (dict(timeout_classes={"a": 0}), ValueError, r"timeout_classes\['a'\]: must be > 0"),
    (dict(timeout_classes={"a": 1}, idle_timeout_s=5), ValueError, "not both"),
    (dict(timeout_classes={"a": 1}, on_close={"a": "b"}), ValueError, "on_close: 'b' is not a timeout class"),
    (dict(timeout_classes={"a": 1}, protocol_classes={300: "a"}), ValueError, "protocol_classes: 300 is out of range"),
    (dict(timeout_classes="tcp"), TypeError, "expected a dict or a list"),
    (dict(timeout_classes=[("a", 1), ("a", 2)]), ValueError, "named twice"),
    (dict(timeout_classes={f"c{i}": 1 for i in range(65)}), ValueError, "at most 64 classes"),
    (dict(on_close={"a": "b"}), ValueError, "need timeout_classes"),
])
def test_bad_timeout_classes_are_clear_errors(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        FlowTable(8, np.uint64, **bad)


def test_snapshot_keeps_classes_and_names():
    t = table()
    keys = np.concatenate([k([1], 6), k([2], 17), k([3], 6)])
    slots, _ = t.lookup_or_insert(keys, ts_ns=0, tcp_flags=np.array([0, 0, 1], np.uint8))
    r = FlowTable.restore(t.snapshot())
    assert r.timeout_classes == t.timeout_classes
    assert [r.deadline(int(s)) for s in slots] == [t.deadline(int(s)) for s in slots]
    assert r.to_numpy()["timeout_class"].tolist() == [0, 2, 1]
    s, _ = r.lookup_or_insert(k([4], 1), ts_ns=0)  # the protocol map survived too
    assert r.timeout_class_of(s).tolist() == [3]
    # legacy tables keep their two implicit classes
    legacy = FlowTable(8, np.uint64, idle_timeout_s=30, tcp_close_timeout_s=5)
    assert legacy.timeout_classes == {"idle": 30 * S, "closing": 5 * S}
    assert FlowTable.restore(legacy.snapshot()).timeout_classes == legacy.timeout_classes
    bad = bytearray(t.snapshot())
    bad[-10] ^= 0xFF
    with pytest.raises(SnapshotError):
        FlowTable.restore(bytes(bad))


def test_random_traffic_matches_a_reference_model():
    """Random packets of random protocols and flags, random expire() times: every deadline, every
    stale mark and every expiry equals a plain-Python model of the classes."""
    rng = np.random.default_rng(11)
    t = FlowTable(4096, np.uint64, timeout_classes=CLASSES)
    timeout = {0: 86400 * S, 1: 240 * S, 2: 300 * S, 3: 60 * S}
    proto_class = {6: 0, 17: 2, 1: 3}
    model: dict[bytes, list[int]] = {}  # key -> [class, last_ts]
    now = 0
    for _ in range(60):
        n = 200
        ids = rng.integers(0, 300, n)
        protos = np.array([6, 17, 1])[ids % 3]
        keys = k(ids, protos)
        now += int(rng.integers(0, 120 * S))
        ts = np.sort(now + rng.integers(0, S, n)).astype(np.uint64)
        flags = np.where(rng.random(n) < 0.05, 0x01, 0).astype(np.uint8)
        slots, new, stale = t.lookup_or_insert(keys, ts_ns=ts, tcp_flags=flags, report_stale=True)
        for j in range(n):
            kb = keys[j].tobytes()
            closes = protos[j] == 6 and flags[j]
            if kb not in model:
                assert new[j] and not stale[j]
                c = proto_class[int(protos[j])]
                model[kb] = [1 if (closes and c == 0) else c, int(ts[j])]
            else:
                m = model[kb]
                assert not new[j]
                assert stale[j] == (m[1] + timeout[m[0]] <= int(ts[j]))
                m[1] = max(m[1], int(ts[j]))
                if closes and m[0] == 0:
                    m[0] = 1
        for j in range(n):  # after the call: the flow's newest packet counts
            m = model[keys[j].tobytes()]
            assert t.deadline(int(slots[j])) == m[1] + timeout[m[0]]
        now = int(ts[-1])
        exp = t.expire(now)
        want = sorted(kb for kb, m in model.items() if m[1] + timeout[m[0]] <= now)
        assert sorted(x.tobytes() for x in exp["key"]) == want
        for kb in want:
            del model[kb]
        assert len(t) == len(model)
