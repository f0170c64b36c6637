"""MazuNAT's native fast path: the calls into ``_core.nat_fast_path`` / ``_core.NatFastPath`` and
the Python steps for the packets they hand back.

A mixin of :class:`~vnfkit.nfs.mazunat.MazuNAT` (it uses the instance's tables, buffers, pools,
counters and its step-by-step methods). The common batch (TCP/UDP both ways, no expiry scan due) is
one call of the per-worker ``NatFastPath`` object; a batch with anything else is split in Python
and its TCP/UDP lists go through :meth:`FastSteps._fast`. Both defer the same packets (new flows
without native pools, a full table, expired mappings, forwarded ports) to :meth:`FastSteps._fast_done`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ... import _core
from ...tables import FlowTable
from .firewall import EXTERNAL, INTERNAL
from .rules import TCP, UDP, NatRules

__all__ = ["FastSteps"]


class FastSteps:
    """The fast-path steps of MazuNAT (a mixin; see the module docstring)."""

    c: dict[str, int]
    out: FlowTable
    inb: FlowTable
    net: int
    mask: int
    public: int
    done_ns: int
    timeout_ns: dict[int, int]
    _mark: npt.NDArray[np.uint8]
    _armed: npt.NDArray[np.uint8]
    _sctx: Any
    _native_pools: tuple[Any, Any] | None
    _native_kw: dict[str, Any]

    def _stepwise(self, batch: _core.PacketBatch, sctx: Any, rules: NatRules, key: npt.NDArray[Any],
                  src: npt.NDArray[np.uint32], dst: npt.NDArray[np.uint32], oidx: npt.NDArray[np.uint32],
                  iidx: npt.NDArray[np.uint32], onp: npt.NDArray[np.uint32]) -> None:
        raise NotImplementedError

    def _outbound_rest(self, batch: _core.PacketBatch, sctx: Any, idx: npt.NDArray[np.uint32],
                       slots: npt.NDArray[np.uint32], new: npt.NDArray[np.bool_], set_port: bool = False) -> None:
        raise NotImplementedError

    def _forward_in(self, batch: _core.PacketBatch, rules: NatRules, idx: npt.NDArray[np.uint32],
                    key: npt.NDArray[Any]) -> npt.NDArray[np.uint32]:
        raise NotImplementedError

    def _inbound(self, batch: _core.PacketBatch, sctx: Any, idx: npt.NDArray[np.uint32]) -> None:
        raise NotImplementedError

    def _fast(self, batch: _core.PacketBatch, sctx: Any, rules: NatRules, src: npt.NDArray[np.uint32],
              dst: npt.NDArray[np.uint32], oidx: npt.NDArray[np.uint32], iidx: npt.NDArray[np.uint32]) -> None:
        """TCP/UDP in one native call (``nat_fast_path``) for the packets of existing mappings; the
        packets it defers (new flows, a full table, expired mappings, forwarded ports) take the
        step-by-step path below, outbound first. Same decisions as :meth:`_stepwise`."""
        n = len(batch)
        if self._d_cap < n:
            self._grow(n)
        r = _core.nat_fast_path(
            batch, self.out._t, self.inb._t, oidx, iidx, self.public, self.done_ns, rules.fwd_rev_flags,
            rules.fwd_in_flags, self._mark, self._d_oidx, self._d_oslot, self._d_onew, self._d_iidx,
            armed=self._armed, **self._pool_kw(sctx))
        if r[0] == 1:  # a packet from a forward's server port: the whole batch step by step
            self._stepwise(batch, sctx, rules, batch.key, src, dst, oidx, iidx, oidx[:0])
            return
        self._fast_done(batch, sctx, rules, r)

    def _fast_done(self, batch: _core.PacketBatch, sctx: Any, rules: NatRules, r: tuple[int, ...]) -> None:
        """Count a fast-path call's result `r` and decide the packets it deferred (new flows without
        native pools, a full table, expired mappings, forwarded ports), outbound first, through the
        recording context `sctx`. (After an expired mapping, status 2 or 3, the deferred inbound
        list is the whole inbound list.)"""
        _, nod, nid, ntr, nrtr, nnew, nexh, dexh, dfull = r
        c = self.c
        c["translations"] += ntr
        c["reverse_translations"] += nrtr
        if nnew or nexh or dfull:
            c["new_mappings"] += nnew
            c["pool_exhausted_events"] += nexh
            c["drop_pool_exhausted"] += dexh
            c["drop_table_full"] += dfull
        if not (nod or nid):
            return
        if nod:
            self._outbound_rest(batch, sctx, self._d_oidx[:nod], self._d_oslot[:nod],
                                self._d_onew[:nod].view(np.bool_))
        rest = self._d_iidx[:nid]
        if len(rest):
            if len(rules.forwards):
                rest = self._forward_in(batch, rules, rest, batch.key)
            if len(rest):
                self._inbound(batch, sctx, rest)

    def _grow(self, n: int) -> None:
        """Deferred-packet buffers for batches of up to `n` packets, and the native fast path over
        them (its pools, timeouts and affinity as :meth:`_fast` passes them)."""
        n = max(n, 1024)
        self._d_cap = n
        self._d_oidx = np.zeros(n, np.uint32)
        self._d_oslot = np.zeros(n, np.uint32)
        self._d_onew = np.zeros(n, np.uint8)
        self._d_iidx = np.zeros(n, np.uint32)
        self._engine = _core.NatFastPath(
            self.out._t, self.inb._t, self.net, self.mask, self.public, EXTERNAL, INTERNAL, self.done_ns,
            self._mark, self._d_oidx, self._d_oslot, self._d_onew, self._d_iidx, self._armed,
            **self._pool_kw(self._sctx))

    def _pool_kw(self, sctx: Any) -> dict[str, Any]:
        """The fast path's keyword arguments for new TCP/UDP mappings made natively through `sctx`
        (none: new flows are deferred to :meth:`_new_mappings`)."""
        pools = self._native_pools
        if pools is None:
            return {}
        return dict(tcp_pool=pools[0], udp_pool=pools[1], state_ctx=sctx, tcp_timeout=self.timeout_ns[TCP],
                    udp_timeout=self.timeout_ns[UDP], **self._native_kw)
