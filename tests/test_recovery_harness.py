"""Rollback recovery end to end on the thread runner: a crash at chosen points, failover to the
backup, and the oracle's verdict -- replay and buffering recover correctly for the four batch
middleboxes, checkpoint-only and deliberately wrong recoveries are caught."""

from __future__ import annotations

import numpy as np
import pytest

import vnfkit as vk
from vnfkit import traffic

from vnfkit.recovery import Harness
from vnfkit.recovery.oracle import Released, judge
from vnfkit.recovery.storage import FileStorage, MemoryStorage
from vnfkit.recovery.workloads import NFS, workload
from vnfkit.runtime import iter_batches


def trial(nf, strategy, crash_at, phase, storage=None, seed=0, **kw):
    w = workload(nf, packets=4000, flows=300, batch=128, seed=seed)
    h = Harness(w.vnf, w.config, queues=2, strategy=strategy, storage=storage or MemoryStorage(),
                checkpoint_every=8, per_flow_decisions=w.per_flow_decisions, non_monotone=w.non_monotone, **kw)
    return h.run(w.batches, crash_at, phase)


@pytest.mark.parametrize("nf", NFS)
@pytest.mark.parametrize("phase", ["before-process", "after-process", "after-sync"])
def test_replay_recovers_correctly(nf, phase):
    for crash_at in (5, 13, 22):
        r = trial(nf, "replay", crash_at, phase)
        assert r.verdict.correct, (crash_at, str(r.verdict))
        assert r.released_master > 0 and r.released_backup > 0
        assert r.recovery.replayed_batches + r.recovery.reexecuted_batches > 0 or crash_at % 8 == 7
        assert r.verdict.checked["released"] == 4000 - 128 * r.lost_batches or r.lost_batches == 0
        assert r.detect_s > 0 and r.recovery.restore_s > 0


@pytest.mark.parametrize("nf", NFS)
def test_buffering_is_correct_and_holds_outputs(nf):
    r = trial(nf, "buffer", 13, "after-sync")
    assert r.verdict.correct, str(r.verdict)
    assert r.held_at_crash > 0 and r.lost_batches > 0  # held outputs of inputs after the checkpoint


@pytest.mark.parametrize("nf", NFS)
def test_checkpoint_only_is_caught_incorrect(nf):
    r = trial(nf, "checkpoint", 13, "after-sync")
    assert not r.verdict.correct
    assert "backwards" in r.verdict.kinds() or "mapping" in r.verdict.kinds()


def test_no_fault_tolerance_is_caught_incorrect():
    r = trial("adaptive_lb", "none", 13, "after-sync")
    assert not r.verdict.correct


def test_releasing_replayed_outputs_again_is_caught_as_duplicates():
    r = trial("monitor", "replay", 13, "after-sync", release_replayed=True)
    assert "duplicate" in r.verdict.kinds()


def test_replay_with_file_storage(tmp_path):
    r = trial("qos", "replay", 17, "after-process", storage=FileStorage(tmp_path / "fs"))
    assert r.verdict.correct, str(r.verdict)
    assert r.recovery.reexecuted_batches >= 1  # the crashed batch's determinants never reached storage


def test_run_without_crash_is_correct_and_reports_pauses():
    w = workload("simplenat", packets=2000, batch=128)
    r = Harness(w.vnf, w.config, strategy="replay", checkpoint_every=4).run(w.batches, None)
    assert r.verdict.correct and r.released_master == 2000 and len(r.checkpoint_pauses_s) == 1 + len(w.batches) // 4


def test_oracle_flags_each_kind_of_violation():
    rel = Released()
    rel.add([1, 2, 2], [b"f1", b"f1", b"f1"], [b"o1", b"o2", b"o2"], [True, True, True], 0)
    rel.add([3, 4], [b"f2", b"f3"], [b"o9", b"o9"], [True, False], 1)
    rel.add([5], [b"f3"], [b"o8"], [True], 1)
    v = judge(rel, {"c": {0: 5}}, {"c": {0: 4}}, [])
    assert v.kinds() == {"duplicate", "mapping", "decision", "backwards"}
    rel2 = Released()
    rel2.add([1, 2], [b"f1", b"f2"], [b"o1", b"o1"], [True, True], 0)
    assert judge(rel2, {}, {}, []).kinds() == {"port_clash"}
    assert judge(Released(), {"c": {0: 5}}, {"c": {0: 5}}, []).correct


def test_bad_arguments_name_the_field():
    w = workload("qos", packets=500)
    with pytest.raises(ValueError, match="strategy"):
        Harness(w.vnf, w.config, strategy="remus")
    with pytest.raises(ValueError, match="checkpoint_every"):
        Harness(w.vnf, w.config, checkpoint_every=0)
    h = Harness(w.vnf, w.config)
    with pytest.raises(ValueError, match="phase"):
        h.run(w.batches, 1, "during")
    with pytest.raises(ValueError, match="crash_at"):
        h.run(w.batches, 999)
    with pytest.raises(ValueError, match="nf"):
        workload("wanopt")


