"""Traffic and oracle settings per middlebox for recovery trials (tests, CLI, experiments).

:func:`workload` returns the VNF class, a configuration whose timeouts outlast the trace (the
oracle's mapping check assumes no flow expires mid-run), batches of generated traffic with shared
state under contention, and the oracle options that fit the middlebox.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _core, traffic

__all__ = ["NFS", "Workload", "workload"]

_VIP = "203.0.113.10"


@dataclass
class Workload:
    vnf: type
    config: dict[str, Any]
    batches: list[Any]
    per_flow_decisions: bool = True
    non_monotone: tuple[str, ...] = field(default_factory=tuple)


def _split(b: Any, size: int) -> list[Any]:
    n = len(b)
    return [b.select(np.arange(s, min(s + size, n), dtype=np.uint32)) for s in range(0, n, size)]


def _to_vip(b: Any) -> Any:
    keys = b.key.copy()
    keys["dst"][:, :4] = np.frombuffer(ipaddress.IPv4Address(_VIP).packed, dtype=np.uint8)
    keys["dport"] = 80
    keys["proto"] = 6
    return _core.build_packets(keys, np.full(len(b), 64, np.uint16), np.ascontiguousarray(b.ts_ns),
                               np.ascontiguousarray(b.tcp_flags), np.zeros(len(b), np.uint32))


def workload(nf: str, *, packets: int = 4000, flows: int = 300, batch: int = 128, seed: int = 0,
             rate_pps: float | None = None) -> Workload:
    """The recovery workload of middlebox `nf` (one of :data:`NFS`); `rate_pps`: the packet rate of
    the trace's timestamps (default: the generator's, 1.49 Mpps)."""
    if nf not in NFS:
        raise ValueError(f"nf: expected one of {list(NFS)}, got {nf!r}")
    gen: Callable[..., Any]
    if rate_pps is not None:
        import functools

        gen = functools.partial(traffic.generate, rate_pps=rate_pps)
    else:
        gen = traffic.generate
    long = {"idle_timeout_s": 1e5, "tcp_close_timeout_s": 1e5}
    if nf == "simplenat":
        from ..nfs.simplenat import SimpleNAT

        b = gen(flows, packets, seed=seed)
        return Workload(SimpleNAT, dict(long), _split(b, batch))
    if nf == "monitor":
        from ..nfs.monitor import Monitor

        b = gen(flows, packets, seed=seed, ipv6_fraction=0.2)
        return Workload(Monitor, dict(long), _split(b, batch))
    if nf == "adaptive_lb":
        from ..nfs.adaptive_lb import AdaptiveLB

        b = _to_vip(gen(flows, packets, seed=seed, udp_fraction=0.0))
        return Workload(AdaptiveLB, {"vip": _VIP, **long}, _split(b, batch), non_monotone=("lb.active",))
    if nf == "mazunat":
        from ..nfs.mazunat import MazuNAT

        # Outbound flows from 10/8: every worker allocates from the one shared port pool.
        b = gen(flows, packets, seed=seed)
        return Workload(MazuNAT, {}, _split(b, batch))
    from ..nfs.qos import QoS

    b = gen(flows, packets, seed=seed, udp_fraction=0.5)
    # Rates well below the offered load so that both buckets drop (contended shared state).
    classes = [{"name": "dns", "proto": "udp", "rate_pps": 200_000, "burst": 50},
               {"name": "web", "proto": "tcp", "rate_pps": 300_000, "burst": 50}]
    return Workload(QoS, {"classes": classes}, _split(b, batch), per_flow_decisions=False)


#: Middleboxes with recovery workloads (the WAN optimizer is not here yet).
NFS = ("simplenat", "monitor", "adaptive_lb", "qos", "mazunat")
