"""Small UDP packets through a NAT on the live testbed: vnfkit's MazuNAT vs the kernel's nftables.

client -- NAT host -- server (:func:`vnfkit.testbed.nat_testbed`). The NAT host runs either
``vnfkit live mazunat`` on AF_PACKET (its interfaces without addresses) or, on the same topology in
the same run, the kernel: addresses on its interfaces, ``ip_forward`` and an nftables
``masquerade`` rule. A Python generator in the client sends 64-byte frames (18-byte UDP payloads
carrying a CLOCK_MONOTONIC send time and a sequence number) to a receiver in the server, in two
phases: *paced* (a fixed rate, for the one-way latency; the clock is shared by the namespaces) and
*flood* (prebuilt 64-byte frames sent as fast as a vnfkit AF_PACKET socket in the client can,
bypassing the client's IP stack; what reaches the server is its IP layer's ``InDelivers`` count),
for the delivered rate. Every result is checked: packets
arrive, and every one arrives from the NAT's public address.

What limits it (say so next to the figures): the paced generator and receiver are single Python
processes, the flood generator one process on one AF_PACKET socket, veth is a software link in one
kernel, and the machine's cores are shared with whatever else runs. Needs root, ip, ethtool, nft.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vnfkit.testbed import NatTopology, Testbed, missing_tools, nat_testbed

_TOOLS = missing_tools(("ip", "ethtool", "nft"))
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the live benchmark needs root (namespaces, AF_PACKET)"),
    pytest.mark.skipif(bool(_TOOLS), reason=f"the live benchmark needs {', '.join(_TOOLS)} on PATH"),
]

PORT = 9000
PACED_PPS = 5000
PHASE_S = 2.0

_SENDER = r"""
import socket, struct, sys, time
dst, port, rate, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
pad = b"\0" * 2
t0 = time.monotonic_ns(); end = t0 + int(dur * 1e9); seq = 0
gap = 0 if rate <= 0 else int(1e9 / rate)
while True:
    now = time.monotonic_ns()
    if now >= end:
        break
    due = t0 + seq * gap
    if gap and now < due:
        if due - now > 100_000:
            time.sleep((due - now) / 1e9)
        continue
    try:
        s.sendto(struct.pack("<QQ", now, seq) + pad, (dst, port))
    except BlockingIOError:
        continue
    except OSError:  # ENOBUFS: the device queue is full; the packet is lost
        pass
    seq += 1
print(seq)
"""

# Flood generator: prebuilt 64-byte frames (valid checksums, 8 UDP flows) sent by a vnfkit AF_PACKET
# socket on the client's interface, as fast as it goes; bypasses the client's IP stack.
_FLOOD = r"""
import sys, time, numpy as np, vnfkit
from vnfkit import _core
from vnfkit.io.live import open_socket, parse_mac
ifname, src_ip, dst_ip, dst_mac, src_mac, port, dur = sys.argv[1:8]
n = 256
k = np.zeros(n, vnfkit.FLOW_KEY_DTYPE)
k["src"][:, :4] = [int(x) for x in src_ip.split(".")]; k["dst"][:, :4] = [int(x) for x in dst_ip.split(".")]
k["sport"] = 40000 + np.arange(n) % 8; k["dport"] = int(port); k["proto"] = 17; k["family"] = 4
b = _core.build_packets(k, np.full(n, 64, np.uint16), np.zeros(n, np.uint64), np.zeros(n, np.uint8), np.zeros(n, np.uint32))
_core.set_ethernet_addresses(b, np.arange(n, dtype=np.uint32), parse_mac(dst_mac), parse_mac(src_mac))
s = open_socket(ifname, batch=256, promiscuous=False)
end = time.monotonic() + float(dur); sent = 0
while time.monotonic() < end:
    sent += s.send(b)
print(sent)
"""

# Flood receiver: a bound socket that is read only after the flood (so it costs no CPU during it);
# what reached the server is the IP layer's InDelivers count; the queued datagrams' sources are checked.
_SINK = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
sys.stdin.readline()
s.setblocking(False)
srcs = {}
while True:
    try:
        _, peer = s.recvfrom(2048)
    except BlockingIOError:
        break
    srcs[peer[0]] = srcs.get(peer[0], 0) + 1
print(json.dumps({"srcs": srcs}))
"""


def _ip_in_delivers(tb: Testbed, host: str) -> int:
    lines = [ln.split() for ln in tb.run(host, ["cat", "/proc/net/snmp"], timeout=10).stdout.splitlines()
             if ln.startswith("Ip:")]
    return int(lines[1][lines[0].index("InDelivers")])


