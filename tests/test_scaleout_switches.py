"""Switch models: steering, capacity, update delay, counters, hostile input."""

import numpy as np
import pytest

from vnfkit.scaleout import HardwareSwitch, HardwareTableFullError, SoftwareSwitch, WIRE_BYTES_64B
from vnfkit.scaleout.ranges import carve, covers
from vnfkit.tables import FlowTable, make_keys

FULL = 0xFFFFFFFF


def keys_ids(n, seed=0):
    rng = np.random.default_rng(seed)
    k = make_keys(0x0A000000 + np.arange(n), 0xC0A80001, 1000 + np.arange(n) % 60000, 80)
    return k, rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)


def test_hardware_ranges_exceptions_and_counters():
    hw = HardwareSwitch([(0, 999, 0), (1000, FULL, 1)], capacity=8)
    k, _ = keys_ids(4)
    ids = np.array([5, 1500, 999, 1000], dtype=np.uint32)
    assert hw.forward(k, ids).tolist() == [0, 1, 0, 1]
    hw.schedule(0.0, add_keys=k[1:2], add_targets=0, tag="exc")
    hw.apply_due(0.0)
    assert hw.forward(k, ids).tolist() == [0, 0, 0, 1]
    assert hw.counters.packets == 8 and hw.counters.bytes == 8 * WIRE_BYTES_64B
    assert hw.rules == 3 and hw.peak_rules == 3


def test_hardware_update_delay():
    hw = HardwareSwitch([(0, FULL, 0)], update_delay_s=0.25)
    k, ids = keys_ids(10)
    at = hw.schedule(1.0, ranges=[(0, FULL, 7)], tag="move")
    assert at == pytest.approx(1.25)
    assert hw.apply_due(1.2) == [] and set(hw.forward(k, ids).tolist()) == {0}
    assert hw.apply_due(1.25) == ["move"] and set(hw.forward(k, ids).tolist()) == {7}


def test_hardware_capacity_refuses_and_changes_nothing():
    hw = HardwareSwitch([(0, FULL, 0)], capacity=10)
    k, _ = keys_ids(20)
    hw.schedule(0.0, add_keys=k[:5], add_targets=1)
    before = hw.state()
    with pytest.raises(HardwareTableFullError, match="capacity is 10"):
        hw.schedule(0.0, add_keys=k[5:20], add_targets=1)  # 1 range + 5 pending + 15 > 10
    assert hw.state() == before
    hw.apply_due(0.0)
    assert hw.rules == 6
    # re-adding existing keys does not count twice; removals make room in the same update
    hw.schedule(0.0, add_keys=k[:9], add_targets=1, remove_keys=k[:5])
    hw.apply_due(0.0)
    assert hw.rules == 10


@pytest.mark.parametrize("bad, exc", [
    ({"capacity": 0}, ValueError), ({"capacity": "2048"}, TypeError), ({"capacity": True}, TypeError),
    ({"update_delay_s": -1.0}, ValueError), ({"update_delay_s": float("nan")}, ValueError),
    ({"update_delay_s": "1"}, TypeError),
])
def test_hardware_hostile_config(bad, exc):
    with pytest.raises(exc):
        HardwareSwitch([(0, FULL, 0)], **bad)


def test_hardware_hostile_updates():
    hw = HardwareSwitch([(0, FULL, 0)])
    before = hw.state()
    k, _ = keys_ids(3)
    with pytest.raises(ValueError):
        hw.schedule(0.0, ranges=[(10, 5, 0)])
    with pytest.raises(ValueError):
        hw.schedule(0.0, ranges=[(0, 10, 0), (5, 20, 1)])  # overlap
    with pytest.raises(ValueError):
        hw.schedule(0.0, add_keys=k)  # targets missing
    with pytest.raises(ValueError):
        hw.schedule(0.0, add_keys=k, add_targets=-1)
    with pytest.raises(ValueError):
        hw.schedule(0.0, add_keys=k, add_targets=0xFFFFFFFF)
    with pytest.raises(HardwareTableFullError):
        HardwareSwitch([(i, i, 0) for i in range(5)], capacity=4)
    assert hw.state() == before


def test_software_switch_knows_active_flows_and_bins():
    sw = SoftwareSwitch(0, bins=4)

    class Inst:
        id, server = 3, 0
        flow_table = FlowTable(64)

    sw.attach(Inst)
    k, _ = keys_ids(6)
    ids = np.array([1, 2, 0x80000000, 0x80000001, 0xC0000000, 7], dtype=np.uint32)
    Inst.flow_table.lookup_or_insert(k, ids, 0)
    fk, fid = sw.active_flows_with_ids(3, 0x80000000, FULL)
    assert sorted(fid.tolist()) == [0x80000000, 0x80000001, 0xC0000000]
    assert len(sw.active_flows(3, 0, 10)) == 3
    Inst.flow_table.remove(k[:1])
    assert sw.still_active(3, k[:2]).tolist() == [False, True]
    sw.set_range(0, FULL, 3)
    assert sw.forward(k, ids).tolist() == [3] * 6
    assert sw.take_bin_counts().tolist() == [3, 0, 2, 1]
    assert sw.take_bin_counts().sum() == 0
    sw.set_range(0x80000000, FULL, 4)
    sw.add_exceptions(k[2:3], 3)
    assert sw.forward(k, ids).tolist() == [3, 3, 3, 4, 4, 3]
    assert sw.peak_rules == 3
    with pytest.raises(ValueError):
        SoftwareSwitch(0, bins=3)
    with pytest.raises(ValueError):
        SoftwareSwitch(-1)


def test_carve_and_covers():
    r = carve([(0, FULL, 0)], 100, 199, 1)
    assert r == [(0, 99, 0), (100, 199, 1), (200, FULL, 0)]
    assert carve(r, 100, 199, 0) == [(0, FULL, 0)]
    assert carve(r, 100, 199, None) == [(0, 99, 0), (200, FULL, 0)]
    assert covers(r, 100, 150, 1) and not covers(r, 50, 150, 1)
    with pytest.raises(ValueError):
        carve(r, 5, 4, 0)
    with pytest.raises(TypeError):
        carve(r, "a", 4, 0)
