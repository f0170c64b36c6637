"""A two-interface userspace forwarder: frames from either interface through one VNF and out again.

``TwoPortForwarder(vnf, ctx, inside=..., outside=..., inside_peer=MAC, outside_peer=MAC)`` polls both
AF_PACKET sockets, receives what is ready in batches, parses each batch, hands it to the VNF's
``process`` (one VNF instance on queue 0, called directly: no runner hop, so a packet is sent as
soon as its batch is processed), then sends the packets the VNF put on ``outside_port`` out of the
outside interface and those on ``inside_port`` out of the inside one. Each sent frame is rewritten
as a router would: source MAC = the sending interface's own, destination MAC = the next hop on that
side (``inside_peer`` / ``outside_peer``). The forwarder does not speak ARP: the hosts on either
side need a static neighbour entry for the interface they send to (the testbed sets them).
Packets the VNF drops are counted by reason (``drops``), frames that are not IP (ARP, ...) among
them (the parser's ``bad-ethertype``).
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _core
from .live import LiveSink, open_socket

__all__ = ["ForwardStats", "TwoPortForwarder"]


@dataclass
class ForwardStats:
    """What a forwarder did: frames received per side, sent per side, drops by reason."""

    received: dict[str, int] = field(default_factory=lambda: {"inside": 0, "outside": 0})
    sent: dict[str, int] = field(default_factory=lambda: {"inside": 0, "outside": 0})
    drops: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"received": dict(self.received), "sent": dict(self.sent), "drops": dict(self.drops),
                "batches": self.batches, "wall_s": round(self.wall_s, 3)}


class TwoPortForwarder:
    """See the module docstring. ``outside_port`` / ``inside_port``: the VNF's output port numbers
    towards each side (MazuNAT: EXTERNAL 1, INTERNAL 2)."""

    def __init__(self, vnf: Any, ctx: Any, *, inside: str, outside: str, inside_peer: str | bytes,
                 outside_peer: str | bytes, outside_port: int = 1, inside_port: int = 2, batch: int = 256,
                 snaplen: int = 2048) -> None:
        if inside == outside:
            raise ValueError(f"--inside/--outside: must be two different interfaces, got {inside!r} twice")
        self.vnf = vnf
        self.ctx = ctx
        self.sockets: dict[str, _core.AfPacketSocket] = {}
        try:
            for side, ifname in (("inside", inside), ("outside", outside)):
                self.sockets[side] = open_socket(ifname, batch=batch, snaplen=snaplen)
            self.sinks = {
                "inside": LiveSink(self.sockets["inside"], dst_mac=inside_peer, port=inside_port),
                "outside": LiveSink(self.sockets["outside"], dst_mac=outside_peer, port=outside_port),
            }
        except BaseException:
            self.close()
            raise
        self.stats = ForwardStats()

    def step(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for frames, forward whatever is ready; returns frames received."""
        poller = self._poller
        got = 0
        for fd, _ev in poller.poll(timeout_ms):
            side = self._side_of[fd]
            b = self.sockets[side].recv(0)
            n = len(b)
            if n == 0:
                continue
            got += n
            self.stats.received[side] += n
            self.stats.batches += 1
            b.parse()
            self.vnf.process(b, self.ctx)
            for out_side, sink in self.sinks.items():
                self.stats.sent[out_side] += sink.write(b)
            for reason, count in b.drop_counts().items():
                self.stats.drops[reason] = self.stats.drops.get(reason, 0) + int(count)
        return got

    def run(self, stop: Callable[[], bool], *, duration_s: float | None = None, idle_ms: int = 20) -> ForwardStats:
        """Forward until ``stop()`` is true (checked at least every ``idle_ms``) or ``duration_s``."""
        self._poller = select.poll()
        self._side_of = {}
        for side, s in self.sockets.items():
            self._poller.register(s.fileno(), select.POLLIN)
            self._side_of[s.fileno()] = side
        t0 = time.monotonic()
        end = None if duration_s is None else t0 + duration_s
        while not stop() and (end is None or time.monotonic() < end):
            self.step(idle_ms)
        self.stats.wall_s = time.monotonic() - t0
        return self.stats

    def socket_stats(self) -> dict[str, dict[str, int]]:
        return {side: dict(s.stats()) for side, s in self.sockets.items()}

    def close(self) -> None:
        for s in self.sockets.values():
            s.close()
