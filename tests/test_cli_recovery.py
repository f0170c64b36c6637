"""`vnfkit recovery-test`: random crash points judged by the oracle -- replay and buffering always
recover correctly, checkpoint-only is caught, a wrong replay makes the command fail, bad arguments
are one-line errors."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys

import pytest

from vnfkit.cli import main

SMALL = ["--packets", "4000", "--batch", "128", "--checkpoint-interval-ms", "0.5"]  # ~2.7 ms of traffic


def _trial_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("trial ")]


def test_replay_recovers_every_trial_and_writes_the_json(tmp_path, capsys):
    js = tmp_path / "r.json"
    rc = main(["recovery-test", "--nf", "mazunat", "--strategy", "replay", "--trials", "6", "--seed", "3",
               "--json", str(js), *SMALL])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = _trial_lines(out)
    assert len(lines) == 6 and all("-> correct" in ln for ln in lines)
    assert "6 trials" in out and "6 correct, 0 incorrect" in out
    doc = json.loads(js.read_text())
    assert doc["trials"] == 6 and doc["correct"] == 6 and doc["incorrect"] == 0
    assert 0 < doc["recovery_ms"]["p50"] <= doc["recovery_ms"]["p99"] <= doc["recovery_ms"]["max"]
    parts = sum(doc[k]["p50"] for k in ("detect_ms", "handover_ms", "restore_ms", "replay_ms"))
    assert parts > 0
    # every trial released (nearly) all of its 4000 packets: only batches never made stable are lost
    assert doc["released_packets"] == sum(r["released_packets"] for r in doc["results"])
    assert all(r["released_packets"] >= 4000 - 128 * r["lost_batches"] for r in doc["results"])
    # the crash points differ: batches, phases and so packets and times
    points = {(r["crash_at"], r["phase"]) for r in doc["results"]}
    assert len(points) >= 4 and len({r["phase"] for r in doc["results"]}) >= 2
    assert len({r["crash_packet"] for r in doc["results"]}) >= 4
    # several checkpoints in each trial (0.5 ms of packet time): some trials restore a later one
    assert any(r["replayed_batches"] < r["crash_at"] for r in doc["results"])


def test_checkpoint_only_is_caught_incorrect_on_some_trials(capsys):
    rc = main(["recovery-test", "--nf", "mazunat", "--strategy", "checkpoint", "--trials", "6", "--seed", "3", *SMALL])
    out = capsys.readouterr().out
    assert rc == 0  # only a wrong *replay* fails the command
    m = re.search(r"(\d+) correct, (\d+) incorrect", out)
    assert m and int(m.group(2)) >= 2, out
    assert "INCORRECT" in out and "incorrect trials by violation:" in out


def test_buffering_is_correct(capsys):
    rc = main(["recovery-test", "--nf", "mazunat", "--strategy", "buffer", "--trials", "4", "--seed", "4", *SMALL])
    out = capsys.readouterr().out
    assert rc == 0 and "4 correct, 0 incorrect" in out, out


def test_file_storage_and_another_nf(capsys):
    rc = main(["recovery-test", "--nf", "qos", "--strategy", "replay", "--trials", "2", "--seed", "1",
               "--storage", "file", *SMALL])
    out = capsys.readouterr().out
    assert rc == 0 and "2 correct, 0 incorrect" in out and "file storage" in out, out


def test_an_incorrect_replay_fails_the_command(monkeypatch, capsys):
    # A deliberately wrong recovery (the backup releases the replayed outputs again): the oracle
    # sees duplicates and the command must exit non-zero.
    import vnfkit.recovery.trials as trials

    monkeypatch.setattr(trials, "Harness", functools.partial(trials.Harness, release_replayed=True))
    rc = main(["recovery-test", "--nf", "monitor", "--strategy", "replay", "--trials", "2", "--seed", "2", *SMALL])
    cap = capsys.readouterr()
    assert rc == 1
    assert "duplicate" in cap.out and "replay trial(s) recovered incorrectly" in cap.err


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vnfkit", *args], capture_output=True, text=True, timeout=120)


def test_bad_arguments_are_one_line_errors(tmp_path):
    existing = tmp_path / "exists.json"
    existing.write_text("{}")
    base = ["recovery-test", "--nf", "mazunat", "--strategy", "replay"]
    cases = [
        (base + ["--trials", "0"], "--trials"),
        (base + ["--trials", "x"], "--trials"),
        (["recovery-test", "--nf", "nope", "--strategy", "replay", "--trials", "1"], "--nf"),
        (["recovery-test", "--nf", "mazunat", "--strategy", "none", "--trials", "1"], "--strategy"),
        (base + ["--trials", "1", "--storage", "disk"], "--storage"),
        (base + ["--trials", "1", "--queues", "0"], "--queues"),
        (base + ["--trials", "1", "--checkpoint-interval-ms", "-1"], "--checkpoint-interval-ms"),
        (base + ["--trials", "1", "--json", str(tmp_path / "no" / "r.json")], "--json"),
        (base + ["--trials", "1", "--json", str(existing)], "--force"),
        (base + ["--trials", "1", "--packets", "1000", "--batch", "512"], "--packets"),
    ]
    for args, needle in cases:
        r = _run(*args)
        assert r.returncode != 0, args
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, (args, r.stderr)
    assert existing.read_text() == "{}"  # never overwritten unasked


@pytest.mark.skipif(__import__("shutil").which("redis-server") is None, reason="redis-server not installed")
def test_redis_storage_starts_and_stops_its_own_pair(capsys):
    import os

    def redis_children() -> set[int]:
        kids = set()
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{pid}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    continue
                if int(fields[1]) == os.getpid() and comm.startswith("redis"):
                    kids.add(int(pid))
        return kids

    rc = main(["recovery-test", "--nf", "simplenat", "--strategy", "replay", "--trials", "2", "--seed", "1",
               "--storage", "redis", *SMALL])
    out = capsys.readouterr().out
    assert rc == 0 and "2 correct, 0 incorrect" in out and "redis storage" in out, out
    assert not redis_children()  # the private primary + replica are gone
