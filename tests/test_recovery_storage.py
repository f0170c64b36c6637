"""Stable storage: one contract for memory, file and Redis; the file backend's torn tails and a
writer SIGKILLed mid-append; Redis acknowledgement only after WAIT 1, and storage faults (primary
killed or stalled) reported within the timeout, nothing unacknowledged counted, resumed later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vnfkit._core import crc32c
from vnfkit.recovery.storage import OK, FileStorage, MemoryStorage, StableStorage, StorageError
from vnfkit.recovery.storage.file import encode_frame
from vnfkit.recovery.storage.redis_servers import redis_server_path

from _redis import redis_pair  # noqa: F401  (a fixture)

needs_redis = pytest.mark.skipif(redis_server_path() is None, reason="redis-server not installed")


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283
    with pytest.raises(TypeError):
        crc32c("text")  # type: ignore[arg-type]


def contract(s: StableStorage, t: float = 1.0) -> None:
    assert s.append("det.0", b"a") == 0 and s.append("det.0", b"bb") == 1
    assert s.acked("det.0") == 0 and s.read("det.0") == []  # nothing stable before a sync
    assert s.pending() == 2
    r = s.sync(t)
    assert r.ok and r.acked["det.0"] == 2 and s.pending() == 0
    assert s.read("det.0") == [(0, b"a"), (1, b"bb")]
    s.append("det.0", b"c")
    s.append("input", b"x" * 1000)
    assert s.sync(t).ok
    assert s.read("det.0", 1) == [(1, b"bb"), (2, b"c")]
    s.truncate("det.0", 2)
    assert s.read("det.0") == [(2, b"c")]
    assert s.append("det.0", b"d") == 3  # offsets are never reused
    assert s.sync(t).ok and [o for o, _ in s.read("det.0")] == [2, 3]
    # a read from an offset: only the records from there (none past the end, none below the first kept)
    assert s.read("det.0", 3) == [(3, b"d")] and s.read("det.0", 4) == [] and s.read("det.0", 99) == []
    assert s.read("det.0", 1) == [(2, b"c"), (3, b"d")]
    assert set(s.streams()) >= {"det.0", "input"}
    with pytest.raises(ValueError, match="stream"):
        s.append("bad name/", b"")
    with pytest.raises(TypeError, match="record"):
        s.append("ok", "text")  # type: ignore[arg-type]
    for bad_stream, exc in ((b"det.0", TypeError), (3, TypeError), ("", ValueError), ("x" * 129, ValueError)):
        with pytest.raises(exc, match="stream"):
            s.append(bad_stream, b"")  # type: ignore[arg-type]
    buf = bytearray(b"ef")
    off = s.append("aux", buf)  # a mutable record is copied when it is queued
    buf[:] = b"zz"
    assert s.sync(t).ok and s.read("aux", off) == [(off, b"ef")]
    for bad_timeout in (0, 0.0, -1.0, float("nan"), True, "1", None):
        with pytest.raises(ValueError, match="timeout_s"):
            s.sync(bad_timeout)  # type: ignore[arg-type]
    assert s.sync(2).ok  # an int timeout is fine


def test_memory_contract():
    contract(MemoryStorage())


def test_a_closed_storage_refuses_appends_and_syncs():
    s = MemoryStorage()
    s.append("det.0", b"a")
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.append("det.0", b"b")
    with pytest.raises(StorageError, match="closed"):
        s.sync(1.0)


def test_file_contract_and_reopen(tmp_path):
    s = FileStorage(tmp_path / "fs")
    contract(s)
    s.close()
    s2 = FileStorage(tmp_path / "fs")
    assert s2.read("det.0") == [(2, b"c"), (3, b"d")] and s2.acked("det.0") == 4
    assert s2.append("det.0", b"e") == 4 and s2.sync().ok
    assert FileStorage(tmp_path / "fs").read("det.0", 4) == [(4, b"e")]


def test_file_torn_tail_is_cut_on_reopen(tmp_path):
    s = FileStorage(tmp_path / "fs")
    for i in range(5):
        s.append("log", bytes([i]) * 100)
    assert s.sync().ok
    s.close()
    seg = sorted((tmp_path / "fs" / "log").glob("*.seg"))[-1]
    good = seg.stat().st_size
    with open(seg, "ab") as f:  # half of the next frame, as a crash mid-write leaves it
        f.write(encode_frame(5, b"z" * 100)[:57])
    s2 = FileStorage(tmp_path / "fs")
    assert s2.repaired == {"log": 57} and seg.stat().st_size == good
    assert [o for o, _ in s2.read("log")] == [0, 1, 2, 3, 4]
    # a flipped bit in the last frame: CRC mismatch, that frame is cut too
    s2.close()
    data = bytearray(seg.read_bytes())
    data[-10] ^= 1
    seg.write_bytes(bytes(data))
    s3 = FileStorage(tmp_path / "fs")
    assert [o for o, _ in s3.read("log")] == [0, 1, 2, 3] and s3.append("log", b"n") == 4


WRITER = r"""
import sys
from vnfkit.recovery.storage import FileStorage
s = FileStorage(sys.argv[1])
i = s.acked("log")
while True:
    for _ in range(8):
        s.append("log", i.to_bytes(8, "little") * 512)  # 4 KiB records
        i += 1
    assert s.sync().ok
    print(s.acked("log"), flush=True)
