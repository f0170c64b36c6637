"""Epoch fencing of stable storage: once a backup fenced storage, no write of the old master's epoch
lands -- not a later sync, and not one it sent before that storage executes late (a SIGSTOPped Redis
primary resumed after the fence) -- and the old master is told it was fenced, never "ok"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from vnfkit.recovery.storage import FENCED, OK, TIMEOUT, FileStorage, MemoryStorage
from vnfkit.recovery.storage.redis import RedisStorage
from vnfkit.recovery.storage.redis_servers import redis_server_path

from _redis import redis_pair  # noqa: F401  (a fixture)

needs_redis = pytest.mark.skipif(redis_server_path() is None, reason="redis-server not installed")


def _fenced_old_writer(old, new) -> None:
    """`old` wrote under the first epoch; `new` fences; `old`'s next write is refused and invisible."""
    old.append("det", b"r0")
    assert old.sync(5.0).ok
    e0 = old.epoch
    assert new.fence(5.0) == e0 + 1 and new.epoch == e0 + 1
    assert new.read("det") == [(0, b"r0")]  # the fence saw what was stable before it
    old.append("det", b"late")
    r = old.sync(1.0)
    assert r.status == FENCED and not r.ok and "epoch" in r.detail
    assert old.acked("det") == 1 and old.fenced
    assert old.sync(1.0).status == FENCED  # for good
    assert new.read("det") == [(0, b"r0")]
    # the new writer goes on at the next offset, under its epoch
    assert new.append("det", b"r1") == 1
    assert new.sync(5.0).ok
    assert new.read("det") == [(0, b"r0"), (1, b"r1")]


def test_memory_fence_refuses_the_old_writer():
    old = MemoryStorage()
    new = old.attach()
    _fenced_old_writer(old, new)
    assert old.read("det") == [(0, b"r0"), (1, b"r1")]  # nothing of the old writer's after the fence


def test_fence_keeps_the_handle_own_queue():
    """One handle shared by master and backup (the in-process trials): what it queued before the
    fence is written under the new epoch."""
    st = MemoryStorage()
    st.append("in", b"a")
    st.fence()
    assert st.sync(1.0).ok and st.read("in") == [(0, b"a")]


def test_fence_checks_its_timeout():
    with pytest.raises(ValueError, match="timeout_s"):
        MemoryStorage().fence(0)


def test_file_fence_refuses_the_old_writer(tmp_path):
    old = FileStorage(tmp_path / "st", fsync=False)
    new = FileStorage(tmp_path / "st", fsync=False)
    _fenced_old_writer(old, new)
    old.close()
    new.close()
    again = FileStorage(tmp_path / "st", fsync=False)  # a second failover reads the same
    assert again.read("det") == [(0, b"r0"), (1, b"r1")] and again.epoch == 1
    again.close()


def test_file_fence_sees_records_stable_before_it(tmp_path):
    """A backup that opened storage early rescans at the fence: it replays what the master made
    stable until then."""
    new = FileStorage(tmp_path / "st", fsync=False)
    old = FileStorage(tmp_path / "st", fsync=False)
    old.append_many("det", [b"a", b"b"])
    assert old.sync(1.0).ok
    assert new.read("det") == []
    new.fence()
    assert new.read("det") == [(0, b"a"), (1, b"b")] and new.acked("det") == 2
    old.close()
    new.close()


_WRITER = textwrap.dedent("""
    import sys
    from vnfkit.recovery.storage import FileStorage
    st = FileStorage(sys.argv[1])
    st.append("det", b"r0")
    print(st.sync(1.0).status, flush=True)
    st.append("det", b"late")  # queued before the fence, written after it
    sys.stdin.readline()
    r = st.sync(1.0)
    print(r.status, st.acked("det"), flush=True)
""")


def test_file_fence_across_processes_refuses_a_late_write(tmp_path):
    root = tmp_path / "st"
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == OK
        backup = FileStorage(root)
        backup.fence()
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().split() == [FENCED, "1"]
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert backup.read("det") == [(0, b"r0")]
    backup.close()
    again = FileStorage(root)
    assert again.read("det") == [(0, b"r0")]
    again.close()


def test_file_fence_waits_for_a_commit_in_flight(tmp_path):
    """A commit holds the epoch file shared until its fdatasync returns: a fence taken meanwhile
    waits (and reports storage unavailable after its timeout)."""
    import fcntl

    from vnfkit.recovery.storage import StorageUnavailable

    old = FileStorage(tmp_path / "st", fsync=False)
    new = FileStorage(tmp_path / "st", fsync=False)
    fcntl.flock(old._epoch_fd, fcntl.LOCK_SH)  # a commit in flight
    with pytest.raises(StorageUnavailable, match="fence did not take"):
        new.fence(0.05)
    fcntl.flock(old._epoch_fd, fcntl.LOCK_UN)
    assert new.fence(0.05) >= 1
    old.close()
    new.close()


@needs_redis
def test_redis_fence_refuses_the_old_writer(redis_pair):  # noqa: F811
    redis_pair.wait_replicated()
    old = RedisStorage(unix_socket_path=redis_pair.primary_socket, socket_timeout_s=5.0)  # a busy CI box
    new = RedisStorage(unix_socket_path=redis_pair.primary_socket, socket_timeout_s=5.0)
    _fenced_old_writer(old, new)
    raw = new._r.hgetall("vnfkit:s:det")
    assert sorted(raw.items()) == [(b"0", b"r0"), (b"1", b"r1")]  # the refused record is nowhere
    redis_pair.wait_replicated()
    second = RedisStorage(unix_socket_path=redis_pair.replica_socket, replicas=0, socket_timeout_s=5.0)
    assert second.read("det") == [(0, b"r0"), (1, b"r1")] and second.epoch == 1  # on the replica too
    for st in (old, new, second):
        st.close()


@needs_redis
def test_redis_write_queued_on_a_stalled_primary_runs_after_the_fence_and_is_refused(redis_pair):  # noqa: F811
    """The primary is SIGSTOPped while the old master's commit is on its way: the server executes
    it only when resumed, after the backup's fence -- and it adds nothing."""
    redis_pair.wait_replicated()
    backup = RedisStorage(unix_socket_path=redis_pair.primary_socket, socket_timeout_s=10.0)
    backup.fence(5.0)  # ready in advance (its scripts loaded): the takeover is one round trip
    old = RedisStorage(unix_socket_path=redis_pair.primary_socket, socket_timeout_s=1.0)
    assert old.epoch == 1
    old.append("det", b"r0")
    assert old.sync(5.0).ok
    redis_pair.stall("primary")
    fenced: dict[str, object] = {}
    try:
        t = threading.Thread(target=lambda: fenced.update(epoch=backup.fence(8.0)))
        t.start()
        time.sleep(0.2)  # the fence is queued on the stalled server first...
        old.append("det", b"late")
        r = old.sync(1.0)  # ...then the old master's commit, which times out
        assert r.status == TIMEOUT and old.acked("det") == 1
    finally:
        redis_pair.resume("primary")
    t.join(15.0)
    assert fenced.get("epoch") == 2
    time.sleep(0.3)  # the late commit has run by now
    assert backup.read("det") == [(0, b"r0")]
    assert sorted(backup._r.hgetall("vnfkit:s:det")) == [b"0"]
    assert backup._r.hget("vnfkit:acked", "det") == b"1"
    r = old.sync(5.0)  # the retry reaches the server: fenced, never ok
    assert r.status == FENCED and old.acked("det") == 1
    assert backup.read("det") == [(0, b"r0")]
    old.close()
    backup.close()
