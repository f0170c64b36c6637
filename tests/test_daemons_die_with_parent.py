"""The servers vnfkit starts (Redis, Open vSwitch, testbed processes) end with the process that
started them, even when it is killed and runs no cleanup; their directories go with the next runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import vnfkit
from vnfkit._procs import dying_with_parent
from vnfkit.recovery.storage.redis_servers import redis_server_path
from vnfkit.runtime._segments import sweep_stale
from vnfkit.testbed.ovs import unavailable_reason

from _procs import alive

#: where the vnfkit this test imports lives (a source tree with its build, or the installed wheel)
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(vnfkit.__file__)))


def _killed_parent(body: str, sig: int = signal.SIGKILL) -> dict:
    """Run `body` in a Python child, which prints one JSON line when its servers are up; kill it
    with `sig` and return what it printed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG_ROOT, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(body)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line, "the child exited before its servers were up"
        return json.loads(line)
    finally:
        p.send_signal(sig)
        p.wait(timeout=30)


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_wrapper_applies_only_from_the_main_thread():
    argv = ["redis-server", "--port", "0"]
    wrapped = dying_with_parent(argv, "KILL")
    assert wrapped[-3:] == argv and (wrapped == argv or wrapped[1] == "--pdeathsig=KILL")
    got: list[list[str]] = []
    t = threading.Thread(target=lambda: got.append(dying_with_parent(argv)))  # it would die with this thread
    t.start()
    t.join()
    assert got == [argv]


@pytest.mark.skipif(redis_server_path() is None, reason="redis-server not installed (Debian package redis-server)")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_harness_leaves_no_redis_server_even_a_stalled_one(sig):
    info = _killed_parent("""
        import json
        from vnfkit.recovery.storage.redis_servers import RedisPair
        pair = RedisPair()
        pair.stall("replica")  # SIGSTOP: a TERM would wait for a SIGCONT that never comes
        print(json.dumps({"pids": list(pair.pids.values()), "dir": str(pair.dir)}), flush=True)
        import time; time.sleep(60)
    """, sig)
    if not info["pids"] or "/vnfkit-" not in info["dir"]:
        pytest.fail(f"unexpected child report {info}")
    assert _gone_within(info["pids"], 10), f"redis-server outlived its parent: {info}"
    assert info["dir"] in sweep_stale() and not os.path.exists(info["dir"])


@pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")
def test_a_killed_harness_leaves_no_ovs_daemon():
    info = _killed_parent("""
        import json
        from vnfkit.testbed.ovs import OpenVSwitch
        ovs = OpenVSwitch()
        ovs.start()
        ovs.add_bridge("br-k")
        print(json.dumps({"pids": list(ovs.pids.values()), "dir": str(ovs.run_dir)}), flush=True)
        import time; time.sleep(60)
    """)
    assert len(info["pids"]) == 2
    assert _gone_within(info["pids"], 10), f"an OVS daemon outlived its parent: {info}"
    assert info["dir"] in sweep_stale() and not os.path.exists(info["dir"])
