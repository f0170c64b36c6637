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

from vnfkit.testbed import Testbed, leftovers, missing_tools, nat_testbed

_TOOLS = missing_tools(("ip", "ethtool", "curl", "tshark"))
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="live NAT tests need root (namespaces, AF_PACKET)"),
    pytest.mark.skipif(bool(_TOOLS), reason=f"live NAT tests need {', '.join(_TOOLS)} on PATH"),
]

FILE_BYTES = 8 << 20
HTTP_PORT = 8000

# An HTTP server that logs every peer address (one per line) to a file.
_SERVER = r"""
import http.server, sys, functools
log = open(sys.argv[3], "a", buffering=1)
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        log.write(self.client_address[0] + "\n")
handler = functools.partial(H, directory=sys.argv[4])
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), handler).serve_forever()
"""

# A TCP listener on the client: reports any connection it accepts.
_LISTENER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)
log = open(sys.argv[3], "a", buffering=1)
while True:
    c, peer = s.accept(); log.write(peer[0] + "\n"); c.close()
"""

# From the server: try to open a connection to the NAT's public address (must not get through).
_PROBE = r"""
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("connected")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"""


def _wait_for(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _start_capture(tb: Testbed, host: str, ifname: str, path: Path) -> subprocess.Popen[bytes]:
    err = open(path.with_suffix(".log"), "wb")
    p = tb.popen(host, ["tshark", "-q", "-n", "-i", ifname, "-w", str(path)], stdout=subprocess.DEVNULL, stderr=err)
    _wait_for(lambda: b"Capturing on" in path.with_suffix(".log").read_bytes() or p.poll() is not None, 30,
              f"tshark on {ifname}")
    assert p.poll() is None, path.with_suffix(".log").read_text()
    return p


def _checksum_report(cap: Path) -> dict[str, int]:
    """Frames, IP/TCP checksums verified good and bad (Wireshark's checksum status: 0 Bad, 1 Good,
    2 Unverified), and frames with a private (10/8) address, from one tshark pass.

    A TCP checksum field of 0xffff where the computed one is 0x0000 is good: both are zero in one's
    complement (RFC 1624, section 3), and Linux writes 0xffff for a zero result when it computes
    the checksum in software (skb_checksum_help, as here with offloads off); Wireshark compares the
    field with the value it computed and calls it bad. Such frames are counted in ``negative_zero``."""
    r = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                        "-T", "fields", "-E", "separator=/t", "-e", "ip.checksum.status", "-e", "tcp.checksum.status",
                        "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.checksum", "-e", "tcp.checksum_calculated"],
                       capture_output=True, text=True, timeout=120, check=True)
    rep = {"frames": 0, "ip_good": 0, "tcp_good": 0, "bad": 0, "private_addr": 0, "negative_zero": 0}
    for line in r.stdout.splitlines():
        ip_st, tcp_st, src, dst, field, calc = (line.split("\t") + [""] * 6)[:6]
        if tcp_st == "0" and int(field or "0", 16) == 0xFFFF and int(calc or "1", 16) == 0:
            tcp_st = "1"
            rep["negative_zero"] += 1
        rep["frames"] += 1
        rep["ip_good"] += ip_st == "1"
        rep["tcp_good"] += tcp_st == "1"
        rep["bad"] += ip_st == "0" or tcp_st == "0"
        rep["private_addr"] += src.startswith("10.") or dst.startswith("10.")
    return rep


def test_curl_through_live_mazunat(tmp_path: Path) -> None:
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
        tsh = [_start_capture(tb, "client", topo.client_if, cap_client),
               _start_capture(tb, "server", topo.server_if, cap_server)]
        tb.popen("server", [sys.executable, "-c", _SERVER, topo.server_ip, str(HTTP_PORT), str(peers), str(www)],
                 env=_env(), stderr=subprocess.DEVNULL)
        tb.popen("client", [sys.executable, "-c", _LISTENER, topo.client_ip, "8080", str(accepted)],
                 env=_env(), stderr=subprocess.DEVNULL)
        nat_err = tmp_path / "nat.err"
        nat_out = tmp_path / "nat.out"
        nat = tb.popen("nat", [sys.executable, "-m", "vnfkit", "live", "mazunat", "--inside", topo.inside_if,
                               "--outside", topo.outside_if, "--inside-peer", topo.client_mac,
                               "--outside-peer", topo.server_mac],
                       env=_env(), stdout=open(nat_out, "wb"), stderr=open(nat_err, "wb"))
        _wait_for(lambda: b"ready" in nat_err.read_bytes() or nat.poll() is not None, 60, "vnfkit live: ready")
        assert nat.poll() is None, nat_err.read_text()
        # the HTTP server is up once it answers on its own namespace's address
        _wait_for(lambda: tb.run("server", ["curl", "-s", "-o", "/dev/null", "--max-time", "2",
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
        probe = tb.run("server", [sys.executable, "-c", _PROBE, topo.public_ip, "8080", "2"], timeout=30)
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
    reports = {name: _checksum_report(cap) for name, cap in (("client", cap_client), ("server", cap_server))}
    for name, rep in reports.items():
        print(f"tshark {name} side: {rep}")
        assert rep["frames"] > FILE_BYTES // 1500 and rep["tcp_good"] > FILE_BYTES // 1500
        assert rep["ip_good"] > 0 and rep["bad"] == 0
    assert reports["server"]["private_addr"] == 0  # no private address on the public side
    assert reports["client"]["private_addr"] == reports["client"]["frames"]  # (the check can see one)


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip")
def test_live_cli_refuses_unknown_interfaces_and_recovery_options() -> None:
    base = [sys.executable, "-m", "vnfkit", "live", "mazunat", "--inside-peer", "02:00:00:00:00:01",
            "--outside-peer", "02:00:00:00:00:02"]
    r = subprocess.run([*base, "--inside", "vknosuch0", "--outside", "vknosuch1"], capture_output=True, text=True,
                       timeout=60, env=_env(), check=False)
    assert r.returncode == 1 and r.stderr.strip() == (
        "vnfkit live: error: interface: no interface named 'vknosuch0' in this network namespace")
    r = subprocess.run([*base, "--inside", "lo", "--outside", "lo", "--strategy", "replay"], capture_output=True,
                       text=True, timeout=60, env=_env(), check=False)
    assert r.returncode == 2 and "invalid choice: 'replay'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([*base, "--inside", "lo", "--outside", "lo"], capture_output=True, text=True, timeout=60,
                       env=_env(), check=False)
    assert r.returncode == 1 and "two different interfaces" in r.stderr
