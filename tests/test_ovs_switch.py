"""The OpenFlow hardware switch (vnfkit.scaleout.ovs_switch): prefixes, matches, and a real OVS bridge."""

import ipaddress
import time

import numpy as np
import pytest

from vnfkit.scaleout import HardwareTableFullError, ScaleoutError
from vnfkit.scaleout.ovs_switch import (OvsHardwareSwitch, bitrev32, exception_match, flow_ids_for,
                                        prefix_match, prefixes)
from vnfkit.tables import FLOW_KEY_DTYPE
from vnfkit.testbed.ovs import unavailable_reason
from vnfkit.traffic import generate

REASON = unavailable_reason()
needs_ovs = pytest.mark.skipif(REASON is not None, reason=REASON or "")
FULL = 0xFFFFFFFF


def _check_prefixes(lo, hi):
    ps = prefixes(lo, hi)
    nxt = lo
    for v, length in ps:
        size = 1 << (32 - length)
        assert v == nxt and v % size == 0  # contiguous and aligned
        nxt = v + size
    assert nxt == hi + 1
    # minimal: no two neighbours could merge into one aligned block of twice the size
    for (v1, l1), (v2, l2) in zip(ps, ps[1:]):
        assert not (l1 == l2 and v1 % (1 << (33 - l1)) == 0 and l1 > 0)
    return ps


def test_prefixes_cover_exactly_and_minimally():
    assert prefixes(0, FULL) == [(0, 0)]
    assert prefixes(0, 2**31 - 1) == [(0, 1)]
    assert prefixes(5, 5) == [(5, 32)]
    assert len(_check_prefixes(1, FULL - 1)) == 62  # the worst case: 2 x 31
    rng = np.random.default_rng(1)
    for _ in range(300):
        lo, hi = sorted(int(x) for x in rng.integers(0, 2**32, 2))
        assert len(_check_prefixes(lo, hi)) <= 62
    with pytest.raises(ValueError, match="range"):
        prefixes(5, 4)


def test_bitrev_and_the_flow_id_of_a_key():
    x = np.random.default_rng(2).integers(0, 2**32, 1000, dtype=np.uint32)
    assert (bitrev32(bitrev32(x)) == x).all()
    assert bitrev32(1) == 0x80000000 and bitrev32(0x0000000A) == 0x50000000
    keys = np.zeros(3, dtype=FLOW_KEY_DTYPE)
    keys["family"] = [4, 4, 6]
    keys["src"][0, :4] = [10, 0, 0, 1]
    keys["src"][1, :4] = [10, 0, 0, 2]
    ids = flow_ids_for(keys)
    assert ids[0] == bitrev32(int(ipaddress.IPv4Address("10.0.0.1"))) and ids[2] == 0


def test_prefix_matches_select_exactly_the_range():
    """(addr & mask) == value, as OVS evaluates nw_src=V/M, holds iff bitrev(addr) is in [lo, hi]."""
    rng = np.random.default_rng(3)
    addrs = rng.integers(0, 2**32, 20000, dtype=np.uint32)
    lo, hi = 0x3A000000 + 12345, 0xC0000000 + 999
    inside = np.zeros(len(addrs), dtype=bool)
    for v, length in prefixes(lo, hi):
        m = prefix_match(v, length)
        assert m.startswith("ip")
        if length == 0:
            inside[:] = True
            continue
        val, mask = m.split("nw_src=")[1].split("/") if "/" in m else (m.split("nw_src=")[1], "255.255.255.255")
        val, mask = int(ipaddress.IPv4Address(val)), int(ipaddress.IPv4Address(mask))
        assert mask == (1 << length) - 1  # the low address bits
        inside |= (addrs & np.uint32(mask)) == np.uint32(val)
    fid = bitrev32(addrs)
    assert (inside == ((fid >= lo) & (fid <= hi))).all()
    assert inside.any() and not inside.all()


def test_exception_match_is_exact():
    keys = np.zeros(2, dtype=FLOW_KEY_DTYPE)
    keys[0]["family"], keys[0]["proto"], keys[0]["sport"], keys[0]["dport"] = 4, 17, 1234, 53
    keys[0]["src"][:4], keys[0]["dst"][:4] = [10, 1, 2, 3], [198, 18, 0, 1]
    keys[1]["family"], keys[1]["proto"], keys[1]["sport"], keys[1]["dport"] = 6, 6, 5, 443
    keys[1]["src"][0], keys[1]["dst"][:4] = 0xFD, [0x20, 0x01, 0x0D, 0xB8]
    assert exception_match(keys[0]) == "udp,nw_src=10.1.2.3,nw_dst=198.18.0.1,tp_src=1234,tp_dst=53"
    assert exception_match(keys[1]) == "tcp6,ipv6_src=fd00::,ipv6_dst=2001:db8::,tp_src=5,tp_dst=443"


