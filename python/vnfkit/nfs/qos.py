"""QoS: traffic classes policed by shared token buckets on packet time.

Config ``classes`` is a list of traffic classes, checked in order (the first match wins):

``{"name": "voice", "dscp": [46], "rate_pps": 1000, "burst": 20}``
``{"name": "web", "proto": "tcp", "dport": [80, 443, [8000, 8999]], "rate_bps": 100e6, "burst": 30000}``

* match keys (all given ones must match; a class with none matches everything):
  ``dscp`` (int or list, 0-63: IPv4 TOS / IPv6 traffic class >> 2), ``proto`` ("tcp", "udp",
  "icmp", "icmpv6" or a number), ``sport`` / ``dport`` (a port, or a list whose items are ports or
  ``[lo, hi]`` inclusive ranges: ``[80, 443]`` is two ports, ``[[8000, 8999]]`` one range).
* rate: ``rate_pps`` (packets/s; ``burst`` in packets, default max(1, rate/100)) or ``rate_bps``
  (bits/s of frame bytes as captured, Ethernet header included; ``burst`` in bytes, default
  max(1514, rate/8/100) -- a frame larger than the burst never passes) or neither (the class is only
  counted, never policed). Rates are kept as whole nanoseconds per token (see
  ``TokenBuckets.ns_per_token``), so the effective rate is ``1e9 / round(1e9 / rate)`` tokens/s.

Each policed class has its own shared token bucket (``qos.<name>``, a GCRA on packet time shared by
every worker, one logged access per packet). A packet over its class's rate is dropped with
``DropReason.POLICY``. Packets matching no class are forwarded (``unmatched="forward"``) or dropped
with ``DropReason.POLICY`` (``unmatched="drop"``). Per-class counters (packets and bytes passed and
dropped; the last row is "unmatched") are shared in the direct Counters ``qos.stats`` (one access per
class, outcome and batch), so totals are exact with any number of workers. Everything forwarded
leaves on ``out_port``. The batch must be parsed before :meth:`QoS.process`.

Multi-queue runs: why drop counts vary, and by how much
--------------------------------------------------------
With one queue a bucket sees its packets in packet-time order, and the result is a pure function of
the trace. With several queues, every worker hits the same bucket, each from its own position in
packet time: a worker that is ahead pushes the bucket's state (the theoretical arrival time)
forward, and the other worker's earlier packets then find less room (or more, after an idle
stretch). So the drop count depends on how the threads interleave and changes from run to run.
That is racing, not a lost update: every access is one compare-and-swap, every decision is a
correct GCRA step on the state it saw, and the logged determinants reproduce each run's decisions
exactly on replay. ``tests/test_qos_racing.py`` proves it: time-ordered accesses from two workers
give exactly the one-queue decisions; classes whose flows stay on one queue give the one-queue
decisions in every racing run; a fixed out-of-order interleaving is deterministic; and every
logged run is one serial GCRA order. How much it matters depends on the burst:

* whatever the order, admitted <= burst + rate * span (+1): each admission moves the state one
  token interval forward, and the state never runs more than the burst interval (burst / rate)
  ahead of the latest packet time;
* while the burst interval covers the workers' skew in packet time (how far apart their positions
  get, about ``depth`` batches of each queue), admitted stays within rate * skew (+2) of the
  one-queue count;
* when a worker lags by more than the burst interval, its packets find the state pushed past their
  own time and are denied while it lags: the class then admits less than its rate (in the test, a
  60 kpps class with burst 25, offered 100 kpps over two queues, one worker a 256-packet chunk
  behind the other: 3 974 admitted instead of 4 824, the lagging queue almost nothing).

So size ``burst`` >= rate * the expected skew when several queues share a class; for reproducible
per-run counts, use one queue, or classes whose traffic one queue carries (RSS keeps a flow on its
queue). Judging conformance on the bucket's own monotone clock (the latest packet time it has seen)
instead of each packet's time would remove the starvation; that needs a second word in the shared
bucket and in its determinant, a change to the state engine not made here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _core
from ..vnf import VNF, Context
from . import _mbox as m

__all__ = ["DEFAULTS", "QoS", "TrafficClass", "dscp_of", "parse_classes"]

DEFAULT_CLASSES: list[dict[str, Any]] = [
    {"name": "dns", "proto": "udp", "dport": [53], "rate_pps": 10000, "burst": 100},
    {"name": "web", "proto": "tcp", "dport": [80, 443, 8080], "rate_bps": 100e6, "burst": 150000},
]

DEFAULTS: dict[str, Any] = {
    "classes": DEFAULT_CLASSES,
    "unmatched": "forward",
    "out_port": 1,
}

_CLASS_KEYS = {"name", "dscp", "proto", "sport", "dport", "rate_pps", "rate_bps", "burst"}
# Per-class stats slots in qos.stats: class * 4 + one of these.
_PASS_PKTS, _PASS_BYTES, _DROP_PKTS, _DROP_BYTES = range(4)


@dataclass(frozen=True)
class TrafficClass:
    name: str
    dscp: tuple[int, ...] | None
    proto: int | None
    sport: tuple[tuple[int, int], ...] | None
    dport: tuple[tuple[int, int], ...] | None
    unit: str | None  # "packets", "bytes" or None (not policed)
    rate: float  # tokens per second (packets or bytes)
    burst: float  # tokens


def _ports(value: Any, field: str) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    if not items:
        raise ValueError(f"{field}: empty list")
    for j, it in enumerate(items):
        if isinstance(it, (list, tuple)):
            if len(it) != 2:
                raise ValueError(f"{field}[{j}]: a range is [lo, hi]")
            lo = m.as_int(it[0], f"{field}[{j}][0]", 0, 65535)
            hi = m.as_int(it[1], f"{field}[{j}][1]", 0, 65535)
            if lo > hi:
                raise ValueError(f"{field}[{j}]: lo {lo} > hi {hi}")
            out.append((lo, hi))
        else:
            p = m.as_int(it, f"{field}[{j}]", 0, 65535)
            out.append((p, p))
    return tuple(out)


def parse_classes(classes: Any) -> list[TrafficClass]:
    """Validate the ``classes`` config (TypeError / ValueError naming the field)."""
    if not isinstance(classes, (list, tuple)):
        raise TypeError(f"classes: expected a list of class dicts, got {type(classes).__name__}")
    if len(classes) > 1024:
        raise ValueError("classes: at most 1024 classes")
    out: list[TrafficClass] = []
    names: set[str] = set()
    for i, c in enumerate(classes):
        f = f"classes[{i}]"
        if not isinstance(c, dict):
            raise TypeError(f"{f}: expected a dict, got {type(c).__name__}")
        unknown = sorted(set(c) - _CLASS_KEYS)
        if unknown:
            raise TypeError(f"{f}: unknown key(s) {unknown}; allowed: {sorted(_CLASS_KEYS)}")
        name = c.get("name")
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{f}.name: need a non-empty name of letters, digits, '-' and '_', got {name!r}")
        if name in names or name == "unmatched":
            raise ValueError(f"{f}.name: duplicate or reserved class name {name!r}")
        names.add(name)
        dscp = None
        if "dscp" in c:
            d = c["dscp"] if isinstance(c["dscp"], (list, tuple)) else [c["dscp"]]
            if not d:
                raise ValueError(f"{f}.dscp: empty list")
            dscp = tuple(m.as_int(v, f"{f}.dscp", 0, 63) for v in d)
        proto = m.as_proto(c["proto"], f"{f}.proto") if "proto" in c else None
        sport = _ports(c["sport"], f"{f}.sport") if "sport" in c else None
        dport = _ports(c["dport"], f"{f}.dport") if "dport" in c else None
        if "rate_pps" in c and "rate_bps" in c:
            raise ValueError(f"{f}: give rate_pps or rate_bps, not both")
        unit: str | None = None
        rate = burst = 0.0
        if "rate_pps" in c:
            unit, rate = "packets", m.as_float(c["rate_pps"], f"{f}.rate_pps", 0.0, 1e9, lo_open=True)
            burst = max(1.0, rate / 100)
        elif "rate_bps" in c:
            unit = "bytes"
            rate = m.as_float(c["rate_bps"], f"{f}.rate_bps", 0.0, 8e9, lo_open=True) / 8.0
            burst = max(1514.0, rate / 100)
        if "burst" in c:
            if unit is None:
                raise ValueError(f"{f}.burst: only with rate_pps or rate_bps")
            burst = m.as_float(c["burst"], f"{f}.burst", 1.0, 4294967295.0)
        if unit is not None and 1e9 / rate > 1e15:
            raise ValueError(f"{f}: rate too small")
        out.append(TrafficClass(name, dscp, proto, sport, dport, unit, rate, math.floor(burst)))
    return out


def dscp_of(batch: _core.PacketBatch) -> npt.NDArray[np.uint8]:
    """DSCP of every packet (IPv4 TOS or IPv6 traffic class, upper 6 bits); 0 for non-IP."""
    data = batch.data
    offs = batch.offsets.astype(np.int64)
    base = offs[:-1] + batch.l3_offset
    # Only follow an l3_offset that lies inside its own packet (columns are writable from Python).
    fam = np.where(base + 2 <= offs[1:], batch.key["family"], 0)
    out = np.zeros(len(batch), dtype=np.uint8)
    v4 = np.flatnonzero(fam == 4)
    if len(v4):
        out[v4] = data[base[v4] + 1] >> 2
    v6 = np.flatnonzero(fam == 6)
    if len(v6):
        b0 = data[base[v6]].astype(np.uint16)
        b1 = data[base[v6] + 1].astype(np.uint16)
        out[v6] = ((((b0 & 0x0F) << 4) | (b1 >> 4)) >> 2).astype(np.uint8)
    return out


def _in_ranges(values: npt.NDArray[np.uint16], ranges: tuple[tuple[int, int], ...]) -> npt.NDArray[np.bool_]:
    hit = np.zeros(len(values), dtype=bool)
    for lo, hi in ranges:
        hit |= (values >= lo) & (values <= hi)
    return hit


class QoS(VNF):
    """Per-class policing with shared token buckets (see the module docstring).

    With several queues the buckets are shared by all workers, so drop counts vary from run to run
    with the threads' interleaving, within rate * (packet-time skew between the workers); each run
    is still an exact GCRA execution in some order and replays exactly (module docstring)."""

    name = "qos"
    dirty_tracked = True  # it keeps no FlowTable (its state is shared token buckets)

    def setup(self, ctx: Context, **config: Any) -> None:
        m.check_keys(config, set(DEFAULTS), "QoS")
        cfg = {**DEFAULTS, **config}
        self.classes = parse_classes(cfg["classes"])
        self.unmatched = m.as_choice(cfg["unmatched"], "unmatched", ("forward", "drop"))
        self.out_port = m.as_port(cfg["out_port"], "out_port")
        self._needs_dscp = any(c.dscp is not None for c in self.classes)
        self.buckets: list[Any] = []
        for c in self.classes:
            if c.unit is None:
                self.buckets.append(None)
                continue
            self.buckets.append(ctx.token_buckets(f"qos.{c.name}", buckets=1, rate_per_s=c.rate, burst=c.burst))
        nslots = 4 * (len(self.classes) + 1)
        self.counters = ctx.counters("qos.stats", slots=nslots)
        self._local = np.zeros(nslots, dtype=np.int64)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes] + ["unmatched"]

    def classify(self, batch: _core.PacketBatch) -> npt.NDArray[np.int64]:
        """Class index of every packet (first matching class); len(classes) = unmatched, -1 = parser drop."""
        n = len(batch)
        keys = batch.key
        cls = np.full(n, len(self.classes), dtype=np.int64)
        dscp = dscp_of(batch) if self._needs_dscp else None
        for i in range(len(self.classes) - 1, -1, -1):  # reversed, so the first match wins
            c = self.classes[i]
            hit = np.ones(n, dtype=bool)
            if c.proto is not None:
                hit &= keys["proto"] == c.proto
            if c.dscp is not None:
                assert dscp is not None
                hit &= np.isin(dscp, c.dscp)
            if c.sport is not None:
                hit &= _in_ranges(keys["sport"], c.sport)
            if c.dport is not None:
                hit &= _in_ranges(keys["dport"], c.dport)
            cls[hit] = i
        cls[~m.live_mask(batch)] = -1
        return cls

    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        n = len(batch)
        if n == 0:
            return
        m.require_parsed(batch)
        sctx = m.state_context(ctx)
        cls = self.classify(batch)
        size = np.diff(batch.offsets).astype(np.int64)
        passed = cls >= 0
        for i, c in enumerate(self.classes):
            b = self.buckets[i]
            if b is None:
                continue
            idx = np.flatnonzero(cls == i)
            if len(idx) == 0:
                continue
            costs = size[idx].astype(np.uint32) if c.unit == "bytes" else None
            ok = b.consume(sctx, np.zeros(len(idx), dtype=np.uint64), np.ascontiguousarray(batch.ts_ns[idx]),
                           np.ascontiguousarray(batch.packet_id[idx]), costs)
            passed[idx[~ok]] = False
        if self.unmatched == "drop":
            passed[cls == len(self.classes)] = False
        decided = cls >= 0
        dropped = decided & ~passed
        batch.port[passed] = self.out_port
        batch.port[dropped] = 0
        batch.drop[dropped] = int(_core.DropReason.POLICY)

        # Shared per-class stats: one access per (class, outcome) present, for its first packet.
        sel = np.flatnonzero(decided)
        base = cls[sel] * 4 + np.where(passed[sel], _PASS_PKTS, _DROP_PKTS)
        ukeys, pids, (cnt, byt) = m.per_slot_sums(base, self.counters.slots, batch.packet_id[sel], np.ones(len(sel)),
                                                  size[sel])
        keys = np.concatenate([ukeys, ukeys + np.uint64(1)])
        deltas = np.concatenate([cnt, byt])
        self.counters.add(sctx, m.u64(keys), m.i64(deltas), m.u64(np.concatenate([pids, pids])))
        m.add_at(self._local, keys, deltas)

    # ------------------------------------------------------------------------------------ reporting
    def _table(self, values: npt.NDArray[np.int64]) -> dict[str, dict[str, int]]:
        out = {}
        for i, name in enumerate(self.class_names):
            v = values[4 * i: 4 * i + 4]
            out[name] = {"passed": int(v[_PASS_PKTS]), "passed_bytes": int(v[_PASS_BYTES]),
                         "dropped": int(v[_DROP_PKTS]), "dropped_bytes": int(v[_DROP_BYTES])}
        return out

    def class_stats(self) -> dict[str, dict[str, int]]:
        """Per-class totals over all workers (shared counters; control-plane read)."""
        vals = np.array([self.counters.get(k) for k in range(self.counters.slots)], dtype=np.int64)
        return self._table(vals)

    def stats(self) -> dict[str, int]:
        """This worker's per-class counts, flattened as ``<class>.<passed|dropped>[_bytes]``."""
        return {f"{c}.{k}": v for c, d in self._table(self._local).items() for k, v in d.items()}

    def snapshot(self) -> dict[str, Any]:
        """Python-side state for a checkpoint: this worker's per-class counts (see :meth:`VNF.snapshot`)."""
        return {"local": self._local.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        m.check_keys(state, {"local"}, "QoS.restore")
        loc = np.asarray(state["local"], dtype=np.int64)
        if loc.shape != self._local.shape:
            raise ValueError(f"QoS.restore: local has shape {loc.shape}, expected {self._local.shape}")
        self._local[:] = loc