def test_random_trials_with_a_packet_time_checkpoint_interval():
    from vnfkit.recovery.trials import run_trials, summarize

    rs = run_trials("adaptive_lb", "replay", 3, seed=5, packets=3000, batch=128, checkpoint_interval_s=0.0005)
    s = summarize(rs)
    assert s["trials"] == 3 and s["correct"] == 3 and s["incorrect"] == 0
    assert s["released_packets"] >= 3 * 3000 - sum(r.lost_batches for r in rs) * 128
    w = workload("qos", packets=3000, batch=128)
    span_s = (int(w.batches[-1].ts_ns.max()) - int(w.batches[0].ts_ns.min())) / 1e9  # ~2 ms at 1.49 Mpps
    r = Harness(w.vnf, w.config, checkpoint_interval_s=span_s / 4, per_flow_decisions=False).run(w.batches, None)
    assert r.verdict.correct and 1 + 3 <= len(r.checkpoint_pauses_s) <= 1 + 4  # the initial one + every span/4
    assert 0 < s["recovery_ms"]["p50"] <= s["recovery_ms"]["max"]
    rs = run_trials("monitor", "checkpoint", 3, seed=5, packets=3000, batch=128, checkpoint_interval_s=0.0005)
    assert summarize(rs)["incorrect"] >= 1
    with pytest.raises(ValueError, match="trials"):
        run_trials("qos", "replay", 0)


@pytest.mark.skipif(__import__("shutil").which("redis-server") is None, reason="redis-server not installed")
def test_redis_primary_stalled_mid_run_holds_outputs_then_resumes():
    from vnfkit.recovery.storage.redis import RedisStorage
    from vnfkit.recovery.storage.redis_servers import RedisPair

    w = workload("simplenat", packets=2000, batch=128)
    with RedisPair() as pair:
        st = RedisStorage(unix_socket_path=pair.primary_socket, socket_timeout_s=0.3)
        held = {}
        h = Harness(w.vnf, w.config, strategy="replay", storage=st, checkpoint_every=4, sync_timeout_s=0.3)

        def fault(i):
            if i == 6:
                held["before"] = h.released_count
                pair.stall("primary")
            if i == 10:
                held["during"] = h.released_count
                pair.resume("primary")

        r = h.run(w.batches, None, before_batch=fault)
        assert r.storage_events and all("timeout" in e for e in r.storage_events)
        assert r.verdict.correct and r.released_master == 2000 and r.held_at_crash == 0
        st.close()
    assert 0 < held["before"] == held["during"]  # nothing was released while storage was stalled


def test_master_process_sigkilled_fails_over_correctly(tmp_path):
    from vnfkit.recovery.sigkill import sigkill_trial

    w = workload("qos", packets=6000, batch=128, seed=4)
    r = sigkill_trial(w, lambda: FileStorage(tmp_path / "fs"), kill_at_released=2500)
    assert r.verdict.correct, str(r.verdict)
    assert 2500 <= r.released_master < 6000 and r.released_backup > 0  # killed mid-run
    assert r.released_master + r.released_backup >= 6000 - 128 * 2  # at most the in-flight batches lost
    assert 0 < r.detect_s < 1.0  # the pidfd, not the 10 s heartbeat timeout
    print(f"SIGKILL trial: master released {r.released_master}, backup {r.released_backup}; detect "
          f"{r.detect_s * 1e3:.1f} ms, restore {r.recovery.restore_s * 1e3:.1f} ms, replay "
          f"{r.recovery.replay_s * 1e3:.1f} ms ({r.recovery.replayed_batches} batches)")


FLOW_PKTS = np.dtype([("pkts", "<u8")])


class UserFlowCounter(vk.VNF):
    """A user's VNF as the README teaches it: a flow table, and a shared counter used through ctx.state."""

    def setup(self, ctx):
        self.flows = ctx.flow_table("flows", capacity=1 << 14, value_dtype=FLOW_PKTS, idle_timeout_s=30)
        self.new_per_port = ctx.counters("new_flows_per_dport", slots=65536)

    def process(self, batch, ctx):
        slots, is_new = self.flows.lookup_or_insert(batch)
        np.add.at(self.flows.values["pkts"], slots, 1)
        new = np.flatnonzero(is_new)
        if len(new):
            self.new_per_port.add(ctx.state, batch.key["dport"][new].astype(np.uint64),
                                  np.ones(len(new), np.int64), batch.packet_id[new])
        batch.port[:] = 1


@pytest.mark.parametrize("crash_at", [5, 12, 20])
def test_a_user_vnf_using_ctx_state_is_replayed(crash_at):
    # The backup's replay context must take the place of ctx.state itself, or such a VNF's accesses
    # bypass replay (DivergenceError: log records the replay never asked for).
    batches = list(iter_batches(traffic.generate(flows=300, packets=4000, seed=6), 128))
    h = Harness(UserFlowCounter, queues=2, strategy="replay", storage=MemoryStorage(), checkpoint_every=8)
    r = h.run(batches, crash_at)
    assert r.verdict.correct, str(r.verdict)
    assert r.recovery.replayed_batches > 0
