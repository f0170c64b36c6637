"""`vnfkit demo`'s recovery run: MazuNAT under checkpoint + replay, a real SIGKILL of its master, the
oracle's verdict, the table beside no fault tolerance and a latency plot in --out."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np

from vnfkit.recovery.demo import plot_latency, recovery_demo


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vnfkit", *args], capture_output=True, text=True, timeout=300)


def test_recovery_demo_kills_the_master_and_recovers_correctly(tmp_path):
    d = recovery_demo(packets=30_000, flows=600, checkpoint_interval_s=0.005, seed=3)
    r = d.trial
    assert r.verdict.correct, str(r.verdict)
    assert 0 < r.released_master < d.recovered.packets and r.released_backup > 0  # killed mid-run
    assert r.recovery.checkpoint_epoch >= 1  # a periodic checkpoint was restored, not only the initial one
    assert 0 < r.detect_s < 1.0 and r.recovery.restore_s > 0
    # nearly everything of the trace and the replies left (only inputs in flight at the kill are lost)
    assert d.recovered.packets >= 0.9 * d.baseline.packets > 30_000
    assert 0 < d.baseline.p50_us <= d.baseline.p99_us <= d.baseline.p999_us
    tl = d.timeline
    assert len(tl.latency_us) == d.recovered.packets and (tl.latency_us > 0).all()
    assert tl.kill_ns < tl.detect_ns <= tl.live_ns
    assert set(np.unique(tl.side)) == {0, 1}
    png = tmp_path / "lat.png"
    plot_latency(tl, png, "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_demo_cli_prints_the_recovery_table_and_writes_the_plot(tmp_path):
    out = tmp_path / "demo"
    r = _run("demo", "--flows", "300", "--packets", "20000", "--recovery-packets", "30000", "--checkpoint-ms", "5",
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert re.search(r"oracle\s+-\s+correct", r.stdout), r.stdout
    m = re.search(r"recovery: total \(ms\)\s+-\s+([\d.]+)", r.stdout)
    assert m and float(m.group(1)) > 0
    for row in ("throughput", "latency p50", "latency p99 ", "latency p99.9", "detection", "restore", "replay"):
        assert row in r.stdout, row
    assert (out / "latency_around_crash.png").stat().st_size > 10_000
    # a second run refuses to overwrite the plot unless --force
    r2 = _run("demo", "--flows", "300", "--packets", "20000", "--recovery-packets", "30000", "--out", str(out))
    assert r2.returncode != 0 and len(r2.stderr.strip().splitlines()) == 1 and "--force" in r2.stderr
    r3 = _run("demo", "--recovery-packets", "100")
    assert r3.returncode != 0 and "--recovery-packets" in r3.stderr
