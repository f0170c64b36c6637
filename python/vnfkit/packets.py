"""PacketBatch helpers: pcap streaming, scapy conversion.

The batch class itself is native (``vnfkit.PacketBatch`` = ``vnfkit._core.PacketBatch``); its
constructors are ``PacketBatch(list_of_bytes, ts_ns=None)``, ``PacketBatch.from_arrays(data,
offsets, ts_ns=None)`` and ``PacketBatch.from_pcap(path)``. This module adds the pure-Python helpers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from . import _core

PacketBatch = _core.PacketBatch
PcapError = _core.PcapError
PcapReader = _core.PcapReader
PcapWriter = _core.PcapWriter

__all__ = [
    "PacketBatch",
    "PcapError",
    "PcapReader",
    "PcapWriter",
    "from_scapy",
    "iter_pcap",
    "read_pcap",
    "to_scapy",
    "write_pcap",
]


def iter_pcap(path: str | os.PathLike[str], chunk: int = 65536) -> Iterator[_core.PacketBatch]:
    """Yield the packets of a pcap / pcapng file as PacketBatch chunks of at most ``chunk`` packets.

    Only one chunk is in memory at a time. ``packet_id`` counts from 0 over the whole file; each
    chunk has one ``linktype``. A final record cut off by the end of the file ends the iteration
    after the last whole packet (``vnfkit.io.PcapSource`` says where). Raises FileNotFoundError for
    a missing file and PcapError (a ValueError) naming the byte offset for a corrupt one.
    """
    from .io import PcapSource

    yield from PcapSource(path, chunk)


def read_pcap(path: str | os.PathLike[str]) -> _core.PacketBatch:
    """Read a whole pcap / pcapng file into one PacketBatch."""
    return _core.PacketBatch.from_pcap(os.fspath(path))


def write_pcap(path: str | os.PathLike[str], batches: _core.PacketBatch | Iterable[_core.PacketBatch],
               nanosecond: bool = False) -> int:
    """Write one batch or an iterable of batches to a classic pcap file; returns the packet count.

    The file's link type is that of the first batch (Ethernet if there is none); every batch must
    share it.
    """
    if isinstance(batches, _core.PacketBatch):
        batches = [batches]
    it = iter(batches)
    end = object()
    first = next(it, end)
    linktype = first.linktype if isinstance(first, _core.PacketBatch) else 1
    with _core.PcapWriter(os.fspath(path), nanosecond, linktype) as w:
        if first is not end:
            w.write(first)  # type: ignore[arg-type]
        for b in it:
            w.write(b)
        return int(w.packets_written)


def from_scapy(pkts: Iterable[Any]) -> _core.PacketBatch:
    """A PacketBatch from scapy packets (``bytes(p)`` each; ``p.time`` becomes ts_ns)."""
    pkts = list(pkts)
    for i, p in enumerate(pkts):
        # bytes(5) would silently be five zero bytes: only real packets and byte strings are frames.
        if not isinstance(p, (bytes, bytearray, memoryview)) and not hasattr(type(p), "__bytes__"):
            raise TypeError(f"pkts[{i}]: expected a scapy packet or bytes, got {type(p).__name__}")
    ts = np.fromiter((int(round(float(getattr(p, "time", 0) or 0) * 1e9)) for p in pkts),
                     dtype=np.uint64, count=len(pkts))
    return _core.PacketBatch([bytes(p) for p in pkts], ts_ns=ts)


def to_scapy(batch: _core.PacketBatch) -> list[Any]:
    """The batch's packets as scapy ``Ether`` packets, with ``time`` set from ts_ns."""
    from scapy.layers.l2 import Ether
    from scapy.utils import EDecimal

    out = []
    for raw, ts in zip(batch.to_list(), batch.ts_ns.tolist()):
        p = Ether(raw)
        p.time = EDecimal(int(ts)) / EDecimal(1_000_000_000)
        out.append(p)
    return out
