"""The pytest plugin (vnfkit.testing): a user's VNF benchmarked on generated traffic, extra_info
filled, and a failure when the VNF loses packets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

from pathlib import Path

import vnfkit


_INSTALLED = any(ep.value == "vnfkit.testing" for ep in entry_points(group="pytest11"))
_ARGS = [] if _INSTALLED else ["-p", "vnfkit.testing"]

_VNFS = '''
import numpy as np
import vnfkit as vk

class Forward(vk.VNF):
    def process(self, batch, ctx):
        batch.port[:] = 1

class DropUdpWithReason(vk.VNF):
    def process(self, batch, ctx):
        udp = batch.key["proto"] == 17
        batch.port[:] = np.where(udp, 0, 1)
        batch.drop[udp] = int(vk.DropReason.POLICY)

class LosesUdp(vk.VNF):
    """Drops UDP without saying why: the plugin must call that a loss."""
    def process(self, batch, ctx):
        batch.port[:] = np.where(batch.key["proto"] == 17, 0, 1)
'''


def _run(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on a user's test file in a fresh interpreter, with the same vnfkit as this test."""
    (tmp_path / "test_user.py").write_text(_VNFS + body)
    root = str(Path(vnfkit.__file__).resolve().parent.parent)  # installed, or a source tree
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_ARGS, *args,
                           str(tmp_path / "test_user.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def test_plugin_records_rates_and_latency(tmp_path: Path) -> None:
    BODY = '''
def test_fwd(vnf_benchmark):
    res = vnf_benchmark(Forward, flows=200, packets=4_000, batch=256, rounds=2)
    assert res.packets == 8_000 and res.forwarded == 8_000

def test_drop_with_reason(vnf_benchmark):
    res = vnf_benchmark(DropUdpWithReason, flows=200, packets=4_000, batch=256, rounds=2, queues=2)
    assert res.dropped > 0 and res.drops == {"policy": res.dropped}
'''
    out = tmp_path / "bench.json"
    r = _run(tmp_path, BODY, f"--benchmark-json={out}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
    data = json.loads(out.read_text())
    infos = {b["name"]: b["extra_info"] for b in data["benchmarks"]}
    assert set(infos) == {"test_fwd", "test_drop_with_reason"}
    for info in infos.values():
        assert info["mpps"] > 0 and info["p99_us"] >= info["p50_us"] > 0
        assert info["forwarded"] + info["dropped"] == info["packets"]
    assert infos["test_drop_with_reason"]["queues"] == 2
    assert infos["test_drop_with_reason"]["drops"]["policy"] == infos["test_drop_with_reason"]["dropped"]


def test_plugin_fails_a_vnf_that_loses_packets(tmp_path: Path) -> None:
    BODY = '''
def test_loses(vnf_benchmark):
    vnf_benchmark(LosesUdp, flows=200, packets=4_000, batch=256, rounds=2)
'''
    r = _run(tmp_path, BODY)
    assert r.returncode == 1 and "1 failed" in r.stdout, r.stdout + r.stderr
    assert "LostPacketsError" in r.stdout and "dropped without a reason" in r.stdout


def test_plugin_rejects_bad_options(tmp_path: Path) -> None:
    BODY = '''
import pytest

def test_bad(vnf_benchmark):
    with pytest.raises(ValueError, match="packets"):
        vnf_benchmark(Forward, flows=100, packets=10)
    with pytest.raises(TypeError, match="batch"):
        vnf_benchmark(Forward, batch=1.5)
    with pytest.raises(TypeError, match="vnf"):
        vnf_benchmark(object())
    with pytest.raises(TypeError, match="replies"):
        vnf_benchmark(Forward, flows=10, packets=100, replies="yes")
'''
    r = _run(tmp_path, BODY, "--benchmark-disable")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr
