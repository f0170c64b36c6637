"""MazuNAT's configuration: the keys, their defaults, and one validation pass that names the key.

Every key is checked for its type *and* range before anything is built: numbers must be finite and
within the stated bounds (so ``1e11`` seconds or ``Infinity`` is a one-line ``ValueError`` naming
the key, never an ``OverflowError`` later), and switches must be real booleans (JSON ``true`` /
``false``; the string ``"no"`` is rejected, not read as true).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .rules import ICMP, TCP, UDP, _ip4, _net4, _port

__all__ = ["DEFAULTS", "MAX_FLOWS", "MAX_SECONDS", "NatConfig", "parse_config"]

#: Largest accepted timeout or interval, in seconds (ten years: far above any NAT timer, and small
#: enough that a packet time plus the timeout, in nanoseconds, stays well inside uint64).
MAX_SECONDS = 10 * 365.25 * 86400.0
#: Largest ``max_flows`` (per worker table).
MAX_FLOWS = 1 << 26

DEFAULTS: dict[str, Any] = {
    "internal_net": "10.0.0.0/8",
    "public_addr": "192.0.2.1",
    "port_lo": 50000,
    "port_hi": 65535,
    "icmp_id_lo": 50000,
    "icmp_id_hi": 65535,
    "tcp_timeout_s": 86400.0,
    "tcp_done_timeout_s": 240.0,
    "udp_timeout_s": 300.0,
    "icmp_timeout_s": 60.0,
    "gc_interval_s": 1.0,
    "max_flows": 65536,
    "affinity": True,
    "endpoint_dependent": False,
    "forwards": [
        {"proto": "tcp", "port": 22, "to": "10.0.0.2", "to_port": 22},
        {"proto": "tcp", "port": 80, "to": "10.0.0.2", "to_port": 80},
        {"proto": "tcp", "port": 443, "to": "10.0.0.2", "to_port": 443},
    ],
    "deny": [],
}

_SECONDS_KEYS = ("tcp_timeout_s", "tcp_done_timeout_s", "udp_timeout_s", "icmp_timeout_s", "gc_interval_s")
_BOOL_KEYS = ("affinity", "endpoint_dependent")


@dataclass(frozen=True)
class NatConfig:
    """A validated MazuNAT configuration (times in nanoseconds, addresses as host-order ints)."""

    raw: Mapping[str, Any]        # the merged user + default dict (for rules and comparisons)
    net: int
    mask: int
    public: int
    port_lo: int
    port_hi: int
    icmp_lo: int
    icmp_hi: int
    timeout_ns: Mapping[int, int]  # per protocol: TCP (established), UDP, ICMP
    done_ns: int                   # TCP after FIN/RST (never above the established timeout)
    gc_ns: int
    max_flows: int
    affinity: bool
    endpoint_dependent: bool


def _seconds(key: str, v: Any) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{key}: must be a positive number of seconds, got {v!r}")
    f = float(v)
    if not (math.isfinite(f) and 0 < f <= MAX_SECONDS):
        raise ValueError(f"{key}: must be a finite number of seconds in (0, {MAX_SECONDS:.0f}], got {v!r}")
    ns = int(f * 1e9)
    if ns < 1:
        raise ValueError(f"{key}: must be at least 1 ns, got {v!r}")
    return ns


def _flag(key: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{key}: must be true or false (a JSON boolean), got {v!r}")
    return bool(v)


def parse_config(config: Mapping[str, Any]) -> NatConfig:
    """Merge `config` over :data:`DEFAULTS` and validate every key (TypeError for an unknown key,
    ValueError naming the key for a bad value)."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"MazuNAT: unknown config keys {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    cfg = {**DEFAULTS, **config}
    net, mask = _net4(cfg["internal_net"], "internal_net")
    public = _ip4(cfg["public_addr"], "public_addr")
    if (public & mask) == net:
        raise ValueError("public_addr: must not be inside internal_net")
    lo, hi = _port(cfg["port_lo"], "port_lo"), _port(cfg["port_hi"], "port_hi")
    ilo, ihi = _port(cfg["icmp_id_lo"], "icmp_id_lo"), _port(cfg["icmp_id_hi"], "icmp_id_hi")
    if lo > hi:
        raise ValueError(f"port_lo/port_hi: low must be <= high, got {lo} > {hi}")
    if ilo > ihi:
        raise ValueError(f"icmp_id_lo/icmp_id_hi: low must be <= high, got {ilo} > {ihi}")
    ns = {k: _seconds(k, cfg[k]) for k in _SECONDS_KEYS}
    mf = cfg["max_flows"]
    if isinstance(mf, (bool, np.bool_)) or not isinstance(mf, (int, np.integer)) or not 1 <= int(mf) <= MAX_FLOWS:
        raise ValueError(f"max_flows: must be an int in [1, 2**26], got {mf!r}")
    flags = {k: _flag(k, cfg[k]) for k in _BOOL_KEYS}
    timeout_ns = {TCP: ns["tcp_timeout_s"], UDP: ns["udp_timeout_s"], ICMP: ns["icmp_timeout_s"]}
    return NatConfig(raw=cfg, net=net, mask=mask, public=public, port_lo=lo, port_hi=hi, icmp_lo=ilo, icmp_hi=ihi,
                     timeout_ns=timeout_ns, done_ns=min(ns["tcp_done_timeout_s"], timeout_ns[TCP]),
                     gc_ns=ns["gc_interval_s"], max_flows=int(mf), affinity=flags["affinity"],
                     endpoint_dependent=flags["endpoint_dependent"])
