"""`vnfkit gen-trace`: writes the trace, prints a summary, fails with one line on bad input."""

from __future__ import annotations

import subprocess
import sys

import vnfkit
from vnfkit import traffic
from vnfkit.cli import main


def test_gen_trace_writes_the_trace(tmp_path, capsys):
    out = tmp_path / "trace.pcap"
    rc = main(["gen-trace", "--out", str(out), "--flows", "50", "--packets", "3000", "--seed", "4",
               "--ipv6-fraction", "0.2"])
    assert rc == 0
    o = capsys.readouterr().out
    assert "3000 packets" in o and str(out) in o
    b = vnfkit.PacketBatch.from_pcap(str(out))
    assert b.to_list() == traffic.generate(50, 3000, seed=4, ipv6_fraction=0.2).to_list()


def _run(*args):
    return subprocess.run([sys.executable, "-m", "vnfkit", "gen-trace", *args], capture_output=True, text=True,
                          timeout=60)


def test_missing_output_dir_is_a_one_line_error(tmp_path):
    r = _run("--out", str(tmp_path / "no" / "such" / "t.pcap"), "--flows", "2", "--packets", "5")
    assert r.returncode != 0
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr


def test_bad_args_are_one_line_errors(tmp_path):
    out = str(tmp_path / "t.pcap")
    for args in (["--out", out, "--flows", "10", "--packets", "3"],
                 ["--out", out, "--flows", "x", "--packets", "3"],
                 ["--out", out, "--flows", "1"],
                 ["--out", out, "--flows", "1", "--packets", "3", "--ipv6-fraction", "2"]):
        r = _run(*args)
        assert r.returncode != 0, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], (args, r.stderr)


def test_progress_goes_to_stderr(tmp_path):
    r = _run("--out", str(tmp_path / "t.pcap"), "--flows", "100", "--packets", "1000000", "--chunk", "100000")
    assert r.returncode == 0, r.stderr
    assert "100%" in r.stderr and "1000000 packets" in r.stderr
    assert "wrote 1000000 packets" in r.stdout
