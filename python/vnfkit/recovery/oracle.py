"""Correctness oracle: is everything the outside world saw consistent with the recovered state?

It judges a run from what left the middlebox (every released packet: id, its flow key as it came
in, its key as it went out, its egress port and drop reason) and from two state views: the
*visible* state of the master at its last release (what released packets could reveal) and the
backup's state when it went live. Checks:

* ``duplicate``: no packet id is released twice (e.g. a replay whose outputs were not suppressed);
* ``mapping``: every flow keeps the outgoing 5-tuple it had in released packets (a NAT mapping, a
  load balancer's backend) -- assumes no flow expires during the run, as in the harness's traces;
* ``port_clash``: no outgoing 5-tuple is used by two different incoming flows (no NAT port held by
  two flows);
* ``decision``: where a VNF decides per flow (``per_flow_decisions``), a flow forwarded (or
  dropped) in released packets is not dropped (or forwarded) later -- a firewall's verdict;
* ``backwards``: no monotone counter (shared Counters, the VNFs' own ``stats()``) is lower in the
  backup than the master had already shown (names in ``non_monotone`` are exempt, e.g. loads);
* ``totals``: port pools add up (allocated + free = size), and each VNF's own totals match the
  shared ones where the VNF provides ``consistency_totals()`` pairs.

:func:`judge` returns a :class:`Verdict` listing every violation (empty = correct).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..state import Counters, PortPool

__all__ = ["Released", "TimedReleased", "Verdict", "judge", "pool_totals", "visible_state"]


@dataclass
class Released:
    """Every packet that left, in release order (column lists; ``side`` 0 = master, 1 = backup)."""

    packet_id: list[int] = field(default_factory=list)
    in_key: list[bytes] = field(default_factory=list)
    out_key: list[bytes] = field(default_factory=list)
    forwarded: list[bool] = field(default_factory=list)
    side: list[int] = field(default_factory=list)

    def add(self, ids: Iterable[int], in_keys: Iterable[bytes], out_keys: Iterable[bytes],
            forwarded: Iterable[bool], side: int) -> None:
        ids = list(ids)
        self.packet_id.extend(ids)
        self.in_key.extend(in_keys)
        self.out_key.extend(out_keys)
        self.forwarded.extend(bool(f) for f in forwarded)
        self.side.extend([side] * len(ids))

    def __len__(self) -> int:
        return len(self.packet_id)


@dataclass
class TimedReleased(Released):
    """:class:`Released`, with the ``time.monotonic_ns()`` at which each packet left."""

    t_ns: list[int] = field(default_factory=list)

    def add(self, ids: Iterable[int], in_keys: Iterable[bytes], out_keys: Iterable[bytes],
            forwarded: Iterable[bool], side: int) -> None:
        ids = list(ids)
        super().add(ids, in_keys, out_keys, forwarded, side)
        self.t_ns.extend([time.monotonic_ns()] * len(ids))


@dataclass
class Verdict:
    violations: list[tuple[str, str]] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return not self.violations

    def kinds(self) -> set[str]:
        return {k for k, _ in self.violations}

    def add(self, kind: str, detail: str) -> None:
        if sum(1 for k, _ in self.violations if k == kind) < 20:  # keep reports short
            self.violations.append((kind, detail))
        self.checked[f"{kind}_violations"] = self.checked.get(f"{kind}_violations", 0) + 1

    def __str__(self) -> str:
        if self.correct:
            return "correct"
        return "incorrect: " + "; ".join(f"{k}: {d}" for k, d in self.violations[:5])


def _shared_objects(vnfs: Sequence[Any]) -> dict[str, Any]:
    """The shared variables a set of VNF instances hold (attributes, or lists of them)."""
    out: dict[str, Any] = {}
    for v in vnfs:
        for val in vars(v).values():
            items = val if isinstance(val, (list, tuple)) else [val]
            for it in items:
                if isinstance(it, (Counters, PortPool)):
                    out[it.name] = it
    return out


def visible_state(vnfs: Sequence[Any]) -> dict[str, dict[Any, int]]:
    """Counter values the outside could have observed: every shared Counters (by key) and the sum
    over workers of each VNF's ``stats()``."""
    out: dict[str, dict[Any, int]] = {}
    for name, obj in _shared_objects(vnfs).items():
        if isinstance(obj, Counters):
            if obj.keyed:
                k, v = obj.items()
                out[name] = dict(zip(k.tolist(), v.tolist()))
            else:
                out[name] = {i: int(obj.get(i)) for i in range(obj.slots)}
    stats: dict[Any, int] = {}
    for v in vnfs:
        for k, x in v.stats().items():
            stats[k] = stats.get(k, 0) + int(x)
    out["vnf.stats"] = stats
    return out


