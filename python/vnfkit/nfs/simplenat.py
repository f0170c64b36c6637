"""SimpleNAT: static one-to-one ("basic") NAT of an internal IPv4 prefix onto an external prefix.

The study's second NAT (ETSI GS NFV-REL 002 lists "Basic NAT" next to MazuNAT): addresses only, no
port translation (RFC 3022 Basic NAT with a static mapping). Every internal host ``I`` in
``internal_prefix`` is seen outside as ``external_prefix | host bits of I``:

* **outbound** (source in ``internal_prefix``): the source address is rewritten to the external one;
* **inbound** (destination in ``external_prefix``): the destination is rewritten back to the
  internal one; a packet can be both (hairpin between two internal hosts via their public names).
* **unmatched** packets (neither; also all IPv6): forwarded unchanged (``unmatched="forward"``,
  the default) or dropped with ``DropReason.POLICY`` (``unmatched="drop"``).

Checksums (IPv4 header, TCP/UDP incl. pseudo header) are updated incrementally by
:meth:`PacketBatch.rewrite_source` / :meth:`rewrite_destination`. ICMP error messages are translated
in their outer header only (the quoted inner header is left alone), as with many basic NATs.

Egress: a packet whose destination (after translation) is in ``internal_prefix`` leaves on
``internal_port``, every other forwarded packet on ``external_port``.

State. The translation itself is stateless, so it never drops for lack of state. Per-flow counters
live in the worker's FlowTable ``simplenat.flows``, keyed by the flow's internal-side 5-tuple
(internal host as source), with packets and IP bytes per direction; flows expire on packet time
(idle / after TCP FIN or RST). A full table only means the flow is not counted (``untracked``).
Aggregate totals are shared by all workers in the direct Counters ``simplenat.totals`` (slots:
outbound, inbound, passthrough, dropped): one logged access per (category, batch).

The batch must be parsed (``batch.parse()``) before :meth:`SimpleNAT.process`; packets the parser
dropped stay dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _core
from ..vnf import VNF, Context
from . import _mbox as m

__all__ = ["DEFAULTS", "FLOW_DTYPE", "SimpleNAT", "TOTAL_SLOTS"]

#: Slots of the shared ``simplenat.totals`` counters.
TOTAL_SLOTS = ("outbound", "inbound", "passthrough", "dropped")
_OUT, _IN, _PASS, _DROP = range(4)

#: Per-flow record (FlowTable value) of SimpleNAT.
FLOW_DTYPE = np.dtype(
    [("pkts_out", "<u8"), ("bytes_out", "<u8"), ("pkts_in", "<u8"), ("bytes_in", "<u8"), ("first_ts", "<u8")]
)

DEFAULTS: dict[str, Any] = {
    "internal_prefix": "10.0.0.0/8",
    "external_prefix": "100.0.0.0/8",
    "unmatched": "forward",
    "internal_port": 1,
    "external_port": 2,
    "flow_capacity": 65536,
    "idle_timeout_s": 300.0,
    "tcp_close_timeout_s": 10.0,
}


class SimpleNAT(VNF):
    """Static 1:1 prefix NAT (see the module docstring). Config keys and defaults: :data:`DEFAULTS`."""

    name = "simplenat"
    dirty_tracked = True  # its table writes go through slots handed out in the same batch

    def setup(self, ctx: Context, **config: Any) -> None:
        m.check_keys(config, set(DEFAULTS), "SimpleNAT")
        cfg = {**DEFAULTS, **config}
        self.int_net, ilen = m.as_ipv4_prefix(cfg["internal_prefix"], "internal_prefix")
        self.ext_net, elen = m.as_ipv4_prefix(cfg["external_prefix"], "external_prefix")
        if ilen != elen:
            raise ValueError(f"external_prefix: length /{elen} must equal internal_prefix's /{ilen} (1:1 mapping)")
        self.mask = m.prefix_mask(ilen)
        if (self.int_net & self.mask) == (self.ext_net & self.mask):
            raise ValueError("external_prefix: must differ from internal_prefix")
        self.unmatched = m.as_choice(cfg["unmatched"], "unmatched", ("forward", "drop"))
        self.internal_port = m.as_port(cfg["internal_port"], "internal_port")
        self.external_port = m.as_port(cfg["external_port"], "external_port")
        cap = m.as_int(cfg["flow_capacity"], "flow_capacity", 1, 1 << 26)
        idle = m.as_opt_seconds(cfg["idle_timeout_s"], "idle_timeout_s")
        close = m.as_opt_seconds(cfg["tcp_close_timeout_s"], "tcp_close_timeout_s")
        self.flows = ctx.flow_table("simplenat.flows", capacity=cap, value_dtype=FLOW_DTYPE,
                                    idle_timeout_s=idle, tcp_close_timeout_s=close)
        self.totals = ctx.counters("simplenat.totals", slots=len(TOTAL_SLOTS))
        self._stats = dict.fromkeys(
            ("translated_out", "translated_in", "passthrough", "dropped_unmatched", "untracked", "flows_expired"), 0)

    # ------------------------------------------------------------------------------------ packet path
    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        n = len(batch)
        if n == 0:
            return
        m.require_parsed(batch)
        sctx = m.state_context(ctx)
        ts = batch.ts_ns
        self._stats["flows_expired"] += len(self.flows.expire(int(ts.min())))

        keys = batch.key
        live = m.live_mask(batch) & (keys["family"] == 4)
        src = m.v4_addr(keys, "src")
        dst = m.v4_addr(keys, "dst")
        mask = np.uint32(self.mask)
        host = np.uint32(~self.mask & 0xFFFFFFFF)
        out_m = live & ((src & mask) == np.uint32(self.int_net))
        in_m = live & ((dst & mask) == np.uint32(self.ext_net))
        unmatched = m.live_mask(batch) & ~(out_m | in_m)

        # Per-flow accounting on the internal-side 5-tuple, before any rewrite changes the keys.
        self._count_flows(batch, out_m, in_m)

        out_idx = np.flatnonzero(out_m).astype(np.uint32)
        in_idx = np.flatnonzero(in_m).astype(np.uint32)
        if len(out_idx):
            new_src = (np.uint32(self.ext_net) | (src[out_idx] & host)).astype(np.uint32)
            batch.rewrite_source(out_idx, new_src, np.ascontiguousarray(keys["sport"][out_idx]))
        if len(in_idx):
            new_dst = (np.uint32(self.int_net) | (dst[in_idx] & host)).astype(np.uint32)
            batch.rewrite_destination(in_idx, new_dst, np.ascontiguousarray(keys["dport"][in_idx]))
            dst[in_idx] = new_dst

        # Egress: towards the inside if the (translated) destination is internal, else outside.
        port = batch.port
        fwd = out_m | in_m
        if self.unmatched == "forward":
            fwd = fwd | unmatched
        to_inside = (dst & mask) == np.uint32(self.int_net)
        port[fwd] = np.where(to_inside[fwd], self.internal_port, self.external_port).astype(np.uint16)
        if self.unmatched == "drop":
            port[unmatched] = 0
            batch.drop[unmatched] = int(_core.DropReason.POLICY)

        n_out = int(np.count_nonzero(out_m))
        n_un = int(np.count_nonzero(unmatched))
        self._stats["translated_out"] += n_out
        self._stats["translated_in"] += int(np.count_nonzero(in_m))
        if self.unmatched == "forward":
            self._stats["passthrough"] += n_un
        else:
            self._stats["dropped_unmatched"] += n_un

        # Shared totals: one access per non-empty category, made for its first packet.
        cats = np.full(n, -1, dtype=np.int64)
        cats[unmatched] = _PASS if self.unmatched == "forward" else _DROP
        cats[in_m] = _IN
        cats[out_m] = _OUT  # a hairpin packet counts as outbound
        sel = cats >= 0
        if sel.any():
            ukeys, pids, (cnt,) = m.per_slot_sums(cats[sel], len(TOTAL_SLOTS), batch.packet_id[sel],
                                                  np.ones(int(sel.sum())))
            self.totals.add(sctx, ukeys, cnt, pids)

    def _count_flows(self, batch: _core.PacketBatch, out_m: npt.NDArray[np.bool_], in_m: npt.NDArray[np.bool_]) -> None:
        sel = np.flatnonzero(out_m | in_m)
        if len(sel) == 0:
            return
        inbound = ~out_m[sel]  # hairpin packets count as outbound
        if len(sel) == len(batch) and not inbound.any():  # all outbound: the batch's own columns
            slots, is_new = self.flows.lookup_or_insert(batch)
            self._account(batch, sel, slots, is_new, inbound, all_rows=True)
            return
        keys = batch.key[sel]  # a copy
        if inbound.any():
            # Internal-side tuple of an inbound packet: reversed, with the internal destination.
            rk = keys[inbound]
            host = np.uint32(~self.mask & 0xFFFFFFFF)
            internal = np.uint32(self.int_net) | (m.v4_addr(rk, "dst") & host)
            rev = rk.copy()
            rev["src"] = 0
            rev["src"][:, :4] = internal.astype(">u4").view(np.uint8).reshape(-1, 4)
            rev["dst"] = rk["src"]
            rev["sport"] = rk["dport"]
            rev["dport"] = rk["sport"]
            keys[inbound] = rev
        slots, is_new = self.flows.lookup_or_insert(
            keys, np.ascontiguousarray(batch.flow_id[sel]), np.ascontiguousarray(batch.ts_ns[sel]),
            np.ascontiguousarray(batch.tcp_flags[sel]))
        self._account(batch, sel, slots, is_new, inbound, all_rows=False)

    def _account(self, batch: _core.PacketBatch, sel: npt.NDArray[np.intp], slots: npt.NDArray[np.uint32],
                 is_new: npt.NDArray[np.bool_], inbound: npt.NDArray[np.bool_], all_rows: bool) -> None:
        ok = slots != _core.NO_SLOT
        self._stats["untracked"] += int(np.count_nonzero(~ok))
        vals = self.flows.values
        nb = m.ip_bytes(batch) if all_rows else m.ip_bytes(batch)[sel]
        ts = batch.ts_ns if all_rows else batch.ts_ns[sel]
        vals["first_ts"][slots[is_new]] = ts[is_new]
        o = ok & ~inbound
        i = ok & inbound
        m.add_at(vals["pkts_out"], slots[o])
        m.add_at(vals["bytes_out"], slots[o], nb[o])
        if i.any():
            m.add_at(vals["pkts_in"], slots[i])
            m.add_at(vals["bytes_in"], slots[i], nb[i])

    # ------------------------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def snapshot(self) -> dict[str, Any]:
        """Python-side state for a checkpoint: this worker's counters (see :meth:`VNF.snapshot`)."""
        return {"stats": dict(self._stats)}

    def restore(self, state: dict[str, Any]) -> None:
        m.check_keys(state, {"stats"}, "SimpleNAT.restore")
        self._stats.update({k: int(v) for k, v in state["stats"].items() if k in self._stats})

    def flow_records(self) -> npt.NDArray[Any]:
        """This worker's live flows (FlowTable.to_numpy: key = internal-side 5-tuple, value = FLOW_DTYPE)."""
        out: npt.NDArray[Any] = self.flows.to_numpy()
        return out

    def shared_totals(self) -> dict[str, int]:
        """Totals over every worker (the shared counters; control-plane read)."""
        return {name: int(self.totals.get(i)) for i, name in enumerate(TOTAL_SLOTS)}
