"""AdaptiveLB: an adaptive L4 load balancer -- new flows go to the least loaded backend.

A virtual service ``vip:vip_port`` (IPv4, protocol ``proto``) fronts N backends (``"addr"`` or
``"addr:port"``). The load of each backend -- its number of active flows -- is shared by all
workers in the direct Counters ``lb.active`` (one slot per backend); ``lb.assigned`` counts the
flows ever given to each backend.

* A packet to the VIP whose flow is **new** to this worker is given to the least loaded backend:
  the worker reads the shared loads once per batch, then hands the batch's new flows out one at a
  time in packet order, each to the currently least loaded backend (ties: lowest backend index),
  and adds the result to the shared loads (one logged access per backend and batch). Workers racing
  on the loads may each pick the same backend in the same instant; the imbalance that can cause is
  at most the new flows of one batch per worker.
* The choice is kept per flow in the worker's FlowTable ``lb.flows``, so every later packet of the
  flow goes to the same backend: its destination (and port, if the backend has one) is rewritten,
  checksums updated incrementally.
* A flow ends on packet time: ``tcp_close_timeout_s`` after a FIN or RST from the client, or
  ``idle_timeout_s`` without a packet. Ended flows are expired at the start of each batch (at the
  time of its first packet) and their backends' loads decremented.
* Replies from a backend (source = backend address, and port if the backend has one, protocol
  ``proto``) get their source rewritten back to the VIP (``reverse``, default on). This is stateless,
  so it works whichever worker the reply lands on.
* Anything else is forwarded unchanged. Everything forwarded leaves on ``out_port``; a new flow that
  does not fit into a full flow table is dropped with ``DropReason.TABLE_FULL`` (it could not stay
  sticky).

IPv6 packets are never balanced (the in-place rewrite helpers are IPv4). The batch must be parsed
before :meth:`AdaptiveLB.process`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _core
from ..vnf import VNF, Context
from . import _mbox as m

__all__ = ["AdaptiveLB", "DEFAULTS", "least_loaded"]

_VALUE_DTYPE = np.dtype([("backend", "<u4"), ("packets", "<u8")])

DEFAULTS: dict[str, Any] = {
    "vip": "203.0.113.10",
    "vip_port": 80,
    "proto": "tcp",
    "backends": ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"],
    "reverse": True,
    "flow_capacity": 65536,
    "idle_timeout_s": 300.0,
    "tcp_close_timeout_s": 10.0,
    "out_port": 1,
}


def least_loaded(loads: npt.ArrayLike, k: int) -> npt.NDArray[np.int64]:
    """Backends for `k` new flows handed out one at a time, each to the backend with the fewest
    flows at that moment (ties: lowest index), starting from `loads`.

    Equivalent to ``k`` rounds of ``b = argmin(L); L[b] += 1``, computed by water-filling in
    O(N log k + k log k) rather than O(k N)."""
    base = np.asarray(loads, dtype=np.int64)
    if base.ndim != 1 or len(base) == 0:
        raise ValueError("loads: need a non-empty 1-d array")
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    # T = the highest level such that filling every backend up to T takes at most k flows.
    lo, hi = int(base.min()), int(base.min()) + k
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.maximum(0, mid - base).sum()) <= k:
            lo = mid
        else:
            hi = mid - 1
    level = lo
    fill = np.maximum(0, level - base)
    extra = k - int(fill.sum())  # < number of backends at `level` after filling
    at_level = np.flatnonzero(base <= level)[:extra]
    fill[at_level] += 1
    # Picks as (load before the pick, backend); sequential greedy order = sorted by that pair.
    backend = np.repeat(np.arange(len(base)), fill)
    start = np.repeat(np.cumsum(fill) - fill, fill)
    before = base[backend] + (np.arange(k) - start)
    order = np.lexsort((backend, before))
    return backend[order]


def _parse_backend(value: Any, i: int) -> tuple[int, int]:
    field = f"backends[{i}]"
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected 'a.b.c.d' or 'a.b.c.d:port', got {type(value).__name__}")
    addr, _, port = value.partition(":")
    a = m.as_ipv4(addr, field)
    if not port:
        return a, 0
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{field}: port must be 1-65535, got {port!r}")
    return a, int(port)


class AdaptiveLB(VNF):
    """Least-loaded L4 load balancer with sticky flows (see the module docstring)."""

    name = "adaptive_lb"
    dirty_tracked = True  # its table writes go through slots handed out in the same batch

    def setup(self, ctx: Context, **config: Any) -> None:
        m.check_keys(config, set(DEFAULTS), "AdaptiveLB")
        cfg = {**DEFAULTS, **config}
        self.vip = m.as_ipv4(cfg["vip"], "vip")
        self.vip_port = None if cfg["vip_port"] is None else m.as_int(cfg["vip_port"], "vip_port", 1, 65535)
        self.proto = m.as_proto(cfg["proto"], "proto")
        if self.proto not in (6, 17):
            raise ValueError(f"proto: must be tcp (6) or udp (17), got {cfg['proto']!r}")
        bes = cfg["backends"]
        if not isinstance(bes, (list, tuple)):
            raise TypeError(f"backends: expected a list of 'addr[:port]' strings, got {type(bes).__name__}")
        if not 1 <= len(bes) <= 4096:
            raise ValueError(f"backends: need 1 to 4096 backends, got {len(bes)}")
        parsed = [_parse_backend(b, i) for i, b in enumerate(bes)]
        if len(set(parsed)) != len(parsed):
            raise ValueError("backends: duplicate backend")
        if any(p for _, p in parsed) and self.vip_port is None:
            raise ValueError("backends: a backend port needs a fixed vip_port (replies could not be mapped back)")
        if any(a == self.vip for a, _ in parsed):
            raise ValueError("backends: a backend cannot be the vip itself")
        self.be_addr = np.array([a for a, _ in parsed], dtype=np.uint32)
        self.be_port = np.array([p for _, p in parsed], dtype=np.uint16)  # 0 = keep the client's port
        self.n_backends = len(parsed)
        if not isinstance(cfg["reverse"], bool):
            raise TypeError(f"reverse: expected a bool, got {type(cfg['reverse']).__name__}")
        self.reverse = cfg["reverse"]
        cap = m.as_int(cfg["flow_capacity"], "flow_capacity", 1, 1 << 26)
        idle = m.as_opt_seconds(cfg["idle_timeout_s"], "idle_timeout_s")
        close = m.as_opt_seconds(cfg["tcp_close_timeout_s"], "tcp_close_timeout_s")
        self.out_port = m.as_port(cfg["out_port"], "out_port")
        self.flows = ctx.flow_table("lb.flows", capacity=cap, value_dtype=_VALUE_DTYPE,
                                    idle_timeout_s=idle, tcp_close_timeout_s=close)
        nb = self.n_backends
        self.active = ctx.counters("lb.active", slots=nb)
        self.assigned = ctx.counters("lb.assigned", slots=nb)
        self._all = m.u64(np.arange(nb))
        want = np.where(self.be_port != 0, self.be_port, self.vip_port or 0).astype(np.uint64)
        self._reply_pairs = np.unique((self.be_addr.astype(np.uint64) << np.uint64(16)) | want)
        self._stats = dict.fromkeys(("balanced", "new_flows", "flows_ended", "replies", "passthrough",
                                     "table_full"), 0)
        self._per_backend = np.zeros(nb, dtype=np.int64)

    # ------------------------------------------------------------------------------------ packet path
    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        n = len(batch)
        if n == 0:
            return
        m.require_parsed(batch)
        sctx = m.state_context(ctx)
        pid0 = batch.packet_id[:1].astype(np.uint64)
        self._end_flows(self.flows.expire(int(batch.ts_ns.min())), sctx, pid0)

        keys = batch.key
        live = m.live_mask(batch) & (keys["family"] == 4) & (keys["proto"] == self.proto)
        to_vip = live & (m.v4_addr(keys, "dst") == np.uint32(self.vip))
        if self.vip_port is not None:
            to_vip &= keys["dport"] == self.vip_port
        fwd = m.live_mask(batch)
        batch.port[fwd] = self.out_port

        vi = np.flatnonzero(to_vip).astype(np.uint32)
        if len(vi):
            self._balance(batch, vi, sctx)
        replies = self._replies(batch, live & ~to_vip) if self.reverse else 0
        self._stats["replies"] += replies
        self._stats["passthrough"] += int(np.count_nonzero(fwd)) - len(vi) - replies

    def _balance(self, batch: _core.PacketBatch, vi: npt.NDArray[np.uint32], sctx: Any) -> None:
        keys = batch.key[vi]
        slots, is_new = self.flows.lookup_or_insert(
            keys, np.ascontiguousarray(batch.flow_id[vi]), np.ascontiguousarray(batch.ts_ns[vi]),
            np.ascontiguousarray(batch.tcp_flags[vi]))
        vals = self.flows.values
        new_slots = slots[is_new]
        if len(new_slots):
            pids = np.ascontiguousarray(batch.packet_id[vi][is_new])
            loads = self.active.read(sctx, self._all, np.full(self.n_backends, pids[0], dtype=np.uint64))
            picks = least_loaded(loads.astype(np.int64), len(new_slots))
            vals["backend"][new_slots] = picks
            ub, upids, (cnt,) = m.per_slot_sums(picks, self.n_backends, pids, np.ones(len(picks)))
            self.active.add(sctx, ub, cnt, upids)
            self.assigned.add(sctx, ub, cnt, upids)
            self._stats["new_flows"] += len(picks)
            self._per_backend += np.bincount(picks, minlength=self.n_backends)
        ok = slots != _core.NO_SLOT
        full = vi[~ok]
        if len(full):
            batch.port[full] = 0
            batch.drop[full] = int(_core.DropReason.TABLE_FULL)
            self._stats["table_full"] += len(full)
        idx = vi[ok]
        if len(idx) == 0:
            return
        sl = slots[ok]
        m.add_at(vals["packets"], sl)
        be = vals["backend"][sl]
        bport = self.be_port[be]
        dport = np.where(bport != 0, bport, keys["dport"][ok]).astype(np.uint16)
        batch.rewrite_destination(np.ascontiguousarray(idx), self.be_addr[be], dport)
        self._stats["balanced"] += len(idx)

    def _replies(self, batch: _core.PacketBatch, cand: npt.NDArray[np.bool_]) -> int:
        """Rewrite the source of backend replies back to the VIP; returns how many."""
        if not cand.any():
            return 0
        ci = np.flatnonzero(cand)
        keys = batch.key[ci]
        src = m.v4_addr(keys, "src")
        if self.vip_port is None:  # no backend ports either: any port of a backend address
            match = np.isin(src, self.be_addr)
        else:
            pair = (src.astype(np.uint64) << np.uint64(16)) | keys["sport"].astype(np.uint64)
            match = np.isin(pair, self._reply_pairs)
        ri = ci[match].astype(np.uint32)
        if len(ri) == 0:
            return 0
        if self.vip_port is None:
            sp = np.ascontiguousarray(keys["sport"][match])
        else:
            sp = np.full(len(ri), self.vip_port, dtype=np.uint16)
        batch.rewrite_source(ri, np.full(len(ri), self.vip, dtype=np.uint32), sp)
        return len(ri)

    def _end_flows(self, expired: npt.NDArray[Any], sctx: Any, pid: npt.NDArray[np.uint64]) -> None:
        if len(expired) == 0:
            return
        be = expired["value"]["backend"].astype(np.int64)
        cnt = np.bincount(be, minlength=self.n_backends)
        ub = np.flatnonzero(cnt)
        self.active.add(sctx, m.u64(ub), m.i64(-cnt[ub]), np.repeat(pid, len(ub)))
        self._stats["flows_ended"] += len(expired)

    # ------------------------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, int]:
        out = dict(self._stats)
        for b in range(self.n_backends):
            out[f"backend{b}.flows"] = int(self._per_backend[b])
        return out

    def snapshot(self) -> dict[str, Any]:
        """Python-side state for a checkpoint: per-backend flow counts and counters (see
        :meth:`VNF.snapshot`; the shared loads are in the SharedState image)."""
        return {"per_backend": self._per_backend.copy(), "stats": dict(self._stats)}

    def restore(self, state: dict[str, Any]) -> None:
        m.check_keys(state, {"per_backend", "stats"}, "AdaptiveLB.restore")
        pb = np.asarray(state["per_backend"], dtype=np.int64)
        if pb.shape != self._per_backend.shape:
            raise ValueError(f"AdaptiveLB.restore: per_backend has shape {pb.shape}, this LB has {self.n_backends} backends")
        self._per_backend[:] = pb
        self._stats.update({k: int(v) for k, v in state["stats"].items() if k in self._stats})

    def loads(self) -> npt.NDArray[np.uint64]:
        """Active flows per backend, over all workers (shared counters; control-plane read)."""
        return np.array([self.active.get(b) for b in range(self.n_backends)], dtype=np.uint64)

    def backend_of(self, keys: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        """This worker's backend index for client->VIP flow keys (-1 if it has no such flow)."""
        slots = self.flows.lookup(keys)
        out = np.full(len(slots), -1, dtype=np.int64)
        ok = slots != _core.NO_SLOT
        out[ok] = self.flows.values["backend"][slots[ok]]
        return out
