"""What the live tests share: the helper programs they run inside the testbed's hosts, bounded
waits, tshark captures and the checksum check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from vnfkit.testbed import Testbed

HTTP_PORT = 8000

# An HTTP server that logs every peer address (one per line) to a file. Bodies go out with
# sendfile(2), so a busy host descheduling the server process stalls the flow less.
SERVER = r"""
import http.server, sys, functools
log = open(sys.argv[3], "a", buffering=1)
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        log.write(self.client_address[0] + "\n")
    def copyfile(self, source, outputfile):
        outputfile.flush()
        self.connection.sendfile(source)
handler = functools.partial(H, directory=sys.argv[4])
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), handler).serve_forever()
"""

# A TCP listener on the client: reports any connection it accepts.
LISTENER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)
log = open(sys.argv[3], "a", buffering=1)
while True:
    c, peer = s.accept(); log.write(peer[0] + "\n"); c.close()
"""

# From the server: try to open a connection to the NAT's public address (must not get through).
PROBE = r"""
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("connected")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"""


def wait_for(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def start_capture(tb: Testbed, host: str, ifname: str, path: Path) -> subprocess.Popen[bytes]:
    err = open(path.with_suffix(".log"), "wb")
    # a 64 MiB kernel capture buffer: with the default 2 MiB, a capture starved of CPU on a busy
    # 2-core box dropped part of a 24 MiB download
    p = tb.popen(host, ["tshark", "-q", "-n", "-B", "64", "-i", ifname, "-w", str(path)], stdout=subprocess.DEVNULL,
                 stderr=err)
    wait_for(lambda: b"Capturing on" in path.with_suffix(".log").read_bytes() or p.poll() is not None, 30,
              f"tshark on {ifname}")
    assert p.poll() is None, path.with_suffix(".log").read_text()
    return p


def checksum_report(cap: Path) -> dict[str, int]:
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
