"""`vnfkit live mazunat` on a real testbed: curl through the NAT, byte-exact, checksums clean.

client (10.0.0.10) -- NAT host running `vnfkit live mazunat` on two veths -- server (192.0.2.100).
Every wait is bounded; every process is started through the testbed and stopped by pid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _live import HTTP_PORT, LISTENER, PROBE, SERVER, checksum_report, env, start_capture, wait_for

from vnfkit.testbed import Testbed, leftovers, missing_tools, nat_testbed

_TOOLS = missing_tools(("ip", "ethtool", "curl", "tshark"))
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="live NAT tests need root (namespaces, AF_PACKET)"),
    pytest.mark.skipif(bool(_TOOLS), reason=f"live NAT tests need {', '.join(_TOOLS)} on PATH"),
]

FILE_BYTES = 8 << 20


def test_curl_through_live_mazunat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = os.urandom(FILE_BYTES)
    www = tmp_path / "www"
    www.mkdir()
    (www / "blob.bin").write_bytes(payload)
    want = hashlib.sha256(payload).hexdigest()
    peers = tmp_path / "peers.log"
    accepted = tmp_path / "accepted.log"
    peers.touch()
    accepted.touch()
    with Testbed() as tb:
        prefix = tb.prefix
        topo = nat_testbed(tb)
        cap_client = tmp_path / "client.pcap"
        cap_server = tmp_path / "server.pcap"
        tsh = [start_capture(tb, "client", topo.client_if, cap_client),
               start_capture(tb, "server", topo.server_if, cap_server)]
        tb.popen("server", [sys.executable, "-c", SERVER, topo.server_ip, str(HTTP_PORT), str(peers), str(www)],
                 env=env(), stderr=subprocess.DEVNULL)
        tb.popen("client", [sys.executable, "-c", LISTENER, topo.client_ip, "8080", str(accepted)],
                 env=env(), stderr=subprocess.DEVNULL)
        nat_err = tmp_path / "nat.err"
        nat_out = tmp_path / "nat.out"
        nat = tb.popen("nat", [sys.executable, "-m", "vnfkit", "live", "mazunat", "--inside", topo.inside_if,
                               "--outside", topo.outside_if, "--inside-peer", topo.client_mac,
                               "--outside-peer", topo.server_mac],
                       env=env(), stdout=open(nat_out, "wb"), stderr=open(nat_err, "wb"))
        wait_for(lambda: b"ready" in nat_err.read_bytes() or nat.poll() is not None, 60, "vnfkit live: ready")
        assert nat.poll() is None, nat_err.read_text()
        # the HTTP server is up once it answers on its own namespace's address
        wait_for(lambda: tb.run("server", ["curl", "-s", "-o", "/dev/null", "--max-time", "2",
                                            f"http://{topo.server_ip}:{HTTP_PORT}/"], timeout=10).returncode == 0,
                  30, "the HTTP server")
        peers.write_text("")  # forget the server's own readiness probe

        url = f"http://{topo.server_ip}:{HTTP_PORT}/blob.bin"
        got = tmp_path / "got.bin"
        r = tb.run("client", ["curl", "-sS", "--max-time", "120", "-o", str(got), "-w",
                              "%{size_download} %{time_total}", url], timeout=150)
        assert r.returncode == 0, f"curl failed: {r.stderr}\nNAT: {nat_err.read_text()}"
        size, secs = r.stdout.split()
        have = hashlib.sha256(got.read_bytes()).hexdigest()
        print(f"\ndownload through vnfkit live mazunat: {size} bytes in {float(secs):.2f} s "
              f"({int(size) / float(secs) / 1e6:.1f} MB/s); sha256 sent {want}, received {have}")
        assert int(size) == FILE_BYTES and have == want

        # unsolicited inbound: the server connects to the public address (a port with no mapping and
        # no forward), where the client does listen behind the NAT: it must not get through
        probe = tb.run("server", [sys.executable, "-c", PROBE, topo.public_ip, "8080", "2"], timeout=30)
        print(f"unsolicited inbound connection to {topo.public_ip}:8080 -> {probe.stdout.strip()}")
        assert probe.stdout.strip() in ("timeout", "refused"), probe.stdout + probe.stderr
        assert accepted.read_text() == ""

        # a new outbound connection after all that still works
        r2 = tb.run("client", ["curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}",
                               f"http://{topo.server_ip}:{HTTP_PORT}/"], timeout=60)
        assert r2.returncode == 0 and r2.stdout == "200", r2.stderr

        assert Testbed.stop(nat) == 0, nat_err.read_text()
        summary = json.loads(nat_out.read_text().strip().splitlines()[-1])
        print("NAT summary:", json.dumps(summary))
        for p in tsh:
            Testbed.stop(p)
    assert leftovers(prefix) == []

    seen = sorted(set(peers.read_text().split()))
    print(f"server saw peers: {seen}")
    assert seen == [topo.public_ip]
    assert summary["vnf"]["translations"] > 0 and summary["vnf"]["reverse_translations"] > 0
    assert summary["drops"].get("no-mapping", 0) >= 1  # the probe's SYN(s)
    assert summary["sockets"]["inside"]["send_errors"] == 0 and summary["sockets"]["outside"]["send_errors"] == 0
    reports = {name: checksum_report(cap) for name, cap in (("client", cap_client), ("server", cap_server))}
    for name, rep in reports.items():
        print(f"tshark {name} side: {rep}")
        assert rep["frames"] > FILE_BYTES // 1500 and rep["tcp_good"] > FILE_BYTES // 1500
        assert rep["ip_good"] > 0 and rep["bad"] == 0
    assert reports["server"]["private_addr"] == 0  # no private address on the public side
    assert reports["client"]["private_addr"] == reports["client"]["frames"]  # (the check can see one)
    with capsys.disabled():  # the measured figures, past pytest's capture, once every check passed
        print(f"\ndownload through vnfkit live mazunat: {size} bytes in {float(secs):.2f} s, sha256 {have} "
              f"(sent {want}); server saw peers {seen}; tshark client side {reports['client']}, "
              f"server side {reports['server']}")


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip")
def test_live_cli_refuses_unknown_interfaces_and_recovery_options() -> None:
    base = [sys.executable, "-m", "vnfkit", "live", "mazunat", "--inside-peer", "02:00:00:00:00:01",
            "--outside-peer", "02:00:00:00:00:02"]
    r = subprocess.run([*base, "--inside", "vknosuch0", "--outside", "vknosuch1"], capture_output=True, text=True,
                       timeout=60, env=env(), check=False)
    assert r.returncode == 1 and r.stderr.strip() == (
        "vnfkit live: error: interface: no interface named 'vknosuch0' in this network namespace")
    r = subprocess.run([*base, "--inside", "lo", "--outside", "lo", "--strategy", "checkpoint"], capture_output=True,
                       text=True, timeout=60, env=env(), check=False)
    assert r.returncode == 2 and "invalid choice: 'checkpoint'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([*base, "--inside", "lo", "--outside", "lo"], capture_output=True, text=True, timeout=60,
                       env=env(), check=False)
    assert r.returncode == 1 and "two different interfaces" in r.stderr
