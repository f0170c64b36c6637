"""MazuNAT's shared aggregate state: the port pools, the ICMP echo map, and how ports are chosen.

Declared through the worker context (``ctx.port_pool`` / ``ctx.counters``), so every worker of a
runner gets the same objects and every access goes through the worker's recording context (logged
as a determinant, forced on replay):

* ``mazunat.tcp_ports`` / ``mazunat.udp_ports``: one :class:`~vnfkit.state.PortPool` per
  protocol (Click keeps separate TCP and UDP rewriters). With RSS affinity the pool is split into
  ``reta_size`` sub-pools by each port's Toeplitz contribution (see :func:`subpool_map`).
* ``mazunat.icmp_ids``: the ICMP echo identifier pool.
* **Per-queue shares.** With several queues, every port (and ICMP id) is owned by one queue: the
  ports of each (affinity) sub-pool are dealt round-robin to the queues (:func:`queue_split`), and a
  worker allocates only from its own shares, as VPP's NAT workers own port ranges. So no two
  workers ever compete for a port: the ports a worker hands out depend only on its own packets, in
  order, never on how the workers' batches interleave in time, and the thread and process backends
  choose the same ports. (A queue's share can run out while another's has ports left: that is
  counted as pool exhaustion on that queue.)
* ``mazunat.icmp_map`` / ``mazunat.icmp_peer``: shared counters per ICMP id holding the mapping
  (internal address and id, remote peer), so the worker that receives an echo reply, which RSS
  hashes on addresses only, can translate it.

Endpoint-dependent mode chooses TCP/UDP ports without the shared pools: see
:mod:`vnfkit.nfs.mazunat.endpoint`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from .rules import ICMP, TCP, UDP

__all__ = ["Affinity", "NatPools", "queue_split", "subpool_map"]


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


@lru_cache(maxsize=32)
def _queue_split(groups: bytes | None, n: int, num_queues: int) -> npt.NDArray[np.uint16]:
    g = np.zeros(n, np.int64) if groups is None else np.frombuffer(groups, np.uint16).astype(np.int64)
    order = np.argsort(g, kind="stable")  # ports grouped by sub-pool, ascending within each
    starts = np.searchsorted(g[order], g[order], side="left")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - starts  # position of each port within its sub-pool
    out = (g * num_queues + rank % num_queues).astype(np.uint16)
    out.flags.writeable = False
    return out


def queue_split(subpool_of: npt.NDArray[np.uint16] | None, n: int, num_queues: int) -> npt.NDArray[np.uint16]:
    """Sub-pool of each of `n` ports when each queue owns a share: port ``i`` of sub-pool ``g``
    (``subpool_of``, or one sub-pool if None), counted in port order, goes to queue ``i %
    num_queues``, as sub-pool ``g * num_queues + queue``. Cached, so every worker declares the pool
    with the same read-only array."""
    if num_queues * (1 if subpool_of is None else int(subpool_of.max()) + 1) > 65536:
        raise ValueError(f"num_queues: {num_queues} queues need more than 65536 port sub-pools")
    return _queue_split(None if subpool_of is None else subpool_of.tobytes(), n, num_queues)


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
        nq = max(1, int(ctx.num_queues))
        #: this worker's share of every sub-pool: sub-pool g of the caller is g * nq + queue
        self.nq, self.queue = nq, int(ctx.queue)
        ports_of = subpool_of if nq == 1 else queue_split(subpool_of, hi - lo + 1, nq)
        ids_of = None if nq == 1 else queue_split(None, icmp_hi - icmp_lo + 1, nq)
        self.tcp = ctx.port_pool("mazunat.tcp_ports", lo=lo, hi=hi, subpool_of=ports_of)
        self.udp = ctx.port_pool("mazunat.udp_ports", lo=lo, hi=hi, subpool_of=ports_of)
        self.icmp = ctx.port_pool("mazunat.icmp_ids", lo=icmp_lo, hi=icmp_hi, subpool_of=ids_of)
        self._own = None if nq == 1 else np.full(1 << 16, self.queue, np.uint16)  # sliced, never written
        n = icmp_hi - icmp_lo + 1
        self.icmp_map = ctx.counters("mazunat.icmp_map", slots=n)
        self.icmp_peer = ctx.counters("mazunat.icmp_peer", slots=n)
        self.icmp_lo = icmp_lo
        self.by_proto = {TCP: self.tcp, UDP: self.udp, ICMP: self.icmp}

    def fast_path_args(self, aff: Affinity | None) -> dict[str, Any] | None:
        """Keyword arguments that make ``_core.nat_fast_path`` choose TCP/UDP ports exactly as
        :meth:`allocate` does (this queue's shares, the affinity rounds), or None where the pools
        lack a sub-pool that choice could ask for (then new flows take :meth:`allocate`)."""
        groups = 1 if aff is None else aff.mask + 1
        need = groups * self.nq
        if need > 65536 or self.tcp.subpools < need or self.udp.subpools < need:
            return None
        kw: dict[str, Any] = {"num_queues": self.nq, "queue": self.queue}
        if aff is not None:
            kw.update(toeplitz=aff.toeplitz, cand=aff.cand, reta_mask=aff.mask)
        return kw

    def allocate(self, proto: int, sctx: Any, ids: npt.NDArray[np.uint64], aff: Affinity | None,
                 remote: npt.NDArray[np.uint32], rport: npt.NDArray[np.uint16],
                 hashes: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint16]:
        """One port (or ICMP id) per new flow; 0 where the (sub-)pool is exhausted. With affinity,
        TCP/UDP ports come from a sub-pool that keeps the reply on this queue, trying the next
        candidate sub-pool only where the preferred one is exhausted."""
        pool = self.by_proto[proto]
        if proto == ICMP or aff is None:
            if self._own is None:
                return pool.allocate(sctx, ids)  # type: ignore[no-any-return]
            n = len(ids)
            own = self._own[:n] if n <= len(self._own) else np.full(n, self.queue, np.uint16)
            return pool.allocate(sctx, ids, own)  # type: ignore[no-any-return]
        base = aff.base(remote, rport)
        nc = len(aff.cand)
        start = (hashes >> np.uint32(8)) % np.uint32(nc)
        ports = np.zeros(len(ids), np.uint16)
        todo = np.arange(len(ids))
        for r in range(nc):
            g = aff.subpool(base[todo], start[todo], r)
            if self.nq > 1:
                g = (g.astype(np.uint32) * np.uint32(self.nq) + np.uint32(self.queue)).astype(np.uint16)
            got = pool.allocate(sctx, np.ascontiguousarray(ids[todo]), g)
            ports[todo] = got
            todo = todo[got == 0]
            if len(todo) == 0:
                break
        return ports
