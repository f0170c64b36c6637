"""`vnfkit classify` and `vnfkit demo`: real per-packet CSV rows, one-line errors on bad input."""

from __future__ import annotations

import csv
import ipaddress
import subprocess
import sys

import pytest

from vnfkit import traffic
from vnfkit.classify import MultiQueueClassifier, toeplitz_hash
from vnfkit.cli import main


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    from vnfkit import PacketBatch

    path = tmp_path_factory.mktemp("cls") / "t.pcap"
    pkts = traffic.generate(40, 1500, seed=9, ipv6_fraction=0.25, udp_fraction=0.3).to_list()
    pkts.append(pkts[0][:20])  # one malformed frame at the end: Ethernet announcing IPv4, then 6 bytes
    PacketBatch(pkts).to_pcap(str(path))
    return path, pkts


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_has_one_row_per_packet_with_the_rss_of_each(trace, tmp_path, capsys):
    path, pkts = trace
    out = tmp_path / "o.csv"
    assert main(["classify", "--in", str(path), "--queues", "4", "--csv", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "1501 packets" in summary and "truncated 1" in summary
    rows = _rows(out)
    assert len(rows) == len(pkts)
    clf = MultiQueueClassifier(4)
    for row, raw in zip(rows[:300], pkts):
        fam = int(row["family"])
        if row["drop_reason"]:
            continue
        src = ipaddress.ip_address(row["src"]).packed
        dst = ipaddress.ip_address(row["dst"]).packed
        data = src + dst
        if int(row["proto"]) in (6, 17):
            data += int(row["sport"]).to_bytes(2, "big") + int(row["dport"]).to_bytes(2, "big")
        h = toeplitz_hash(data)
        assert row["rss_hash"] == f"0x{h:08x}"
        assert int(row["queue"]) == int(clf.reta.table[h & (clf.reta.size - 1)])
        assert fam == (6 if len(src) == 16 else 4)
        # the addresses are really the packet's: compare with the frame bytes
        off = 26 if fam == 4 else 22
        assert raw[off:off + len(src)] == src
    assert rows[-1]["drop_reason"] != ""  # the truncated frame is reported, not hidden
    assert {r["queue"] for r in rows} <= {"0", "1", "2", "3"}


def test_symmetric_mode_puts_both_directions_on_one_queue(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from vnfkit.packets import from_scapy, write_pcap

    pkts = []
    for i in range(50):
        a, b = f"10.0.{i}.1", f"192.0.2.{i + 1}"
        pkts.append(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=a, dst=b) / TCP(sport=1000 + i, dport=80))
        pkts.append(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / IP(src=b, dst=a) / TCP(sport=80, dport=1000 + i))
    p = tmp_path / "sym.pcap"
    write_pcap(str(p), from_scapy(pkts))
    out = tmp_path / "sym.csv"
    assert main(["classify", "--in", str(p), "--queues", "8", "--symmetric", "--csv", str(out), "--quiet"]) == 0
    rows = _rows(out)
    assert all(rows[2 * i]["queue"] == rows[2 * i + 1]["queue"] for i in range(50))
    assert all(rows[2 * i]["rss_hash"] == rows[2 * i + 1]["rss_hash"] for i in range(50))


def _run(*args):
    return subprocess.run([sys.executable, "-m", "vnfkit", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra, needle", [
    (["--queues", "0"], "--queues"),
    (["--queues", "4", "--reta-size", "100"], "reta_size"),
    (["--queues", "4", "--key", "zz"], "--key"),
    (["--queues", "4", "--key", "00" * 8], "key"),
])
def test_bad_configuration_is_a_one_line_error(trace, tmp_path, extra, needle):
    path, _ = trace
    r = _run("classify", "--in", str(path), "--csv", str(tmp_path / "x.csv"), *extra)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_missing_and_corrupt_pcaps_are_one_line_errors(trace, tmp_path):
    path, _ = trace
    r = _run("classify", "--in", str(tmp_path / "nope.pcap"), "--queues", "2", "--csv", str(tmp_path / "x.csv"))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr
    bad = tmp_path / "bad.pcap"
    raw = bytearray(path.read_bytes())
    raw[24 + 8:24 + 12] = (10_000_000).to_bytes(4, "little")  # absurd caplen in the first record
    bad.write_bytes(bytes(raw))
    r = _run("classify", "--in", str(bad), "--queues", "2", "--csv", str(tmp_path / "x.csv"))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "offset 32" in r.stderr
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"this is not a capture file at all")
    r = _run("classify", "--in", str(garbage), "--queues", "2", "--csv", str(tmp_path / "x.csv"))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
