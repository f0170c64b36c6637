"""Monitor: a traffic monitor with per-flow records (NetFlow-like) and shared per-prefix counters.

* **Per flow** (each worker's FlowTable ``monitor.flows``, keyed by the packet's 5-tuple, one record
  per direction as in NetFlow): packets, IP bytes (IP total length: header + payload, no Ethernet),
  first and last packet time. Flows expire on packet time -- ``idle_timeout_s`` without a packet, or
  ``tcp_close_timeout_s`` after a TCP FIN or RST -- and their final records go to an export list
  (like a NetFlow exporter's cache export), bounded by ``export_limit`` (the oldest records are
  discarded beyond it and counted in ``export_discarded``). If the table is full a flow is not
  recorded (``untracked``) but its packets are still counted per prefix and forwarded.
* **Per prefix** (shared by every worker, lock-free and logged): packets and bytes per source
  prefix (IPv4 /``ipv4_prefix_len``, default /24; IPv6 /``ipv6_prefix_len``, default /48) in the keyed
  Counters ``monitor.prefix_packets`` and ``monitor.prefix_bytes``. Each batch makes one access per
  distinct prefix (made for the prefix's first packet in the batch), so totals are exact with any
  number of workers and the log stays small.
* Every well-formed packet is forwarded on ``out_port``; packets the parser dropped stay dropped.

:meth:`Monitor.report` returns the top prefixes and the flow records as numpy arrays;
:func:`merged_report` combines the flow records of all workers of a runner.
The batch must be parsed before :meth:`Monitor.process`.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .. import _core
from ..state import COUNTER_FULL
from ..tables import FLOW_KEY_DTYPE
from ..vnf import VNF, Context
from . import _mbox as m

__all__ = ["DEFAULTS", "FLOW_RECORD_DTYPE", "Monitor", "MonitorReport", "PREFIX_DTYPE", "merged_report",
           "prefix_keys"]

#: Value record of the flow table.
_VALUE_DTYPE = np.dtype([("packets", "<u8"), ("bytes", "<u8"), ("first_ts", "<u8")])

#: One flow record (exported or active). ``end``: 0 still active, 1 idle timeout, 2 TCP FIN/RST.
FLOW_RECORD_DTYPE = np.dtype([
    ("key", FLOW_KEY_DTYPE), ("packets", "<u8"), ("bytes", "<u8"), ("first_ts", "<u8"), ("last_ts", "<u8"),
    ("end", "u1"),
])

#: One row of the per-prefix report.
PREFIX_DTYPE = np.dtype([
    ("prefix", "U48"), ("family", "u1"), ("prefix_len", "u1"), ("addr", "u1", (16,)), ("packets", "<u8"),
    ("bytes", "<u8"),
])

DEFAULTS: dict[str, Any] = {
    "flow_capacity": 65536,
    "idle_timeout_s": 15.0,
    "tcp_close_timeout_s": 1.0,
    "ipv4_prefix_len": 24,
    "ipv6_prefix_len": 48,
    "prefix_slots": 65536,
    "export_limit": 1_000_000,
    "out_port": 1,
}


class MonitorReport(NamedTuple):
    prefixes: npt.NDArray[Any]  # PREFIX_DTYPE, most packets first
    flows: npt.NDArray[Any]  # FLOW_RECORD_DTYPE, exported (in export order) then active (by slot)


def prefix_keys(keys: npt.NDArray[Any], v4_len: int = 24, v6_len: int = 48) -> npt.NDArray[np.uint64]:
    """The shared-counter key of each packet's source prefix.

    Layout: ``family << 56 | prefix_len << 48 | network bits`` where the network bits are the IPv4
    address masked to ``v4_len`` (low 32 bits) or the top 48 bits of the IPv6 address masked to
    ``v6_len`` (``v6_len`` <= 48). Never 2**64-1 (the reserved key)."""
    n = len(keys)
    fam = keys["family"]
    src = keys["src"]
    out = np.zeros(n, dtype=np.uint64)
    is4 = fam == 4
    if is4.any():
        a = np.ascontiguousarray(src[is4, :4]).view(">u4").reshape(-1).astype(np.uint64)
        a &= np.uint64(m.prefix_mask(v4_len))
        out[is4] = (np.uint64(4) << np.uint64(56)) | (np.uint64(v4_len) << np.uint64(48)) | a
    is6 = fam == 6
    if is6.any():
        b = np.zeros((int(is6.sum()), 8), dtype=np.uint8)
        b[:, 2:] = src[is6, :6]
        a = b.view(">u8").reshape(-1).astype(np.uint64)
        a &= np.uint64(((1 << 48) - 1) ^ ((1 << (48 - v6_len)) - 1))
        out[is6] = (np.uint64(6) << np.uint64(56)) | (np.uint64(v6_len) << np.uint64(48)) | a
    return out


def _decode_prefixes(keys: npt.NDArray[np.uint64], pkts: npt.NDArray[np.uint64],
                     nbytes: npt.NDArray[np.uint64]) -> npt.NDArray[Any]:
    out = np.zeros(len(keys), dtype=PREFIX_DTYPE)
    for i, k in enumerate(keys.tolist()):
        fam, plen, bits = k >> 56, (k >> 48) & 0xFF, k & ((1 << 48) - 1)
        if fam == 4:
            addr = bits.to_bytes(4, "big") + bytes(12)
            text = f"{ipaddress.IPv4Address(bits)}/{plen}"
        else:
            addr = bits.to_bytes(6, "big") + bytes(10)
            text = f"{ipaddress.IPv6Address(addr)}/{plen}"
        out[i]["prefix"] = text
        out[i]["family"] = fam
        out[i]["prefix_len"] = plen
        out[i]["addr"] = np.frombuffer(addr, dtype=np.uint8)
    out["packets"] = pkts
    out["bytes"] = nbytes
    return out


class Monitor(VNF):
    """Per-flow and shared per-prefix traffic counters (see the module docstring)."""

    name = "monitor"
    dirty_tracked = True  # its table writes go through slots handed out in the same batch

    def setup(self, ctx: Context, **config: Any) -> None:
        m.check_keys(config, set(DEFAULTS), "Monitor")
        cfg = {**DEFAULTS, **config}
        cap = m.as_int(cfg["flow_capacity"], "flow_capacity", 1, 1 << 26)
        idle = m.as_opt_seconds(cfg["idle_timeout_s"], "idle_timeout_s")
        close = m.as_opt_seconds(cfg["tcp_close_timeout_s"], "tcp_close_timeout_s")
        self.v4_len = m.as_int(cfg["ipv4_prefix_len"], "ipv4_prefix_len", 1, 32)
        self.v6_len = m.as_int(cfg["ipv6_prefix_len"], "ipv6_prefix_len", 1, 48)
        slots = m.as_int(cfg["prefix_slots"], "prefix_slots", 1, 1 << 26)
        self.export_limit = m.as_int(cfg["export_limit"], "export_limit", 0, 1 << 40)
        self.out_port = m.as_port(cfg["out_port"], "out_port")
        self.flows = ctx.flow_table("monitor.flows", capacity=cap, value_dtype=_VALUE_DTYPE,
                                    idle_timeout_s=idle, tcp_close_timeout_s=close)
        self.prefix_packets = ctx.counters("monitor.prefix_packets", slots=slots, keyed=True)
        self.prefix_bytes = ctx.counters("monitor.prefix_bytes", slots=slots, keyed=True)
        self._exports: list[npt.NDArray[Any]] = []
        self._n_exports = 0
        self._stats = dict.fromkeys(("packets", "bytes", "flows_new", "flows_exported", "export_discarded",
                                     "untracked", "prefix_full"), 0)

    # ------------------------------------------------------------------------------------ packet path
    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        n = len(batch)
        if n == 0:
            return
        m.require_parsed(batch)
        sctx = m.state_context(ctx)
        self._export(self.flows.expire(int(batch.ts_ns.min())))

        live = m.live_mask(batch)
        if live.all():
            sel = None
            slots, is_new = self.flows.lookup_or_insert(batch)
            keys = batch.key
            ts = batch.ts_ns
            pids = batch.packet_id
            nbytes = m.ip_bytes(batch)
        else:
            sel = np.flatnonzero(live)
            keys = batch.key[sel]
            ts = np.ascontiguousarray(batch.ts_ns[sel])
            pids = np.ascontiguousarray(batch.packet_id[sel])
            slots, is_new = self.flows.lookup_or_insert(
                keys, np.ascontiguousarray(batch.flow_id[sel]), ts, np.ascontiguousarray(batch.tcp_flags[sel]))
            nbytes = m.ip_bytes(batch)[sel]
        if len(slots):
            ok = slots != _core.NO_SLOT
            vals = self.flows.values
            vals["first_ts"][slots[is_new]] = ts[is_new]
            good = slots[ok]
            m.add_at(vals["packets"], good)
            m.add_at(vals["bytes"], good, nbytes[ok])
            self._stats["untracked"] += int(len(slots) - len(good))
            self._stats["flows_new"] += int(np.count_nonzero(is_new))
            self._stats["packets"] += len(slots)
            self._stats["bytes"] += int(nbytes.sum())

            # Shared per-prefix counters: one access per distinct prefix of the batch.
            pk = prefix_keys(keys, self.v4_len, self.v6_len)
            ukeys, upids, (cnt, byt) = m.per_key_sums(pk, pids, np.ones(len(pk)), nbytes)
            r1 = self.prefix_packets.add(sctx, ukeys, cnt, upids)
            r2 = self.prefix_bytes.add(sctx, ukeys, byt, upids)
            self._stats["prefix_full"] += int(np.count_nonzero(r1 == COUNTER_FULL) + np.count_nonzero(r2 == COUNTER_FULL))

        if sel is None:
            batch.port[:] = self.out_port
        else:
            batch.port[sel] = self.out_port

    def _export(self, expired: npt.NDArray[Any]) -> None:
        if len(expired) == 0:
            return
        rec = np.zeros(len(expired), dtype=FLOW_RECORD_DTYPE)
        rec["key"] = expired["key"]
        rec["packets"] = expired["value"]["packets"]
        rec["bytes"] = expired["value"]["bytes"]
        rec["first_ts"] = expired["value"]["first_ts"]
        rec["last_ts"] = expired["last_ts"]
        rec["end"] = expired["reason"]
        self._stats["flows_exported"] += len(rec)
        self._exports.append(rec)
        self._n_exports += len(rec)
        while self._n_exports > self.export_limit and self._exports:
            extra = self._n_exports - self.export_limit
            head = self._exports[0]
            if len(head) <= extra:
                self._exports.pop(0)
                self._n_exports -= len(head)
                self._stats["export_discarded"] += len(head)
            else:
                self._exports[0] = head[extra:]
                self._n_exports -= extra
                self._stats["export_discarded"] += extra

    # ------------------------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def snapshot(self) -> dict[str, Any]:
        """Python-side state for a checkpoint: the export list and counters (see :meth:`VNF.snapshot`)."""
        return {"exports": self.exported().copy(), "stats": dict(self._stats)}

    def restore(self, state: dict[str, Any]) -> None:
        m.check_keys(state, {"exports", "stats"}, "Monitor.restore")
        ex = np.asarray(state["exports"])
        if ex.dtype != FLOW_RECORD_DTYPE:
            raise ValueError(f"Monitor.restore: exports must have FLOW_RECORD_DTYPE, got {ex.dtype}")
        self._exports = [ex.copy()] if len(ex) else []
        self._n_exports = len(ex)
        self._stats.update({k: int(v) for k, v in state["stats"].items() if k in self._stats})

    def exported(self) -> npt.NDArray[Any]:
        """Flow records exported so far (expired flows), oldest first."""
        if not self._exports:
            return np.zeros(0, dtype=FLOW_RECORD_DTYPE)
        return np.concatenate(self._exports)

    def drain_exports(self) -> npt.NDArray[Any]:
        """Exported records, removed from the exporter (what a collector would receive)."""
        out = self.exported()
        self._exports, self._n_exports = [], 0
        return out

    def active(self) -> npt.NDArray[Any]:
        """Records of the flows still live in this worker's table (``end`` = 0), by slot."""
        live = self.flows.to_numpy()
        rec = np.zeros(len(live), dtype=FLOW_RECORD_DTYPE)
        rec["key"] = live["key"]
        rec["packets"] = live["value"]["packets"]
        rec["bytes"] = live["value"]["bytes"]
        rec["first_ts"] = live["value"]["first_ts"]
        rec["last_ts"] = live["last_ts"]
        return rec

    def top_prefixes(self, top: int | None = 10) -> npt.NDArray[Any]:
        """The shared per-prefix counters (all workers), most packets first (ties: more bytes, then key)."""
        k1, v1 = self.prefix_packets.items()
        k2, v2 = self.prefix_bytes.items()
        o1, o2 = np.argsort(k1, kind="stable"), np.argsort(k2, kind="stable")
        k1, v1, k2, v2 = k1[o1], v1[o1], k2[o2], v2[o2]
        if not np.array_equal(k1, k2):  # only while another worker is mid-batch
            k2v = dict(zip(k2.tolist(), v2.tolist()))
            v2 = np.array([k2v.get(k, 0) for k in k1.tolist()], dtype=np.uint64)
        order = np.lexsort((k1, -v2.astype(np.float64), -v1.astype(np.float64)))
        if top is not None:
            order = order[:top]
        return _decode_prefixes(k1[order], v1[order], v2[order])

    def report(self, top: int | None = 10, include_active: bool = True) -> MonitorReport:
        """Top prefixes (shared, over all workers) and this worker's flow records (exported, then active)."""
        flows = [self.exported()]
        if include_active:
            flows.append(self.active())
        return MonitorReport(self.top_prefixes(top), np.concatenate(flows))


def merged_report(monitors: list[Monitor], top: int | None = 10, include_active: bool = True) -> MonitorReport:
    """One report over several workers (e.g. ``Runner.vnfs``): shared prefixes, every worker's flows."""
    if not monitors:
        raise ValueError("monitors: need at least one Monitor")
    flows = [mon.report(None, include_active).flows for mon in monitors]
    return MonitorReport(monitors[0].top_prefixes(top), np.concatenate(flows))