# ---------------------------------------------------------------------------------------- real OVS
@pytest.fixture
def topo():
    if REASON:
        pytest.skip(REASON)
    from vnfkit.scaleout.ovs_testbed import OvsTopology

    with OvsTopology(2) as t:
        yield t
    assert t.leftovers() == []


def _flows(topo):
    text = topo.ovs.ofctl("dump-flows", topo.bridge, options=("--no-stats",))
    return sorted(line.strip() for line in text.splitlines() if "actions=" in line)


def _send_and_count(topo, batch, timeout_s=2.0):
    """Send every packet of `batch` from the client; returns {server: set of packet indices}."""
    socks = {s: topo.socket(s) for s in topo.server_ports}
    c = topo.socket("client")
    want = {batch.packet(i): i for i in range(len(batch))}
    got = {s: set() for s in socks}

    def drain(n, deadline):
        while time.monotonic() < deadline and sum(map(len, got.values())) < n:
            for s, sock in socks.items():
                try:
                    while True:
                        d = sock.recv(4096)
                        if d in want:
                            got[s].add(want[d])
                except BlockingIOError:
                    pass
            time.sleep(0.0005)

    try:
        # paced: 32 packets at a time (every new flow is an upcall in OVS; a burst overflows its socket)
        for start in range(0, len(batch), 32):
            for i in range(start, min(start + 32, len(batch))):
                c.send(batch.packet(i))
            drain(min(start + 32, len(batch)), time.monotonic() + timeout_s / 10)
        drain(len(batch), time.monotonic() + timeout_s)
        return got
    finally:
        for s in (*socks.values(), c):
            s.close()


@needs_ovs
def test_bridge_holds_the_model_and_steers_real_packets(topo, capsys):
    m = 0x9E3779B9  # not prefix-aligned: the range pair needs many prefix rules
    hw = OvsHardwareSwitch(topo.ovs, topo.bridge, topo.server_ports, ranges=[(0, m - 1, 0), (m, FULL, 1)])
    assert hw.rules == len(prefixes(0, m - 1)) + len(prefixes(m, FULL)) > 2
    assert hw.ovs_rules() == hw.rules == len(_flows(topo))  # read back from OVS
    b = generate(300, 300, 4, udp_fraction=0.5)
    b.parse()
    fid = flow_ids_for(b.key)
    # one exception: a flow of server 1's range pinned to server 0
    pin = int(np.flatnonzero(fid >= m)[0])
    hw.schedule(0.0, add_keys=b.key[pin:pin + 1].copy(), add_targets=0, tag="pin")
    assert hw.apply_due(0.0) == ["pin"]
    assert hw.ovs_rules() == hw.rules and any("priority=2000" in f for f in _flows(topo))
    got = _send_and_count(topo, b)
    expect0 = set(np.flatnonzero(fid < m).tolist()) | {pin}
    assert got[0] == expect0
    assert got[1] == set(range(len(b))) - expect0
    with capsys.disabled():
        print(f"\nOVS bridge: {hw.ovs_rules()} flows (read from OVS); {len(got[0])} packets at server 0, "
              f"{len(got[1])} at server 1, as the rules say")


@needs_ovs
def test_capacity_counts_prefixes_and_a_refused_update_changes_nothing(topo):
    hw = OvsHardwareSwitch(topo.ovs, topo.bridge, topo.server_ports, ranges=[(0, FULL, 0)], capacity=20,
                           fixed_flows=["priority=3000,dl_dst=02:00:00:00:00:99,actions=output:2"])
    assert hw.rules == 2 == hw.ovs_rules()
    before = _flows(topo)
    m = 0x12345679  # [0, m-1] and [m, FULL] need far more than 20 prefixes
    with pytest.raises(HardwareTableFullError, match="capacity is 20"):
        hw.schedule(0.0, ranges=[(0, m - 1, 0), (m, FULL, 1)])
    with pytest.raises(ScaleoutError, match="server"):
        hw.schedule(0.0, ranges=[(0, FULL, 7)])
    assert hw.pending == 0 and _flows(topo) == before and hw.ovs_rules() == 2
    hw.schedule(0.0, ranges=[(0, 2**31 - 1, 0), (2**31, FULL, 1)], tag="half")
    hw.apply_due(0.0)
    assert hw.ovs_rules() == 3 == hw.rules and hw.peak_ovs_rules == 3
    assert "priority=3000,dl_dst=02:00:00:00:00:99 actions=output:2" in _flows(topo)


@needs_ovs
def test_the_rule_count_is_read_back_not_assumed(topo):
    from vnfkit.testbed.ovs import OvsError

    hw = OvsHardwareSwitch(topo.ovs, topo.bridge, topo.server_ports, ranges=[(0, FULL, 0)])
    topo.ovs.ofctl("add-flow", topo.bridge, "priority=5,arp,actions=drop")  # behind the switch's back
    hw.schedule(0.0, ranges=[(0, 2**31 - 1, 0), (2**31, FULL, 1)])
    with pytest.raises(OvsError, match="holds 3 flows, the model 2"):
        hw.apply_due(0.0)
