"""A user's VNF and its benchmark, through vnfkit's pytest plugin (the ``vnf_benchmark`` fixture).

Run it like any pytest-benchmark suite::

    pytest docs/examples/test_syn_guard_bench.py --benchmark-json=out.json

``out.json`` then holds, per benchmark, ``extra_info`` with ``mpps``, ``p50_us``, ``p99_us`` and
drops by reason. The fixture fails the test if the VNF loses a packet (one that does not come out,
or that is dropped without a reason).
"""

from __future__ import annotations

import numpy as np
import pytest

import vnfkit as vk


class SynGuard(vk.VNF):
    """Drop new TCP connections from a /24 that opened more than `limit` of them so far; forward the rest."""

    name = "syn_guard"

    def setup(self, ctx: vk.Context, limit: int = 50) -> None:
        self.limit = limit
        self.flows = ctx.flow_table("flows", capacity=1 << 16, idle_timeout_s=30)
        self.opened = ctx.counters("opened_per_src24", slots=1 << 16)

    def process(self, batch: vk.PacketBatch, ctx: vk.Context) -> None:
        live = batch.drop == 0
        idx = np.flatnonzero(live).astype(np.uint32)
        batch.port[:] = 0
        if len(idx) == 0:
            return
        sub_keys = batch.key[idx]
        _slots, new = self.flows.lookup_or_insert(batch, indices=idx)
        tcp_new = new & (sub_keys["proto"] == 6)
        src24 = (sub_keys["src"][:, 0:3].astype(np.uint64) @ np.array([1 << 16, 1 << 8, 1], np.uint64)) & 0xFFFF
        over = np.zeros(len(idx), bool)
        if tcp_new.any():
            seen = self.opened.add(ctx.state, src24[tcp_new], np.ones(int(tcp_new.sum()), np.int64),
                                   batch.packet_id[idx][tcp_new])
            over[np.flatnonzero(tcp_new)] = seen >= self.limit
        batch.port[idx] = np.where(over, 0, 1)
        batch.drop[idx[over]] = int(vk.DropReason.POLICY)


@pytest.mark.benchmark(group="user-vnf")
@pytest.mark.parametrize("queues", [1, 2])
def test_syn_guard_throughput(vnf_benchmark, queues: int) -> None:
    res = vnf_benchmark(SynGuard, config={"limit": 2}, flows=5_000, packets=100_000, batch=1024,
                        queues=queues, rounds=3)
    assert res.forwarded > 0
    assert res.forwarded + res.dropped == res.packets
