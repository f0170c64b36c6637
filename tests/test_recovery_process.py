"""Recovery through the process runtime: a master of worker processes, one SIGKILLed between two
batches or in the middle of one; checkpoints taken by the workers at a boundary the parent asks
for, determinants read out of the shared segment; the oracle judges the failover."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vnfkit import traffic
from vnfkit.cli import main
from vnfkit.recovery.process_master import process_trial, random_process_trials, worker_snapshot
from vnfkit.recovery.storage import FileStorage
from vnfkit.recovery.trials import summarize
from vnfkit.recovery.workloads import workload
from vnfkit.runtime import iter_batches
from vnfkit.runtime.process import ProcessRunner

from _procs import alive


def _shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(f"vnfkit-{os.getpid()}-")}  # this process's



@pytest.mark.parametrize("phase,crash_at,worker", [("mid-batch", 13, 1), ("between-batches", 20, 0),
                                                   ("mid-batch", 3, 0)])
def test_sigkill_of_one_worker_process_recovers_correctly_with_replay(phase, crash_at, worker):
    before = _shm()
    w = workload("mazunat", packets=8000, flows=400, batch=256, seed=2)
    r = process_trial(w, crash_at, phase, kill_worker=worker, delay_s=0.0005, checkpoint_every=8)
    assert r.verdict.correct, str(r.verdict)
    assert r.released_master > 0 and r.released_backup > 0
    assert r.released_master + r.released_backup == 8000  # inputs are stable before processing: none lost
    assert any("killed by SIGKILL" in e and f"queue {worker}" in e for e in r.storage_events)
    assert 0 < r.detect_s < 1.0 and r.verdict.checked["detector_detect_us"] > 0
    # a mid-batch kill comes from a 0.5 ms timer: on a loaded machine it can land after the crash
    # batch was done, and the runtime then reports the death at a later batch
    f = r.failed_batch
    assert f == crash_at if phase == "between-batches" else f >= crash_at
    assert r.recovery.checkpoint_epoch == f // 8  # the last checkpoint before the failure
    assert r.recovery.replayed_batches + r.recovery.reexecuted_batches == f - 8 * (f // 8) + 1
    assert len(r.checkpoint_pauses_s) == 1 + f // 8
    assert _shm() <= before  # no shared-memory segment left behind


def test_checkpoint_only_is_caught_and_buffering_is_correct_on_the_process_master():
    rs = random_process_trials("mazunat", "checkpoint", 3, seed=3, packets=6000)
    assert summarize(rs)["incorrect"] >= 2
    assert all("mapping" in r.verdict.kinds() or "backwards" in r.verdict.kinds() for r in rs if not r.verdict.correct)
    rs = random_process_trials("mazunat", "buffer", 2, seed=4, packets=6000)
    assert summarize(rs)["correct"] == 2, [str(r.verdict) for r in rs]


def test_file_storage_and_a_packet_time_checkpoint_interval(tmp_path):
    n = [0]

    def fresh():
        n[0] += 1
        return FileStorage(tmp_path / f"fs{n[0]}")

    rs = random_process_trials("qos", "replay", 2, seed=5, packets=6000, checkpoint_interval_s=0.001, storage=fresh)
    assert summarize(rs)["correct"] == 2, [str(r.verdict) for r in rs]
    assert all(len(r.checkpoint_pauses_s) >= 2 for r in rs if r.crash_time_ms > 1.0)


def test_workers_keep_their_logs_for_the_parent_and_snapshot_on_request():
    batches = list(iter_batches(traffic.generate(flows=200, packets=3000, seed=1), 256))
    from vnfkit.nfs.mazunat import MazuNAT

    with ProcessRunner(MazuNAT, queues=2, logged=True, keep_log=True) as runner:
        snaps = runner.call_workers(worker_snapshot)  # right after the start: answered, not lost
        assert [s[2] for s in snaps] == [0, 0]
        runner.run(batches)
        sh = runner.shared_state
        ranges = [sh.log_range(q) for q in range(2)]
        assert all(end > first == 0 for first, end in ranges)  # records left in the segment
        assert len(sh.log_chunk(0, 0)) > 0
        snaps = runner.call_workers(worker_snapshot)
        assert [s[2] for s in snaps] == [end for _, end in ranges]
        assert all(s[0] and isinstance(s[1], dict) for s in snaps)
        assert [sh.log_range(q) for q in range(2)] == [(end, end) for _, end in ranges]  # drained by the call
        pids = runner.pids
    assert not any(alive(p) for p in pids)


def test_recovery_test_cli_on_the_process_runtime(capsys):
    rc = main(["recovery-test", "--nf", "mazunat", "--strategy", "replay", "--trials", "3", "--seed", "11",
               "--runtime", "process", "--packets", "6000"])
    out = capsys.readouterr().out
    assert rc == 0 and "3 correct, 0 incorrect" in out, out
    assert "worker processes, one SIGKILLed" in out
    assert np.all([", worker " in ln for ln in out.splitlines() if ln.startswith("trial ")])
