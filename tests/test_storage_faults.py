"""Storage faults under a running master: the Redis primary SIGSTOPped or SIGKILLed in the middle of
a process-master run (real redis-server processes, started and stopped by pid). The master holds
outputs while storage is away, says so in ``storage_events``, resumes when storage returns, loses
no input and no determinant (against a fault-free run), and a worker SIGKILLed during the outage
still recovers correctly by the oracle. The file backend: a writer SIGKILLed at random points, many
times, never loses an acknowledged record."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from vnfkit.recovery.backup import DET_STREAM
from vnfkit.recovery.input_log import INPUT_STREAM
from vnfkit.recovery.process_master import process_trial
from vnfkit.recovery.storage import FileStorage
from vnfkit.recovery.storage.redis import RedisStorage
from vnfkit.recovery.storage.redis_servers import RedisPair, redis_server_path
from vnfkit.recovery.workloads import workload

from _redis import redis_pair  # noqa: F401  (a fixture)

needs_redis = pytest.mark.skipif(redis_server_path() is None, reason="redis-server not installed")


class FaultyRedis(RedisStorage):
    """Redis storage whose primary suffers `fault` ("stall": SIGSTOP, "kill": SIGKILL) at the
    `start`-th sync and is healed (SIGCONT, or restarted from its append-only file) at the
    `start + length`-th sync, or before anyone reads storage, whichever comes first."""

    def __init__(self, pair: RedisPair, fault: str, start: int, length: int, prefix: str = "vnfkit") -> None:
        super().__init__(unix_socket_path=pair.primary_socket, socket_timeout_s=0.3, prefix=prefix)
        self.pair, self.fault, self.start, self.length = pair, fault, start, length
        self.syncs = 0
        self.faulted = False
        self.statuses: list[str] = []

    def _heal(self) -> None:
        if not self.faulted:
            return
        self.faulted = False
        if self.fault == "stall":
            self.pair.resume("primary")
        else:
            self.pair.restart("primary")
        self.pair.wait_replicated()

    def sync(self, timeout_s: float = 1.0):  # type: ignore[override]
        self.syncs += 1
        if self.syncs == self.start:
            self.faulted = True
            if self.fault == "stall":
                self.pair.stall("primary")
            else:
                self.pair.kill("primary")
        elif self.syncs == self.start + self.length:
            self._heal()
        r = super().sync(min(timeout_s, 0.3))
        self.statuses.append(r.status)
        return r

    def read(self, stream: str, start: int = 0):  # type: ignore[override]
        self._heal()  # a backup waits for storage to return before it reads
        return super().read(stream, start)


def _stable(st: RedisStorage) -> dict[str, list[tuple[int, bytes]]]:
    return {s: st.read(s) for s in (INPUT_STREAM, DET_STREAM)}


@needs_redis
@pytest.mark.parametrize("fault", ["stall", "kill"])
def test_primary_fault_mid_run_holds_outputs_and_loses_nothing(redis_pair, fault):
    pair = redis_pair
    # one worker: its determinants are then the same in every run, so they can be compared byte for byte
    w = workload("mazunat", packets=3000, flows=200, batch=128, seed=4)
    clean = FaultyRedis(pair, fault, start=10**9, length=1, prefix="clean")
    ref = process_trial(w, None, queues=1, storage=clean, checkpoint_every=10**6)
    want = _stable(clean)
    st = FaultyRedis(pair, fault, start=12, length=6, prefix="faulty")
    res = process_trial(w, None, queues=1, storage=st, checkpoint_every=10**6)
    failed = [s for s in st.statuses if s != "ok"]
    assert len(failed) >= 5, st.statuses  # storage was away for several group commits ...
    assert st.statuses[-1] == "ok"  # ... and came back
    assert sum(e.startswith(("timeout", "unavailable")) for e in res.storage_events) == len(failed)  # reported
    assert res.released_master == ref.released_master == 3000 and res.held_at_crash == 0  # all out once back
    got = _stable(st)
    assert st.acked(INPUT_STREAM) == clean.acked(INPUT_STREAM) == len(w.batches)
    assert st.acked(DET_STREAM) == clean.acked(DET_STREAM) == len(w.batches)
    assert got == want  # every input and every determinant record, identical to the fault-free run
    st.close()
    clean.close()


def _killed_during_outage(pair: RedisPair, fault: str):
    w = workload("mazunat", packets=6000, flows=400, batch=256, seed=5)  # 2 workers, one shared pool
    crash_at = 18
    # two syncs per batch (the input before it runs, the outputs after) + one per checkpoint:
    # the primary goes away three batches before the crash and returns only when the backup reads
    st = FaultyRedis(pair, fault, start=2 * (crash_at - 3) + 2, length=10**6)
    try:
        return process_trial(w, crash_at, "mid-batch", kill_worker=1, delay_s=0.0003, storage=st,
                             checkpoint_every=8)
    finally:
        st.close()


@needs_redis
@pytest.mark.parametrize("fault", ["stall", "kill"])
def test_worker_killed_while_storage_is_away_recovers_correctly(redis_pair, fault):
    pair = redis_pair
    res = _killed_during_outage(pair, fault)
    assert any(e.startswith(("timeout", "unavailable")) for e in res.storage_events), res.storage_events
    assert res.held_at_crash > 0  # outputs whose determinants storage never acknowledged were held
    assert res.verdict.correct, str(res.verdict)  # nothing unsafe had been released
    assert res.lost_batches > 0  # the inputs storage never acknowledged are counted, not hidden
    assert res.released_master + res.released_backup <= 6000 - 256 * res.lost_batches


@needs_redis
@pytest.mark.xfail(strict=True, reason="the process master hands the backup only the inputs storage "
                   "acknowledged; inputs admitted while storage was away (their outputs all held) are "
                   "not re-delivered to it")
def test_worker_killed_while_storage_is_away_loses_no_input(redis_pair):
    pair = redis_pair
    res = _killed_during_outage(pair, "stall")
    assert res.lost_batches == 0 and res.released_master + res.released_backup == 6000


WRITER = r"""
import sys
from vnfkit.recovery.storage import FileStorage
s = FileStorage(sys.argv[1])
i = s.acked("log")
n = 1 + i % 5
while True:
    for _ in range(n):
        s.append("log", i.to_bytes(8, "little") * (64 + 97 * (i % 41)))  # records of many sizes
        i += 1
    assert s.sync().ok
    print(s.acked("log"), flush=True)
"""


def test_file_writer_killed_at_random_points_many_times_loses_nothing_acknowledged(tmp_path):
    root = tmp_path / "fs"
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    total_acked = 0
    for trial in range(12):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True, env=env)
        acked = 0
        try:
            line = p.stdout.readline()  # running: at least one group commit acknowledged
            acked = int(line) if line else 0
            t_end = time.monotonic() + rng.uniform(0.0, 0.15)
            while time.monotonic() < t_end:
                line = p.stdout.readline()
                if not line:
                    break
                acked = int(line)
        finally:
            p.send_signal(signal.SIGKILL)  # at a random point of an append, a write or an fsync
            p.wait()
            p.stdout.close()
        assert acked > total_acked
        s = FileStorage(root)
        recs = s.read("log")
        assert s.acked("log") >= acked  # every acknowledged record survived the kill
        assert [o for o, _ in recs] == list(range(len(recs)))  # no hole, no duplicate
        assert all(r == o.to_bytes(8, "little") * (64 + 97 * (o % 41)) for o, r in recs)  # none corrupt
        total_acked = s.acked("log")
        s.close()
