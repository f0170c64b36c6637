"""Switch models on the native tables: the hardware switch and the per-server software switch.

Both steer a batch the same way (:func:`vnfkit.tables.steer`): an exact-match exception rule wins,
otherwise the flow ID's range decides. Both count the packets and bytes they forward, so the extra
switch bandwidth of a detour is measured, not assumed.

* :class:`HardwareSwitch` -- ranges of the flow-ID space -> server id, plus exception rules
  (flow key -> server id), with a hard capacity on *all* its rules (ranges + exceptions; the
  study's switch: 2 048) and a rule-update delay: :meth:`HardwareSwitch.schedule` validates an
  update against the capacity at once (raising :class:`HardwareTableFullError` and changing
  nothing), and :meth:`HardwareSwitch.apply_due` installs it when the delay has passed.
* :class:`SoftwareSwitch` -- one per server: ranges -> instance id plus unbounded exceptions. It
  knows the instances on its server and which flows are active at each (their FlowTables), and
  keeps a per-sub-range packet histogram the controller uses to choose split points.

Rule changes happen only between batches (the simulation's slots, the live mode's batches): a batch
is always steered by one consistent rule set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..tables import NO_SLOT, NO_TARGET, ExceptionTable, RangeTable, steer
from .errors import HardwareTableFullError, ScaleoutError
from .ranges import FULL_HI, Range, carve, check_range

#: Bytes one 64-byte frame occupies on the wire (preamble, SFD and inter-frame gap included).
WIRE_BYTES_64B = 84


class HasFlowTable(Protocol):
    id: int
    server: int

    @property
    def flow_table(self) -> Any: ...


def _count_bytes(nbytes: int | npt.NDArray[Any], n: int) -> int:
    if isinstance(nbytes, np.ndarray):
        return int(nbytes.sum())
    return int(nbytes) * n


def _sorted_exceptions(t: ExceptionTable) -> bytes:
    rows = sorted(t.items())
    return b"".join(k + int(v).to_bytes(4, "little") for k, v in rows)


@dataclass
class _Update:
    apply_at_s: float
    ranges: list[Range] | None
    add_keys: npt.NDArray[Any] | None
    add_targets: npt.NDArray[np.uint32] | None
    remove_keys: npt.NDArray[Any] | None
    tag: str = ""


@dataclass
class SwitchCounters:
    """Packets and bytes forwarded (a detoured packet is counted at every pass)."""

    packets: int = 0
    bytes: int = 0
    passes: dict[str, int] = field(default_factory=dict)


class HardwareSwitch:
    """The top-of-rack switch: ranges -> server, exceptions -> server, at most ``capacity`` rules.

    ``update_delay_s`` models how long the switch takes to install a rule update (the controller's
    OpenFlow round trip plus the ASIC's table write)."""

    def __init__(self, ranges: list[Range] = (), *, capacity: int = 2048,  # type: ignore[assignment]
                 update_delay_s: float = 0.0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
            raise TypeError(f"capacity: expected an int, got {type(capacity).__name__}")
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1 rule, got {capacity}")
        if isinstance(update_delay_s, bool) or not isinstance(update_delay_s, (int, float)):
            raise TypeError(f"update_delay_s: expected seconds, got {type(update_delay_s).__name__}")
        if not 0 <= update_delay_s < float("inf"):
            raise ValueError(f"update_delay_s: must be finite and >= 0, got {update_delay_s}")
        ranges = list(ranges)
        if self.table_entries(ranges, 0) > capacity:
            raise HardwareTableFullError(f"capacity: {len(ranges)} ranges need {self.table_entries(ranges, 0)} "
                                         f"rules, more than {capacity}")
        self.capacity = int(capacity)
        self.update_delay_s = float(update_delay_s)
        self.ranges = RangeTable(ranges)
        self.exceptions = ExceptionTable(int(capacity))
        self.counters = SwitchCounters()
        self.peak_rules = self.rules
        self.updates_applied = 0
        self._pending: list[_Update] = []

    def table_entries(self, ranges: list[Range], exceptions: int) -> int:
        """Table entries ``ranges`` plus ``exceptions`` exception rules take: one per rule here (a
        switch that matches prefixes needs more per range: :class:`vnfkit.scaleout.ovs_switch.OvsHardwareSwitch`)."""
        return len(ranges) + exceptions

    @property
    def rules(self) -> int:
        """Installed rules: ranges plus exceptions (in table entries, see :meth:`table_entries`)."""
        return self.table_entries(self.ranges.ranges(), len(self.exceptions))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def forward(self, keys: npt.NDArray[Any], flow_ids: npt.NDArray[np.uint32],
                nbytes: int | npt.NDArray[Any] = WIRE_BYTES_64B, *, kind: str = "ingress",
                packets: int | None = None) -> npt.NDArray[np.uint32]:
        """Steer a batch to servers; counts its packets and bytes (``kind`` labels the pass).
        ``packets``: how many packets the rows stand for (default: one per row)."""
        n = len(keys) if packets is None else int(packets)
        self.counters.packets += n
        self.counters.bytes += _count_bytes(nbytes, n)
        self.counters.passes[kind] = self.counters.passes.get(kind, 0) + n
        if len(self.exceptions):
            return steer(keys, flow_ids, ranges=self.ranges, exceptions=(self.exceptions,))
        return self.ranges.lookup(flow_ids)

    def count_pass(self, n: int, total_bytes: int | None = None, *, kind: str) -> None:
        """Count ``n`` packets (``total_bytes``, default ``n`` 64-byte frames) that cross the switch by
        destination (a detour leg), not by rule."""
        self.counters.packets += n
        self.counters.bytes += n * WIRE_BYTES_64B if total_bytes is None else int(total_bytes)
        self.counters.passes[kind] = self.counters.passes.get(kind, 0) + n

    def _projected(self, extra: _Update | None) -> tuple[list[Range], int]:
        """(ranges, exceptions) after every pending update and ``extra`` are applied."""
        ranges = self.ranges.ranges()
        keys = {k.tobytes() for k in self.exceptions.keys()}
        for u in self._pending + ([extra] if extra is not None else []):
            if u.ranges is not None:
                ranges = u.ranges
            if u.remove_keys is not None:
                keys.difference_update(k.tobytes() for k in u.remove_keys)
            if u.add_keys is not None:
                keys.update(k.tobytes() for k in u.add_keys)
        return ranges, len(keys)

    def projected_exceptions(self) -> int:
        """Exceptions the switch will hold once every pending update is applied."""
        return self._projected(None)[1]

    def check_update(self, *, ranges: list[Range] | None = None, add_keys: npt.NDArray[Any] | None = None,
                     add_targets: Any = 0, remove_keys: npt.NDArray[Any] | None = None, tag: str = "",
                     now_s: float = 0.0) -> _Update:
        """Validate an update (ranges well-formed, capacity respected once it and every pending update
        are installed) without scheduling it. Raises :class:`HardwareTableFullError` or ValueError."""
        if ranges is not None:
            ranges = [check_range(r, "ranges") for r in ranges]
            RangeTable(ranges)  # validates ordering / overlaps; raises ValueError naming the range
        targets: npt.NDArray[np.uint32] | None = None
        if add_keys is not None:
            wide = np.broadcast_to(np.asarray(add_targets, dtype=np.int64), (len(add_keys),))
            if len(wide) and (int(wide.min()) < 0 or int(wide.max()) >= NO_TARGET):
                raise ValueError("add_targets: targets must be uint32 other than 0xFFFFFFFF")
            targets = wide.astype(np.uint32)
        upd = _Update(float(now_s) + self.update_delay_s, ranges, add_keys, targets, remove_keys, tag)
        pranges, nexc = self._projected(upd)
        need = self.table_entries(pranges, nexc)
        if need > self.capacity:
            raise HardwareTableFullError(
                f"hardware switch: update '{tag or 'rules'}' needs {len(pranges)} ranges + {nexc} exceptions = "
                f"{need} rules, capacity is {self.capacity} (nothing changed)")
        return upd

    def schedule(self, now_s: float, *, ranges: list[Range] | None = None,
                 add_keys: npt.NDArray[Any] | None = None, add_targets: Any = None,
                 remove_keys: npt.NDArray[Any] | None = None, tag: str = "") -> float:
        """Validate an update now (:meth:`check_update`) and install it at ``now_s + update_delay_s``
        (see :meth:`apply_due`). One update is atomic: its removals, ranges and additions take effect
        between two batches. Raises :class:`HardwareTableFullError` (nothing scheduled) when the
        switch would hold more than ``capacity`` rules."""
        if (add_keys is None) != (add_targets is None):
            raise ValueError("add_targets: give add_keys and add_targets together")
        upd = self.check_update(ranges=ranges, add_keys=add_keys, add_targets=add_targets,
                                remove_keys=remove_keys, tag=tag, now_s=now_s)
        self._pending.append(upd)
        return upd.apply_at_s

    def apply_due(self, now_s: float) -> list[str]:
        """Install every pending update whose time has come (in order); returns their tags."""
        done = []
        while self._pending and self._pending[0].apply_at_s <= now_s:
            u = self._pending.pop(0)
            if u.remove_keys is not None and len(u.remove_keys):
                self.exceptions.remove(u.remove_keys)
            if u.ranges is not None:
                self.ranges.assign(u.ranges)
            if u.add_keys is not None and len(u.add_keys):
                self.exceptions.insert(u.add_keys, u.add_targets)
            self.updates_applied += 1
            self.peak_rules = max(self.peak_rules, self.rules)
            done.append(u.tag)
        return done

    def state(self) -> tuple[list[Range], bytes, int]:
        """A comparable image of everything installed or pending (for before/after checks)."""
        return self.ranges.ranges(), _sorted_exceptions(self.exceptions), len(self._pending)


class SoftwareSwitch:
    """A server's virtual switch: ranges -> instance, unbounded exceptions -> instance.

    ``bins`` sub-ranges of the flow-ID space (equal widths) count the packets forwarded in each;
    :meth:`take_bin_counts` hands them to the controller's split-point choice."""

    def __init__(self, server: int, *, bins: int = 1024) -> None:
        if isinstance(server, bool) or not isinstance(server, (int, np.integer)) or server < 0:
            raise ValueError(f"server: expected a non-negative int, got {server!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1 or bins & (bins - 1) or bins > 1 << 16:
            raise ValueError(f"bins: expected a power of two in [1, 65536], got {bins!r}")
        self.server = int(server)
        self.ranges = RangeTable()
        self.exceptions = ExceptionTable(None)
        self.instances: dict[int, HasFlowTable] = {}
        self.counters = SwitchCounters()
        self.peak_rules = 0
        self._shift = 32 - (bins.bit_length() - 1)
        self.bins = bins
        self.bin_packets = np.zeros(bins, dtype=np.int64)

    @property
    def rules(self) -> int:
        return len(self.ranges) + len(self.exceptions)

    def attach(self, inst: HasFlowTable) -> None:
        if inst.server != self.server:
            raise ScaleoutError(f"instance {inst.id} is on server {inst.server}, not {self.server}")
        self.instances[inst.id] = inst

    def detach(self, instance_id: int) -> None:
        self.instances.pop(instance_id, None)

    def forward(self, keys: npt.NDArray[Any], flow_ids: npt.NDArray[np.uint32],
                nbytes: int | npt.NDArray[Any] = WIRE_BYTES_64B, *, kind: str = "ingress",
                packets: int | None = None, weights: npt.NDArray[Any] | None = None) -> npt.NDArray[np.uint32]:
        """Steer a batch to instances; counts packets, bytes and the per-bin histogram.
        ``packets`` / ``weights``: the packets the rows stand for, in total / per row."""
        n = len(keys) if packets is None else int(packets)
        self.counters.packets += n
        self.counters.bytes += _count_bytes(nbytes, n)
        self.counters.passes[kind] = self.counters.passes.get(kind, 0) + n
        if kind == "ingress" and len(keys):
            self.bin_packets += np.bincount(flow_ids >> np.uint32(self._shift), weights=weights,
                                            minlength=self.bins).astype(np.int64)
        if len(self.exceptions):
            return steer(keys, flow_ids, ranges=self.ranges, exceptions=(self.exceptions,))
        return self.ranges.lookup(flow_ids)

    def count_pass(self, n: int, total_bytes: int | None = None, *, kind: str) -> None:
        """Count packets delivered by destination (the last leg of a detour); bytes as in
        :meth:`HardwareSwitch.count_pass`."""
        self.counters.packets += n
        self.counters.bytes += n * WIRE_BYTES_64B if total_bytes is None else int(total_bytes)
        self.counters.passes[kind] = self.counters.passes.get(kind, 0) + n

    def take_bin_counts(self) -> npt.NDArray[np.int64]:
        """The per-bin packet counts since the last call (then reset)."""
        out = self.bin_packets.copy()
        self.bin_packets[:] = 0
        return out

    def bin_bounds(self, b: int) -> tuple[int, int]:
        """Inclusive flow-ID bounds of bin ``b``."""
        lo = b << self._shift
        return lo, min(FULL_HI, lo + (1 << self._shift) - 1)

    # ---- what the switch knows about its instances
    def active_flows(self, instance_id: int, lo: int, hi: int) -> npt.NDArray[Any]:
        """Keys of the flows with state at ``instance_id`` whose flow ID is in ``[lo, hi]``: Fold."""
        return self.instances[instance_id].flow_table.active_in_range(lo, hi)

    def active_flows_with_ids(self, instance_id: int, lo: int, hi: int) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint32]]:
        """Fold with the flow IDs: ``(keys, flow_ids)`` of the flows with state at ``instance_id`` in
        ``[lo, hi]``."""
        ft = self.instances[instance_id].flow_table
        slots = ft.active_slots_in_range(lo, hi)
        keys = ft.active_in_range(lo, hi)
        rows = ft.to_numpy()  # ordered by slot, like active_in_range
        ids = rows["flow_id"][np.searchsorted(rows["slot"], slots)]
        return keys, ids.astype(np.uint32)

    def still_active(self, instance_id: int, keys: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """Which of ``keys`` still have state at ``instance_id``."""
        if not len(keys):
            return np.zeros(0, dtype=bool)
        return self.instances[instance_id].flow_table.lookup(keys) != NO_SLOT

    # ---- rule changes (between batches)
    def set_range(self, lo: int, hi: int, target: int | None) -> None:
        """Point ``[lo, hi]`` at ``target`` (None: remove it), splitting and merging ranges as needed."""
        self.ranges.assign(carve(self.ranges.ranges(), lo, hi, target))
        self._peak()

    def add_exceptions(self, keys: npt.NDArray[Any], target: int) -> None:
        if len(keys):
            self.exceptions.insert(keys, int(target))
        self._peak()

    def remove_exceptions(self, keys: npt.NDArray[Any]) -> None:
        if len(keys):
            self.exceptions.remove(keys)

    def _peak(self) -> None:
        self.peak_rules = max(self.peak_rules, self.rules)

    def state(self) -> tuple[list[Range], bytes]:
        return self.ranges.ranges(), _sorted_exceptions(self.exceptions)


__all__ = ["HardwareSwitch", "SoftwareSwitch", "SwitchCounters", "WIRE_BYTES_64B"]
