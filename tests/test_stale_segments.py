"""What a killed runner leaves behind is removed by the next one, and nothing of a live owner is.

A process killed by a signal it does not handle runs no cleanup: its segments (while its workers
start) and its directories (the recovery master's image files, for its whole life) stay in /dev/shm
or the temporary directory. ``runtime._segments.sweep_stale`` removes an entry only when its
creator's pid is gone *and* nobody holds its flock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import vnfkit
from vnfkit.recovery.workloads import workload
from vnfkit.runtime import _shared
from vnfkit.runtime._segments import SHM_DIR, Claim, Segment, owned_dir, sweep_stale
from vnfkit.runtime.process import ProcessRunner

from _procs import alive

#: where the vnfkit this test imports lives (a source tree with its build, or the installed wheel)
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(vnfkit.__file__)))


def _entries_of(pid: int) -> list[str]:
    """Every vnfkit entry named for `pid` in /dev/shm and the temporary directory."""
    out = []
    for d in dict.fromkeys((SHM_DIR, tempfile.gettempdir())):
        out += [os.path.join(d, n) for n in os.listdir(d) if n.startswith(f"vnfkit-{pid}-")]
    return sorted(out)


def _child(body: str) -> subprocess.Popen[str]:
    """A Python child running `body`; it prints one line when it is ready to be killed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG_ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(body)], stdout=subprocess.PIPE, text=True,
                            env=env)


def _kill(p: subprocess.Popen[str], sig: int) -> None:
    p.send_signal(sig)
    p.wait(timeout=30)
    assert p.returncode == -sig


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_segments_and_dirs_of_a_killed_process_are_swept_and_nothing_else():
    # the child makes what a runner makes before its workers are up, and is killed with SIGKILL
    p = _child("""
        from vnfkit.runtime import _shared
        from vnfkit.runtime._segments import Segment, owned_dir
        seg = Segment("q0", 1 << 16)
        spec = _shared.make_shared(2)
        d = owned_dir("ftckpt", tmpfs=True)
        open(d.name + "/ckpt-1-0", "wb").write(b"x" * 4096)
        print("up", flush=True)
        import time; time.sleep(60)
    """)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
        left = _entries_of(p.pid)
    finally:
        _kill(p, signal.SIGKILL)
    # the leak this guards against: a ring, the shared state and a directory of images
    assert len(left) == 3 and any("-state-" in e for e in left) and any("-ftckpt-" in e for e in left), left
    mine = Segment("mine", 4096)  # this process's own, unlocked after unlink: never a sweeper's
    try:
        removed = sweep_stale()
        assert sorted(e for e in removed if f"vnfkit-{p.pid}-" in e) == left
        assert _entries_of(p.pid) == [] and os.path.exists(mine.path)
    finally:
        mine.close()


def test_an_entry_whose_lock_is_held_is_spared_though_its_pid_looks_dead():
    # a live owner in another pid namespace that shares /dev/shm: its pid is nobody here
    dead = _dead_pid()
    path = os.path.join(SHM_DIR, f"vnfkit-{dead}-0123abcd-q0")
    with open(path, "wb") as f:
        f.write(b"x")
    try:
        claim = Claim(path)
        assert path not in sweep_stale([SHM_DIR]) and os.path.exists(path)
        claim.release()
        claim.release()  # idempotent
        assert sweep_stale([SHM_DIR]) == [path] and not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_a_symlink_another_users_entry_and_a_foreign_name_are_never_touched(tmp_path):
    dead = _dead_pid()
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    link = tmp_path / f"vnfkit-{dead}-0123abcd-life"
    link.symlink_to(target)
    other = tmp_path / f"vnfkit-{dead}-4567cdef-q1"
    other.write_bytes(b"x")
    foreign = tmp_path / "vnfkit-test-12345-0"  # not a name of this module's: no pid field
    foreign.write_bytes(b"x")
    if os.geteuid() == 0:
        os.chown(other, 65534, 65534)
    stale = tmp_path / f"vnfkit-{dead}-ovs-abcdefgh"
    stale.mkdir()
    (stale / ".vnfkit-owned").write_bytes(b"")
    (stale / "f").write_bytes(b"x")
    removed = sweep_stale([str(tmp_path)])
    assert removed == [str(stale)] and not stale.exists()
    assert link.is_symlink() and target.read_bytes() == b"keep" and foreign.exists()
    assert other.exists() == (os.geteuid() == 0)  # as root it belongs to nobody; otherwise it was ours


def test_a_users_own_vnfkit_named_entries_are_never_removed(tmp_path):
    # names that merely start like ours (a user's results, a year), and one of our directory names
    # without the marker every OwnedDir writes, stay with all their contents
    dead = _dead_pid()
    kept = [tmp_path / f"vnfkit-{dead}-results", tmp_path / f"vnfkit-{dead}-ovs-abcdefgh",
            tmp_path / f"vnfkit-{dead}-ckpt-abcdefgh-old"]
    for d in kept:
        d.mkdir()
        (d / "data.csv").write_bytes(b"precious")
    files = [tmp_path / f"vnfkit-{dead}-state-0.bak", tmp_path / f"vnfkit-{dead}-0123abcd-life.txt"]
    for f in files:
        f.write_bytes(b"precious")
    (kept[2] / ".vnfkit-owned").write_bytes(b"")  # the marker, but not a name an OwnedDir makes
    assert sweep_stale([str(tmp_path)]) == []
    assert all((d / "data.csv").read_bytes() == b"precious" for d in kept)
    assert all(f.read_bytes() == b"precious" for f in files)


def test_an_unknown_directory_tag_is_refused():
    with pytest.raises(ValueError, match="tag"):
        owned_dir("results")


def test_a_live_owner_keeps_its_dir_and_cleanup_removes_it():
    d = owned_dir("ftckpt", tmpfs=True)
    open(os.path.join(d.name, "f"), "wb").close()
    assert os.path.basename(d.name).startswith(f"vnfkit-{os.getpid()}-ftckpt-")
    assert d.name not in sweep_stale()
    d.cleanup()
    d.cleanup()
    assert not os.path.exists(d.name)


def test_the_shared_state_claim_goes_with_its_name():
    spec = _shared.make_shared(1)
    name = spec["name"]
    assert name in _shared._claims
    _shared.workers_attached(spec)
    assert name not in _shared._claims and not os.path.exists(os.path.join(SHM_DIR, name))
    _shared.release_shared(spec)


def test_a_streaming_master_killed_by_sigterm_leaves_what_the_next_runner_removes():
    # Python's default SIGTERM runs no finalizer: the master's image directory stays behind
    p = _child("""
        from vnfkit.recovery.ft_runner import StreamingMaster
        from vnfkit.recovery.workloads import workload
        w = workload("mazunat", packets=2000, flows=100, batch=128, seed=1)
        m = StreamingMaster(w.vnf, w.config, queues=2, strategy="replay", checkpoint_interval_s=0.01)
        for b in w.batches:
            b.parse()
            m.feed(b)
        print("up", flush=True)
        import time; time.sleep(60)
    """)
    workers: list[int] = []
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
        with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
            workers = [int(x) for x in f.read().split()]
        left = _entries_of(p.pid)
    finally:
        _kill(p, signal.SIGTERM)
    assert any("-ftckpt-" in e for e in left), left
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:  # they die with their parent
        time.sleep(0.01)
    assert not any(alive(w) for w in workers)
    w = workload("simplenat", packets=256, flows=8, batch=128, seed=1)
    ProcessRunner(w.vnf, queues=1, config=w.config).close()  # the next runner of this uid sweeps at its start
    assert _entries_of(p.pid) == []