_RECEIVER = r"""
import json, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
s.settimeout(30.0)
lat, srcs, n, first, last = [], {}, 0, None, None
while True:
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        break
    now = time.monotonic_ns()
    if first is None:
        first = now
        s.settimeout(1.0)
    last = now
    n += 1
    srcs[peer[0]] = srcs.get(peer[0], 0) + 1
    ts, _seq = struct.unpack_from("<QQ", data)
    lat.append(now - ts)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1e3 if lat else 0.0
print(json.dumps({"received": n, "srcs": srcs, "span_s": (last - first) / 1e9 if n > 1 else 0.0,
                  "p50_us": q(0.50), "p99_us": q(0.99)}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _phase(tb: Testbed, topo: NatTopology, rate: float) -> dict[str, Any]:
    recv = tb.popen("server", [sys.executable, "-c", _RECEIVER, topo.server_ip, str(PORT)], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    assert recv.stdout is not None
    assert recv.stdout.readline().strip() == b"ready", recv.stderr.read() if recv.stderr else b""
    t0 = time.monotonic()
    sent = tb.run("client", [sys.executable, "-c", _SENDER, topo.server_ip, str(PORT), str(rate), str(PHASE_S)],
                  timeout=60)
    assert sent.returncode == 0, sent.stderr
    out, err = recv.communicate(timeout=60)
    assert recv.returncode == 0, err
    res = json.loads(out.decode().strip().splitlines()[-1])
    res["sent"] = int(sent.stdout.strip())
    res["send_s"] = time.monotonic() - t0
    res["delivered_pps"] = res["received"] / PHASE_S
    return res


def _flood(tb: Testbed, topo: NatTopology) -> dict[str, Any]:
    sink = tb.popen("server", [sys.executable, "-c", _SINK, topo.server_ip, str(PORT)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert sink.stdout is not None and sink.stdin is not None
    assert sink.stdout.readline().strip() == b"ready"
    before = _ip_in_delivers(tb, "server")
    gen = tb.run("client", [sys.executable, "-c", _FLOOD, topo.client_if, topo.client_ip, topo.server_ip,
                            topo.inside_mac, topo.client_mac, str(PORT), str(PHASE_S)], timeout=60)
    assert gen.returncode == 0, gen.stderr
    time.sleep(0.5)  # let the NAT drain what it holds
    delivered = _ip_in_delivers(tb, "server") - before
    out, err = sink.communicate(b"\n", timeout=60)
    assert sink.returncode == 0, err
    srcs = json.loads(out.decode().strip().splitlines()[-1])["srcs"]
    sent = int(gen.stdout.strip())
    return {"sent": sent, "received": delivered, "srcs": srcs, "offered_pps": sent / PHASE_S,
            "delivered_pps": delivered / PHASE_S}


def _vnfkit_nat(tb: Testbed, topo: NatTopology, tmp: Path) -> subprocess.Popen[bytes]:
    err = tmp / "nat.err"
    p = tb.popen("nat", [sys.executable, "-m", "vnfkit", "live", "mazunat", "--inside", topo.inside_if,
                         "--outside", topo.outside_if, "--inside-peer", topo.client_mac, "--outside-peer",
                         topo.server_mac], env=_env(), stdout=open(tmp / "nat.out", "wb"), stderr=open(err, "wb"))
    deadline = time.monotonic() + 60
    while b"ready" not in err.read_bytes():
        assert p.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.05)
    return p


def _nftables_nat(tb: Testbed, topo: NatTopology) -> None:
    tb.ip("nat", "addr", "add", f"{topo.gateway_ip}/24", "dev", topo.inside_if)
    tb.ip("nat", "addr", "add", f"{topo.public_ip}/24", "dev", topo.outside_if)
    for cmd in (["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                ["nft", "add table ip vknat"],
                ["nft", "add chain ip vknat post { type nat hook postrouting priority srcnat ; }"],
                ["nft", f"add rule ip vknat post oifname {topo.outside_if} masquerade"]):
        r = tb.run("nat", cmd, timeout=30)
        assert r.returncode == 0, (cmd, r.stderr)


def _measure(mode: str, tmp: Path) -> dict[str, Any]:
    with Testbed() as tb:
        topo = nat_testbed(tb)
        nat = _vnfkit_nat(tb, topo, tmp) if mode == "vnfkit" else None
        if mode == "nftables":
            _nftables_nat(tb, topo)
        res = {"paced": _phase(tb, topo, PACED_PPS), "flood": _flood(tb, topo)}
        if nat is not None:
            assert Testbed.stop(nat) == 0
            res["nat"] = json.loads((tmp / "nat.out").read_text().strip().splitlines()[-1])
    for phase in ("paced", "flood"):
        r = res[phase]
        assert r["received"] > 0, (mode, phase, r)
        assert set(r["srcs"]) == {topo.public_ip}, (mode, phase, r["srcs"])  # every packet was NATed
    assert res["paced"]["received"] >= 0.5 * res["paced"]["sent"], res["paced"]
    return res


@pytest.mark.parametrize("mode", ["vnfkit", "nftables"])
def test_small_udp_through_nat(benchmark: Any, mode: str, tmp_path: Path) -> None:
    res = benchmark.pedantic(_measure, args=(mode, tmp_path), rounds=1, iterations=1)
    p, f = res["paced"], res["flood"]
    benchmark.extra_info.update({
        "mode": mode, "paced_pps": PACED_PPS, "paced_sent": p["sent"], "paced_received": p["received"],
        "p50_us": round(p["p50_us"], 1), "p99_us": round(p["p99_us"], 1), "flood_sent": f["sent"],
        "flood_received": f["received"], "flood_offered_pps": round(f["offered_pps"]),
        "flood_delivered_pps": round(f["delivered_pps"]),
    })
    print(f"\n{mode}: paced {PACED_PPS} pps: {p['received']}/{p['sent']} delivered, one-way p50 {p['p50_us']:.0f} us, "
          f"p99 {p['p99_us']:.0f} us; flood (AF_PACKET generator, {f['offered_pps']:.0f} pps offered): "
          f"{f['received']}/{f['sent']} delivered in {PHASE_S:.0f} s = {f['delivered_pps']:.0f} pps")
