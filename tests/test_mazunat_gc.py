"""MazuNAT's expiry scan: the armed-record index (``nat_expired(..., armed)``) finds exactly what the
full pass finds, and MazuNAT keeps the index valid across fast path, step-by-step path and restore."""

from __future__ import annotations

import numpy as np
import pytest

from vnfkit import _core
from vnfkit.nfs.mazunat import EXTERNAL, MazuNAT
from vnfkit.state import SharedState
from vnfkit.tables import FlowTable, make_keys
from vnfkit.vnf import Context

_REC = np.dtype([("deadline", "<u8"), ("timeout", "<u8"), ("rest", "V16")])


def _table(n: int, cap: int, seed: int) -> tuple[FlowTable, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = FlowTable(cap, value_dtype=_REC)
    keys = make_keys(0x0A000000 + rng.choice(1 << 20, n, replace=False).astype(np.uint32),
                     np.full(n, 0xC6120001, np.uint32), np.full(n, 1000, np.uint16), np.full(n, 80, np.uint16),
                     np.full(n, 6, np.uint8))
    slots, new = t.lookup_or_insert(keys)
    assert new.all()
    return t, slots


def test_armed_scan_equals_the_full_pass_and_clears_idle_bytes() -> None:
    t, slots = _table(300, 1024, seed=3)
    rng = np.random.default_rng(4)
    dl = rng.integers(1, 1000, len(slots)).astype(np.uint64)
    dl[::7] = 0  # live, but no deadline yet
    t.values["deadline"][slots] = dl
    t.remove_slots(np.ascontiguousarray(slots[1::11]))  # removed entries: their deadlines stay, not live
    armed = np.ones(t.capacity, np.uint8)
    for now in (0, 1, 250, 500, 999, 10**6):
        full = _core.nat_expired(t._t, now)
        fast = _core.nat_expired(t._t, now, armed)
        assert np.array_equal(full, fast), now
        assert len(full) > 0 or now < 2
    # every byte left armed is a live record with a non-zero deadline, and every such record is armed
    live = np.zeros(t.capacity, bool)
    live[t.live_slots()] = True
    want = live & (t.values["deadline"] != 0)
    assert np.array_equal(armed.astype(bool), want)
    # an unarmed record is not read (the caller's contract): a deadline without its byte is missed
    s = int(slots[3])
    t.values["deadline"][s] = 5
    armed[s] = 0
    assert s in _core.nat_expired(t._t, 10)
    assert s not in _core.nat_expired(t._t, 10, armed)


@pytest.mark.parametrize(("armed", "err", "msg"), [
    (np.ones(1023, np.uint8), ValueError, "armed: needs exactly 1024 entries"),
    (np.ones(1024, np.int64), TypeError, "armed"),
    ([1] * 1024, TypeError, "armed"),
])
def test_armed_bad_input(armed: object, err: type[Exception], msg: str) -> None:
    t, _ = _table(4, 1024, seed=1)
    with pytest.raises(err, match=msg):
        _core.nat_expired(t._t, 5, armed)  # type: ignore[arg-type]
    ro = np.ones(1024, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="armed: must be writable"):
        _core.nat_expired(t._t, 5, ro)


def _nat(**cfg: object) -> tuple[MazuNAT, Context]:
    ctx = Context(0, 1, shared=SharedState())
    nat = MazuNAT()
    nat.setup(ctx, port_lo=20000, port_hi=20999, max_flows=4096, udp_timeout_s=1.0, gc_interval_s=0.001, **cfg)
    return nat, ctx


def _outbound(n: int, t_ns: int, first_src: int = 0x0A000001) -> _core.PacketBatch:
    keys = make_keys(first_src + np.arange(n, dtype=np.uint32), np.full(n, 0xC6120001, np.uint32),
                     np.full(n, 4000, np.uint16), np.full(n, 53, np.uint16), np.full(n, 17, np.uint8))
    b = _core.build_packets(keys, np.full(n, 64, np.uint16), np.full(n, t_ns, np.uint64), np.zeros(n, np.uint8),
                            np.zeros(n, np.uint32))
    b.packet_id[:] = np.arange(n, dtype=np.uint64) + np.uint64(t_ns)
    b.parse()
    return b


@pytest.mark.parametrize("deny", [False, True], ids=["fast-path", "stepwise"])
def test_mappings_expire_on_either_path(deny: bool) -> None:
    """Mappings made by the native fast path and by the step-by-step path (a deny rule forces it)
    are all found by the GC once idle for their timeout, and their ports are released."""
    nat, ctx = _nat(deny=[{"dst": "203.0.113.0/24"}] if deny else [])
    b = _outbound(200, 10**9)
    nat.process(b, ctx)
    assert np.all(b.port == EXTERNAL) and nat.stats()["mappings"] == 200
    nat.process(_outbound(1, 10**9 + 500_000_000), ctx)  # refreshes one mapping only
    # 1.2 s later, from another internal host (a new mapping): all but the refreshed one idle > 1 s
    nat.process(_outbound(1, 10**9 + 1_200_000_000, first_src=0x0A0000FA), ctx)
    st = nat.stats()
    assert st["expired_mappings"] == 199 and st["mappings"] == 2


def test_restored_twin_expires_the_restored_mappings() -> None:
    """A twin rolled back to a checkpoint (tables restored in place, then ``restore``) must expire the
    mappings it got from the image, though its own fast path never set their deadlines."""
    nat, ctx = _nat()
    nat.process(_outbound(100, 10**9), ctx)
    images = {name: t.snapshot() for name, t in ctx.tables.items()}
    state = nat.snapshot()
    shared_img = ctx.shared.snapshot()
    twin, tctx = _nat()
    for name, img in images.items():
        tctx.tables[name].restore_in_place(img)
    tctx.shared.restore(shared_img)
    twin.restore(state)
    assert twin.stats()["mappings"] == 100
    twin.process(_outbound(1, 3 * 10**9), tctx)
    st = twin.stats()
    assert st["expired_mappings"] == 100  # all idle 2 s > 1 s; the one packet maps again
    assert st["mappings"] == 1


def test_split_gateway_reports_the_earliest_packet_time() -> None:
    b = _outbound(5, 0)
    b.ts_ns[:] = np.array([50, 7, 90, 7, 12], np.uint64)
    b.drop[1] = 1  # dropped packets count too: the GC clock is the batch's earliest time
    *lists, t_min = _core.split_gateway(b, 0x0A000000, 0xFF000000, 0xC0000201, 1, 2, True, min_ts=True)
    assert t_min == 7 and len(lists) == 8
    assert len(_core.split_gateway(b, 0x0A000000, 0xFF000000, 0xC0000201, 1, 2, True)) == 8
    empty = b.select(np.zeros(0, np.uint32))
    assert _core.split_gateway(empty, 0x0A000000, 0xFF000000, 0xC0000201, min_ts=True)[8] == 2**64 - 1
