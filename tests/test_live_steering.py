"""The input handler's tc switch (vnfkit.live.steering) and the failover testbed around it.

Without root: the switch description is validated (errors name the field), its rules are what the
module says, in the order fence / open / steer; the ``--topology`` file and CLI combinations are
checked with one-line errors. As root (with ``tc``): on a real :func:`failover_testbed`, frames
from the client reach the master and a copy reaches the backup, only the master's get out; after
``switch_to("backup")`` only the backup receives and gets out, and the master's frames are dropped
and counted; storage is reachable from each node over its own link; nothing is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _live import env

from vnfkit.live.steering import TcSteering
from vnfkit.live.supervisor import load_topology
from vnfkit.testbed import Testbed, failover_testbed, leftovers, missing_tools

PORTS = {"inside": {"peer": "ci", "master": "mi", "backup": "bi"},
         "outside": {"peer": "so", "master": "mo", "backup": "bo"}}


def test_steering_validates_its_description() -> None:
    TcSteering("sw", PORTS, "fz")
    with pytest.raises(ValueError, match="steering.netns"):
        TcSteering("", PORTS, "fz")
    with pytest.raises(ValueError, match=r"steering.ports: expected the sides"):
        TcSteering("sw", {"inside": PORTS["inside"]}, "fz")
    with pytest.raises(ValueError, match=r"steering.ports.outside: expected the ports"):
        TcSteering("sw", {**PORTS, "outside": {"peer": "so", "master": "mo"}}, "fz")
    with pytest.raises(ValueError, match=r"steering.ports.inside.backup"):
        TcSteering("sw", {**PORTS, "inside": {**PORTS["inside"], "backup": "b i"}}, "fz")
    with pytest.raises(ValueError, match="steering.sink"):
        TcSteering("sw", PORTS, "x" * 16)
    with pytest.raises(ValueError, match="steering: expected the keys"):
        TcSteering.from_dict({"netns": "sw", "ports": PORTS})
    s = TcSteering("sw", PORTS, "fz")
    assert TcSteering.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="active: expected one of"):
        s.rules("nobody")


def test_rules_fence_then_open_then_steer() -> None:
    s = TcSteering("sw", PORTS, "fz")
    m = s.rules("master")
    assert len(m) == 6 and all(r.startswith("filter replace dev ") and " ingress " in r for r in m)
    assert [r.split()[3] for r in m] == ["bi", "bo", "mi", "mo", "ci", "so"]
    assert m[0].endswith("action mirred egress redirect dev fz")  # the standby's frames: dropped
    assert m[2].endswith("action mirred egress redirect dev ci")  # the master's frames: to the client
    assert m[4].endswith("action mirred egress mirror dev bi action mirred egress redirect dev mi")
    b = s.rules("backup")
    assert [r.split()[3] for r in b] == ["mi", "mo", "bi", "bo", "ci", "so"]  # the old master fenced first
    assert b[0].endswith("redirect dev fz") and b[1].endswith("redirect dev fz")
    assert b[4].endswith("u32 match u32 0 0 action mirred egress redirect dev bi")
    assert "mirror" not in " ".join(b)


def _topology(**over: object) -> str:
    d: dict[str, object] = {"master_netns": "vknosuchns-m", "backup_netns": "vknosuchns-b",
                            "storage": {"netns": "vknosuchns-s", "addrs": {"master": "198.51.100.1",
                                                                            "backup": "198.51.100.5"}},
                            "steering": {"netns": "vknosuchns-w", "ports": PORTS, "sink": "fz"}}
    d.update(over)
    return json.dumps(d)


def test_topology_file_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="--topology: not JSON"):
        load_topology("{", "a", "b")
    with pytest.raises(ValueError, match="--topology: expected the keys"):
        load_topology(json.dumps({"master_netns": "x"}), "a", "b")
    with pytest.raises(ValueError, match="--topology: storage: expected"):
        load_topology(_topology(storage={"netns": "x"}), "a", "b")
    with pytest.raises(ValueError, match="--topology: master_netns: no network namespace named 'vknosuchns-m'"):
        load_topology(_topology(), "a", "b")


def test_live_cli_refuses_bad_topology_combinations(tmp_path: Path) -> None:
    topo = tmp_path / "topo.json"
    topo.write_text(_topology())
    base = [sys.executable, "-m", "vnfkit", "live", "mazunat", "--inside", "lo", "--outside", "vknosuch1",
            "--inside-peer", "02:00:00:00:00:01", "--outside-peer", "02:00:00:00:00:02"]
    cases = {
        ("--strategy", "replay", "--storage", "file", "--topology", str(topo)):
            "vnfkit live: error: --topology: needs --strategy replay --storage redis (the storage host runs Redis), "
            "got --strategy replay --storage file",
        ("--topology", str(topo)):
            "vnfkit live: error: --topology: needs --strategy replay --storage redis (the storage host runs Redis), "
            "got --strategy none --storage none",
        ("--strategy", "replay", "--topology", str(tmp_path / "missing.json")):
            f"vnfkit live: error: --topology: cannot read {tmp_path / 'missing.json'}: No such file or directory",
        ("--strategy", "replay", "--topology", str(topo)):
            "vnfkit live: error: --topology: master_netns: no network namespace named 'vknosuchns-m'",
    }
    for extra, msg in cases.items():
        r = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60, env=env(), check=False)
        assert r.returncode == 1 and r.stderr.strip() == msg, (extra, r.stderr)


# Counts the frames carrying MARK on an interface for a while (prints "ready" first, the count last).
RECV = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5)); s.bind((sys.argv[1], 0))
s.settimeout(0.05); mark = sys.argv[2].encode(); n = 0
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        n += mark in s.recv(2048)
    except socket.timeout:
        pass
print(n, flush=True)
"""
SEND = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0))
for i in range(int(sys.argv[3])):
    s.send(bytes.fromhex("02000000ffff") + bytes.fromhex("02000000eeee") + b"\x88\xb5" + sys.argv[2].encode() + bytes(46))
