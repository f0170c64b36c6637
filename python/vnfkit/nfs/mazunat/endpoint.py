"""Endpoint-dependent port choice for MazuNAT (``"endpoint_dependent": true``).

A mapping is keyed by the full 5-tuple, and a public port is free for a flow when no live mapping
uses it towards the same remote address and port. The choice is claimed in the worker's reply
table, so it is per-flow state (deterministic, nothing shared to log).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ...tables import NO_SLOT, FlowTable
from .columns import _entry_keys, addr_column
from .pools import Affinity

__all__ = ["EndpointClaims", "EndpointPorts"]


def _mix32(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """A 64-bit finaliser (splitmix64), for spreading candidate ports."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))  # type: ignore[no-any-return]


class EndpointPorts:
    """Endpoint-dependent port choice (as VPP NAT44-ED and Linux conntrack): a public port can serve
    many flows at once as long as their remote (address, port) differ, so one public address holds
    far more than 64 k concurrent mappings.

    For each new flow, candidate ports are drawn from a hash of its 5-tuple (``tries`` of them; with
    RSS affinity only ports whose sub-pool keeps the reply on this queue); the first candidate whose
    reply key is not yet in the worker's reply table is claimed there (a ``lookup_or_insert``: two
    new flows of one batch can never claim the same reply key). Deterministic: the choice depends
    only on the flow and this worker's table."""

    def __init__(self, lo: int, hi: int, subpool_of: npt.NDArray[np.uint16] | None, tries: int = 16) -> None:
        ports = np.arange(lo, hi + 1, dtype=np.uint16)
        self.tries = tries
        if subpool_of is None:
            self.sub_ports = ports
            self.sub_off = np.zeros(1, np.int64)
            self.sub_len = np.full(1, len(ports), np.int64)
        else:
            order = np.argsort(subpool_of, kind="stable")
            self.sub_ports = ports[order]
            counts = np.bincount(subpool_of, minlength=int(subpool_of.max()) + 1 if len(subpool_of) else 1)
            self.sub_len = counts.astype(np.int64)
            self.sub_off = (np.cumsum(counts) - counts).astype(np.int64)

    def candidates(self, seed: npt.NDArray[np.uint64], r: int, aff: Affinity | None,
                   base: npt.NDArray[np.uint32] | None) -> npt.NDArray[np.uint16]:
        """Candidate `r` for each flow (0 where its sub-pool has no port)."""
        h = _mix32(seed + np.uint64((r * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF))
        if aff is None or base is None:
            g = np.zeros(len(seed), np.int64)
        else:
            start = (h >> np.uint64(40)).astype(np.uint32) % np.uint32(len(aff.cand))
            g = aff.subpool(base, start, 0).astype(np.int64)
            g = np.where(g < len(self.sub_len), g, 0)
        n = self.sub_len[g]
        safe = np.maximum(n, 1)
        pick = self.sub_ports[self.sub_off[g] + (h % safe.astype(np.uint64)).astype(np.int64)]
        return np.where(n > 0, pick, 0).astype(np.uint16)


class EndpointClaims:
    """MazuNAT's endpoint-dependent allocation step (a mixin: it uses the instance's tables and
    record helpers)."""

    edm: EndpointPorts | None
    aff: Affinity | None
    inb: FlowTable
    out: FlowTable
    _capacity: int
    _in_vals: npt.NDArray[Any]
    _out_vals: npt.NDArray[Any]

    def _record(self, proto: int, nslots: npt.NDArray[np.uint32], ports: npt.NDArray[np.uint16]) -> npt.NDArray[Any]:
        raise NotImplementedError

    def _reply_keys(self, ent: npt.NDArray[Any], ports: npt.NDArray[np.uint16], proto: int) -> npt.NDArray[Any]:
        raise NotImplementedError

    def _claim(self, proto: int, nslots: npt.NDArray[np.uint32], keys: npt.NDArray[Any],
               hashes: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
        """Endpoint-dependent mode: choose each new flow's public port by claiming a free reply key
        (see :class:`~vnfkit.nfs.mazunat.endpoint.EndpointPorts`). Returns the mask of flows that got one."""
        assert self.edm is not None
        ent = _entry_keys(self.out, nslots)
        src = addr_column(ent["src"]).astype(np.uint64)
        remote = addr_column(ent["dst"])
        seed = (src << np.uint64(32)) ^ (ent["sport"].astype(np.uint64) << np.uint64(16)) \
            ^ (remote.astype(np.uint64) * np.uint64(0x100000001B3)) ^ ent["dport"].astype(np.uint64) \
            ^ (np.uint64(proto) << np.uint64(56))
        base = self.aff.base(remote, np.ascontiguousarray(ent["dport"])) if self.aff is not None else None
        ok = np.zeros(len(nslots), bool)
        todo = np.arange(len(nslots))
        it = self.inb
        for r in range(self.edm.tries):
            cand = self.edm.candidates(seed[todo], r, self.aff, None if base is None else base[todo])
            usable = cand != 0
            rows = todo[usable]
            if len(rows):
                islots, inew = it.lookup_or_insert(self._reply_keys(ent[rows], cand[usable], proto))
                won = inew & (islots != NO_SLOT)
                w = rows[won]
                if len(w):
                    ws = nslots[w]
                    self._record(proto, ws, cand[usable][won])
                    self._in_vals[islots[won]] = ws
                    self._out_vals["in_slot"][ws] = islots[won]
                    ok[w] = True
                if len(it) >= self._capacity:
                    break  # the reply table is full: nothing more can be claimed in this call
            todo = todo[~ok[todo]]
            if len(todo) == 0:
                break
        return ok
