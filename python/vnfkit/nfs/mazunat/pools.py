"""MazuNAT's shared aggregate state: the port pools, the ICMP echo map, and how ports are chosen.

Declared through the worker context (``ctx.port_pool`` / ``ctx.counters``), so every worker of a
runner gets the same objects and every access goes through the worker's recording context (logged
as a determinant, forced on replay):

* ``mazunat.tcp_ports`` / ``mazunat.udp_ports``: one :class:`~vnfkit.state.PortPool` per
  protocol (Click keeps separate TCP and UDP rewriters). With RSS affinity the pool is split into
  ``reta_size`` sub-pools by each port's Toeplitz contribution (see :func:`subpool_map`).
* ``mazunat.icmp_ids``: the ICMP echo identifier pool.
* ``mazunat.icmp_map`` / ``mazunat.icmp_peer``: shared counters per ICMP id holding the mapping
  (internal address and id, remote peer), so the worker that receives an echo reply, which RSS
  hashes on addresses only, can translate it.

Endpoint-dependent mode (:class:`EndpointPorts`) chooses TCP/UDP ports without the shared pools:
a mapping is keyed by the full 5-tuple, and a public port is free for a flow when no live mapping
uses it towards the same remote address and port. The choice is claimed in the worker's reply
table, so it is per-flow state (deterministic, nothing shared to log).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from .rules import ICMP, TCP, UDP

__all__ = ["EndpointPorts", "NatPools", "subpool_map"]


def _toeplitz(cl: Any) -> Any:
    from ...classify import Toeplitz

    return Toeplitz(cl.key)


@lru_cache(maxsize=16)
def _subpool_map(key: bytes, reta_size: int, lo: int, hi: int) -> npt.NDArray[np.uint16]:
    from ...classify import Toeplitz

    ports = np.arange(lo, hi + 1, dtype=np.uint16)
    z32 = np.zeros(len(ports), np.uint32)
    contrib = Toeplitz(key).hash_v4(z32, z32, np.zeros(len(ports), np.uint16), ports)
    out = (contrib & np.uint32(reta_size - 1)).astype(np.uint16)
    out.flags.writeable = False
    return out


def subpool_map(cl: Any, lo: int, hi: int) -> npt.NDArray[np.uint16]:
    """Sub-pool of every port in [lo, hi] for classifier `cl`: the RETA-index bits that the port
    contributes to the reply's Toeplitz hash (Toeplitz is linear: h(reply with port p) =
    h(reply with port 0) XOR C(p)). Cached, so every worker of a runner passes the *same* read-only
    array when it declares the pool."""
    return _subpool_map(bytes(cl.key), int(cl.reta.size), lo, hi)


class Affinity:
    """Which sub-pools keep a new flow's reply on this worker's queue.

    A new flow on queue ``q`` whose reply hashes to ``h0`` with port 0 needs a port from a
    sub-pool ``g`` with ``RETA[(h0 ^ g) & mask] == q``; the candidates ``g`` are ``cand ^ base``
    for the RETA indices ``cand`` that map to ``q``."""

    def __init__(self, cl: Any, queue: int, public: int) -> None:
        reta = np.asarray(cl.reta.table)
        self.mask = len(reta) - 1
        self.cand = np.flatnonzero(reta == queue).astype(np.uint32)
        self.toeplitz = _toeplitz(cl)
        self.public = public

    def base(self, remote: npt.NDArray[np.uint32], rport: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint32]:
        n = len(remote)
        h0 = self.toeplitz.hash_v4(remote, np.full(n, self.public, np.uint32), rport, np.zeros(n, np.uint16))
        return h0 & np.uint32(self.mask)  # type: ignore[no-any-return]

    def subpool(self, base: npt.NDArray[np.uint32], start: npt.NDArray[np.uint32], r: int) -> npt.NDArray[np.uint16]:
        nc = len(self.cand)
        return (self.cand[(start + np.uint32(r)) % np.uint32(nc)] ^ base).astype(np.uint16)


class NatPools:
    """The shared pools and the ICMP echo map of one runner (declared once, found by every worker)."""

    def __init__(self, ctx: Any, lo: int, hi: int, icmp_lo: int, icmp_hi: int,
                 subpool_of: npt.NDArray[np.uint16] | None) -> None:
        self.tcp = ctx.port_pool("mazunat.tcp_ports", lo=lo, hi=hi, subpool_of=subpool_of)
        self.udp = ctx.port_pool("mazunat.udp_ports", lo=lo, hi=hi, subpool_of=subpool_of)
        self.icmp = ctx.port_pool("mazunat.icmp_ids", lo=icmp_lo, hi=icmp_hi)
        n = icmp_hi - icmp_lo + 1
        self.icmp_map = ctx.counters("mazunat.icmp_map", slots=n)
        self.icmp_peer = ctx.counters("mazunat.icmp_peer", slots=n)
        self.icmp_lo = icmp_lo
        self.by_proto = {TCP: self.tcp, UDP: self.udp, ICMP: self.icmp}

    def allocate(self, proto: int, sctx: Any, ids: npt.NDArray[np.uint64], aff: Affinity | None,
                 remote: npt.NDArray[np.uint32], rport: npt.NDArray[np.uint16],
                 hashes: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint16]:
        """One port (or ICMP id) per new flow; 0 where the (sub-)pool is exhausted. With affinity,
        TCP/UDP ports come from a sub-pool that keeps the reply on this queue, trying the next
        candidate sub-pool only where the preferred one is exhausted."""
        pool = self.by_proto[proto]
        if proto == ICMP or aff is None:
            return pool.allocate(sctx, ids)  # type: ignore[no-any-return]
        base = aff.base(remote, rport)
        nc = len(aff.cand)
        start = (hashes >> np.uint32(8)) % np.uint32(nc)
        ports = np.zeros(len(ids), np.uint16)
        todo = np.arange(len(ids))
        for r in range(nc):
            g = aff.subpool(base[todo], start[todo], r)
            got = pool.allocate(sctx, np.ascontiguousarray(ids[todo]), g)
            ports[todo] = got
            todo = todo[got == 0]
            if len(todo) == 0:
                break
        return ports


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
