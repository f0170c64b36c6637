"""A backup that gets ahead of the failure (warm: each checkpoint restored as it commits; hot: each
stable group commit replayed as well), and copy-on-write checkpoints of worker processes (a fork of
each worker writes its image while the master goes on)."""

from __future__ import annotations

import os

import pytest

from vnfkit.cli import main
from vnfkit.recovery import Backup, Harness
from vnfkit.recovery.oracle import visible_state
from vnfkit.recovery.process_master import process_trial
from vnfkit.recovery.workloads import workload


def _images(b: Backup) -> list[dict[str, bytes]]:
    return [{name: t.snapshot() for name, t in ctx.tables.items()} for ctx in b.contexts]


@pytest.mark.parametrize("nf", ["mazunat", "qos"])
def test_a_hot_backup_that_follows_the_log_ends_in_the_state_a_cold_recovery_rebuilds(nf):
    w = workload(nf, packets=6000, flows=300, batch=256, seed=7)
    h = Harness(w.vnf, w.config, queues=2, strategy="replay", checkpoint_every=5)
    hot = Backup(w.vnf, w.config, 2)
    h.run(w.batches, None, before_batch=lambda i: hot.stage(h.storage, follow=True))
    assert hot.followed_batches > 0 and not hot.live
    cold = Backup(w.vnf, w.config, 2)
    rc = cold.recover(h.storage, "replay")
    rh = hot.recover(h.storage, "replay")
    assert rc.replayed_batches > 0
    assert rh.replayed_batches < rc.replayed_batches  # only what was left after the last stage
    assert rh.next_seq == rc.next_seq == len(w.batches)
    assert hot.restored_epochs >= 1  # (staged before each batch, it can lag a checkpoint by one batch)
    assert visible_state(hot.vnfs) == visible_state(cold.vnfs)
    assert _images(hot) == _images(cold)
    assert hot.shared.snapshot() == cold.shared.snapshot()
    with pytest.raises(RuntimeError, match="after recover"):
        hot.stage(h.storage)


def test_a_warm_backup_restores_each_checkpoint_once_and_replays_at_the_failover():
    w = workload("mazunat", packets=6000, flows=300, batch=256, seed=8)
    h = Harness(w.vnf, w.config, queues=2, strategy="replay", checkpoint_every=5)
    warm = Backup(w.vnf, w.config, 2)
    h.run(w.batches, None, before_batch=lambda i: warm.stage(h.storage))
    assert warm.followed_batches == 0 and warm.restored_epochs == len(w.batches) // 5 + 1 - (len(w.batches) % 5 == 0)
    cold = Backup(w.vnf, w.config, 2)
    rc, rw = cold.recover(h.storage, "replay"), warm.recover(h.storage, "replay")
    assert rw.replayed_batches == rc.replayed_batches > 0
    assert visible_state(warm.vnfs) == visible_state(cold.vnfs) and _images(warm) == _images(cold)


@pytest.mark.parametrize("phase,crash_at,worker", [("mid-batch", 17, 1), ("between-batches", 9, 0)])
def test_hot_backup_on_the_process_master_replays_only_the_tail_and_is_correct(phase, crash_at, worker):
    w = workload("mazunat", packets=8000, flows=400, batch=256, seed=2)
    r = process_trial(w, crash_at, phase, kill_worker=worker, delay_s=0.0005, checkpoint_every=8, backup_mode="hot")
    assert r.verdict.correct, str(r.verdict)
    assert r.released_master + r.released_backup == 8000
    assert r.backup_stage_s and all(s >= 0 for s in r.backup_stage_s)
    # the batches since the checkpoint were replayed ahead; at most the batch in flight and one
    # whose determinants became stable just before the crash are left
    assert r.recovery.replayed_batches + r.recovery.reexecuted_batches <= 2
    # staged after each group commit and before each checkpoint: only the first cut was ever restored
    assert r.verdict.checked["backup_restores"] == 1 and r.verdict.checked["backup_followed_batches"] >= crash_at - 1
    cold = process_trial(workload("mazunat", packets=8000, flows=400, batch=256, seed=2), crash_at, phase,
                         kill_worker=worker, delay_s=0.0005, checkpoint_every=8)
    assert cold.verdict.correct
    f = cold.failed_batch  # a mid-batch kill's timer can land in a later batch on a loaded machine
    assert f == crash_at if phase == "between-batches" else f >= crash_at
    assert cold.recovery.replayed_batches + cold.recovery.reexecuted_batches == f % 8 + 1


def test_fork_checkpoints_of_worker_processes_are_correct_and_leave_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the images' directory
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    w = workload("mazunat", packets=8000, flows=400, batch=256, seed=4)
    r = process_trial(w, 21, "mid-batch", kill_worker=1, delay_s=0.0003, checkpoint_every=8, checkpoint_mode="fork")
    assert r.verdict.correct, str(r.verdict)
    # the first cut, then one after batches 7, 15, ... that ended before the kill was noticed (on a
    # loaded box the SIGKILL can land a few batches after the one aimed at)
    assert len(r.checkpoint_fork_s) == len(r.checkpoint_pauses_s) == 1 + r.failed_batch // 8 >= 3
    assert r.recovery.checkpoint_epoch >= 1  # a forked image was committed and restored
    w = workload("mazunat", packets=8000, flows=400, batch=256, seed=4)
    r = process_trial(w, None, checkpoint_every=8, checkpoint_mode="fork")
    assert len(r.checkpoint_pauses_s) == 1 + len(w.batches) // 8
    assert os.listdir(tmp_path) == []  # every image collected, every directory removed


def test_fork_checkpoints_restore_the_same_state_as_shipped_ones():
    w = workload("qos", packets=6000, flows=300, batch=256, seed=5)
    a = process_trial(w, 18, "between-batches", checkpoint_every=8, checkpoint_mode="fork", backup_mode="warm")
    w = workload("qos", packets=6000, flows=300, batch=256, seed=5)
    b = process_trial(w, 18, "between-batches", checkpoint_every=8, checkpoint_mode="sync", backup_mode="warm")
    assert a.verdict.correct and b.verdict.correct
    assert b.recovery.checkpoint_epoch == 2
    # a fork checkpoint commits once the forked children have written their images: on a loaded
    # box the crash (two batches after the second checkpoint) can come first, and the backup then
    # restores the first one and replays more; either way the verdict must be correct
    assert a.recovery.checkpoint_epoch in (1, 2)


def test_bad_modes_are_named():
    w = workload("qos", packets=2000, flows=100, batch=256, seed=1)
    with pytest.raises(ValueError, match="backup_mode"):
        process_trial(w, 2, backup_mode="lukewarm")
    with pytest.raises(ValueError, match="checkpoint_mode"):
        process_trial(w, 2, checkpoint_mode="bgsave")


def test_recovery_test_cli_with_a_hot_backup(capsys):
    rc = main(["recovery-test", "--nf", "mazunat", "--strategy", "replay", "--trials", "2", "--seed", "3",
               "--runtime", "process", "--backup", "hot", "--packets", "6000"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 correct, 0 incorrect" in out and "hot backup" in out, out
    rc = main(["recovery-test", "--nf", "mazunat", "--strategy", "replay", "--trials", "2", "--backup", "hot"])
    err = capsys.readouterr().err
    assert rc != 0 and "--backup" in err and "--runtime process" in err and len(err.strip().splitlines()) == 1
