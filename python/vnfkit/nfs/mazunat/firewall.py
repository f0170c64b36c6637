"""Applying MazuNAT's rules to a batch: port forwards (both directions), the deny list, drops.

A mixin of :class:`~vnfkit.nfs.mazunat.MazuNAT` (it uses the instance's counters ``c`` and public
address). Forwards are stateless, like a static port-forward: inbound ``(proto, public_port)`` goes
to ``(server, server_port)``, and outbound packets from ``(server, server_port)`` leave from
``(public_addr, public_port)``; keeping no state for them means the server's replies are translated
on whichever queue RSS puts them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ... import _core
from .rules import TCP, UDP, NatRules

__all__ = ["EXTERNAL", "INTERNAL", "RuleSteps"]

#: Output port towards the Internet.
EXTERNAL = 1
#: Output port towards the internal network.
INTERNAL = 2

_POLICY = int(_core.DropReason.POLICY)


class RuleSteps:
    """Rule steps over index lists of a batch; each returns the packets it did not take."""

    c: dict[str, int]
    public: int

    def _drop(self, batch: _core.PacketBatch, idx: npt.NDArray[Any], reason: int, counter: str) -> None:
        if len(idx):
            batch.drop[idx] = reason
            batch.port[idx] = 0
            self.c[counter] += len(idx)

    def _deny(self, batch: _core.PacketBatch, rules: NatRules, idx: npt.NDArray[np.uint32],
              dst: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
        denied = self._denied(rules, dst[idx], batch.key["proto"][idx], batch.key["dport"][idx])
        if not denied.any():
            return idx
        self._drop(batch, idx[denied], _POLICY, "drop_denied")
        return idx[~denied]

    # ---------------------------------------------------------------------------- helpers
    @staticmethod
    def _icmp_type(batch: _core.PacketBatch, idx: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        pos = batch.offsets[idx].astype(np.int64) + batch.l4_offset[idx]
        has_l4 = (batch.flags[idx] & 4) != 0
        return np.where(has_l4, batch.data[np.where(has_l4, pos, 0)], 255).astype(np.uint8)

    @staticmethod
    def _denied(rules: NatRules, dst: npt.NDArray[np.uint32], proto: npt.NDArray[np.uint8],
                dport: npt.NDArray[np.uint16]) -> npt.NDArray[np.bool_]:
        hit = np.zeros(len(dst), bool)
        for net, mask, pr, lo, hi in rules._deny_arr.tolist():
            m = (dst & np.uint32(mask)) == np.uint32(net)
            if pr:
                m &= proto == pr
            if lo != 0 or hi != 65535:
                m &= (dport >= lo) & (dport <= hi)
            hit |= m
        return hit

    def _forward_in(self, batch: _core.PacketBatch, rules: NatRules, idx: npt.NDArray[np.uint32],
                    key: npt.NDArray[Any]) -> npt.NDArray[np.uint32]:
        """Port forwards: inbound (proto, public port) -> internal server. Returns the rest."""
        dport = key["dport"][idx]
        # fast path: no packet aims at a forwarded port (count_nonzero: a direct C call, unlike .any())
        if not np.count_nonzero(rules._fwd_in_any[dport]):
            return idx
        pr = key["proto"][idx]
        f = rules._fwd_in[(pr == UDP).view(np.uint8), dport]
        hit = f != 0
        if not hit.any():
            return idx
        hit &= (pr == TCP) | (pr == UDP)
        ii = idx[hit]
        fi = f[hit]
        batch.rewrite_destination(ii, rules._fwd_addr[fi], rules._fwd_port[fi])
        batch.port[ii] = INTERNAL
        self.c["forwards"] += len(ii)
        return idx[~hit]

    def _forward_replies(self, batch: _core.PacketBatch, rules: NatRules, idx: npt.NDArray[np.uint32],
                         key: npt.NDArray[Any], src: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
        """Outbound packets from a forward's server port leave from the forwarded public port."""
        sport = key["sport"][idx]
        if not np.count_nonzero(rules._fwd_rev_any[sport]):  # fast path: no packet comes from a server port
            return idx
        pr = key["proto"][idx]
        f = rules._fwd_rev[(pr == UDP).view(np.uint8), sport]
        hit = f != 0
        if not hit.any():
            return idx
        hit &= (rules._fwd_addr[f] == src[idx]) & ((pr == TCP) | (pr == UDP))
        if not hit.any():
            return idx
        ii = idx[hit]
        fi = f[hit]
        batch.rewrite_source(ii, np.full(len(ii), self.public, np.uint32), rules._fwd_pub[fi])
        batch.port[ii] = EXTERNAL
        self.c["forward_replies"] += len(ii)
        return idx[~hit]
