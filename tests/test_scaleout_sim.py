"""The virtual-time simulation: real tables, real controller, per-packet affinity check."""

import numpy as np
import pytest

from vnfkit.scaleout import ControllerConfig, SoftwareSwitch
from vnfkit.scaleout.sim import SimConfig, Simulation
from vnfkit.scaleout.workload import Workload, draw_flows, residual_survival

SMALL = Workload(duration_s=4.0, new_flows_per_s=400.0, packet_rate_pps=150_000.0)
CFG = SimConfig(instance_capacity_pps=100_000.0, queue_limit=512)


def run(strategy="avoid", workload=SMALL, config=CFG, seed=3, **kw):
    return Simulation(workload, config, ControllerConfig(strategy=strategy, **kw), seed=seed).run()


def test_workload_matches_the_study_numbers():
    w = Workload()
    assert w.mean_lifetime_s == pytest.approx(5.0, rel=0.01)
    assert w.concurrent_flows == pytest.approx(10_000, rel=0.01)
    assert w.packet_rate_pps == pytest.approx(1.488e6, rel=0.001)
    f = draw_flows(Workload(duration_s=2.0), seed=1)
    at0 = ((f.start_s <= 0) & (f.end_s > 0)).sum()
    assert 9500 < at0 < 10500  # stationary from the start
    assert len(np.unique(f.keys)) == len(f.keys)
    assert 0.2 < residual_survival(w, 5.0) < 0.35


def test_split_converges_without_violations():
    r = run(threshold=500)
    assert r.affinity_violations == 0 and r.state_misses == 0 and r.unrouted == 0
    assert len(r.transfers) == 1
    t = r.transfers[0]
    assert t.fold > 200 and t.convergence_s is not None and t.convergence_s < 3.5
    assert r.detoured > 0 and r.peak_hw_rules <= 2048
    assert r.hw_gbps.max() > 0 and r.packets > 0.9 * 150_000 * 4


def test_switch_bytes_count_every_pass():
    sim = Simulation(SMALL, CFG, ControllerConfig(threshold=500), seed=3)
    r = sim.run()
    assert r.detoured > 0
    assert sim.hw.counters.packets == r.packets + r.detoured  # a detour crosses the hw switch twice
    assert sim.hw.counters.bytes == (r.packets + r.detoured) * 84
    assert sum(sw.counters.bytes for sw in sim.switches.values()) == (r.packets + r.detoured) * 84
    assert r.hw_gbps.max() < 2 * 150_000 * 84 * 8 / 1e9 * 1.5


def test_packet_rows_give_the_same_outcome():
    a = run(threshold=500, workload=Workload(duration_s=2.0, new_flows_per_s=300.0, packet_rate_pps=120_000.0))
    b = run(threshold=500, workload=Workload(duration_s=2.0, new_flows_per_s=300.0, packet_rate_pps=120_000.0),
            config=SimConfig(instance_capacity_pps=100_000.0, queue_limit=512, packet_rows=True))
    assert a.packets == b.packets and a.detoured == b.detoured
    np.testing.assert_array_equal(a.load_pps, b.load_pps)
    assert a.affinity_violations == b.affinity_violations == 0


def test_checker_catches_missing_exceptions(monkeypatch):
    monkeypatch.setattr(SoftwareSwitch, "add_exceptions", lambda self, keys, target: None)
    r = run(threshold=500)
    assert r.affinity_violations > 1000  # old flows of the moved range reach A' without state


def test_never_migrate_overflows_or_goes_uneven():
    r = run("never", config=SimConfig(instance_capacity_pps=100_000.0, queue_limit=512, hw_capacity=64),
            threshold=10)
    t = r.transfers[0]
    assert t.rules_needed > 64 and r.peak_hw_rules <= 64
    assert t.lo > t.requested_lo  # the split moved up: uneven
    assert r.affinity_violations == 0


def test_always_migrate_moves_state_without_violations():
    r = run("always")
    t = r.transfers[0]
    assert t.flows_moved > 200 and t.state_bytes_moved > 64 * t.flows_moved and t.pause_s > 0
    assert r.affinity_violations == 0 and r.state_misses == 0 and r.paused_packets > 0


def test_second_split_and_scale_in_without_violations():
    # short lifetimes without a tail, so the merged instance's old flows end and it is retired
    w = Workload(duration_s=9.0, new_flows_per_s=1000.0, packet_rate_pps=150_000.0, body_median_s=0.8,
                 tail_weight=0.0, rate_profile=((3.0, 2.0), (6.0, 0.3)))
    r = run(workload=w, config=SimConfig(instance_capacity_pps=100_000.0, queue_limit=512, servers=4),
            threshold=500, cooldown_s=0.3)
    kinds = [t.kind for t in r.transfers]
    assert kinds.count("split") >= 2 and kinds.count("merge") >= 1, r.events
    assert r.affinity_violations == 0 and r.state_misses == 0 and r.unrouted == 0
    assert any("retired" in e for _, e in r.events)


@pytest.mark.parametrize("bad", [{"slot_s": 0}, {"slot_s": float("nan")}, {"control_interval_s": 0.001},
                                 {"servers": 20, "cores_per_server": 1}, {"hw_update_delay_s": -1},
                                 {"link_s": -1.0}, {"instance_capacity_pps": "1e6"}])
def test_hostile_sim_config(bad):
    with pytest.raises(ValueError):
        SimConfig(**bad).validated()


@pytest.mark.parametrize("bad", [{"new_flows_per_s": 0}, {"tail_alpha": 1.0}, {"tail_weight": 1.0},
                                 {"duration_s": float("inf")}, {"rate_sigma": -1},
                                 {"rate_profile": ((2.0, 1.0), (1.0, 1.0))}, {"rate_profile": ((1.0, -1.0),)}])
def test_hostile_workload(bad):
    with pytest.raises(ValueError):
        Workload(**bad).validated()
