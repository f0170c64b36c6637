"""The controller on hand-made flows: split, exceptions, threshold push, alternative final step,
baselines, scale-in, repeated splits, and invalid requests that must change nothing."""

import numpy as np
import pytest

from vnfkit.scaleout import (Controller, ControllerConfig, HardwareSwitch, HardwareTableFullError,
                             NoFreeCoreError, Placement, RangeNotOwnedError, ScaleoutError, SimInstance,
                             SoftwareSwitch)
from vnfkit.tables import NO_TARGET, make_keys

FULL = 0xFFFFFFFF
M = 0x80000000


def make(strategy="avoid", threshold=3, servers=3, capacity=2048, delay=0.0, **kw):
    hw = HardwareSwitch(capacity=capacity, update_delay_s=delay)
    sws = {s: SoftwareSwitch(s) for s in range(servers)}
    cfg = ControllerConfig(strategy=strategy, threshold=threshold, autoscale=False, **kw)
    ctrl = Controller(hw, sws, Placement(servers, 1), lambda i, s, c: SimInstance(i, s, c), cfg)
    ctrl.bootstrap(0.0)
    return ctrl


def flows(n, lo=0, hi=FULL, seed=0):
    rng = np.random.default_rng(seed)
    k = make_keys(0x0A000000 + np.arange(n), 0xC0A80001, 2000 + np.arange(n), 443)
    return k, rng.integers(lo, hi, n, endpoint=True, dtype=np.uint64).astype(np.uint32)


def deliver(ctrl, keys, ids):
    """Steer like the simulation (hw, then the server's sw, detours by destination); returns the
    instance of every packet and creates state there."""
    srv = ctrl.hw.forward(keys, ids)
    out = np.full(len(keys), NO_TARGET, dtype=np.uint32)
    for s, sw in ctrl.switches.items():
        m = srv == s
        if m.any():
            out[m] = sw.forward(keys[m], ids[m])
    for iid, inst in ctrl.instances.items():
        m = out == iid
        if m.any():
            inst.receive(keys[m], ids[m], np.zeros(m.sum(), np.uint32), 0)
    return out


def end(ctrl, keys):
    for inst in ctrl.instances.values():
        inst.flow_table.remove(keys)


def test_migration_avoidance_split_threshold_push_and_finish():
    ctrl = make(threshold=3)
    k, ids = flows(40)
    assert set(deliver(ctrl, k, ids).tolist()) == {0}
    t = ctrl.split(0, 1.0, m=M)
    old_hi = ids >= M
    assert t.fold == int(old_hi.sum()) and t.dst == 1
    assert ctrl.hw.rules == 1  # hardware unchanged: no per-flow rules
    # old flows stay at 0, new flows in [M, Y] go to 1 through 0's server (detour)
    k2, ids2 = flows(20, seed=1)
    k2["sport"] += 10000
    assert deliver(ctrl, k, ids).tolist() == [0] * 40
    to = deliver(ctrl, k2, ids2)
    assert (to[ids2 >= M] == 1).all() and (to[ids2 < M] == 0).all()
    assert ctrl.hw.forward(k2, ids2).tolist() == [0] * 20
    # old flows end, exceptions go away; below T the hardware switch takes over
    gone = np.flatnonzero(old_hi)[:-2]
    end(ctrl, k[gone])
    ctrl.tick(2.0)
    assert len(t.exceptions) == 2 and t.phase == "converged" and t.convergence_s == pytest.approx(1.0)
    assert ctrl.hw.ranges.ranges() == [(0, M - 1, 0), (M, FULL, 1)]
    assert len(ctrl.hw.exceptions) == 2  # the 2 old flows left
    alive = np.ones(40, bool)
    alive[gone] = False
    assert (deliver(ctrl, k[alive], ids[alive]) == 0).all()
    end(ctrl, k)
    ctrl.tick(3.0)
    assert t.phase == "done" and ctrl.hw.rules == 2 and len(ctrl.switches[0].exceptions) == 0


def test_alternative_final_step_returns_old_flows():
    ctrl = make(final_step="alternative", threshold=0)
    k, ids = flows(30)
    deliver(ctrl, k, ids)
    t = ctrl.split(0, 0.0, m=M)
    ctrl.on_batch(0.0)
    assert t.phase == "converged" and ctrl.hw.ranges.ranges() == [(0, M - 1, 0), (M, FULL, 1)]
    assert ctrl.hw.rules == 2  # no exceptions in hardware
    assert len(ctrl.switches[1].exceptions) == t.fold  # A' returns old flows to A
    assert deliver(ctrl, k, ids).tolist() == [0] * 30
    end(ctrl, k)
    ctrl.tick(1.0)
    assert t.phase == "done" and len(ctrl.switches[1].exceptions) == 0


def test_never_migrate_uneven_when_rules_do_not_fit():
    ctrl = make(strategy="never", capacity=10)
    k, ids = flows(100)
    deliver(ctrl, k, ids)
    t = ctrl.split(0, 0.0, m=M)
    assert t.rules_needed == 2 + int((ids >= M).sum()) > 10
    assert t.lo > M and t.fold == 8  # moved up until 8 exceptions + 2 ranges fit
    ctrl.on_batch(0.0)
    assert ctrl.hw.rules == 10 and ctrl.hw.peak_rules <= 10
    assert deliver(ctrl, k, ids).tolist() == [0] * 100


