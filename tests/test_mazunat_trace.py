"""MazuNAT acceptance on a generated trace (plus replies from a "remote host" and unsolicited
inbound traffic): tshark finds no bad checksum in the output, no internal address leaks to the
external side, every flow keeps one mapping for its lifetime, and 1 and 2 queues decide alike."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vnfkit import _core, traffic
from vnfkit.nfs.mazunat import EXTERNAL, INTERNAL, MazuNAT, replies_to
from vnfkit.packets import read_pcap
from vnfkit.tables import make_keys
from vnfkit.runtime import Runner, iter_batches

REPLY_ID = 1 << 40
UNSOLICITED_ID = 1 << 41
PUB = int(ipaddress.IPv4Address("192.0.2.1"))


def _u32(col: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(col[:, :4]).view(">u4").reshape(-1).astype(np.uint32)


def responder(out: _core.PacketBatch) -> _core.PacketBatch | None:
    return replies_to(out, id_offset=REPLY_ID)


def unsolicited(n: int, t_end: int, seed: int = 9) -> _core.PacketBatch:
    rng = np.random.default_rng(seed)
    keys = make_keys(rng.integers(0xC6120000, 0xC6140000, n), PUB, rng.integers(1024, 65536, n),
                     rng.integers(1, 65536, n), rng.choice([6, 17], n))
    b = _core.build_packets(keys, np.full(n, 64, np.uint16), np.sort(rng.integers(0, t_end, n)).astype(np.uint64),
                            np.where(keys["proto"] == 6, 0x02, 0).astype(np.uint8), np.zeros(n, np.uint32))
    b.packet_id[:] = np.arange(n, dtype=np.uint64) + np.uint64(UNSOLICITED_ID)
    return b


def run(trace: _core.PacketBatch, queues: int, ext: Path | None = None, inside: Path | None = None):
    decisions: dict[int, tuple[int, int]] = {}
    outputs: list[_core.PacketBatch] = []
    pending: list[_core.PacketBatch] = []
    wx = _core.PcapWriter(str(ext)) if ext else None
    wi = _core.PcapWriter(str(inside)) if inside else None
    uns = unsolicited(400, int(trace.ts_ns[-1]))
    uns_parts = list(iter_batches(uns, 40))

    def on_output(q: int, b: _core.PacketBatch) -> None:
        decisions.update(zip(b.packet_id.tolist(), zip(b.port.tolist(), b.drop.tolist())))
        outputs.append(b)
        if wx is not None:
            wx.write(b.select(np.flatnonzero(b.port == EXTERNAL).astype(np.uint32)))
        if wi is not None:
            wi.write(b.select(np.flatnonzero(b.port == INTERNAL).astype(np.uint32)))
        rep = responder(b)
        if rep is not None:
            pending.append(rep)

    def feed() -> Iterator[_core.PacketBatch]:
        for i, b in enumerate(iter_batches(trace, 512)):
            yield b
            if i < len(uns_parts):
                yield uns_parts[i]
            while pending:
                yield pending.pop(0)

    with Runner(MazuNAT, queues=queues) as r:
        res = r.run(feed(), on_output=on_output)
        drops = dict(res.drops)
        while pending:
            batch, pending[:] = list(pending), []
            res = r.run(batch, on_output=on_output)
            for k, v in res.drops.items():
                drops[k] = drops.get(k, 0) + v  # each run reports its own packets
        stats = r.run([]).vnf_stats
    for w in (wx, wi):
        if w is not None:
            w.close()
    return decisions, outputs, drops, stats


def _tshark_bad(path: Path) -> list[str]:
    cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
           "-o", "udp.check_checksum:TRUE", "-Y",
           'ip.checksum.status=="Bad" || tcp.checksum.status=="Bad" || udp.checksum.status=="Bad"',
           "-T", "fields", "-e", "frame.number"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.fixture(scope="module")
def trace() -> _core.PacketBatch:
    return traffic.generate(3000, 20000, seed=5, udp_fraction=0.3, ipv6_fraction=0.03)


@pytest.fixture(scope="module")
def one_queue(trace, tmp_path_factory):
    d = tmp_path_factory.mktemp("nat")
    ext, inside = d / "external.pcap", d / "internal.pcap"
    return run(trace, 1, ext, inside), ext, inside


def test_outputs_have_valid_checksums_per_tshark(one_queue, tmp_path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    (_, _, _, _), ext, inside = one_queue
    assert _tshark_bad(ext) == []
    assert _tshark_bad(inside) == []
    # the filter does flag broken checksums: break one IP, one TCP and one UDP checksum
    b = read_pcap(ext)
    b.parse()
    tcp = int(np.flatnonzero(b.key["proto"] == 6)[0])
    udp = int(np.flatnonzero(b.key["proto"] == 17)[0])
    ipi = len(b) - 1
    for i, off in ((ipi, int(b.l3_offset[ipi]) + 10), (tcp, int(b.l4_offset[tcp]) + 16),
                   (udp, int(b.l4_offset[udp]) + 6)):
        b.data[int(b.offsets[i]) + off] ^= 0x01
    bad = tmp_path / "bad.pcap"
    b.to_pcap(str(bad))
    assert sorted(int(x) for x in _tshark_bad(bad)) == sorted({ipi + 1, tcp + 1, udp + 1})


def test_no_internal_address_on_the_external_side(one_queue, trace) -> None:
    (decisions, _, _, _), ext, _ = one_queue
    b = read_pcap(ext)
    b.parse()
    assert len(b) > 0.9 * len(trace)
    assert np.all(b.key["family"] == 4)
    src, dst = _u32(b.key["src"]), _u32(b.key["dst"])
    internal = np.uint32(0xFF000000)
    assert not np.any((src & internal) == np.uint32(0x0A000000))
    assert not np.any((dst & internal) == np.uint32(0x0A000000))
    assert np.all(src == PUB)


def test_each_flow_keeps_one_mapping(one_queue, trace) -> None:
    (decisions, outputs, _, _), _, _ = one_queue
    check_mappings(trace, decisions, outputs)


def check_mappings(trace, decisions, outputs) -> None:
    trace.parse()
    assert np.array_equal(trace.packet_id, np.arange(len(trace)))
    osrc, odst = _u32(trace.key["src"]), _u32(trace.key["dst"])
    osp, odp, opr = trace.key["sport"], trace.key["dport"], trace.key["proto"]
    mapping: dict[tuple, tuple] = {}
    owner: dict[tuple, tuple] = {}
    back: dict[int, tuple] = {}
    for b in outputs:
        ids = b.packet_id
        src, dst = _u32(b.key["src"]), _u32(b.key["dst"])
        sp, dp, pr = b.key["sport"], b.key["dport"], b.key["proto"]
        for j in np.flatnonzero((ids < len(trace)) & (b.port == EXTERNAL)).tolist():
            o = int(ids[j])
            flow = (int(osrc[o]), int(osp[o]), int(odst[o]), int(odp[o]), int(opr[o]))
            m = (int(src[j]), int(sp[j]), int(pr[j]))  # public address, public port, proto
            assert (int(dst[j]), int(dp[j])) == (flow[2], flow[3])
            assert mapping.setdefault(flow, m) == m, "a flow changed its mapping"
            assert owner.setdefault(m, flow) == flow, "two flows share a mapping"
        for j in np.flatnonzero((ids >= REPLY_ID) & (ids < UNSOLICITED_ID) & (b.port == INTERNAL)).tolist():
            back[int(ids[j]) - REPLY_ID] = (int(dst[j]), int(dp[j]))  # restored internal endpoint
    assert len(mapping) > 2500
    for pid, ep in back.items():
        assert ep == (int(osrc[pid]), int(osp[pid]))
    assert len(back) == sum(1 for i, (p, _) in decisions.items() if i < REPLY_ID and p == EXTERNAL)


def test_one_and_two_queues_decide_alike(one_queue, trace) -> None:
    (d1, _, drops1, s1), _, _ = one_queue
    d2, out2, drops2, s2 = run(trace, 2)
    check_mappings(trace, d2, out2)  # two workers share the pools: still one flow per mapping
    assert d1.keys() == d2.keys()
    diff = [i for i in d1 if d1[i] != d2[i]]
    assert diff == []
    assert drops1 == drops2
    assert drops1["policy"] == int((trace.key["family"] == 6).sum())  # IPv6: no IPv6 in the Click config
    assert drops1["no-mapping"] > 300  # the unsolicited inbound packets
    for k in ("translations", "reverse_translations", "forwards", "new_mappings", "drop_no_mapping",
              "drop_ipv6"):
        assert s1[k] == s2[k], k
