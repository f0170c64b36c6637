"""The package's middleboxes end to end through the runner, timed by vnfkit's own pytest plugin
(the ``vnf_benchmark`` fixture users get, :mod:`vnfkit.testing`).

    PYTHONPATH=python python -m pytest -q benches/bench_end_to_end.py --benchmark-only

Each run: generated traffic (Poisson flow arrivals, heavy-tailed sizes, 64-byte frames, packet time
advancing at 1 GbE line rate so expiry runs), cut into consecutive timed rounds; each round goes
through a :class:`vnfkit.Runner` (parse, RSS, one worker per queue on the process backend, in-order
release). MazuNAT runs with a simulated remote host answering every translated packet; the replies
are part of the timed work. Timing excludes traffic generation. ``extra_info`` has Mpps, p50/p99
latency and drops by reason; the plugin fails the run if a packet is lost or dropped without a
reason, and every test below also checks what its middlebox must have done with the traffic.
"""

from __future__ import annotations

import pytest

from vnfkit.nfs.mazunat import MazuNAT
from vnfkit.nfs.monitor import Monitor
from vnfkit.nfs.simplenat import SimpleNAT

FLOWS, PACKETS, BATCH, ROUNDS = 5_000, 100_000, 1024, 3


@pytest.mark.benchmark(group="end-to-end")
@pytest.mark.parametrize("queues", [1, 2])
@pytest.mark.parametrize("vnf", [SimpleNAT, Monitor], ids=["simplenat", "monitor"])
def test_pass_through_vnf(vnf_benchmark, vnf, queues: int) -> None:
    # All generated traffic comes from 10.0.0.0/8 inside: SimpleNAT translates every packet out,
    # Monitor only observes. Neither may drop a packet.
    res = vnf_benchmark(vnf, flows=FLOWS, packets=PACKETS, batch=BATCH, queues=queues, rounds=ROUNDS,
                        backend="process")
    assert res.packets == PACKETS * res.rounds  # one round under --benchmark-disable
    assert res.forwarded == res.packets and res.dropped == 0, res.drops


@pytest.mark.benchmark(group="end-to-end")
@pytest.mark.parametrize("queues", [1, 2])
def test_mazunat_with_replies(vnf_benchmark, queues: int) -> None:
    res = vnf_benchmark(MazuNAT, flows=FLOWS, packets=PACKETS, batch=BATCH, queues=queues, rounds=ROUNDS,
                        backend="process", replies=True)
    # Every outbound packet is translated and answered once: the replies double the packet count,
    # and nearly all of them find their mapping (a reply can trail its flow's expiry).
    outbound = PACKETS * res.rounds
    assert res.packets > 1.9 * outbound, res
    assert res.forwarded >= 0.97 * res.packets, res.drops
    assert set(res.drops) <= {"no-mapping", "policy"}, res.drops
