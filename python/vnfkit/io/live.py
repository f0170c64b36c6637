"""Live network interfaces as packet sources and sinks, over native AF_PACKET sockets.

- ``open_socket(interface, ...)``: one AF_PACKET socket bound to an interface (root or
  CAP_NET_RAW: ``PermissionError`` naming the interface otherwise; ``ValueError`` for an interface
  that does not exist in this network namespace). ``fanout_group`` joins a ``PACKET_FANOUT`` hash
  group so that several worker processes share one interface, each flow reaching one of them.
- ``LiveSource``: iterate the frames arriving on an interface as PacketBatch chunks (Ethernet,
  ``ts_ns`` the receive time, ``packet_id`` counting from 0). With ``idle_ms`` it also yields an
  *empty* batch whenever nothing arrived for that long, so a runner driven by it releases the
  outputs it holds instead of waiting for the next packet (the runner accepts empty batches).
- ``LiveSink``: send the forwarded packets of batches out of an interface, optionally rewriting
  their Ethernet addresses (source: the interface's own MAC; destination: the next hop's), as a
  forwarder must. ``write(batch)`` sends the packets whose ``port`` is non-zero (or equal to the
  sink's ``port``), so it is usable directly as a runner's ``on_output`` target.

A source and a sink may share one socket (``LiveSink(source.socket, ...)``); a socket never
receives the frames this host sends on its interface (``PACKET_IGNORE_OUTGOING``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from types import TracebackType

import numpy as np

from .. import _core

__all__ = ["LiveSink", "LiveSource", "format_mac", "open_socket", "parse_mac"]

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def parse_mac(text: str, what: str = "mac") -> bytes:
    """``"02:00:00:00:00:01"`` -> 6 bytes (ValueError naming ``what`` otherwise)."""
    if not isinstance(text, str) or not _MAC.match(text):
        raise ValueError(f"{what}: expected a MAC address like 02:00:5e:00:00:01, got {text!r}")
    return bytes(int(x, 16) for x in text.split(":"))


def format_mac(mac: bytes) -> str:
    """6 bytes -> ``"02:00:00:00:00:01"`` (the inverse of :func:`parse_mac`)."""
    return ":".join(f"{b:02x}" for b in mac)


def _int(name: str, v: object, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if not lo <= int(v) <= hi:
        raise ValueError(f"{name}: must be in {lo}..{hi}, got {v}")
    return int(v)


def open_socket(interface: str, *, batch: int = 256, snaplen: int = 2048, fanout_group: int | None = None,
                promiscuous: bool = True, ring_blocks: int = 0) -> _core.AfPacketSocket:
    """An AF_PACKET socket on ``interface`` (see the module docstring for the errors).

    ``ring_blocks`` > 0 receives through a TPACKET_V3 ring of that many 256 KiB blocks (no system
    call per batch under load, kernel receive timestamps; up to 1 ms added latency when traffic is
    light); 0 (default) receives with ``recvmmsg``."""
    if not isinstance(interface, str):
        raise TypeError(f"interface: expected a str, got {type(interface).__name__}")
    b = _int("batch", batch, 1, 4096)
    s = _int("snaplen", snaplen, 64, 65535)
    g = -1 if fanout_group is None else _int("fanout_group", fanout_group, 0, 0xFFFF)
    r = _int("ring_blocks", ring_blocks, 0, 1024)
    return _core.AfPacketSocket(interface, batch=b, snaplen=s, fanout_group=g, promiscuous=bool(promiscuous),
                                ring_blocks=r)


class LiveSource:
    """Frames arriving on one interface, as PacketBatch chunks of at most ``batch`` frames.

    Iterating blocks for frames and ends when ``stop()`` returns true (checked at least every
    ``idle_ms``, default 10 ms) or after ``duration_s`` seconds. With ``yield_idle`` an empty batch
    is yielded after every ``idle_ms`` without traffic (see the module docstring).
    """

    def __init__(self, interface: str | _core.AfPacketSocket, *, batch: int = 256, snaplen: int = 2048,
                 fanout_group: int | None = None, promiscuous: bool = True, ring_blocks: int = 0, idle_ms: int = 10,
                 yield_idle: bool = True, stop: Callable[[], bool] | None = None,
                 duration_s: float | None = None) -> None:
        if isinstance(interface, _core.AfPacketSocket):
            self.socket = interface
        else:
            self.socket = open_socket(interface, batch=batch, snaplen=snaplen, fanout_group=fanout_group,
                                      promiscuous=promiscuous, ring_blocks=ring_blocks)
        self.idle_ms = _int("idle_ms", idle_ms, 1, 60_000)
        self.yield_idle = bool(yield_idle)
        self.stop = stop
        if duration_s is not None and not (isinstance(duration_s, (int, float)) and duration_s > 0):
            raise ValueError(f"duration_s: must be a positive number of seconds, got {duration_s!r}")
        self.duration_s = duration_s
        self.packets_read = 0

    @property
    def interface(self) -> str:
        return str(self.socket.interface)

    def read(self, timeout_ms: int = -1) -> _core.PacketBatch:
        """The frames that are ready, waiting up to ``timeout_ms`` (-1: forever); empty on timeout."""
        b = self.socket.recv(timeout_ms)
        self.packets_read += len(b)
        return b

    def __iter__(self) -> Iterator[_core.PacketBatch]:
        end = None if self.duration_s is None else time.monotonic() + self.duration_s
        while True:
            if self.stop is not None and self.stop():
                return
            if end is not None and time.monotonic() >= end:
                return
            b = self.read(self.idle_ms)
            if len(b) or self.yield_idle:
                yield b

    def stats(self) -> dict[str, int]:
        return dict(self.socket.stats())

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class LiveSink:
    """Sends packets out of one interface.

    ``dst_mac`` (6 bytes or "aa:bb:..") set: every sent frame gets that destination and ``src_mac``
    (default: the interface's own MAC) as its Ethernet addresses, in place in the batch. ``port``:
    send only packets whose output port equals it (default: every packet with a non-zero port).
    """

    def __init__(self, interface: str | _core.AfPacketSocket, *, dst_mac: bytes | str | None = None,
                 src_mac: bytes | str | None = None, port: int | None = None, batch: int = 256) -> None:
        if isinstance(interface, _core.AfPacketSocket):
            self.socket = interface
            self._owned = False
        else:
            self.socket = open_socket(interface, batch=batch, promiscuous=False)
            self._owned = True
        self.dst_mac = None if dst_mac is None else self._mac(dst_mac, "dst_mac")
        self.src_mac = bytes(self.socket.mac) if src_mac is None else self._mac(src_mac, "src_mac")
        self.port = None if port is None else _int("port", port, 1, 0xFFFF)
        self.packets_written = 0

    @staticmethod
    def _mac(v: bytes | str, what: str) -> bytes:
        if isinstance(v, str):
            return parse_mac(v, what)
        if not isinstance(v, (bytes, bytearray)) or len(v) != 6:
            raise ValueError(f"{what}: expected 6 bytes or a MAC string, got {v!r}")
        return bytes(v)

    @property
    def interface(self) -> str:
        return str(self.socket.interface)

    def write(self, batch: _core.PacketBatch, indices: np.ndarray | None = None) -> int:
        """Send the packets at ``indices`` (uint32), or the ones the sink's ``port`` selects; returns
        how many the kernel took."""
        if indices is None:
            ports = batch.port
            sel = ports != 0 if self.port is None else ports == self.port
            indices = np.flatnonzero(sel).astype(np.uint32)
        if len(indices) == 0:
            return 0
        if self.dst_mac is not None:
            _core.set_ethernet_addresses(batch, indices, self.dst_mac, self.src_mac)
        n = int(self.socket.send(batch, indices))
        self.packets_written += n
        return n

    def __call__(self, _queue: int, batch: _core.PacketBatch) -> None:
        """``on_output(queue, batch)`` form, for a runner."""
        self.write(batch)

    def stats(self) -> dict[str, int]:
        return dict(self.socket.stats())

    def close(self) -> None:
        if self._owned:
            self.socket.close()

    def __enter__(self) -> LiveSink:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
