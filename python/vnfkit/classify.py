"""Receive-side scaling in software: Toeplitz hash, indirection table, multi-queue classifier.

- ``MICROSOFT_RSS_KEY``: the 40-byte default key of the Microsoft RSS specification.
- ``Toeplitz(key=None)``: table-driven Toeplitz hash under one key (40..64 bytes).
  ``.hash(bytes)``, ``.hash_v4(src, dst, sport, dport, *, ports=True, symmetric=False)`` over
  host-order numpy arrays, ``.hash_keys(keys, *, ports=True, symmetric=False)`` over FlowKeys.
- ``toeplitz_hash(data, key=None) -> int``: bit-serial reference hash of one input, any length.
- ``toeplitz_hash_v4(src, dst, sport, dport, *, key=None, ports=True, symmetric=False)``: batch
  IPv4 hash from numpy arrays (a cached ``Toeplitz`` per key).
- ``Reta(size=128, *, num_queues=1)``: indirection table, queue = table[hash & (size - 1)].
- ``MultiQueueClassifier(num_queues, *, key=None, symmetric=False, reta_size=128, use_ports=True)``:
  ``.classify(batch) -> list[np.ndarray]`` writes ``batch.hash``, ``batch.flow_id``,
  ``batch.queue`` and returns the per-queue packet indices; ``.reta`` is the live table;
  ``.ports_for_queue(remote_addr, public_addr, remote_port, queue, *, port_lo=50000,
  port_hi=65535, proto=6)`` lists NAT public ports whose reply traffic lands on ``queue``.

Hash inputs are network-order ``src | dst [| sport | dport]`` as NICs hash them; symmetric mode
orders the two endpoints canonically (smaller address first, ties by port) before hashing, so it
is symmetric under every key (it is not the NIC trick of a repeating 16-bit key).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from ._core import (
    MICROSOFT_RSS_KEY,
    MultiQueueClassifier,
    Reta,
    Toeplitz,
    toeplitz_hash,
)

__all__ = [
    "MICROSOFT_RSS_KEY",
    "MultiQueueClassifier",
    "Reta",
    "Toeplitz",
    "toeplitz_hash",
    "toeplitz_hash_v4",
]


@functools.lru_cache(maxsize=8)
def _toeplitz_for(key: bytes | None) -> Toeplitz:
    return Toeplitz(key)


def toeplitz_hash_v4(
    src: npt.NDArray[np.uint32],
    dst: npt.NDArray[np.uint32],
    sport: npt.NDArray[np.uint16],
    dport: npt.NDArray[np.uint16],
    *,
    key: bytes | None = None,
    ports: bool = True,
    symmetric: bool = False,
) -> npt.NDArray[np.uint32]:
    """Toeplitz hashes of IPv4 tuples given as host-order numpy arrays.

    ``src``/``dst`` are uint32, ``sport``/``dport`` uint16, all C-contiguous and of one length
    (TypeError on a wrong dtype or a strided view, ValueError on mismatched lengths). ``key``
    defaults to ``MICROSOFT_RSS_KEY``; ``ports=False`` hashes ``src | dst`` only.
    """
    if key is not None and not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"key: expected bytes or bytearray, got {type(key).__name__}")
    t = _toeplitz_for(bytes(key) if key is not None else None)
    return t.hash_v4(src, dst, sport, dport, ports=ports, symmetric=symmetric)
