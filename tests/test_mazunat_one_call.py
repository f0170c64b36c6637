"""MazuNAT's one-call fast path (the native ``NatFastPath`` object) decides exactly as the split +
fast-path calls it replaces: same output bytes, drop reasons, output ports, logged determinants and
counters, batch by batch, on two-way traffic with new flows, expiry, late replies (expired
mappings seen by the fast path), pool exhaustion and endpoint-dependent ports; and its own bad
input gives clear errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vnfkit import _core, traffic
from vnfkit.classify import MultiQueueClassifier
from vnfkit.nfs.mazunat import MazuNAT
from vnfkit.state import SharedState
from vnfkit.tables import make_keys
from vnfkit.vnf import Context


class TwoCalls(MazuNAT):
    native_batch = False


def run(cls: type[MazuNAT], chunk: int, port_hi: int, edm: bool) -> dict[str, Any]:
    t = traffic.TwoWayTraffic(3000, 60_000, 11, chunk=chunk, flow_rate=20_000.0, mean_duration_s=0.05,
                              udp_fraction=0.3)
    ctx = Context(0, 1, shared=SharedState(), classifier=MultiQueueClassifier(1))
    nat = cls()
    nat.setup(ctx, port_lo=1024, port_hi=port_hi, endpoint_dependent=edm, tcp_timeout_s=1.0,
              tcp_done_timeout_s=0.05, udp_timeout_s=0.2, gc_interval_s=0.01)
    seen = []
    while (b := t.next_input()) is not None:
        b.parse()
        outs = [b.select(np.arange(s, min(s + 512, len(b)), dtype=np.uint32)) for s in range(0, len(b), 512)]
        for x in outs:
            nat.process(x, ctx)
            seen.append((x.to_list(), x.drop.tobytes(), x.port.tobytes(), ctx.state.drain_chunk(), dict(nat.c)))
        t.answer(outs)
    return {"seen": seen, "stats": nat.stats()}


@pytest.mark.parametrize(("chunk", "port_hi", "edm"), [
    (16384, 65535, False),      # replies in time: new flows, expiry, port reuse
    (4 * 65536, 65535, False),  # late replies: the fast path meets expired mappings
    (16384, 1400, False),       # a small pool: exhaustion drops
    (16384, 65535, True),       # endpoint-dependent ports (new flows decided in Python)
])
def test_one_call_decides_as_two_calls(chunk: int, port_hi: int, edm: bool) -> None:
    a = run(MazuNAT, chunk, port_hi, edm)
    b = run(TwoCalls, chunk, port_hi, edm)
    assert len(a["seen"]) == len(b["seen"]) > 0
    for x, y in zip(a["seen"], b["seen"]):
        assert x == y
    st = a["stats"]
    assert st == b["stats"] and st["new_mappings"] > 0 and st["expired_mappings"] > 0
    if chunk > 65536:
        assert st["drop_no_mapping"] > 0
    if port_hi < 65535:
        assert st["drop_pool_exhausted"] > 0


def _tables(cap: int = 64) -> tuple[Any, Any]:
    rec = np.dtype([("deadline", "<u8"), ("timeout", "<u8"), ("a", "<u4"), ("b", "<u4"), ("c", "<u4"),
                    ("d", "<u4")])
    return _core.FlowTable(cap, rec.itemsize), _core.FlowTable(cap, 4)


def _bufs(cap: int, n: int) -> list[np.ndarray]:
    return [np.zeros(cap, np.uint8), np.zeros(n, np.uint32), np.zeros(n, np.uint32), np.zeros(n, np.uint8),
            np.zeros(n, np.uint32)]


def test_native_batch_object_bad_input() -> None:
    out, inb = _tables()
    fp = _core.NatFastPath(out, inb, 0x0A000000, 0xFF000000, 0xC0000201, 1, 2, 10, *_bufs(64, 4))
    assert fp.batch_capacity == 4
    keys = make_keys(np.full(5, 0x0A000001, np.uint32), np.full(5, 0xC6120001, np.uint32),
                     np.arange(5, dtype=np.uint16) + 1000, np.full(5, 80, np.uint16), np.full(5, 17, np.uint8))
    b = _core.build_packets(keys, np.full(5, 64, np.uint16), np.zeros(5, np.uint64), np.zeros(5, np.uint8),
                            np.zeros(5, np.uint32))
    b.parse()
    with pytest.raises(ValueError, match="batch: 5 packets, more than the buffers' 4"):
        fp.run(b, None, None, 1 << 60)
    with pytest.raises(ValueError, match="fwd_rev: needs 65536 entries"):
        fp.run(b.select(np.arange(4, dtype=np.uint32)), np.zeros(3, np.uint8), None, 1 << 60)
    # a common batch with an expiry scan due is handed back (status 5) with its earliest packet time,
    # and with other packets too it is left to the general path (status 4): nothing but the port presets
    small = b.select(np.arange(4, dtype=np.uint32))
    small.ts_ns[:] = [7, 5, 9, 6]
    before = small.to_list()
    r = fp.run(small, None, None, 5)
    assert r[0] == 5 and r[1] == 5 and small.to_list() == before and len(out) == 0
    small.key["dst"][2, :4] = [10, 0, 0, 9]  # inside to inside: not the NAT's
    assert fp.run(small, None, None, 5)[0] == 4 and small.to_list() == before and len(out) == 0
    assert fp.run(small, None, None, 6)[0] == 4 and len(out) == 0
    with pytest.raises(ValueError, match="mark: needs exactly 64 entries"):
        _core.NatFastPath(out, inb, 0, 0, 1, 1, 2, 10, *_bufs(63, 4))
    with pytest.raises(ValueError, match="out: values must be 32-byte NAT records"):
        _core.NatFastPath(_core.FlowTable(64, 8), inb, 0, 0, 1, 1, 2, 10, *_bufs(64, 4))
    ro = _bufs(64, 4)
    ro[1].flags.writeable = False
    with pytest.raises(ValueError, match="must be writable"):
        _core.NatFastPath(out, inb, 0, 0, 1, 1, 2, 10, *ro)
    with pytest.raises(ValueError, match="tcp_pool, udp_pool, state_ctx: give all three or none"):
        _core.NatFastPath(out, inb, 0, 0, 1, 1, 2, 10, *_bufs(64, 4), state_ctx=SharedState().context(0))
