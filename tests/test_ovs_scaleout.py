"""A live scale-out through Open vSwitch: real packets from a client namespace, a real OVS bridge as
the hardware switch, instances A and A' reading their servers' ports (vnfkit.scaleout.ovs_live)."""

import pytest

from vnfkit.testbed.ovs import unavailable_reason

from _procs import alive

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def topo():
    from vnfkit.scaleout.ovs_testbed import OvsTopology

    with OvsTopology(2) as t:
        pids = t.ovs.pids
        yield t
    assert t.leftovers() == []  # every namespace (and so every veth) is gone
    assert not any(alive(p) for p in pids.values())  # both OVS daemons stopped


def _print(capsys, name, r):
    """The counts go to the terminal even under -q (CI shows them)."""
    with capsys.disabled():
        _say(name, r)


def _say(name, r):
    print(f"\n{name}: {r['processed']}/{r['packets']} packets through OVS, split at "
          f"{r['split_fraction']:.3f} of the space after {r['split_at_s']:.2f} s, {r['old_flows']} old flows, "
          f"converged {r['convergence_s'] or float('nan'):.3f} s; affinity violations {r['affinity_violations']}, OVS/model "
          f"mismatches {r['ovs_model_mismatches']}; new-flow packets at A' {r['new_flow_packets_at_a2']} "
          f"(elsewhere {r['new_flow_packets_elsewhere']}), old-flow packets at A {r['old_flow_packets_at_a']}; "
          f"detoured {r['detoured_packets']}; OVS ports rx {r['ovs_rx_packets']} tx {r['ovs_tx_packets']}; OVS flows peak {r['peak_hw_rules']} (read from OVS; capacity "
          f"{r['hw_capacity']}), {r['ovs_updates']} bundles, mean {r['ovs_update_ms_mean']:.1f} ms; lost "
          f"{r['lost_packets']}; {r['wall_pps']:.0f} packets/s wall")


def test_split_through_ovs_new_flows_to_a2_old_flows_stay(topo, capsys):
    from vnfkit.scaleout.ovs_live import run_live_ovs

    r = run_live_ovs(0, strategy="avoid", topology=topo, quiet=True)
    _print(capsys, "migration avoidance through OVS", r)
    assert r["transfers"] >= 1 and r["split_at_s"] is not None
    assert r["affinity_violations"] == 0 and r["state_misses"] == 0 and r["unrouted_packets"] == 0
    assert r["ovs_model_mismatches"] == 0  # OVS steered every packet as the switch model says
    assert r["new_flow_packets_at_a2"] > 1000 and r["new_flow_packets_elsewhere"] == 0
    assert r["old_flows"] > 0 and r["old_flow_packets_at_a"] > 0
    assert r["detoured_packets"] > 0  # new flows detoured via A's server before the push
    assert r["convergence_s"] is not None  # the hardware push reached OVS
    assert 0 < r["peak_hw_rules"] <= 2048 and r["peak_hw_rules"] == r["peak_hw_rules_model"]
    assert r["duplicate_packets"] == 0
    assert r["lost_packets"] <= r["packets"] // 200  # paced: nothing (or next to nothing) lost
    assert r["processed"] + r["lost_packets"] == r["packets"]
    # OVS's own port counters: it received every client packet and every detour, and sent them on
    # (exact when nothing was lost; a lost packet may have been lost before or after OVS)
    sent = r["packets"] + r["detoured_packets"]
    assert sent - r["lost_packets"] <= r["ovs_tx_packets"] <= r["ovs_rx_packets"] <= sent
    assert sent - r["lost_packets"] <= r["hw_packets_model"] <= sent
    if r["lost_packets"] == 0:
        assert r["ovs_rx_packets"] == r["ovs_tx_packets"] == r["hw_packets_model"] == sent


def test_small_table_never_migrate_stays_within_capacity(topo, capsys):
    """never-migrate wants one OVS exception per old flow: with a 100-entry table the controller
    makes the split uneven instead, and OVS never holds more than 100 flows."""
    from vnfkit.scaleout.ovs_live import run_live_ovs

    r = run_live_ovs(1, strategy="never", topology=topo, quiet=True, hw_capacity=100, packets=30_000)
    _print(capsys, "never-migrate through OVS, 100-entry table", r)
    assert r["transfers"] >= 1
    assert r["affinity_violations"] == 0 and r["state_misses"] == 0 and r["ovs_model_mismatches"] == 0
    assert r["hw_rules_needed"] > 100  # the balanced split would not have fitted ...
    assert 0 < r["peak_hw_rules"] <= 100  # ... and the table was never overfilled (read from OVS)
    assert r["split_fraction"] > 0.5  # the split point moved up: uneven



def test_the_checks_can_fail_software_switch_without_exceptions(topo, monkeypatch):
    """Without Fold's exceptions A's old flows are sent to A' while A holds their state: the
    per-packet check must see it."""
    from vnfkit.scaleout import SoftwareSwitch
    from vnfkit.scaleout.ovs_live import run_live_ovs

    monkeypatch.setattr(SoftwareSwitch, "add_exceptions", lambda self, keys, target: None)
    r = run_live_ovs(0, strategy="avoid", topology=topo, quiet=True, packets=20_000)
    assert r["transfers"] >= 1 and r["affinity_violations"] > 0


def test_cli_experiment_scale_live_through_ovs(tmp_path, capsys):
    import json

    from vnfkit.cli import main

    js = tmp_path / "ovs.json"
    assert main(["experiment", "scale", "--mode", "live", "--switch", "ovs", "--duration", "1", "--quiet",
                 "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert data["switch"] == "ovs" and set(data["strategies"]) == {"migration-avoidance", "never-migrate",
                                                                  "always-migrate"}
    keys = {"imbalance", "convergence_s", "peak_hw_rules", "peak_sw_rules", "affinity_violations",
            "state_bytes_moved"}
    for name, row in data["strategies"].items():
        assert keys <= set(row), name
        assert row["affinity_violations"] == 0 and 0 < row["peak_hw_rules"] <= 2048, name
    assert data["strategies"]["always-migrate"]["state_bytes_moved"] > 0
    assert "| packets that reached the wrong instance | 0 | 0 | 0 |" in capsys.readouterr().out
