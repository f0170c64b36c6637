"""vnfkit.io.live: AF_PACKET sockets on real interfaces (a veth pair in a namespace of our own)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vnfkit import _core
from vnfkit.io.live import LiveSink, LiveSource, open_socket, parse_mac
from vnfkit.testbed import Testbed, missing_tools

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="AF_PACKET and network namespaces need root")
needs_tools = pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} on PATH")


def _veth_pair_in_one_host(tb: Testbed) -> tuple[str, str]:
    """Both ends of one veth pair (MACs ...:01 and ...:02) in host "h" (made via a second host "g",
    whose end is then moved next to the first); returns the two interface names."""
    tb.add_host("h")
    tb.add_host("g")
    a, b = tb.link("h", "g", "a", "b", "02:00:00:00:00:01", "02:00:00:00:00:02")
    tb.ip("g", "link", "set", b, "netns", tb.hosts["h"].netns)
    tb.ip("h", "link", "set", b, "up")
    return a, b

# Runs inside a namespace: sends frames with our own ethertype from A, receives them on B.
_ROUND_TRIP = r"""
import sys, numpy as np
from vnfkit import _core
from vnfkit.io.live import LiveSink, LiveSource, open_socket
a, b, ring = sys.argv[1], sys.argv[2], int(sys.argv[3])
frames = []
for i in range(300):
    f = bytearray(64 + i); f[0:6] = b"\xff" * 6; f[6:12] = b"\x02\x00\x00\x00\x00\x09"
    f[12:14] = b"\x88\xb5"; f[14] = i & 0xff; f[15] = i >> 8; frames.append(bytes(f))
out = _core.PacketBatch(frames)
out.port[:] = np.where(np.arange(300) % 3 == 0, 0, 1).astype(np.uint16)  # every third: "dropped"
with LiveSource(b, batch=64, yield_idle=True, idle_ms=20, ring_blocks=ring) as src, LiveSink(a, dst_mac="02:00:00:00:00:42") as sink:
    sent = sink.write(out)
    got, sizes, ids, empties = [], [], [], 0
    for batch in src:
        if len(batch) == 0:
            empties += 1
            if empties > 10:
                break
            continue
        assert len(batch) <= 64
        data = np.asarray(batch.data); offs = np.asarray(batch.offsets)
        for i in range(len(batch)):
            fr = data[offs[i]:offs[i + 1]]
            if fr[12] == 0x88 and fr[13] == 0xb5:
                got.append(int(fr[14]) | int(fr[15]) << 8); sizes.append(len(fr))
                assert bytes(fr[0:6]) == b"\x02\x00\x00\x00\x00\x42"
        ids.extend(np.asarray(batch.packet_id).tolist())
        assert (np.asarray(batch.ts_ns) > 1_600_000_000 * 10**9).all()  # receive times (realtime ns)
    print(sent, len(got), got == [i for i in range(300) if i % 3], sizes == [64 + i for i in range(300) if i % 3],
          ids == sorted(ids), src.stats()["received"] >= len(got), sink.stats()["sent"])
"""


@needs_root
@needs_tools
@pytest.mark.parametrize("ring_blocks", [0, 4], ids=["recvmmsg", "tpacket_v3"])
def test_round_trip_over_veth_with_mac_rewrite_and_port_selection(ring_blocks: int) -> None:
    with Testbed() as tb:
        a, b = _veth_pair_in_one_host(tb)
        r = tb.run("h", [sys.executable, "-c", _ROUND_TRIP, a, b, str(ring_blocks)], timeout=60)
        assert r.returncode == 0, r.stderr
        print("round trip:", r.stdout.strip())
        assert r.stdout.split() == ["200", "200", "True", "True", "True", "True", "200"]


def test_unknown_interface_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="interface: no interface named 'vknosuch0'"):
        open_socket("vknosuch0")
    with pytest.raises(ValueError, match="interface"):
        _core.AfPacketSocket("")


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="batch"):
        open_socket("lo", batch=0)
    with pytest.raises(ValueError, match="snaplen"):
        open_socket("lo", snaplen=10)
    with pytest.raises(ValueError, match="fanout_group"):
        open_socket("lo", fanout_group=1 << 20)
    with pytest.raises(TypeError, match="batch"):
        open_socket("lo", batch=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dst_mac"):
        parse_mac("01:02", "dst_mac")


@pytest.mark.skipif(not ROOT or shutil.which("setpriv") is None, reason="needs root and setpriv to drop CAP_NET_RAW")
def test_not_permitted_is_a_permission_error_naming_the_interface() -> None:
    code = ("from vnfkit.io.live import open_socket\n"
            "try:\n    open_socket('lo')\nexcept PermissionError as e:\n    print('PermissionError', e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60, env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("PermissionError"), r.stdout
    assert "'lo'" in r.stdout and "needs root / CAP_NET_RAW" in r.stdout


@needs_root
@needs_tools
def test_fanout_group_spreads_flows_over_sockets() -> None:
    code = r"""
