"""`vnfkit run NF` for every shipped middlebox, and `vnfkit demo` (MazuNAT, 2 queues)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import vnfkit
from vnfkit import nfs, traffic
from vnfkit.cli import main


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "t.pcap"
    traffic.write_trace(str(path), 300, 20000, 5, udp_fraction=0.3)
    return path


def _table(text: str) -> dict[str, list[int]]:
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and (parts[0].isdigit() or parts[0] == "total") and len(parts) >= 4:
            rows[parts[0]] = [int(x) for x in parts[1:4]]
    return rows


@pytest.mark.parametrize("nf", nfs.names())
def test_run_every_nf_writes_what_it_forwards(nf, trace, tmp_path, capsys):
    out = tmp_path / "out.pcap"
    cfg = tmp_path / "cfg.json"
    config = {"vip": "198.18.0.0", "vip_port": 80} if nf == "adaptive_lb" else {}  # a config file is read
    cfg.write_text(json.dumps(config))
    rc = main(["run", nf, "--in", str(trace), "--out", str(out), "--queues", "2", "--config", str(cfg), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    rows = _table(text)
    assert set(rows) == {"0", "1", "total"}
    packets, forwarded, dropped = rows["total"]
    assert packets == 20000 and forwarded + dropped == packets
    assert rows["0"][0] + rows["1"][0] == packets
    written = vnfkit.PacketBatch.from_pcap(str(out))
    assert len(written) == forwarded
    # what was written is well-formed traffic with valid checksums
    assert written.parse() == 0
    assert bool(np.all(written.verify_checksums()))
    if dropped:
        assert "drops by reason:" in text


def test_mazunat_run_translates_every_forwarded_packet(trace, tmp_path, capsys):
    out = tmp_path / "nat.pcap"
    assert main(["run", "mazunat", "--in", str(trace), "--out", str(out), "--queues", "2", "--quiet"]) == 0
    capsys.readouterr()
    b = vnfkit.PacketBatch.from_pcap(str(out))
    b.parse()
    src = b.key["src"][:, :4]
    assert len(b) > 0
    assert np.all(src == np.array([192, 0, 2, 1], np.uint8))  # the default public address
    assert np.all(b.key["sport"] >= 50000)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "vnfkit", *args], capture_output=True, text=True, timeout=120)


def test_run_errors_are_one_line(trace, tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"no_such_key": 1}))
    cases = [
        (["run", "mazunat", "--in", str(tmp_path / "none.pcap"), "--out", str(tmp_path / "o.pcap")], "--in"),
        (["run", "mazunat", "--in", str(trace), "--out", str(tmp_path / "no" / "o.pcap")], "--out"),
        (["run", "mazunat", "--in", str(trace), "--out", str(tmp_path / "o.pcap"), "--config", str(bad_json)], "JSON"),
        (["run", "qos", "--in", str(trace), "--out", str(tmp_path / "o.pcap"), "--config", str(unknown)], "no_such_key"),
        (["run", "nope", "--in", str(trace), "--out", str(tmp_path / "o.pcap")], "invalid choice"),
        (["run", "mazunat", "--in", str(trace), "--out", str(tmp_path / "o.pcap"), "--queues", "0"], "queues"),
    ]
    for args, needle in cases:
        r = _run(*args)
        assert r.returncode != 0, args
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, (args, r.stderr)


def test_demo_runs_mazunat_on_two_queues_and_prints_the_table(tmp_path):
    r = _run("demo", "--flows", "300", "--packets", "20000", "--recovery-packets", "0")
    assert r.returncode == 0, r.stderr
    rows = _table(r.stdout)
    assert set(rows) == {"0", "1", "total"}
    packets, forwarded, dropped = rows["total"]
    assert packets > 20000  # the trace plus the remote host's replies
    assert forwarded + dropped == packets
    m = re.search(r"translations\s+(\d+)", r.stdout)
    assert m and int(m.group(1)) > 0
    assert "reverse_translations" in r.stdout
