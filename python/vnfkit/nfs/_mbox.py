"""Small helpers shared by the batch-code middleboxes (SimpleNAT, Monitor, AdaptiveLB, QoS).

Nothing here is middlebox logic: config validation that names the offending key, IPv4 address
columns of a parsed batch, per-batch aggregation for shared counters, and the worker's recording
context. Shared variables are declared with ``ctx.counters(...)`` and its siblings (vnfkit.vnf).
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _core

#: Packet-flag bit set by the parser when the packet has a parsed TCP/UDP/ICMP header.
FLAG_HAS_L4 = 1 << 2

def state_context(ctx: Any) -> Any:
    """The shared-state recording context of this worker: ``ctx.state`` (the runner's, or the
    replay context a backup puts in its place), else the logged ``ctx.shared.context(ctx.queue)``."""
    sc = getattr(ctx, "state", None)
    return sc if sc is not None else ctx.shared.context(ctx.queue)


# ------------------------------------------------------------------------------------------ config


def check_keys(config: dict[str, Any], allowed: set[str], who: str) -> None:
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise TypeError(f"{who}: unknown config key(s) {unknown}; allowed: {sorted(allowed)}")


def as_int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{field}: expected an int, got {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{field}: must be in [{lo}, {hi}], got {v}")
    return v


def as_float(value: Any, field: str, lo: float, hi: float = math.inf, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{field}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ValueError(f"{field}: must be a finite number in {bound}, got {value!r}")
    return v


def as_opt_seconds(value: Any, field: str) -> float | None:
    if value is None:
        return None
    return as_float(value, field, 0.0, 1e6, lo_open=True)


def as_port(value: Any, field: str, *, allow_zero: bool = False) -> int:
    """An egress port number (1-65535; 0 means drop in PacketBatch.port)."""
    return as_int(value, field, 0 if allow_zero else 1, 65535)


def as_choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected one of {list(choices)}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{field}: expected one of {list(choices)}, got {value!r}")
    return value


def as_ipv4(value: Any, field: str) -> int:
    """An IPv4 address (dotted string) as a host-order int."""
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected an IPv4 address string, got {type(value).__name__}")
    try:
        return int(ipaddress.IPv4Address(value))
    except ValueError as exc:
        raise ValueError(f"{field}: not an IPv4 address: {value!r}") from exc


def as_ipv4_prefix(value: Any, field: str) -> tuple[int, int]:
    """An IPv4 prefix "a.b.c.d/len" (host bits must be zero) as (network int, prefix length)."""
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected an IPv4 prefix string like '10.0.0.0/8', got {type(value).__name__}")
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{field}: not an IPv4 prefix with zero host bits: {value!r} ({exc})") from exc
    return int(net.network_address), int(net.prefixlen)


def as_proto(value: Any, field: str) -> int:
    names = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
    if isinstance(value, str):
        if value.lower() not in names:
            raise ValueError(f"{field}: unknown protocol {value!r}; use one of {sorted(names)} or a number")
        return names[value.lower()]
    return as_int(value, field, 0, 255)


def prefix_mask(plen: int) -> int:
    return ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF) if plen else 0


# ------------------------------------------------------------------------------------------ batches


def v4_addr(keys: npt.NDArray[Any], side: str) -> npt.NDArray[np.uint32]:
    """IPv4 addresses (host-order uint32) of the keys' `side` ("src" or "dst"); meaningless for v6."""
    raw = np.ascontiguousarray(keys[side][:, :4])
    return raw.view(">u4").reshape(-1).astype(np.uint32)


def ip_bytes(batch: _core.PacketBatch) -> npt.NDArray[np.int64]:
    """IP total length of every packet (L3 header + payload, Ethernet padding excluded), as NetFlow counts."""
    n = batch.l4_offset.astype(np.int64) - batch.l3_offset + batch.l4_len
    # Bounded by the frame: columns are writable from Python, and a negative or oversized count
    # would silently wrap the shared uint64 byte counters.
    return np.clip(n, 0, np.diff(batch.offsets).astype(np.int64))


def live_mask(batch: _core.PacketBatch) -> npt.NDArray[np.bool_]:
    """Packets the VNF must decide: parsed fine (drop == 0). Malformed ones stay dropped."""
    return np.asarray(batch.drop == 0)


def require_parsed(batch: _core.PacketBatch) -> None:
    """ValueError if the batch was not parsed: the parser gives every packet it accepts family 4 or 6
    and every packet it rejects a drop reason, so a packet with neither was never parsed."""
    if np.any((batch.drop == 0) & (batch.key["family"] == 0)):
        raise ValueError("batch: not parsed (call batch.parse() before process(); the Runner's input must be parsed)")


def per_key_sums(
    keys: npt.NDArray[np.uint64], packet_ids: npt.NDArray[np.uint64], *weights: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], list[npt.NDArray[np.int64]]]:
    """Group a batch by key: (unique keys, packet id of each key's first packet, sum of each weight).

    Shared counters are then updated with one logged access per distinct key and batch, made for
    the first packet of that key (so replaying the batch repeats exactly the same accesses)."""
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    sums = [np.bincount(inv, weights=w, minlength=len(uniq)).astype(np.int64) for w in weights]
    return uniq.astype(np.uint64), packet_ids[first].astype(np.uint64), sums


def per_slot_sums(
    slots: npt.NDArray[np.integer[Any]], nslots: int, packet_ids: npt.NDArray[np.uint64], *weights: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], list[npt.NDArray[np.int64]]]:
    """:func:`per_key_sums` for small non-negative keys (< nslots): O(n + nslots), no sort."""
    s = np.asarray(slots, dtype=np.intp)
    first = np.full(nslots, len(s), dtype=np.intp)
    np.minimum.at(first, s, np.arange(len(s), dtype=np.intp))
    present = np.flatnonzero(first < len(s))
    sums = [np.bincount(s, weights=w, minlength=nslots)[present].astype(np.int64) for w in weights]
    return present.astype(np.uint64), np.ascontiguousarray(packet_ids[first[present]], dtype=np.uint64), sums


def add_at(column: npt.NDArray[Any], slots: npt.NDArray[Any], deltas: npt.NDArray[Any] | None = None) -> None:
    """``column[slots] += deltas`` with repeated slots accumulating (deltas default 1).

    Always passes a typed array: np.add.at with a Python-int scalar takes a path ~20x slower."""
    if deltas is None:
        deltas = np.ones(len(slots), dtype=column.dtype)
    np.add.at(column, np.asarray(slots, dtype=np.intp), np.asarray(deltas, dtype=column.dtype))


def u64(a: Any) -> npt.NDArray[np.uint64]:
    return np.ascontiguousarray(a, dtype=np.uint64)


def i64(a: Any) -> npt.NDArray[np.int64]:
    return np.ascontiguousarray(a, dtype=np.int64)