def test_always_migrate_moves_state():
    ctrl = make(strategy="always")
    k, ids = flows(50)
    deliver(ctrl, k, ids)
    hi = ids >= M
    t = ctrl.split(0, 0.0, m=M)
    assert t.flows_moved == int(hi.sum()) and t.state_bytes_moved > t.flows_moved * 64 and t.pause_s > 0
    assert len(ctrl.instances[1].flow_table) == int(hi.sum())
    assert len(ctrl.instances[0].flow_table) == int((~hi).sum())
    ctrl.on_batch(0.0)
    to = deliver(ctrl, k, ids)
    assert (to[hi] == 1).all() and (to[~hi] == 0).all()
    assert len(ctrl.instances[1].flow_table) == int(hi.sum())  # found, not re-created


def test_scale_in_and_repeated_split():
    ctrl = make(threshold=0, servers=3)
    k, ids = flows(60)
    deliver(ctrl, k, ids)
    ctrl.split(0, 0.0, m=M)
    end(ctrl, k)
    ctrl.tick(0.1)
    t2 = ctrl.split(0, 0.2, m=M // 2)  # A -> A, A', A''
    assert t2.dst == 2 and sorted(ctrl.instances) == [0, 1, 2]
    assert ctrl.owners == [(0, M // 2 - 1, 0), (M // 2, M - 1, 2), (M, FULL, 1)]
    ctrl.tick(0.3)
    ctrl.tick(0.35)
    assert t2.phase == "done"
    deliver(ctrl, k, ids)
    t3 = ctrl.scale_in(2, 0.4)
    assert t3.fold == int(((ids >= M // 2) & (ids < M)).sum())
    assert (deliver(ctrl, k, ids)[(ids >= M // 2) & (ids < M)] == 2).all()  # old flows stay
    end(ctrl, k)
    ctrl.tick(0.5)
    ctrl.tick(0.6)
    assert 2 not in ctrl.instances and ctrl.owners == [(0, M - 1, 0), (M, FULL, 1)]
    assert ctrl.placement.can_place()


def test_invalid_requests_change_nothing():
    ctrl = make(servers=2)
    k, ids = flows(30)
    deliver(ctrl, k, ids)
    before = ctrl.state()
    with pytest.raises(RangeNotOwnedError):
        ctrl.split(7, 0.0)
    with pytest.raises(RangeNotOwnedError):
        ctrl.split(0, 0.0, m=0)  # M must be > X
    with pytest.raises((TypeError, ValueError)):
        ctrl.split(0, 0.0, m=-5)
    with pytest.raises(ScaleoutError):
        ctrl.scale_in(0, 0.0)  # no neighbour
    assert ctrl.state() == before
    ctrl.split(0, 0.0, m=M)
    before = ctrl.state()
    with pytest.raises(NoFreeCoreError):
        ctrl.split(0, 0.0, m=M // 2)  # both servers' cores are taken
    with pytest.raises(ScaleoutError):
        ctrl.split(1, 0.0, m=M + 5)  # overlaps the transfer in progress
    with pytest.raises(RangeNotOwnedError):
        ctrl.split(1, 0.0, m=5)  # instance 1 does not own flow ID 5
    assert ctrl.state() == before


def test_full_hardware_table_changes_nothing():
    ctrl = make(strategy="never", capacity=2, servers=2, threshold=0)
    k, ids = flows(30)
    deliver(ctrl, k, ids)
    before = ctrl.state()
    with pytest.raises(HardwareTableFullError):
        ctrl.split(0, 0.0, m=M)  # 2 ranges leave no room for any exception
    assert ctrl.state() == before
    assert ctrl.placement.can_place()


@pytest.mark.parametrize("bad", [
    {"threshold": -1}, {"strategy": "teleport"}, {"final_step": "x"}, {"split_at": "random"},
    {"load_weight": 2.0}, {"max_detour_s": -1.0}, {"cooldown_s": -1.0}, {"migrate_bandwidth_bps": 0},
])
def test_hostile_config(bad):
    with pytest.raises(ValueError):
        make(**bad)


def test_threshold_above_capacity_and_missing_switch():
    with pytest.raises(ValueError, match="threshold"):
        make(threshold=5000)
    with pytest.raises(TypeError):
        make(threshold="10")
    hw = HardwareSwitch()
    with pytest.raises(ValueError, match="software switch"):
        Controller(hw, {0: SoftwareSwitch(0)}, Placement(2, 1), lambda i, s, c: SimInstance(i, s, c))


def test_split_point_follows_measured_load():
    ctrl = make(load_weight=1.0)
    k, _ = flows(1000)
    ids = np.concatenate([np.full(900, 0x10000000), np.full(100, 0xF0000000)]).astype(np.uint32)
    ids += np.arange(1000, dtype=np.uint32)
    deliver(ctrl, k, ids)
    ctrl.note_bins(0.1)
    m = ctrl.choose_split(0, 0, FULL)
    assert m < 0x20000000  # 90 % of the load is in one low bin
    ctrl2 = make(split_at="midpoint")
    assert ctrl2.choose_split(0, 0, FULL) == M
