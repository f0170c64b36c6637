"""Synthetic traffic: Poisson flow arrivals, heavy-tailed flow sizes and durations, TCP/UDP, v4/v6.

The model (all draws from ``numpy.random.default_rng(seed)``, so a seed reproduces a trace exactly):

- ``flows`` flows share exactly ``packets`` packets. Every flow gets one packet, the remaining
  ``packets - flows`` are split in proportion to Pareto weights ``1 + Lomax(size_alpha)`` (shape
  ``size_alpha``, default 1.2: a few flows carry most packets, as in measured traffic).
- The trace's nominal span is ``packets / rate_pps`` seconds (default rate: 1 Gbps of 64-byte
  frames, 1 488 095 pps). Flows arrive as a Poisson process of rate ``flow_rate`` flows/s (default:
  ``flows`` over the span), i.e. exponential inter-arrival times.
- Flow durations are lognormal with shape ``duration_sigma`` (default 1.5) and mean
  ``mean_duration_s`` (default a quarter of the span); a flow's packets are evenly spaced over its
  duration (a one-packet flow is a single packet at its start).
  Flows still running at the end of the span (or at the last arrival, if later) are cut there, so
  the mean packet rate stays ``rate_pps``.
- A fraction ``udp_fraction`` of flows are UDP, the rest TCP: the first TCP packet is a SYN, the
  last (for flows of two or more packets) FIN|ACK, the ones between ACK.
- A fraction ``ipv6_fraction`` of flows are IPv6. IPv4: sources in 10.0.0.0/8, destinations in
  198.18.0.0/15; IPv6: sources in fd00::/8, destinations in 2001:db8::/32. Source ports are uniform in
  1024-65535; destination ports come from a few well-known services.
- Frames are ``frame_size`` bytes for IPv4 (default 64) and ``frame_size + 20`` for IPv6 (the
  larger IP header), zero payload, valid checksums (built in C++: ``vnfkit._core.build_packets``).

``generate`` returns one PacketBatch sorted by time; ``iter_trace`` yields the same packets in
chunks (time windows of about ``chunk`` packets) so a large trace never has to fit in memory.

The simulated remote hosts: :func:`replies_to` answers every packet a VNF sent to its external side
(addresses and ports swapped, a little later), :func:`merge_by_time` interleaves such replies with
the next part of a trace, and :func:`run_with_replies` drives a runner with both, as ``vnfkit demo``
does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core

DEFAULT_RATE_PPS = 1_488_095.0  # 1 Gbps of 64-byte frames (84 bytes on the wire each)
TCP_DPORTS = np.array([80, 443, 22, 8080, 25, 993], dtype=np.uint16)
UDP_DPORTS = np.array([53, 123, 443, 4500, 5060], dtype=np.uint16)
TCP_SYN, TCP_ACK, TCP_FIN_ACK = 0x02, 0x10, 0x11

__all__ = ["DEFAULT_RATE_PPS", "REPLY_ID_OFFSET", "FlowPlan", "TwoWayTraffic", "generate", "iter_trace", "merge_by_time", "plan_flows",
           "replies_to", "run_with_replies", "write_trace"]

#: Added to a packet's id to make its reply's id (so replies never collide with trace ids).
REPLY_ID_OFFSET = 1 << 40


@dataclass(frozen=True)
class FlowPlan:
    """Per-flow parameters of a trace (one entry per flow, sorted by start time)."""

    keys: npt.NDArray[np.void]  # FLOW_KEY_DTYPE
    start_ns: npt.NDArray[np.int64]
    duration_ns: npt.NDArray[np.int64]
    packets: npt.NDArray[np.int64]
    seq0: npt.NDArray[np.uint32]
    frame_size: int

    @property
    def end_ns(self) -> int:
        return int((self.start_ns + self.duration_ns).max()) if len(self.start_ns) else 0


def plan_flows(flows: int, packets: int, seed: int = 0, *, ipv6_fraction: float = 0.0, udp_fraction: float = 0.2,
               rate_pps: float = DEFAULT_RATE_PPS, flow_rate: float | None = None, size_alpha: float = 1.2,
               mean_duration_s: float | None = None, duration_sigma: float = 1.5,
               frame_size: int = 64) -> FlowPlan:
    """Draw the flows of a trace (see the module docstring for the model)."""
    flows, packets = int(flows), int(packets)
    if flows < 1:
        raise ValueError("flows: must be >= 1")
    if packets < flows:
        raise ValueError(f"packets: must be >= flows ({flows}), got {packets}")
    if not 0.0 <= ipv6_fraction <= 1.0:
        raise ValueError("ipv6_fraction: must be in [0, 1]")
    if not 0.0 <= udp_fraction <= 1.0:
        raise ValueError("udp_fraction: must be in [0, 1]")
    if not (rate_pps > 0 and math.isfinite(rate_pps)):
        raise ValueError("rate_pps: must be a positive number")
    if flow_rate is not None and not (flow_rate > 0 and math.isfinite(flow_rate)):
        raise ValueError("flow_rate: must be a positive number")
    if size_alpha <= 0:
        raise ValueError("size_alpha: must be > 0")
    if duration_sigma < 0:
        raise ValueError("duration_sigma: must be >= 0")
    if mean_duration_s is not None and not mean_duration_s >= 0:
        raise ValueError("mean_duration_s: must be >= 0")
    if not 60 <= frame_size <= 9000:
        raise ValueError("frame_size: must be in [60, 9000]")

    rng = np.random.default_rng(seed)
    span_s = packets / rate_pps
    lam = flow_rate if flow_rate is not None else flows / span_s

    # Sizes: 1 each plus a Pareto-weighted share of the rest, summing exactly to `packets`.
    w = rng.pareto(size_alpha, flows) + 1.0
    rest = packets - flows
    share = w / w.sum() * rest
    alloc = np.floor(share).astype(np.int64)
    left = rest - int(alloc.sum())
    if left > 0:
        alloc[np.argsort(-(share - alloc), kind="stable")[:left]] += 1
    sizes = alloc + 1

    starts = np.cumsum(rng.exponential(1.0 / lam, flows))
    starts -= starts[0]  # first flow at t = 0
    start_ns = np.round(starts * 1e9).astype(np.int64)

    mean_d = span_s / 4 if mean_duration_s is None else mean_duration_s
    if mean_d > 0:
        mu = math.log(mean_d) - duration_sigma**2 / 2
        dur = rng.lognormal(mu, duration_sigma, flows)
    else:
        dur = np.zeros(flows)
    # Flows still running at the end of the trace are cut there, as a measurement window cuts them.
    end_cap_ns = max(int(round(span_s * 1e9)), int(start_ns[-1]))
    duration_ns = np.where(sizes > 1, np.minimum(np.round(dur * 1e9), end_cap_ns - start_ns), 0).astype(np.int64)

    v6 = rng.random(flows) < ipv6_fraction
    udp = rng.random(flows) < udp_fraction
    keys = np.zeros(flows, dtype=_core.flow_key_dtype())
    keys["family"] = np.where(v6, 6, 4)
    keys["proto"] = np.where(udp, 17, 6)
    keys["sport"] = rng.integers(1024, 65536, flows, dtype=np.uint16) if flows else 0
    keys["dport"] = np.where(udp, rng.choice(UDP_DPORTS, flows), rng.choice(TCP_DPORTS, flows))
    r_src = rng.integers(0, 2**32, (flows, 4), dtype=np.uint32)
    r_dst = rng.integers(0, 2**32, (flows, 4), dtype=np.uint32)
    src = r_src.astype(">u4").view(np.uint8).reshape(flows, 16).copy()
    dst = r_dst.astype(">u4").view(np.uint8).reshape(flows, 16).copy()
    # IPv4: 10.0.0.0/8 -> 198.18.0.0/15, upper 12 bytes zero.
    src[~v6, 0] = 10
    dst[~v6, 0] = 198
    dst[~v6, 1] = 18 | (dst[~v6, 1] & 1)
    src[~v6, 4:] = 0
    dst[~v6, 4:] = 0
    # IPv6: fd00::/8 -> 2001:db8::/32.
    src[v6, 0] = 0xFD
    dst[v6, 0:4] = [0x20, 0x01, 0x0D, 0xB8]
    keys["src"] = src
    keys["dst"] = dst
    seq0 = rng.integers(0, 2**32, flows, dtype=np.uint32)
    return FlowPlan(keys=keys, start_ns=start_ns, duration_ns=duration_ns, packets=sizes, seq0=seq0,
                    frame_size=int(frame_size))


def _count_before(plan: FlowPlan, idx: npt.NDArray[np.int64], t: float) -> npt.NDArray[np.int64]:
    """For flows `idx`: how many of their packets have time < t (packet k at start + k*dur/(n-1))."""
    s = plan.start_ns[idx].astype(np.float64)
    d = plan.duration_ns[idx].astype(np.float64)
    n = plan.packets[idx]
    rel = np.maximum(t - s, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.ceil(rel * (n - 1) / d)
    k = np.where(d > 0, k, np.where(t > s, n, 0))
    return np.clip(np.nan_to_num(k, nan=0.0, posinf=np.inf), 0, n).astype(np.int64)


def _window(plan: FlowPlan, t0: float, t1: float, first_id: int) -> _core.PacketBatch | None:
    end = plan.start_ns + plan.duration_ns
    hi = int(np.searchsorted(plan.start_ns, t1, side="left"))
    cand = np.nonzero(end[:hi] >= t0)[0]
    if len(cand) == 0:
        return None
    k0 = _count_before(plan, cand, t0)
    k1 = _count_before(plan, cand, t1)
    cnt = k1 - k0
    keep = cnt > 0
    cand, k0, cnt = cand[keep], k0[keep], cnt[keep]
    total = int(cnt.sum())
    if total == 0:
        return None
    fl = np.repeat(cand, cnt)
    first = np.repeat(np.cumsum(cnt) - cnt, cnt)
    k = np.repeat(k0, cnt) + (np.arange(total) - first)
    n = plan.packets[fl]
    d = plan.duration_ns[fl].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(n > 1, np.floor(k * d / np.maximum(n - 1, 1)), 0.0)
    ts = plan.start_ns[fl].astype(np.float64) + off
    ts = np.clip(ts, t0, t1 - 1 if math.isfinite(t1) else ts.max()).astype(np.int64)
    order = np.lexsort((k, fl, ts))
    fl, k, ts, n = fl[order], k[order], ts[order], n[order]
    keys = np.ascontiguousarray(plan.keys[fl])
    proto = keys["proto"]
    is_v6 = keys["family"] == 6
    tcp = proto == 6
    flags = np.where(k == 0, TCP_SYN, np.where((k == n - 1) & (n > 1), TCP_FIN_ACK, TCP_ACK))
    tcp_flags = np.where(tcp, flags, 0).astype(np.uint8)
    seq = (plan.seq0[fl].astype(np.uint64) + k.astype(np.uint64)).astype(np.uint32)
    sizes = np.where(is_v6, plan.frame_size + 20, plan.frame_size).astype(np.uint16)
    b = _core.build_packets(keys, sizes, ts.astype(np.uint64), tcp_flags, seq)
    b.packet_id[:] = np.arange(first_id, first_id + total, dtype=np.uint64)
    return b


def iter_trace(flows: int, packets: int, seed: int = 0, *, chunk: int = 65536, rate_pps: float = DEFAULT_RATE_PPS,
               **kwargs: float | int | None) -> Iterator[_core.PacketBatch]:
    """Yield the trace's packets in time order, in chunks of roughly ``chunk`` packets.

    Keyword arguments are those of ``plan_flows``. Concatenating the chunks gives exactly the
    packets of ``generate`` with the same arguments.
    """
    if chunk < 1:
        raise ValueError("chunk: must be >= 1")
    plan = plan_flows(flows, packets, seed, rate_pps=rate_pps, **kwargs)  # type: ignore[arg-type]
    yield from _iter_plan(plan, chunk, rate_pps)


def _iter_plan(plan: FlowPlan, chunk: int, rate_pps: float) -> Iterator[_core.PacketBatch]:
    # Window boundaries are integers (ns), so a packet's time and its window agree exactly; the
    # width adapts to the observed packet rate (the packets and their order do not depend on it).
    width = max(1, int(chunk / rate_pps * 1e9))
    stop = plan.end_ns + 1
    t0 = 0
    emitted = 0
    total = int(plan.packets.sum())
    while emitted < total and t0 < stop:
        t1 = min(t0 + width, stop)
        b = _window(plan, float(t0), float(t1), emitted)
        got = 0 if b is None else len(b)
        if b is not None:
            emitted += got
            yield b
        if got < chunk // 2:
            width *= 2
        elif got > 2 * chunk and width > 1:
            width //= 2
        t0 = t1


def generate(flows: int, packets: int, seed: int = 0, **kwargs: float | int | None) -> _core.PacketBatch:
    """The whole trace as one PacketBatch sorted by ts_ns (see the module docstring for the model).

    Keyword arguments: ipv6_fraction, udp_fraction, rate_pps, flow_rate, size_alpha,
    mean_duration_s, duration_sigma, frame_size.
    """
    plan = plan_flows(flows, packets, seed, **kwargs)  # type: ignore[arg-type]
    b = _window(plan, 0.0, float(plan.end_ns + 1), 0)
    assert b is not None and len(b) == packets
    return b


def write_trace(path: str | os.PathLike[str], flows: int, packets: int, seed: int = 0, *, chunk: int = 65536,
                nanosecond: bool = False, progress: Callable[[int, int], None] | None = None,
                **kwargs: float | int | None) -> dict[str, int]:
    """Generate a trace chunk by chunk straight into a pcap file. Returns a summary."""
    rate = float(kwargs.pop("rate_pps", None) or DEFAULT_RATE_PPS)
    plan = plan_flows(flows, packets, seed, rate_pps=rate, **kwargs)  # type: ignore[arg-type]
    stats = {"packets": 0, "bytes": 0, "flows": int(flows), "ipv6": 0, "udp": 0, "tcp": 0, "duration_ns": 0}
    with _core.PcapWriter(os.fspath(path), nanosecond) as w:
        for b in _iter_plan(plan, chunk, rate):
            w.write(b)
            stats["packets"] += len(b)
            stats["bytes"] += int(b.offsets[-1])
            stats["duration_ns"] = int(b.ts_ns[-1])
            if progress is not None:
                progress(stats["packets"], packets)
    fam = plan.keys["family"]
    proto = plan.keys["proto"]
    stats["ipv6"] = int((fam == 6).sum())
    stats["udp"] = int((proto == 17).sum())
    stats["tcp"] = int((proto == 6).sum())
    return stats


# ------------------------------------------------------------------------------ remote hosts


def replies_to(out: _core.PacketBatch, *, port: int = 1, delay_ns: int = 1000,
               id_offset: int = REPLY_ID_OFFSET, not_before_ns: int = 0) -> _core.PacketBatch | None:
    """A "remote host": for every IPv4 TCP/UDP packet of `out` sent to output `port` (a NAT's
    external side), a reply with addresses and ports swapped (TCP: ACK, or FIN|ACK when the packet
    carried a FIN; UDP: empty datagram), `delay_ns` later, with packet id = original id +
    `id_offset`. 64-byte frames with valid checksums, unparsed. Returns None if nothing was sent.

    `not_before_ns`: no reply is timed before it (a reply's time is ``max(sent + delay_ns,
    not_before_ns)``). A closed-loop driver passes the latest packet time it has already handed
    to the VNF, so the VNF's clock never runs backwards: a reply that reaches the VNF later than
    `delay_ns` after its packet (because the driver answers a whole batch or window at once) is
    timed when it arrives, and a mapping that has expired by then is honestly expired."""
    sel = np.flatnonzero(out.port == port).astype(np.uint32)
    key = out.key
    sel = sel[key["family"][sel] == 4]
    pr = key["proto"][sel]
    sel = sel[(pr == 6) | (pr == 17)]
    if len(sel) == 0:
        return None
    k = key[sel]
    r = np.zeros(len(sel), _core.flow_key_dtype())
    r["src"], r["dst"] = k["dst"], k["src"]
    r["sport"], r["dport"] = k["dport"], k["sport"]
    r["proto"], r["family"] = k["proto"], k["family"]
    flags = np.where(k["proto"] == 6, np.where(out.tcp_flags[sel] & 1, TCP_FIN_ACK, TCP_ACK), 0).astype(np.uint8)
    ts = np.maximum(out.ts_ns[sel] + np.uint64(delay_ns), np.uint64(max(0, int(not_before_ns))))
    b = _core.build_packets(r, np.full(len(sel), 64, np.uint16), ts, flags, np.zeros(len(sel), np.uint32))
    b.packet_id[:] = out.packet_id[sel] + np.uint64(id_offset)
    return b


def merge_by_time(parts: Iterable[_core.PacketBatch | None]) -> _core.PacketBatch | None:
    """One unparsed batch holding every packet of `parts` (None entries skipped), ordered by
    ``ts_ns`` (ties keep the order of `parts`), with their packet ids. None if all are empty."""
    bs = [b for b in parts if b is not None and len(b)]
    if not bs:
        return None
    if len(bs) == 1:
        return bs[0]
    data = np.concatenate([b.data for b in bs])
    starts = np.cumsum([0] + [int(b.offsets[-1]) for b in bs[:-1]])
    offsets = np.concatenate([b.offsets[:-1].astype(np.int64) + s for b, s in zip(bs, starts)]
                             + [np.array([len(data)], np.int64)]).astype(np.uint32)
    ts = np.concatenate([b.ts_ns for b in bs])
    merged = _core.PacketBatch.from_arrays(data, offsets, ts)
    merged.packet_id[:] = np.concatenate([b.packet_id for b in bs])
    order = np.argsort(ts, kind="stable").astype(np.uint32)
    return merged.select(order)


def run_with_replies(runner: Any, batches: Iterable[_core.PacketBatch], *, port: int = 1,
                     on_output: Any = None, progress: Any = None) -> Any:
    """Run `batches` (outbound traffic, e.g. a generated trace) through a NAT `runner` while a
    "remote host" (:func:`replies_to`) answers every translated TCP/UDP packet sent to `port`; the
    replies enter the runner interleaved with the trace, each timed no earlier than the latest
    packet already handed to the runner (so the VNF's packet clock never runs backwards). Returns
    one combined ``RunResult``. This is what ``vnfkit demo`` shows."""
    from .runtime import RunResult

    pending: list[_core.PacketBatch] = []
    clock = [0]  # the latest packet time handed to the runner: no reply is timed before it

    def out(q: int, b: _core.PacketBatch) -> None:
        rep = replies_to(b, port=port, not_before_ns=clock[0])
        if rep is not None:
            pending.append(rep)
        if on_output is not None:
            on_output(q, b)

    def handed(b: _core.PacketBatch) -> _core.PacketBatch:
        if len(b):
            clock[0] = max(clock[0], int(b.ts_ns.max()))
        return b

    def feed() -> Iterator[_core.PacketBatch]:
        for b in batches:
            yield handed(b)
            while pending:
                yield handed(pending.pop(0))

    results = [runner.run(feed(), on_output=out, progress=progress)]
    while pending:
        todo, pending[:] = list(pending), []
        results.append(runner.run([handed(b) for b in todo], on_output=out, progress=progress))
    return RunResult.combine(results)


class TwoWayTraffic:
    """A trace and the remote hosts that answer it, round by round (closed loop).

    Each call of :meth:`next_input` returns the next time window of the trace (``window_ns`` =
    `chunk` / `rate_pps` wide, so about `chunk` outbound packets at the nominal rate) merged by
    time with the replies (:func:`replies_to`, `delay_ns` later) to everything the VNF sent to
    output `port` since the previous call (handed over with :meth:`answer`). Unparsed batches; None
    when the trace is done and no reply is pending. Keyword arguments are those of
    :func:`plan_flows`.

    The replies to a window can only enter with the next one, so a reply may reach the VNF up to
    about one window later than `delay_ns` after its packet. It is then timed when it arrives
    (``not_before_ns`` of :func:`replies_to`: never before the latest packet already handed out),
    so the VNF's clock never runs backwards, and the lateness is counted: ``late_replies``
    (replies timed after their due time) and ``max_reply_lag_ns`` (largest arrival minus the
    answered packet's time). A VNF whose shortest idle timeout is below ``window_ns`` can
    legitimately find such a reply's mapping expired; choose `chunk` so that ``window_ns`` stays
    below it (the benchmarks do)."""

    def __init__(self, flows: int, packets: int, seed: int = 0, *, chunk: int = 65536, port: int = 1,
                 delay_ns: int = 200_000, rate_pps: float = DEFAULT_RATE_PPS, **kwargs: Any) -> None:
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
            raise ValueError(f"chunk: must be an int >= 1, got {chunk!r}")
        if not isinstance(delay_ns, int) or isinstance(delay_ns, bool) or not 0 <= delay_ns < 1 << 40:
            raise ValueError(f"delay_ns: must be an int in [0, 2**40), got {delay_ns!r}")
        self.plan = plan_flows(flows, packets, seed, rate_pps=rate_pps, **kwargs)
        #: width of one window of the trace (ns): the bound on how late a reply can arrive
        self.window_ns = max(1, int(chunk / rate_pps * 1e9))
        self._t0 = 0
        self._emitted = 0
        self._total = int(self.plan.packets.sum())
        self.port = port
        self.delay_ns = delay_ns
        self._replies: _core.PacketBatch | None = None
        self._clock = 0  # the latest packet time handed out so far
        self.outbound_packets = 0
        self.reply_packets = 0
        self.late_replies = 0
        self.max_reply_lag_ns = 0

    def _next_window(self) -> _core.PacketBatch | None:
        stop = self.plan.end_ns + 1
        while self._emitted < self._total and self._t0 < stop:
            t1 = min(self._t0 + self.window_ns, stop)
            b = _window(self.plan, float(self._t0), float(t1), self._emitted)
            self._t0 = t1
            if b is not None:
                self._emitted += len(b)
                return b
        return None

    def answer(self, outputs: Iterable[_core.PacketBatch]) -> None:
        """Queue the remote hosts' replies to `outputs` (processed batches) for the next input."""
        reps = []
        clock = np.uint64(self._clock)
        for b in outputs:
            rep = replies_to(b, port=self.port, delay_ns=self.delay_ns)
            if rep is None:
                continue
            due = rep.ts_ns.copy()  # its packet's time + delay_ns
            late = due < clock
            if late.any():  # timed when it arrives (as replies_to(not_before_ns=) does)
                rep.ts_ns[late] = clock
                self.late_replies += int(np.count_nonzero(late))
                self.max_reply_lag_ns = max(self.max_reply_lag_ns, int(clock - due[late].min()) + self.delay_ns)
            reps.append(rep)
        self._replies = merge_by_time([self._replies, *reps])

    def next_input(self) -> _core.PacketBatch | None:
        window = self._next_window()
        merged = merge_by_time([self._replies, window])
        if window is not None:
            self.outbound_packets += len(window)
        if self._replies is not None:
            self.reply_packets += len(self._replies)
        self._replies = None
        if merged is not None and len(merged):
            self._clock = max(self._clock, int(merged.ts_ns.max()))
        return merged
