"""The first and last steps of a transfer, per strategy, on the same switches and tables.

* ``avoid`` -- migration avoidance (see :mod:`vnfkit.scaleout.controller`): software-switch
  exceptions for the old flows, a hardware push when fewer than T remain (or the alternative
  ending: the hardware switch sends the range to ``dst``, whose software switch returns old flows).
* ``never`` -- *never migrate*: the hardware switch gets the new range and one exception rule per
  old flow at once. When that does not fit in its capacity, the split point moves up until the old
  flows left in the moved range fit: the split becomes uneven. ``Transfer.rules_needed`` records
  what the balanced split would have needed.
* ``always`` -- *always migrate*: the old flows' per-flow state is moved to ``dst`` (a snapshot of
  a table holding exactly the moved range's entries, restored and inserted at ``dst``), then the
  hardware switch gets the new range. The bytes of the image and the pause (measured copy time +
  setup + image bytes over the migration link) are recorded.

Until the hardware switch has applied an update (its update delay), ``src``'s software switch
bridges: it already sends new flows of the range to ``dst`` and keeps the old ones at ``src``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..tables import FlowTable
from .errors import HardwareTableFullError, ScaleoutError

if TYPE_CHECKING:
    from .controller import Controller, Transfer


def plan(ctrl: "Controller", t: "Transfer", src: Any, dst_server: int) -> dict[str, Any]:
    """Everything the transfer will install, validated; no side effects."""
    sw = ctrl.switches[src.server]
    keys, fids = sw.active_flows_with_ids(t.src, t.lo, t.hi)
    out: dict[str, Any] = {"keys": keys, "hw_ranges": None}
    if t.strategy == "never":
        ranges = ctrl.hw_ranges_with(t.lo, t.hi, dst_server)
        used = ctrl.hw.table_entries(ranges, ctrl.hw.projected_exceptions())
        room = ctrl.hw.capacity - used
        t.rules_needed = used + len(keys)
        if len(keys) > room:
            if t.kind != "split" or room <= 0:
                raise HardwareTableFullError(
                    f"never-migrate: {len(keys)} old flows need exception rules, the hardware switch has room "
                    f"for {max(room, 0)} (capacity {ctrl.hw.capacity})")
            # uneven split: move M up until the old flows above it fit
            order = np.argsort(fids, kind="stable")
            new_lo = int(fids[order][len(keys) - room - 1]) + 1  # just above the largest flow left behind
            if new_lo > t.hi:
                raise HardwareTableFullError("never-migrate: no split point leaves few enough old flows")
            sel = fids >= new_lo
            keys, fids = keys[sel], fids[sel]
            t.lo = new_lo
            ranges = ctrl.hw_ranges_with(t.lo, t.hi, dst_server)
            out["keys"] = keys
        out["hw_ranges"] = ranges
        ctrl.hw.check_update(ranges=ranges, add_keys=keys, tag="never-migrate")
    elif t.strategy == "always" or t.final_step == "alternative":
        out["hw_ranges"] = ctrl.hw_ranges_with(t.lo, t.hi, dst_server)
        ctrl.hw.check_update(ranges=out["hw_ranges"], tag=t.strategy)
    return out


def commit(ctrl: "Controller", t: "Transfer", src: Any, dst_server: int, p: dict[str, Any], now_s: float) -> None:
    """Always-migrate's commit step: move the planned flows' per-flow state from `src` to the new instance
    on `dst_server` and point the switches at it (the pause and the bytes moved are recorded on `t`)."""
    keys = p["keys"]
    t.fold = len(keys)
    sw_src = ctrl.switches[src.server]
    sw_dst = ctrl.switches[dst_server]
    if t.strategy == "always":
        _migrate(ctrl, t, src, ctrl.instances[t.dst])
    else:
        t.exceptions = keys
        sw_src.add_exceptions(keys, t.src)
        t.sw_holders = [src.server]
    sw_src.set_range(t.lo, t.hi, t.dst)
    if dst_server != src.server:
        sw_dst.set_range(t.lo, t.hi, t.dst)
    if t.strategy == "never":
        _schedule_push(ctrl, t, now_s, p["hw_ranges"], keys, src.server)
        t.hw_holds_exceptions = True
    elif t.strategy == "always":
        _schedule_push(ctrl, t, now_s, p["hw_ranges"], None, src.server)
    elif t.final_step == "alternative":
        _return_old_flows(ctrl, t, src, dst_server)
        _schedule_push(ctrl, t, now_s, p["hw_ranges"], None, src.server)


def _schedule_push(ctrl: "Controller", t: "Transfer", now_s: float, ranges: Any, keys: Any, src_server: int) -> None:
    ctrl.hw.schedule(now_s, ranges=ranges, add_keys=keys, add_targets=None if keys is None else src_server,
                     tag=f"push:{id(t)}")
    ctrl.set_hw_ranges(ranges)
    t.phase = "pushing"
    t.pushed_s = now_s


def _return_old_flows(ctrl: "Controller", t: "Transfer", src: Any, dst_server: int) -> None:
    if dst_server != src.server and len(t.exceptions):
        ctrl.switches[dst_server].add_exceptions(t.exceptions, t.src)
    if dst_server not in t.sw_holders:
        t.sw_holders.append(dst_server)
    t.final_step = "alternative"


def push(ctrl: "Controller", t: "Transfer", now_s: float, *, alternative: bool = False) -> None:
    """The final step of a migration-avoidance transfer (threshold reached, or too late)."""
    src = ctrl.instances[t.src]
    dst_server = ctrl.instances[t.dst].server
    ranges = ctrl.hw_ranges_with(t.lo, t.hi, dst_server)
    if alternative or t.final_step == "alternative":
        _return_old_flows(ctrl, t, src, dst_server)
        _schedule_push(ctrl, t, now_s, ranges, None, src.server)
        ctrl.event(now_s, f"alternative final step for [{t.lo}, {t.hi}]: {len(t.exceptions)} old flows "
                           f"returned by server {dst_server}")
        return
    try:
        _schedule_push(ctrl, t, now_s, ranges, t.exceptions, src.server)
    except HardwareTableFullError:
        return  # wait: more old flows end every tick
    t.hw_holds_exceptions = True


def after_push(ctrl: "Controller", t: "Transfer") -> None:
    """Once the hardware switch applied the push: never-migrate's bridge rules go away."""
    if t.strategy == "never":
        src = ctrl.instances[t.src]
        sw = ctrl.switches[src.server]
        sw.remove_exceptions(t.exceptions)
        sw.set_range(t.lo, t.hi, t.src if ctrl.instances[t.dst].server != src.server else t.dst)
        t.sw_holders = []