def pool_totals(vnfs: Sequence[Any]) -> list[str]:
    """Port pools whose allocated + free counts do not add up to their size."""
    bad = []
    for name, obj in _shared_objects(vnfs).items():
        if isinstance(obj, PortPool):
            free = sum(obj.free_count(s) for s in range(obj.subpools))
            size = obj.hi - obj.lo + 1
            if obj.allocated_count + free != size:
                bad.append(f"{name}: {obj.allocated_count} allocated + {free} free != {size} ports")
    return bad


def judge(released: Released, visible: dict[str, dict[Any, int]], backup_state: dict[str, dict[Any, int]],
          backup_vnfs: Sequence[Any], *, per_flow_decisions: bool = True,
          non_monotone: Iterable[str] = ()) -> Verdict:
    """Check a recovered run (see the module docstring)."""
    v = Verdict()
    ids = np.asarray(released.packet_id, dtype=np.uint64)
    uniq, counts = np.unique(ids, return_counts=True)
    for pid in uniq[counts > 1][:20].tolist():
        v.add("duplicate", f"packet {pid} released {int(counts[uniq == pid][0])} times")
    v.checked["released"] = len(ids)

    mapping: dict[bytes, bytes] = {}
    owner: dict[bytes, bytes] = {}
    decision: dict[bytes, bool] = {}
    for pid, ik, ok, fwd in zip(released.packet_id, released.in_key, released.out_key, released.forwarded):
        if per_flow_decisions:
            prev = decision.setdefault(ik, fwd)
            if prev != fwd:
                v.add("decision", f"flow {ik.hex()[:24]}..: {'forwarded' if prev else 'dropped'} before, "
                                  f"{'forwarded' if fwd else 'dropped'} for packet {pid}")
        if not fwd:
            continue
        had = mapping.setdefault(ik, ok)
        if had != ok:
            v.add("mapping", f"flow {ik.hex()[:24]}.. left as {had.hex()[:24]}.., packet {pid} as {ok.hex()[:24]}..")
        who = owner.setdefault(ok, ik)
        if who != ik:
            v.add("port_clash", f"outgoing tuple {ok.hex()[:24]}.. used by flows {who.hex()[:16]}.. and {ik.hex()[:16]}..")
    v.checked["flows"] = len(mapping)

    exempt = set(non_monotone)
    n = 0
    for name, vals in visible.items():
        if name in exempt:
            continue
        now = backup_state.get(name, {})
        for key, x in vals.items():
            if name == "vnf.stats" and key in exempt:
                continue
            n += 1
            if now.get(key, 0) < x:
                v.add("backwards", f"{name}[{key}]: the outside saw {x}, the backup has {now.get(key, 0)}")
    v.checked["counters"] = n

    for msg in pool_totals(backup_vnfs):
        v.add("totals", msg)
    if backup_vnfs:
        fn = _TOTALS.get(getattr(backup_vnfs[0], "name", ""))
        if fn is not None:
            for label, a, b in fn(backup_vnfs):
                if a != b:
                    v.add("totals", f"{label}: {a} != {b}")
    return v


def _qos_totals(vnfs: Sequence[Any]) -> list[tuple[str, int, int]]:
    """Per class: the shared counters (token-bucket outcomes) = the workers' own counts."""
    shared = vnfs[0].class_stats()
    out = []
    for cls, d in shared.items():
        for k, x in d.items():
            local = sum(w.stats()[f"{cls}.{k}"] for w in vnfs)
            out.append((f"qos {cls}.{k}: shared vs workers", x, local))
    return out


def _simplenat_totals(vnfs: Sequence[Any]) -> list[tuple[str, int, int]]:
    shared = vnfs[0].shared_totals()
    local = sum(w.stats()["translated_out"] for w in vnfs)
    return [("simplenat outbound: shared vs workers", shared["outbound"], local)]


#: Cross-checks of a VNF's own totals against its shared ones, by VNF name.
_TOTALS = {"qos": _qos_totals, "simplenat": _simplenat_totals}
