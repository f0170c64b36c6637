"""The CLI on hostile or unusual input: an output that is the input, non-Ethernet and unknown link
types, a capture cut off mid-record, absurd sizes and rates, more queues than RETA entries and
numbers too big for any native type. Each gets one line on stderr (or a warning and a summary)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import vnfkit
from vnfkit import traffic


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "vnfkit", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "t.pcap"
    traffic.write_trace(str(path), 200, 5000, 3, udp_fraction=0.3)
    return path


def _one_error_line(r, needle):
    assert r.returncode != 0, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "relative"])
def test_output_that_is_the_input_is_refused_and_the_input_kept(trace, tmp_path, how):
    inp = tmp_path / "in.pcap"
    inp.write_bytes(trace.read_bytes())
    before = inp.read_bytes()
    out = {"same": inp, "symlink": tmp_path / "link.pcap", "hardlink": tmp_path / "hard.pcap",
           "relative": tmp_path / "sub" / ".." / "in.pcap"}[how]
    if how == "symlink":
        out.symlink_to(inp)
    elif how == "hardlink":
        os.link(inp, out)
    elif how == "relative":
        (tmp_path / "sub").mkdir()
    _one_error_line(_run("run", "mazunat", "--in", str(inp), "--out", str(out)), "--out")
    assert inp.read_bytes() == before
    _one_error_line(_run("classify", "--in", str(inp), "--queues", "2", "--csv", str(out)), "--csv")
    assert inp.read_bytes() == before


@pytest.mark.parametrize("linktype", [101, 113, 276])
def test_run_and_classify_handle_raw_ip_and_cooked_captures(trace, tmp_path, linktype):
    from test_pcap_linktypes import write_framed

    eth = vnfkit.PacketBatch.from_pcap(str(trace))
    eth.parse()
    path = tmp_path / "cooked.pcap"
    write_framed(path, eth, linktype)
    totals = {}
    for name, src in (("ethernet", trace), ("framed", path)):
        out = tmp_path / f"{name}.pcap"
        r = _run("run", "mazunat", "--in", str(src), "--out", str(out), "--quiet")
        assert r.returncode == 0, r.stderr
        totals[name] = [line.split()[1:4] for line in r.stdout.splitlines() if line.split()[:1] == ["total"]]
        assert "bad-ethertype" not in r.stdout
    assert totals["framed"] == totals["ethernet"]  # the same decisions as on the Ethernet capture
    written = vnfkit.PacketBatch.from_pcap(str(tmp_path / "framed.pcap"))
    assert written.linktype == linktype and len(written) == int(totals["framed"][0][1]) > 0
    assert written.parse() == 0 and bool(np.all(written.verify_checksums()))
    csv = tmp_path / "o.csv"
    r = _run("classify", "--in", str(path), "--queues", "2", "--csv", str(csv), "--quiet")
    assert r.returncode == 0, r.stderr
    rows = csv.read_text().splitlines()[1:]
    assert len(rows) == len(eth) and not any(",bad-ethertype," in row for row in rows)


def test_unknown_link_type_is_a_one_line_error(tmp_path):
    b = vnfkit.PacketBatch([bytes(60)] * 4)
    b.linktype = 105
    path = tmp_path / "wifi.pcap"
    b.to_pcap(str(path))
    out = tmp_path / "o.pcap"
    _one_error_line(_run("run", "mazunat", "--in", str(path), "--out", str(out)), "link type 105")
    assert not out.exists()  # refused before anything was opened for writing
    _one_error_line(_run("classify", "--in", str(path), "--queues", "2", "--csv", str(tmp_path / "o.csv")),
                    "link type 105")


def test_capture_cut_mid_record_is_read_to_the_last_whole_packet(trace, tmp_path):
    raw = trace.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[:len(raw) - 30])  # as `head -c` of a capture whose writer was killed
    whole = len(vnfkit.PacketBatch.from_pcap(str(cut)))
    assert 0 < whole < 5000
    out = tmp_path / "o.pcap"
    r = _run("run", "mazunat", "--in", str(cut), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"{whole} packets from" in r.stdout and "warnings: 1" in r.stdout
    warning = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "cut off at byte offset" in warning[0]
    assert warning[0].startswith("vnfkit run: warning:")  # on a line of its own, not glued to progress
    r = _run("classify", "--in", str(cut), "--queues", "2", "--csv", str(tmp_path / "o.csv"))
    assert r.returncode == 0 and f"classified {whole} packets" in r.stdout and "cut off" in r.stderr


def test_gen_trace_rejects_a_zero_rate_and_absurd_sizes(tmp_path):
    out = tmp_path / "t.pcap"
    for flag in ("--rate-pps", "--flow-rate"):
        for bad in ("0", "-5", "inf", "nan"):
            _one_error_line(_run("gen-trace", "--out", str(out), "--flows", "2", "--packets", "10", flag, bad), flag)
    _one_error_line(_run("gen-trace", "--out", str(out), "--flows", "2", "--packets", "100000000000000"), "--packets")
    assert not out.exists()


def test_gen_trace_refuses_a_trace_bigger_than_the_free_disk(tmp_path):
    from vnfkit.cli import _gen_trace

    import shutil

    free = shutil.disk_usage(tmp_path).free
    # Twice the free disk, so another job freeing space meanwhile cannot make the trace fit (it would
    # then be written): enough packets of a frame size that makes them need 2 * free bytes.
    packets = max(1_000_000, 2 * free // 60_000)
    frame = 2 * free // packets
    if packets > _gen_trace.MAX_PACKETS:
        pytest.skip("the disk is larger than the packet cap allows: the cap test above covers it")
    assert _gen_trace.expected_bytes(packets, frame, 0.0) > 1.9 * free
    out = tmp_path / "t.pcap"
    _one_error_line(_run("gen-trace", "--out", str(out), "--flows", "2", "--packets", str(packets),
                         "--frame-size", str(frame)), "free")
    assert not out.exists()


def test_classify_spreads_over_more_queues_than_the_default_reta(trace, tmp_path):
    csv = tmp_path / "o.csv"
    big = tmp_path / "big.pcap"
    traffic.write_trace(str(big), 5000, 20000, 4)
    r = _run("classify", "--in", str(big), "--queues", "200", "--csv", str(csv))
    assert r.returncode == 0, r.stderr
    queues = {int(row.rsplit(",", 1)[1]) for row in csv.read_text().splitlines()[1:]}
    assert max(queues) >= 190 and len(queues) >= 190  # queues 128..199 get packets too
    _one_error_line(_run("classify", "--in", str(trace), "--queues", "200", "--reta-size", "128", "--csv", str(csv)),
                    "--reta-size")


@pytest.mark.parametrize("cmd", ["run", "classify", "demo", "gen-trace"])
def test_huge_integers_are_one_line_errors(trace, tmp_path, cmd):
    huge = "99999999999999999999"
    args = {"run": ["run", "mazunat", "--in", str(trace), "--out", str(tmp_path / "o.pcap"), "--queues", huge],
            "classify": ["classify", "--in", str(trace), "--csv", str(tmp_path / "o.csv"), "--queues", huge],
            "demo": ["demo", "--queues", huge],
            "gen-trace": ["gen-trace", "--out", str(tmp_path / "g.pcap"), "--flows", "1", "--packets", "5",
                          "--seed", huge]}[cmd]
    _one_error_line(_run(*args), "out of range")
    for flag in ("--chunk",) if cmd in ("run", "classify", "gen-trace") else ("--batch",):
        _one_error_line(_run(*(args[:-2] + [flag, huge])), flag)