def _migrate(ctrl: "Controller", t: "Transfer", src: Any, dst: Any) -> None:
    """Move the per-flow state of ``[t.lo, t.hi]`` from ``src`` to ``dst`` through a snapshot image."""
    t0 = time.perf_counter()
    ft = src.flow_table
    rows = ft.to_numpy()
    rows = rows[(rows["flow_id"] >= t.lo) & (rows["flow_id"] <= t.hi)]
    part = FlowTable(max(len(rows), 1), ft.value_dtype)
    if len(rows):
        slots, _ = part.lookup_or_insert(np.ascontiguousarray(rows["key"]), rows["flow_id"].copy(),
                                         rows["last_ts"].copy())
        part.values[slots] = rows["value"]
    image = part.snapshot()
    got = FlowTable.restore(image).to_numpy()  # what arrives at dst
    if len(got) != len(rows):
        raise ScaleoutError(f"always-migrate: image held {len(got)} of {len(rows)} flows")
    dslots = np.zeros(0, dtype=np.uint32)
    if len(got):
        dslots, _ = dst.flow_table.lookup_or_insert(np.ascontiguousarray(got["key"]), got["flow_id"].copy(),
                                                    got["last_ts"].copy())
        if (dslots == 0xFFFFFFFF).any():
            raise ScaleoutError("always-migrate: destination flow table is full")
        dst.flow_table.values[dslots] = got["value"]
        ft.remove(np.ascontiguousarray(rows["key"]))
    copy_s = time.perf_counter() - t0
    t.state_bytes_moved = len(image)
    t.flows_moved = len(got)
    t.pause_s = copy_s + ctrl.config.migrate_setup_s + len(image) * 8 / ctrl.config.migrate_bandwidth_bps
    if ctrl.on_migrate is not None:
        ctrl.on_migrate(src, dst, dslots)


__all__ = ["after_push", "commit", "plan", "push"]