"""

root = pytest.mark.skipif(os.geteuid() != 0 or bool(missing_tools(("ip", "ethtool", "tc"))),
                          reason="the failover testbed needs root, ip, ethtool and tc")


def _deliveries(tb: Testbed, sender: tuple[str, str], receivers: dict[str, tuple[str, str]], mark: str,
                n: int = 7) -> dict[str, int]:
    """Send `n` marked frames from `sender` (host, ifname); how many each receiver (host, ifname) got."""
    procs = {name: tb.popen(h, [sys.executable, "-c", RECV, ifname, mark, "1.5"], stdout=subprocess.PIPE,
                            env=env()) for name, (h, ifname) in receivers.items()}
    for p in procs.values():
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    r = tb.run(sender[0], [sys.executable, "-c", SEND, sender[1], mark, str(n)], timeout=30)
    assert r.returncode == 0, r.stderr
    out = {}
    for name, p in procs.items():
        assert p.stdout is not None
        out[name] = int(p.stdout.readline())
        p.wait(timeout=10)
    return out


@root
def test_failover_testbed_steers_mirrors_and_fences() -> None:
    with Testbed() as tb:
        prefix = tb.prefix
        ft = failover_testbed(tb)
        nat, sw = ft.nat, ft.steering
        for role in ("master", "backup"):  # the same NAT on both nodes, no addresses on its interfaces
            assert tb.hosts[role].interfaces[nat.inside_if] == nat.inside_mac
            assert tb.hosts[role].interfaces[nat.outside_if] == nat.outside_mac
            assert "inet " not in tb.ip(role, "addr", "show", "dev", nat.inside_if)
            assert tb.offloads(role, nat.inside_if)["tcp-segmentation-offload"] is False
        nodes = {"master": ("master", nat.inside_if), "backup": ("backup", nat.inside_if)}
        client = {"client": ("client", nat.client_if)}
        # master active: the client's frames to the master, a copy to the backup
        assert _deliveries(tb, ("client", nat.client_if), nodes, "m1") == {"master": 7, "backup": 7}
        assert _deliveries(tb, ("master", nat.inside_if), client, "m2") == {"client": 7}
        assert _deliveries(tb, ("backup", nat.inside_if), client, "m3") == {"client": 0}
        assert sw.dropped("inside", "backup") >= 7
        p = sw.switch_to("backup")
        sw.wait_switched(p)
        assert sw.delivered("inside", "master") == 0 and sw.dropped("inside", "master") == 0  # fresh counters
        assert _deliveries(tb, ("client", nat.client_if), nodes, "b1") == {"master": 0, "backup": 7}
        assert _deliveries(tb, ("backup", nat.inside_if), client, "b2") == {"client": 7}
        assert _deliveries(tb, ("master", nat.inside_if), client, "b3") == {"client": 0}  # fenced
        assert sw.dropped("inside", "master") == 7
        assert sw.delivered("inside", "backup") >= 7 and sw.delivered("inside", "master") == 0
        # the same on the outside: the server's frames reach the backup only
        assert _deliveries(tb, ("server", nat.server_if), {"master": ("master", nat.outside_if),
                                                           "backup": ("backup", nat.outside_if)}, "b4") == \
            {"master": 0, "backup": 7}
        # storage: each node reaches the storage host over its own link, not through the switch
        lst = tb.popen("storage", [sys.executable, "-c",
                                   "import socket,sys\ns=socket.create_server(('0.0.0.0',7001))\nprint('ready',flush=True)\n"
                                   "for _ in range(2):\n c,a=s.accept(); print(a[0],flush=True); c.close()"],
                       stdout=subprocess.PIPE, env=env())
        assert lst.stdout is not None and lst.stdout.readline().strip() == b"ready"
        for role in ("master", "backup"):
            r = tb.run(role, [sys.executable, "-c", "import socket,sys; socket.create_connection((sys.argv[1], 7001), 5)",
                              ft.storage_addrs[role]], timeout=30)
            assert r.returncode == 0, r.stderr
        assert sorted(lst.stdout.readline().strip().decode() for _ in range(2)) == ["198.51.100.2", "198.51.100.6"]
        lst.wait(timeout=10)
    assert leftovers(prefix) == [], leftovers(prefix)