import sys, numpy as np
from vnfkit import _core
from vnfkit.io.live import open_socket
a, b = sys.argv[1], sys.argv[2]
rx = [open_socket(b, fanout_group=77) for _ in range(2)]
tx = open_socket(a)
frames = []
for flow in range(64):
    for k in range(4):
        f = bytearray(64); f[0:6] = b"\xff" * 6; f[6:12] = b"\x02\x00\x00\x00\x00\x09"
        f[12:14] = b"\x08\x00"; f[14] = 0x45; f[16] = 0; f[17] = 50; f[22] = 64; f[23] = 17
        f[26:30] = bytes([10, 0, 0, flow]); f[30:34] = bytes([10, 0, 1, 1])
        f[34:36] = (1000 + flow).to_bytes(2, "big"); f[36:38] = (53).to_bytes(2, "big"); f[38:40] = (30).to_bytes(2, "big")
        frames.append(bytes(f))
tx.send(_core.PacketBatch(frames))
seen = [dict(), dict()]
for _ in range(20):
    for i, s in enumerate(rx):
        b = s.recv(20)
        d = np.asarray(b.data); o = np.asarray(b.offsets)
        for j in range(len(b)):
            fr = d[o[j]:o[j+1]]
            if fr[12] == 8 and fr[13] == 0 and fr[23] == 17:
                seen[i][int(fr[29])] = seen[i].get(int(fr[29]), 0) + 1
both = set(seen[0]) & set(seen[1])
print(sum(seen[0].values()) + sum(seen[1].values()), len(seen[0]) > 0 and len(seen[1]) > 0, len(both),
      all(v == 4 for s in seen for v in s.values()))
"""
    with Testbed() as tb:
        a, b = _veth_pair_in_one_host(tb)
        r = tb.run("h", [sys.executable, "-c", code, a, b], timeout=60)
        assert r.returncode == 0, r.stderr
        print("fanout:", r.stdout.strip())
        # all 256 frames arrive once; both sockets get some flows; no flow is split between them
        assert r.stdout.split() == ["256", "True", "0", "True"]


# A runner (backend given as argv[3]) fed by a LiveSource on b, its outputs sent back out of b by a
# LiveSink; frames come from a and are checked there: MazuNAT translated them.
_RUNNER = r"""
import sys, threading, numpy as np
from vnfkit import _core
from vnfkit.io.live import LiveSink, LiveSource, open_socket
from vnfkit.nfs.mazunat import EXTERNAL, MazuNAT
from vnfkit.runtime import Runner
a, b, backend = sys.argv[1], sys.argv[2], sys.argv[3]
frames = []
for flow in range(20):
    f = bytearray(64); f[0:6] = b"\x02\x00\x00\x00\x00\x02"; f[6:12] = b"\x02\x00\x00\x00\x00\x01"
    f[12:14] = b"\x08\x00"; f[14] = 0x45; f[16] = 0; f[17] = 50; f[22] = 64; f[23] = 17
    f[26:30] = bytes([10, 0, 0, 10]); f[30:34] = bytes([198, 51, 100, 1])
    f[34:36] = (1000 + flow).to_bytes(2, "big"); f[36:38] = (53).to_bytes(2, "big"); f[38:40] = (30).to_bytes(2, "big")
    frames.append(bytes(f))
batch = _core.PacketBatch(frames)
batch.parse()
tx = open_socket(a)
done = threading.Event()
src = LiveSource(b, idle_ms=10, stop=done.is_set)
sink = LiveSink(src.socket, dst_mac="02:00:00:00:00:99", port=EXTERNAL)
got = []
def feeder():
    import time
    time.sleep(0.5)
    tx.send(batch)
    deadline = time.monotonic() + 10
    while len(got) < 20 and time.monotonic() < deadline:
        r = tx.recv(50); d = np.asarray(r.data); o = np.asarray(r.offsets)
        for j in range(len(r)):
            fr = d[o[j]:o[j + 1]]
            if fr[12] == 8 and fr[23] == 17:
                got.append((bytes(fr[0:6]), bytes(fr[26:30]), int.from_bytes(bytes(fr[34:36]), "big")))
    done.set()
t = threading.Thread(target=feeder); t.start()
with Runner(MazuNAT, backend=backend, queues=2, logged=False) as runner:
    res = runner.run(iter(src), on_output=sink)
t.join()
ok = all(mac == b"\x02\x00\x00\x00\x00\x99" and ip == bytes([192, 0, 2, 1]) and 50000 <= port <= 65535
         for mac, ip, port in got)
print(len(got), ok, len({p for _, _, p in got}), res.forwarded)
"""


@needs_root
@needs_tools
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_live_source_and_sink_drive_a_runner(backend: str) -> None:
    with Testbed() as tb:
        a, b = _veth_pair_in_one_host(tb)
        r = tb.run("h", [sys.executable, "-c", _RUNNER, a, b, backend], timeout=120)
        assert r.returncode == 0, r.stderr
        print(f"runner ({backend}) on a live interface:", r.stdout.strip())
        # 20 UDP flows from 10.0.0.10 went through MazuNAT in the runner and came back translated
        assert r.stdout.split() == ["20", "True", "20", "20"]
