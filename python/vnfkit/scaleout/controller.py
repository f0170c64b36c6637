"""The scale-out controller: migration avoidance over a hardware switch and per-server software
switches, plus the two baselines (see :mod:`vnfkit.scaleout.baselines`) on the same code.

Model. The flow-ID space ``[0, 2**32-1]`` is cut into ranges, each owned by one instance. The
hardware switch maps ranges to servers; each server's software switch maps them to instances.

Moving a range ``[lo, hi]`` from instance ``src`` to ``dst`` (a *transfer*; a split is a transfer to
a new instance, a scale-in a transfer back to the neighbour) with migration avoidance:

1. ``Fold`` = the flows with state at ``src`` in ``[lo, hi]`` (its FlowTable's ``active_in_range``).
   ``src``'s software switch gets one exception per Fold flow -> ``src``, and ``[lo, hi]`` -> ``dst``:
   new flows detour through ``src``'s server to ``dst``; the hardware switch is unchanged.
2. Every control tick, exceptions of flows that ended (no state at ``src`` any more) are removed.
3. When fewer than ``threshold`` (T) remain, one hardware update installs ``[lo, hi]`` -> ``dst``'s
   server plus the remaining exceptions -> ``src``'s server; once the switch has applied it (after
   its update delay), the transfer has *converged*: no new flow detours any more.
4. The remaining exceptions go away as their flows end; then the transfer is done.

``final_step="alternative"`` is the study's other ending: the hardware switch sends ``[lo, hi]`` to
``dst``'s server at once and ``dst``'s software switch returns the remaining old flows to ``src``
(no exception in the hardware switch ever). ``max_detour_s`` switches a threshold transfer to that
ending when T has not been reached in time.

Every request is validated completely before any switch is touched; an invalid one (a range the
instance does not own, no free core, a hardware table that cannot hold the update) raises a
:class:`ScaleoutError` and leaves every switch, the placement and the instances unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from ..tables import FLOW_KEY_DTYPE
from . import baselines
from .detector import OverloadDetector
from .errors import RangeNotOwnedError, ScaleoutError
from .placement import Placement
from .ranges import FULL_HI, Range, carve, check_bounds, coalesce, covers
from .switches import HardwareSwitch, SoftwareSwitch

STRATEGIES = ("avoid", "never", "always")
FINAL_STEPS = ("threshold", "alternative")


@dataclass(frozen=True)
class ControllerConfig:
    """``strategy``: ``avoid`` (migration avoidance), ``never`` (never migrate: hardware exceptions
    for every old flow) or ``always`` (always migrate the old flows' state). ``threshold``: T.
    ``split_at``: ``load`` (balance the measured per-sub-range load) or ``midpoint``.
    ``migrate_bandwidth_bps`` / ``migrate_setup_s``: the state-transfer link of ``always``."""

    strategy: str = "avoid"
    threshold: int = 1500
    final_step: str = "threshold"
    max_detour_s: float | None = None
    split_at: str = "load"
    load_window_s: float = 0.5
    #: with ``split_at="load"``: weight of the measured per-bin load against the bin's width (new
    #: flows hash uniformly, so the width predicts the load once today's flows have ended; the
    #: default suits lifetimes of seconds: most of today's load is gone a few seconds after a split)
    load_weight: float = 0.2
    autoscale: bool = True
    cooldown_s: float = 1.0
    migrate_bandwidth_bps: float = 10e9
    migrate_setup_s: float = 0.5e-3

    def validated(self) -> "ControllerConfig":
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected one of {STRATEGIES}, got {self.strategy!r}")
        if self.final_step not in FINAL_STEPS:
            raise ValueError(f"final_step: expected one of {FINAL_STEPS}, got {self.final_step!r}")
        if self.split_at not in ("load", "midpoint"):
            raise ValueError(f"split_at: expected 'load' or 'midpoint', got {self.split_at!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, np.integer)):
            raise TypeError(f"threshold: expected an int, got {type(self.threshold).__name__}")
        if self.threshold < 0:
            raise ValueError(f"threshold: T must be >= 0, got {self.threshold}")
        if self.max_detour_s is not None and not self.max_detour_s >= 0:
            raise ValueError(f"max_detour_s: must be >= 0 or None, got {self.max_detour_s}")
        for name in ("load_window_s", "migrate_bandwidth_bps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0 <= self.load_weight <= 1:
            raise ValueError(f"load_weight: must be in [0, 1], got {self.load_weight}")
        for name in ("cooldown_s", "migrate_setup_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        return self


@dataclass
class Transfer:
    """One range moving from ``src`` to ``dst`` and everything measured about it."""

    kind: str  # "split" or "merge"
    lo: int
    hi: int
    src: int
    dst: int
    strategy: str
    started_s: float
    fold: int = 0  # old flows at the start
    exceptions: npt.NDArray[Any] = field(default_factory=lambda: np.zeros(0, dtype=FLOW_KEY_DTYPE))
    sw_holders: list[int] = field(default_factory=list)  # servers whose software switch holds them
    hw_holds_exceptions: bool = False
    phase: str = "detour"  # detour -> pushing -> converged -> done
    final_step: str = "threshold"
    pushed_s: float | None = None
    converged_s: float | None = None
    done_s: float | None = None
    rules_needed: int = 0  # never-migrate: hardware rules the balanced split would need
    requested_lo: int = 0
    state_bytes_moved: int = 0
    flows_moved: int = 0
    pause_s: float = 0.0
    remaining_log: list[tuple[float, int]] = field(default_factory=list)

    @property
    def convergence_s(self) -> float | None:
        return None if self.converged_s is None else self.converged_s - self.started_s


class Controller:
    """Drives the switches. ``make_instance(id, server, core)`` creates an instance (anything with
    ``id``, ``server``, ``capacity_pps`` and a ``flow_table``)."""

    def __init__(self, hw: HardwareSwitch, switches: dict[int, SoftwareSwitch], placement: Placement,
                 make_instance: Callable[[int, int, int], Any], config: ControllerConfig | None = None,
                 detector: OverloadDetector | None = None) -> None:
        self.config = (config or ControllerConfig()).validated()
        if self.config.threshold > hw.capacity:
            raise ValueError(f"threshold: T={self.config.threshold} exceeds the hardware switch's "
                             f"{hw.capacity} rules")
        missing = [s for s in range(placement.servers) if s not in switches]
        if missing:
            raise ValueError(f"switches: no software switch for server(s) {missing}")
        self.hw = hw
        self.switches = switches
        self.placement = placement
        self.make_instance = make_instance
        self.detector = detector or OverloadDetector()
        self.instances: dict[int, Any] = {}
        self.owners: list[Range] = []  # flow-ID range -> instance id (where new flows go)
        self.transfers: list[Transfer] = []
        self.events: list[tuple[float, str]] = []
        self._hw_ranges: list[Range] = []  # what the hardware switch will hold once updates apply
        self._next_id = 0
        self._last_change_s = -1e18
        self._bins: dict[int, list[tuple[float, npt.NDArray[np.int64]]]] = {}
        self.autoscale_errors: list[str] = []
        #: called as ``on_migrate(src, dst, dst_slots)`` after always-migrate moved state
        self.on_migrate: Callable[[Any, Any, Any], None] | None = None

    # ------------------------------------------------------------------ set-up
    def bootstrap(self, now_s: float = 0.0) -> Any:
        """Place the first instance and give it the whole flow-ID space."""
        if self.instances:
            raise ScaleoutError("bootstrap: the controller already has instances")
        server, core = self.placement.choose()
        inst = self.make_instance(self._next_id, server, core)
        self.placement.reserve(inst.id, server, core)
        self._register(inst)
        self.owners = [(0, FULL_HI, inst.id)]
        self._hw_ranges = [(0, FULL_HI, server)]
        self.switches[server].set_range(0, FULL_HI, inst.id)
        self.hw.schedule(now_s, ranges=list(self._hw_ranges), tag="bootstrap")
        self.hw.apply_due(now_s + self.hw.update_delay_s)
        self.event(now_s, f"instance {inst.id} on server {server} core {core} owns everything")
        return inst

    def _register(self, inst: Any) -> None:
        self.instances[inst.id] = inst
        self.switches[inst.server].attach(inst)
        self._next_id = max(self._next_id, inst.id + 1)

    def event(self, now_s: float, text: str) -> None:
        """Record a controller event (shown by the experiment)."""
        self.events.append((now_s, text))

    # ------------------------------------------------------------------ queries
    def ranges_of(self, instance_id: int) -> list[tuple[int, int]]:
        return [(a, b) for a, b, t in self.owners if t == instance_id]

    def active_transfers(self) -> list[Transfer]:
        return [t for t in self.transfers if t.phase != "done"]

    def _busy(self, instance_id: int) -> bool:
        return any(t.src == instance_id or t.dst == instance_id for t in self.active_transfers())

    def state(self) -> tuple[Any, ...]:
        """Everything a request may change, for before/after comparisons."""
        return (self.hw.state(), tuple(sorted((s, sw.state()) for s, sw in self.switches.items())),
                self.placement.state(), tuple(sorted(self.instances)), tuple(self.owners), len(self.transfers))

    # ------------------------------------------------------------------ load measurement
    def note_bins(self, now_s: float) -> None:
        """Collect every software switch's per-bin packet counts into the load window."""
        for s, sw in self.switches.items():
            h = self._bins.setdefault(s, [])
            h.append((now_s, sw.take_bin_counts()))
            while h and h[0][0] <= now_s - self.config.load_window_s:
                h.pop(0)

    def choose_split(self, instance_id: int, lo: int, hi: int) -> int:
        """Split point M in ``(lo, hi]``: where the expected load of ``[lo, M)`` reaches half of
        ``[lo, hi]``'s, interpolated inside a bin. A bin's expected load is ``load_weight`` x its
        share of the measured load (the software switch's per-bin counts over ``load_window_s``)
        plus the rest x its share of the width. The midpoint without measurements."""
        mid = lo + (hi - lo + 1) // 2
        inst = self.instances[instance_id]
        sw = self.switches[inst.server]
        hist = self._bins.get(inst.server)
        if self.config.split_at == "midpoint" or not hist:
            return mid
        counts = np.sum([c for _, c in hist], axis=0).astype(np.float64)
        width = 1 << (32 - (sw.bins.bit_length() - 1))
        b0, b1 = lo // width, hi // width
        # the share of each bin inside [lo, hi] (edge bins partly)
        edges = np.arange(b0, b1 + 2, dtype=np.float64) * width
        edges[0], edges[-1] = lo, hi + 1.0
        widths = np.diff(edges)
        seg = counts[b0:b1 + 1] * (widths / width)
        if seg.sum() <= 0:
            return mid
        lw = self.config.load_weight
        seg = lw * seg / seg.sum() + (1 - lw) * widths / widths.sum()
        total = seg.sum()
        cum = np.concatenate(([0.0], np.cumsum(seg)))
        j = int(np.searchsorted(cum, total / 2, side="left"))
        j = min(max(j, 1), len(seg))
        frac = (total / 2 - cum[j - 1]) / seg[j - 1] if seg[j - 1] > 0 else 0.5
        m = int(edges[j - 1] + frac * (edges[j] - edges[j - 1]))
        return min(max(m, lo + 1), hi)

    # ------------------------------------------------------------------ requests
    def split(self, instance_id: int, now_s: float, m: int | None = None) -> Transfer:
        """Scale out: a new instance takes ``[M, Y]`` of the range ``[X, Y]`` of ``instance_id``
        (M chosen by :meth:`choose_split` unless given; X < M <= Y)."""
        src = self.instances.get(instance_id)
        if src is None:
            raise RangeNotOwnedError(f"split: no instance {instance_id!r}")
        rngs = self.ranges_of(instance_id)
        if not rngs:
            raise RangeNotOwnedError(f"split: instance {instance_id} owns no range")
        if m is None:
            x, y = max(rngs, key=lambda r: r[1] - r[0])
            if x == y:
                raise RangeNotOwnedError(f"split: instance {instance_id}'s range [{x}, {y}] has one flow ID")
            m = self.choose_split(instance_id, x, y)
        else:
            check_bounds(m, m, "m")
            own = [(a, b) for a, b in rngs if a < m <= b]
            if not own:
                raise RangeNotOwnedError(f"split: M={m} is not inside (X, Y] of a range owned by instance "
                                         f"{instance_id} (it owns {rngs})")
            x, y = own[0]
        self._check_free(m, y, "split")
        server, core = self.placement.choose(avoid=(src.server,))
        dst = self.make_instance(self._next_id, server, core)
        t = self._start(Transfer("split", m, y, instance_id, dst.id, self.config.strategy, now_s,
                                 requested_lo=m), now_s, new_instance=dst, core=core)
        self.event(now_s, f"split instance {instance_id} [{x}, {y}] at M={t.lo}: new instance {dst.id} "
                           f"on server {server} core {core}, {t.fold} old flows")
        return t

    def scale_in(self, instance_id: int, now_s: float) -> Transfer:
        """Scale in: hand ``instance_id``'s range back to the instance owning an adjacent range
        (old flows stay until they end; then the instance is retired)."""
        if instance_id not in self.instances:
            raise RangeNotOwnedError(f"scale_in: no instance {instance_id!r}")
        rngs = self.ranges_of(instance_id)
        if len(rngs) != 1:
            raise RangeNotOwnedError(f"scale_in: instance {instance_id} must own exactly one range, owns {rngs}")
        lo, hi = rngs[0]
        nb = [t for a, b, t in self.owners if (b + 1 == lo or a == hi + 1) and t != instance_id]
        if not nb:
            raise ScaleoutError(f"scale_in: instance {instance_id} has no neighbour to merge into")
        self._check_free(lo, hi, "scale_in")
        t = self._start(Transfer("merge", lo, hi, instance_id, nb[0], self.config.strategy, now_s,
                                 requested_lo=lo), now_s)
        self.event(now_s, f"scale in: instance {instance_id} [{lo}, {hi}] back to instance {nb[0]}, "
                           f"{t.fold} old flows")
        return t

    def unconverged(self) -> list[Transfer]:
        """Transfers whose range the hardware switch has not taken over yet."""
        return [t for t in self.transfers if t.converged_s is None]

    def _check_free(self, lo: int, hi: int, what: str) -> None:
        # a converged transfer's leftover old flows are exact-match exceptions: they keep winning
        # over any later range change, so only unconverged transfers block their range
        for t in self.unconverged():
            if t.lo <= hi and lo <= t.hi:
                raise ScaleoutError(f"{what}: [{lo}, {hi}] overlaps a transfer still in progress "
                                    f"([{t.lo}, {t.hi}], {t.phase})")

    def _start(self, t: Transfer, now_s: float, new_instance: Any = None, core: int = 0) -> Transfer:
        src = self.instances[t.src]
        dst_server = new_instance.server if new_instance is not None else self.instances[t.dst].server
        t.final_step = self.config.final_step
        # 1. plan (no side effects): the old flows and, for the strategies that update the hardware
        #    switch at once, that update -- hw.schedule validates it against the capacity
        plan = baselines.plan(self, t, src, dst_server)
        # 2. commit: placement, instance, software switches
        if new_instance is not None:
            self.placement.reserve(new_instance.id, new_instance.server, core)
            self._register(new_instance)
        self.owners = coalesce(carve(self.owners, t.lo, t.hi, t.dst))
        baselines.commit(self, t, src, dst_server, plan, now_s)
        self.transfers.append(t)
        self._last_change_s = now_s
        return t

    # ------------------------------------------------------------------ time
    def on_batch(self, now_s: float) -> None:
        """Before each batch: install hardware updates that are due, note convergence."""
        if not self.hw.pending:
            return
        for tag in self.hw.apply_due(now_s):
            for t in self.active_transfers():
                if tag == f"push:{id(t)}" and t.converged_s is None:
                    t.converged_s = now_s
                    t.phase = "converged"
                    self.event(now_s, f"transfer [{t.lo}, {t.hi}] converged after "
                                       f"{now_s - t.started_s:.3f} s, {len(t.exceptions)} old flows left")
                    baselines.after_push(self, t)

    def tick(self, now_s: float) -> None:
        """A control interval: retire ended old flows' exceptions, push at the threshold, finish
        transfers, then (``autoscale``) act on the detector."""
        self.on_batch(now_s)
        self.note_bins(now_s)
        for t in self.active_transfers():
            self._progress(t, now_s)
        self.on_batch(now_s)  # updates due at once (no update delay) apply before the next batch
        if self.config.autoscale:
            self._autoscale(now_s)

    def _progress(self, t: Transfer, now_s: float) -> None:
        src = self.instances[t.src]
        if len(t.exceptions):
            alive = self.switches[src.server].still_active(t.src, t.exceptions)
            if not alive.all():
                dead = t.exceptions[~alive]
                for s in t.sw_holders:
                    self.switches[s].remove_exceptions(dead)
                if t.hw_holds_exceptions:
                    self.hw.schedule(now_s, remove_keys=dead, tag="expire")
                t.exceptions = t.exceptions[alive]
        t.remaining_log.append((now_s, len(t.exceptions)))
        if t.phase == "detour":
            late = self.config.max_detour_s is not None and now_s - t.started_s >= self.config.max_detour_s
            if len(t.exceptions) < self.config.threshold or not len(t.exceptions) or late:
                baselines.push(self, t, now_s, alternative=late and len(t.exceptions) >= self.config.threshold)
        if t.phase == "converged" and not len(t.exceptions):
            self._finish(t, now_s)

    def _finish(self, t: Transfer, now_s: float) -> None:
        t.phase = "done"
        t.done_s = now_s
        src, dst = self.instances[t.src], self.instances.get(t.dst)
        # the detour rule at src's server has carried nothing since convergence -- unless a later
        # transfer has re-pointed the range there since (then the rule is that transfer's)
        sw = self.switches[src.server]
        if dst is not None and dst.server != src.server and covers(sw.ranges.ranges(), t.lo, t.hi, t.dst):
            sw.set_range(t.lo, t.hi, None)
        # an instance that owns no range any more and has no transfer left is retired
        for iid in [i for i in self.instances if not self.ranges_of(i) and not self._busy(i)]:
            self._retire(iid, now_s)

    def _retire(self, instance_id: int, now_s: float) -> None:
        inst = self.instances.pop(instance_id)
        self.switches[inst.server].detach(instance_id)
        self.placement.release(instance_id)
        self.detector.forget(instance_id)
        self.event(now_s, f"instance {instance_id} retired")

    def hw_ranges_with(self, lo: int, hi: int, server: int) -> list[Range]:
        return coalesce(carve(self._hw_ranges, lo, hi, server))

    def set_hw_ranges(self, ranges: list[Range]) -> None:
        self._hw_ranges = ranges

    # ------------------------------------------------------------------ autoscaling
    def _autoscale(self, now_s: float) -> None:
        if self.unconverged() or now_s - self._last_change_s < self.config.cooldown_s:
            return
        loads = {i: self.detector.load_pps(i) for i in self.instances}
        hot = [i for i, inst in self.instances.items() if self.detector.overloaded(i, inst.capacity_pps)]
        if hot:
            victim = max(hot, key=lambda i: loads[i] or 0.0)
            try:
                self.split(victim, now_s)
            except ScaleoutError as exc:
                if str(exc) not in self.autoscale_errors:
                    self.autoscale_errors.append(str(exc))
                    self.event(now_s, f"cannot scale out: {exc}")
            return
        for i, inst in sorted(self.instances.items(), reverse=True):
            if len(self.instances) < 2 or not self.detector.underloaded(i, inst.capacity_pps):
                continue
            rngs = self.ranges_of(i)
            if len(rngs) != 1:
                continue
            lo, hi = rngs[0]
            nb = [t for a, b, t in self.owners if (b + 1 == lo or a == hi + 1) and t != i]
            if nb and (loads[i] or 0) + (loads[nb[0]] or 0) < self.detector.config.high * 0.8 * \
                    self.instances[nb[0]].capacity_pps:
                self.scale_in(i, now_s)
                return


__all__ = ["Controller", "ControllerConfig", "FINAL_STEPS", "STRATEGIES", "Transfer"]