"""


def test_file_writer_sigkilled_mid_append_loses_nothing_acknowledged(tmp_path):
    root = tmp_path / "fs"
    for trial in range(3):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        acked = 0
        try:
            t_end = time.monotonic() + 0.3 + 0.1 * trial
            while time.monotonic() < t_end:
                line = p.stdout.readline()
                if not line:
                    break
                acked = int(line)
        finally:
            p.send_signal(signal.SIGKILL)  # most likely in the middle of a write or an fsync
            p.wait()
            p.stdout.close()
        assert acked > 0
        s = FileStorage(root)
        recs = s.read("log")
        assert s.acked("log") >= acked  # every acknowledged record survived
        assert [o for o, _ in recs] == list(range(len(recs)))
        assert all(r == o.to_bytes(8, "little") * 512 for o, r in recs)
        s.close()


@needs_redis
def test_redis_contract_and_replication(redis_pair):
    import redis

    from vnfkit.recovery.storage.redis import RedisStorage

    s = RedisStorage(unix_socket_path=redis_pair.primary_socket, socket_timeout_s=5.0)  # a busy CI box
    contract(s, 5.0)
    # the records are on the replica too (WAIT 1 acknowledged them)
    rep = redis.Redis(unix_socket_path=redis_pair.replica_socket)
    assert rep.hget("vnfkit:s:det.0", "3") == b"d"
    rep.close()
    # a second client (the backup) sees the same stable records
    other = RedisStorage(unix_socket_path=redis_pair.primary_socket)
    assert other.acked("det.0") == 4 and other.read("det.0") == [(2, b"c"), (3, b"d")]
    s.close()
    other.close()


def until_ok(s, seconds=10.0):
    """Sync until storage acknowledges (a busy CI box can make one sync miss its timeout)."""
    deadline = time.monotonic() + seconds
    while not (r := s.sync()).ok and time.monotonic() < deadline:
        time.sleep(0.05)
    return r


@needs_redis
def test_redis_faults_are_reported_not_hung_and_resume(redis_pair):
    from vnfkit.recovery.storage.redis import RedisStorage

    s = RedisStorage(unix_socket_path=redis_pair.primary_socket, socket_timeout_s=0.5)
    s.append("log", b"0")
    assert until_ok(s).ok
    # replica stalled: the primary takes the write, WAIT 1 times out, nothing is acknowledged
    redis_pair.stall("replica")
    s.append("log", b"1")
    t0 = time.monotonic()
    r = s.sync(timeout_s=0.2)
    assert r.status == "not-replicated" and time.monotonic() - t0 < 3 and s.acked("log") == 1
    redis_pair.resume("replica")
    redis_pair.wait_replicated()
    assert until_ok(s).ok and s.acked("log") == 2
    # primary stalled (SIGSTOP): a timeout within the socket timeout, not a hang
    redis_pair.stall("primary")
    s.append("log", b"2")
    t0 = time.monotonic()
    r = s.sync(timeout_s=0.2)
    assert r.status == "timeout" and time.monotonic() - t0 < 3 and s.acked("log") == 2 and s.pending() == 1
    redis_pair.resume("primary")
    assert until_ok(s).ok and s.acked("log") == 3
    # primary killed: unavailable until it is back (it reloads its append-only file)
    redis_pair.kill("primary")
    s.append("log", b"3")
    r = s.sync(timeout_s=0.2)
    assert r.status == "unavailable" and s.acked("log") == 3
    redis_pair.restart("primary")
    redis_pair.wait_replicated()
    assert until_ok(s).status == OK and s.acked("log") == 4
    assert [rec for _, rec in s.read("log")] == [b"0", b"1", b"2", b"3"]  # nothing lost, nothing doubled
    s.close()
