"""The hardware switch as a real Open vSwitch bridge, programmed over OpenFlow with ``ovs-ofctl``.

:class:`OvsHardwareSwitch` is a :class:`~vnfkit.scaleout.switches.HardwareSwitch` (same
``schedule`` / ``apply_due`` / ``check_update`` interface, same capacity errors that change
nothing) whose installed rule set is also pushed to an OVS bridge each time updates are applied:
one atomic OpenFlow bundle (``ovs-ofctl --bundle add-flows``) of ``delete_strict`` and ``add``
flow-mods -- the difference between what the bridge holds and what the model now holds. After
each push the rule count is read back from OVS (``dump-aggregate``'s ``flow_count``) and must equal
the model's; :attr:`OvsHardwareSwitch.peak_ovs_rules` is the largest count OVS ever reported.

**The field.** OVS cannot compute vnfkit's flow hash, so the flow ID the switch steers by must be
a header field it can match with a bitmask. It is the **IPv4 source address, bit-reversed**:
``flow_id = bitrev32(nw_src)`` (:func:`flow_ids_for`). A flow-ID prefix of length L is then a
mask over the address's L *lowest* bits (``nw_src=V/M`` with M = 2**L - 1; OVS accepts arbitrary
bitwise masks on ``nw_src``). Why reversed: the low bits of client addresses vary the most (hosts
of one subnet differ there), so the top of the flow-ID space -- where the controller's splits
cut -- spreads the clients evenly; unreversed, the first split (at 2**31) would put 0.0.0.0/1 on
one side and a whole 10.0.0.0/8 client population on the other. Why not the ports: ``tp_src``
needs one rule per protocol (TCP, UDP) and is only 16 bits. IPv4 only: IPv6 packets match no
range rule and are dropped by the bridge (``fail_mode=secure``).

**What prefixes do to balance.** A range ``[lo, hi]`` becomes its minimal set of aligned prefixes
(:func:`prefixes`): exact, so the split point M is honoured to the flow ID and the balance the
controller chose is unchanged -- but a range that is not prefix-aligned costs up to 2 x 31 rules
instead of one, and every such rule counts against the 2 048-entry table
(:meth:`OvsHardwareSwitch.table_entries`). What costs balance is the field's granularity: all flows
of one client address share a flow ID, so one client's flows can never be split between
instances except by exception rules.

**The datapath's cache.** ``ovs-ofctl --bundle`` returns once the OpenFlow tables hold the new
rules, but the datapath keeps the flows it cached from the old ones until OVS's revalidators
catch up (asynchronously, a few ms). Packets sent meanwhile still follow the old rules. With
``datapath_sync="purge"`` (the default) every push is followed by ``ovs-appctl
revalidator/purge``, which deletes the cached datapath flows before it returns, so the next packet
is classified by the new rules and the bridge agrees with the model packet by packet;
``"none"`` leaves the race in (migration avoidance tolerates it: A's software switch still sends
the moved range's new flows to A'; never-migrate does not: see the README).

**Exceptions** are exact 5-tuple matches (``tcp``/``udp``/``ip`` + ``nw_proto``, IPv4 or IPv6) at a
higher priority than every range rule. **Fixed flows** (e.g. the detour forwarding between servers)
are the caller's, installed first and counted against the capacity too.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from ..testbed.ovs import OpenVSwitch, OvsError
from .errors import ScaleoutError
from .ranges import FULL_HI, Range
from .switches import HardwareSwitch

#: OpenFlow priorities: exceptions win over ranges; fixed flows are given with their own.
EXCEPTION_PRIORITY = 2000
RANGE_PRIORITY = 1000

_REV8 = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], dtype=np.uint32)


def bitrev32(x: Any) -> Any:
    """The 32-bit values of ``x`` with their bit order reversed (an int or a uint32 array)."""
    a = np.asarray(x, dtype=np.uint32)
    out = ((_REV8[a & 0xFF] << 24) | (_REV8[(a >> 8) & 0xFF] << 16) | (_REV8[(a >> 16) & 0xFF] << 8)
           | _REV8[a >> 24]).astype(np.uint32)
    return int(out) if out.ndim == 0 else out


def flow_ids_for(keys: npt.NDArray[Any]) -> npt.NDArray[np.uint32]:
    """The flow ID the OVS switch steers ``keys`` (FLOW_KEY_DTYPE) by: the bit-reversed IPv4 source
    address (see the module docstring). Non-IPv4 keys get flow ID 0 (the bridge drops them)."""
    src = np.ascontiguousarray(keys["src"][:, :4]).view(">u4").reshape(-1).astype(np.uint32)
    ids = bitrev32(src)
    return np.where(keys["family"] == 4, ids, 0).astype(np.uint32)


def prefixes(lo: int, hi: int) -> list[tuple[int, int]]:
    """The minimal list of aligned prefixes ``(value, length)`` of the 32-bit space whose union is
    exactly ``[lo, hi]`` (``value`` has its low ``32 - length`` bits zero), in increasing order."""
    if not 0 <= lo <= hi <= FULL_HI:
        raise ValueError(f"range: expected 0 <= lo <= hi <= {FULL_HI}, got [{lo}, {hi}]")
    out = []
    while lo <= hi:
        size = (lo & -lo) if lo else 1 << 32  # the largest block aligned at lo ...
        while size > hi - lo + 1:  # ... that still fits
            size >>= 1
        out.append((lo, 33 - size.bit_length()))
        lo += size
    return out


def prefix_match(value: int, length: int) -> str:
    """The OpenFlow match of the flow-ID prefix ``(value, length)`` on the bit-reversed nw_src."""
    if length == 0:
        return "ip"
    addr = ipaddress.IPv4Address(bitrev32(value))
    if length == 32:
        return f"ip,nw_src={addr}"
    return f"ip,nw_src={addr}/{ipaddress.IPv4Address((1 << length) - 1)}"


def exception_match(key: npt.NDArray[Any]) -> str:
    """The exact OpenFlow match of one flow key (a FLOW_KEY_DTYPE scalar)."""
    fam, proto = int(key["family"]), int(key["proto"])
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if fam == 4:
        src, dst = ipaddress.IPv4Address(bytes(key["src"][:4])), ipaddress.IPv4Address(bytes(key["dst"][:4]))
        names, fields = {6: "tcp", 17: "udp"}, ("nw_src", "nw_dst")
        base = names.get(proto, f"ip,nw_proto={proto}")
    elif fam == 6:
        src, dst = ipaddress.IPv6Address(bytes(key["src"])), ipaddress.IPv6Address(bytes(key["dst"]))
        names, fields = {6: "tcp6", 17: "udp6"}, ("ipv6_src", "ipv6_dst")
        base = names.get(proto, f"ipv6,nw_proto={proto}")
    else:
        raise ValueError(f"key: family {fam} is neither 4 nor 6")
    m = f"{base},{fields[0]}={src},{fields[1]}={dst}"
    if proto in (6, 17):
        m += f",tp_src={int(key['sport'])},tp_dst={int(key['dport'])}"
    return m


class OvsHardwareSwitch(HardwareSwitch):
    """A :class:`HardwareSwitch` whose rules live in the OVS bridge ``bridge`` of ``ovs``.

    ``server_ports``: server id -> the bridge's OpenFlow port towards that server (range and
    exception targets are server ids). ``fixed_flows``: flows (``priority=...,match,actions=...``)
    installed first and kept; they count against ``capacity``. ``datapath_sync``: ``"purge"`` or
    ``"none"`` (see the module docstring). The bridge's existing flows are replaced."""

    def __init__(self, ovs: OpenVSwitch, bridge: str, server_ports: dict[int, int], *,
                 ranges: Sequence[Range] = (), capacity: int = 2048, update_delay_s: float = 0.0,
                 fixed_flows: Sequence[str] = (), datapath_sync: str = "purge") -> None:
        if datapath_sync not in ("purge", "none"):
            raise ValueError(f"datapath_sync: expected 'purge' or 'none', got {datapath_sync!r}")
        if not isinstance(server_ports, dict) or not server_ports:
            raise ValueError("server_ports: expected a non-empty {server id: OpenFlow port} dict")
        for s, p in server_ports.items():
            if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 0xFEFF:
                raise ValueError(f"server_ports: server {s} has no valid OpenFlow port ({p!r})")
        fixed = []
        for f in fixed_flows:
            if not isinstance(f, str) or "actions=" not in f or "priority=" not in f:
                raise ValueError(f"fixed_flows: expected 'priority=N,match,actions=...', got {f!r}")
            fixed.append(f.strip())
        self.ovs, self.bridge = ovs, bridge
        self.server_ports = dict(server_ports)
        self.fixed_flows = fixed
        self.datapath_sync = datapath_sync
        self._installed: dict[str, str] = {}  # "priority=N,match" -> actions
        self.peak_ovs_rules = 0
        self.pushes = 0
        self.push_s: list[float] = []  # wall time of each ovs-ofctl bundle
        super().__init__(list(ranges), capacity=capacity, update_delay_s=update_delay_s)
        self._check_targets(list(ranges), None)
        self.ovs.ofctl("del-flows", bridge)
        self.sync()

    # ---------------------------------------------------------------- capacity in OpenFlow entries
    def table_entries(self, ranges: Sequence[Range], exceptions: int) -> int:
        """OpenFlow entries: the fixed flows, one per prefix of every range, one per exception."""
        return len(self.fixed_flows) + sum(len(prefixes(lo, hi)) for lo, hi, _ in ranges) + exceptions

    def _check_targets(self, ranges: Sequence[Range] | None, targets: Any) -> None:
        want = {t for _, _, t in ranges or ()}
        if targets is not None:
            want |= {int(t) for t in np.unique(np.asarray(targets))}
        bad = sorted(want - set(self.server_ports))
        if bad:
            raise ScaleoutError(f"ovs switch: no port towards server(s) {bad} (ports: {self.server_ports})")

    def check_update(self, *, ranges: list[Range] | None = None, add_keys: npt.NDArray[Any] | None = None,
                     add_targets: Any = 0, remove_keys: npt.NDArray[Any] | None = None, tag: str = "",
                     now_s: float = 0.0) -> Any:
        upd = super().check_update(ranges=ranges, add_keys=add_keys, add_targets=add_targets,
                                   remove_keys=remove_keys, tag=tag, now_s=now_s)
        self._check_targets(upd.ranges, upd.add_targets)
        if upd.add_keys is not None and len(upd.add_keys) and not np.isin(upd.add_keys["family"], (4, 6)).all():
            raise ValueError("add_keys: exception keys must be IPv4 or IPv6 flow keys")
        return upd

    # ---------------------------------------------------------------- programming OVS
    def apply_due(self, now_s: float) -> list[str]:
        """Apply due updates to the model, then push the result to OVS in one bundle."""
        done = super().apply_due(now_s)
        if done:
            self.sync()
        return done

    def desired_flows(self) -> dict[str, str]:
        """``"priority=N,match" -> actions`` of everything the model holds now."""
        out: dict[str, str] = {}
        for f in self.fixed_flows:
            head, _, actions = f.partition(",actions=")
            out[head] = actions
        for lo, hi, server in self.ranges.ranges():
            for v, length in prefixes(lo, hi):
                out[f"priority={RANGE_PRIORITY},{prefix_match(v, length)}"] = f"output:{self.server_ports[server]}"
        for row in self.exceptions.to_numpy():
            out[f"priority={EXCEPTION_PRIORITY},{exception_match(row['key'])}"] = \
                f"output:{self.server_ports[int(row['target'])]}"
        return out

    def sync(self) -> None:
        """Make the bridge hold :meth:`desired_flows` (one atomic bundle), then read the count back."""
        want = self.desired_flows()
        lines = [f"delete_strict {h}" for h in self._installed if h not in want]
        lines += [f"add {h},actions={a}" for h, a in want.items() if self._installed.get(h) != a]
        if lines:
            t0 = time.perf_counter()
            self.ovs.ofctl("add-flows", self.bridge, "-", input_text="\n".join(lines) + "\n", options=("--bundle",))
            if self.datapath_sync == "purge":
                self.ovs.appctl("revalidator/purge")
            self.push_s.append(time.perf_counter() - t0)
            self.pushes += 1
        self._installed = want
        got = self.ovs_rules()
        self.peak_ovs_rules = max(self.peak_ovs_rules, got)
        if got != len(want):
            raise OvsError(f"ovs switch: the bridge holds {got} flows, the model {len(want)}")

    def ovs_rules(self) -> int:
        """The number of flows in the bridge, as OVS reports it (``dump-aggregate``)."""
        return int(self._aggregate()["flow_count"])

    def ovs_packets(self) -> int:
        """Packets the bridge's flows have matched, as OVS reports it."""
        return int(self._aggregate()["packet_count"])

    def port_packets(self) -> dict[int, tuple[int, int]]:
        """``{OpenFlow port: (rx packets, tx packets)}`` as OVS counts them (``dump-ports``; the
        bridge's LOCAL port left out): the switch's own measure of the traffic it carried."""
        out: dict[int, tuple[int, int]] = {}
        port: int | None = None
        rx = 0
        for line in self.ovs.ofctl("dump-ports", self.bridge).splitlines():
            head, _, rest = line.strip().partition(":")
            if head.startswith("port"):
                name = head[4:].strip()
                port = int(name) if name.isdigit() else None
                rx = _stat(rest, "pkts")
            elif line.strip().startswith("tx "):
                if port is not None:
                    out[port] = (rx, _stat(line.strip()[3:], "pkts"))
        return out

    def _aggregate(self) -> dict[str, int]:
        text = self.ovs.ofctl("dump-aggregate", self.bridge)
        out = {}
        for tok in text.split():
            name, eq, val = tok.partition("=")
            if eq and val.isdigit():
                out[name] = int(val)
        if "flow_count" not in out:
            raise OvsError(f"ovs switch: unexpected dump-aggregate reply {text.strip()!r}")
        return out


def _stat(text: str, name: str) -> int:
    """The ``name=N`` counter of a ``dump-ports`` line (0 when OVS prints ``?``)."""
    for tok in text.replace(",", " ").split():
        k, eq, v = tok.partition("=")
        if eq and k == name:
            return int(v) if v.isdigit() else 0
    raise OvsError(f"ovs switch: no {name}= in dump-ports line {text.strip()!r}")


__all__ = ["EXCEPTION_PRIORITY", "OvsHardwareSwitch", "RANGE_PRIORITY", "bitrev32", "exception_match",
           "flow_ids_for", "prefix_match", "prefixes"]
