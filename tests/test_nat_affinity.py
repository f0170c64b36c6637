"""Multi-queue affinity of MazuNAT: both directions of every flow are handled by one worker.

Outbound packets come from a generated trace; a small "remote host" responder swaps each translated
packet's addresses and ports and sends the reply back through the same runner. Every reply must be
translated back (no-mapping would mean it reached a worker without the mapping) and must have been
processed by the worker that processed its outbound packet.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from vnfkit import _core, traffic
from vnfkit.nfs.mazunat import DEFAULTS, EXTERNAL, INTERNAL, MazuNAT
from vnfkit.tables import FLOW_KEY_DTYPE
from vnfkit.runtime import Runner, iter_batches

REPLY_ID = 1 << 40


def responder(out: _core.PacketBatch) -> _core.PacketBatch | None:
    """Replies (TCP ACK / UDP) to the translated packets of `out`, 1 µs later."""
    sel = np.flatnonzero(out.port == EXTERNAL).astype(np.uint32)
    if len(sel) == 0:
        return None
    k = out.key[sel]
    r = np.zeros(len(sel), FLOW_KEY_DTYPE)
    r["src"], r["dst"] = k["dst"], k["src"]
    r["sport"], r["dport"] = k["dport"], k["sport"]
    r["proto"], r["family"] = k["proto"], k["family"]
    sizes = np.full(len(sel), 64, np.uint16)
    flags = np.where(k["proto"] == 6, 0x10, 0).astype(np.uint8)
    b = _core.build_packets(r, sizes, out.ts_ns[sel] + np.uint64(1000), flags, np.zeros(len(sel), np.uint32))
    b.packet_id[:] = out.packet_id[sel] + np.uint64(REPLY_ID)
    return b


def run_bidirectional(queues: int, affinity: bool = True, flows: int = 1500, packets: int = 12000):
    trace = traffic.generate(flows, packets, seed=3, udp_fraction=0.3)
    worker: dict[int, int] = {}
    port: dict[int, int] = {}
    pending: list[_core.PacketBatch] = []

    def on_output(q: int, b: _core.PacketBatch) -> None:
        ids = b.packet_id.tolist()
        for i in ids:
            assert i not in worker
            worker[i] = q
        port.update(zip(ids, b.port.tolist()))
        rep = responder(b)
        if rep is not None:
            pending.append(rep)

    def feed() -> Iterator[_core.PacketBatch]:
        for b in iter_batches(trace, 512):
            yield b
            while pending:
                yield pending.pop(0)

    with Runner(MazuNAT, queues=queues, config={"affinity": affinity}) as r:
        r.run(feed(), on_output=on_output)
        while pending:  # replies to the last outputs
            batch, pending[:] = list(pending), []
            r.run(batch, on_output=on_output)
        stats = r.run([], on_output=on_output).vnf_stats
    return trace, worker, port, stats


@pytest.mark.parametrize("queues", [2, 4])
def test_both_directions_on_one_worker(queues: int) -> None:
    trace, worker, port, stats = run_bidirectional(queues)
    out_ids = [i for i in worker if i < REPLY_ID]
    assert len(out_ids) == len(trace)
    replies = [i for i in worker if i >= REPLY_ID]
    translated = [i for i in out_ids if port[i] == EXTERNAL]
    assert len(translated) == len(trace)  # the whole trace is outbound TCP/UDP from 10/8
    assert len(replies) == len(translated)
    # packet by packet: the reply was processed by the worker that processed its request
    wrong = [i for i in replies if worker[i] != worker[i - REPLY_ID]]
    assert wrong == []
    assert all(port[i] == INTERNAL for i in replies)
    assert stats["reverse_translations"] == len(replies) and stats["drop_no_mapping"] == 0
    # the work really was spread over the queues
    used = {worker[i] for i in out_ids}
    assert used == set(range(queues))


def test_without_affinity_replies_go_astray() -> None:
    """Control experiment: with plain pool allocation, RSS sends many replies to the wrong worker
    (where they find no mapping), so the test above is not vacuous."""
    _, worker, port, stats = run_bidirectional(2, affinity=False, flows=400, packets=2000)
    replies = [i for i in worker if i >= REPLY_ID]
    wrong = [i for i in replies if worker[i] != worker[i - REPLY_ID]]
    assert len(wrong) > len(replies) // 5
    assert all(port[i] == 0 for i in wrong)
    assert stats["drop_no_mapping"] >= len(wrong)


def test_icmp_echo_replies_translated_on_any_worker() -> None:
    """Echo replies are hashed on addresses only, so they may reach another worker than their
    request: the shared echo map still translates them."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    from vnfkit.packets import from_scapy, to_scapy

    reqs = [Ether() / IP(src=f"10.0.{i // 200}.{i % 200 + 1}", dst=f"198.51.{i % 7}.{i % 250 + 1}") /
            ICMP(type=8, id=1000 + i, seq=i) for i in range(120)]
    qs: dict[int, int] = {}
    outs: list = []
    with Runner(MazuNAT, queues=4) as r:
        b = from_scapy(reqs)
        r.run([b], on_output=lambda q, o: (outs.append(o), qs.update({int(i): q for i in o.packet_id})))
        sent = [p for o in outs for p in to_scapy(o)]
        ids = [int(i) for o in outs for i in o.packet_id]
        assert all(p[IP].src == "192.0.2.1" for p in sent)
        reps = [Ether() / IP(src=p[IP].dst, dst=p[IP].src) / ICMP(type=0, id=p[ICMP].id, seq=p[ICMP].seq) for p in sent]
        rb = from_scapy(reps)
        rb.packet_id[:] = np.array(ids, np.uint64) + np.uint64(REPLY_ID)
        back: list = []
        res = r.run([rb], on_output=lambda q, o: back.append((q, o)))
    got = {}
    for q, o in back:
        for i, p in zip(o.packet_id.tolist(), to_scapy(o)):
            got[i - REPLY_ID] = (q, p)
    assert res.dropped == 0
    moved = 0
    for i, (q, p) in got.items():
        req = reqs[i]
        assert (p[IP].dst, p[ICMP].id, p[ICMP].seq) == (req[IP].src, req[ICMP].id, req[ICMP].seq)
        moved += q != qs[i]
    assert moved > 0  # some replies really were handled by another worker


def test_run_with_replies_demo_path() -> None:
    """What `vnfkit demo` runs: a generated trace through 2 queues with the remote-host responder."""
    from vnfkit.nfs.mazunat import run_with_replies

    trace = traffic.generate(500, 4000, seed=11, udp_fraction=0.3)
    with Runner(MazuNAT, queues=2) as r:
        res = run_with_replies(r, iter_batches(trace, 1000))
    assert res.packets == 2 * len(trace)  # every packet answered once
    assert res.dropped == 0 and res.forwarded == 2 * len(trace)
    assert res.vnf_stats["translations"] == len(trace) == res.vnf_stats["reverse_translations"]
    assert res.latency.total == res.packets and res.p50_us > 0
    assert sum(q.packets for q in res.queues) == res.packets


def test_port_allocations_are_logged_as_determinants() -> None:
    """Every NAT port comes from the shared pool through the worker's recording context: the
    determinant logs hold one port_pool.allocate record per new mapping, with its packet id."""
    from vnfkit.state import OPS, log_records

    trace = traffic.generate(300, 2000, seed=4, udp_fraction=0.3)
    with Runner(MazuNAT, queues=2) as r:
        res = r.run(iter_batches(trace, 500))
        chunks = [c.state.drain_chunk() for c in r.contexts]
        pools = r.vnfs[0].pools  # declared once: every worker holds the same shared pools
        assert r.vnfs[1].pools.tcp is pools.tcp
    recs = log_records(chunks)
    alloc_op = next(k for k, v in OPS.items() if v == "port_pool.allocate")
    allocs = [rec for t in recs.values() for rec in t if rec["op"] == alloc_op]
    assert len(allocs) == res.vnf_stats["new_mappings"] == 300
    ids = {int(a["packet_id"]) for a in allocs}
    assert len(ids) == 300 and ids <= set(trace.packet_id.tolist())
    assert pools.tcp.allocated_count + pools.udp.allocated_count == 300


@pytest.mark.parametrize("affinity", [True, False])
def test_each_worker_allocates_only_from_its_own_share(affinity: bool) -> None:
    """With several queues every pool port belongs to one queue (queue_split): a worker's public
    ports all come from its share, so the ports chosen never depend on how workers interleave --
    two runs of the (GIL-scheduled) thread backend give the same port to every packet."""
    from vnfkit.nfs.mazunat.pools import queue_split, subpool_map

    runs = []
    for _ in range(2):
        trace, worker, port, stats = run_bidirectional(2, affinity=affinity, flows=800, packets=6000)
        runs.append(dict(port))
    assert runs[0] == runs[1]
    with Runner(MazuNAT, queues=2, config={"affinity": affinity}) as r:
        got: list[tuple[int, np.ndarray]] = []
        r.run(iter_batches(traffic.generate(800, 6000, seed=3, udp_fraction=0.3), 512),
              on_output=lambda q, b: got.append((q, b.key["sport"][b.port == EXTERNAL].copy())))
        lo, hi = DEFAULTS["port_lo"], DEFAULTS["port_hi"]
        groups = subpool_map(r.classifier, lo, hi) if affinity else None
        share = queue_split(groups, hi - lo + 1, 2)
    owner = share.astype(np.int64) % 2
    for q, sports in got:
        assert len(sports) and np.all(owner[sports.astype(np.int64) - lo] == q)
    assert {q for q, _ in got} == {0, 1}


def test_queue_split_deals_every_subpool_round_robin() -> None:
    from vnfkit.nfs.mazunat.pools import queue_split

    groups = np.array([0, 1, 0, 1, 0, 0, 1], np.uint16)
    assert queue_split(groups, 7, 2).tolist() == [0, 2, 1, 3, 0, 1, 2]
    assert queue_split(None, 5, 3).tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match="num_queues"):
        queue_split(np.full(4, 1000, np.uint16), 4, 100)
