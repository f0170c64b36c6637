"""The MazuNAT VNF: per-batch translation of both directions over two per-worker flow tables.

Mappings live in two per-worker :class:`~vnfkit.tables.FlowTable` s: the outbound table (the
internal 5-tuple -> a 32-byte record: deadline, timeout, internal address and port, public port,
protocol, slot of the reply entry) and the reply table (the reply 5-tuple towards the public
address -> slot of the outbound record). Outbound entries carry the batch's direction-independent
``flow_id`` (so ``FlowTable.active_in_range`` finds a worker's flows, as scale-out needs).

Because packets of *both* directions refresh one mapping and each protocol has its own timeout, the
deadline is kept in the outbound record (refreshed in packet order by the native
``touch_deadlines_at``) rather than in the table's own single-timeout timer; within one batch a
flow's first packet decides whether its mapping had expired. Expired mappings are garbage-collected
at most every ``gc_interval_s`` of packet time (a native scan of the records that have a deadline,
found through a byte-per-slot index kept beside the table); their reply entries are removed and
their pool ports released.

Every access to shared state (the pools, the ICMP echo map) goes through the worker's recording
context (``ctx.state``, for which a replay harness substitutes its replay context), so a run can be
replayed with every allocation forced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ... import _core
from ...tables import NO_SLOT, FlowTable
from ...vnf import VNF, Context
from .._mbox import state_context
from .config import DEFAULTS, NatConfig, parse_config
from .firewall import EXTERNAL, INTERNAL, RuleSteps
from .columns import _KEY_DTYPE, _entry_keys, _keys_at, addr_column
from .endpoint import EndpointClaims, EndpointPorts
from .fastpath import FastSteps
from .pools import Affinity, NatPools, subpool_map
from .rules import ICMP, RULES, TCP, UDP, NatRules

__all__ = ["DEFAULTS", "EXTERNAL", "INTERNAL", "MazuNAT"]

_POLICY = int(_core.DropReason.POLICY)
_NO_MAPPING = int(_core.DropReason.NO_MAPPING)
_POOL_EXHAUSTED = int(_core.DropReason.POOL_EXHAUSTED)
_TABLE_FULL = int(_core.DropReason.TABLE_FULL)
_FLAG_FRAGMENT, _FLAG_FIRST_FRAGMENT = 1, 2

# Per-mapping record of the outbound table (32 bytes: two per cache line, never straddling one).
_OUT_DTYPE = np.dtype([
    ("deadline", "<u8"),   # packet time at which the mapping expires (0: new / free)
    ("timeout", "<u8"),    # idle timeout of this mapping (ns); the done timeout after FIN/RST
    ("int_addr", "<u4"),   # internal address and port (what replies are translated back to)
    ("in_slot", "<u4"),    # slot of the reply entry in the inbound table
    ("nat_port", "<u2"),   # public port / ICMP id
    ("int_port", "<u2"),
    ("proto", "u1"),
    ("_pad", "V3"),
])
assert _OUT_DTYPE.itemsize == 32
_DEADLINE_OFF: int = _OUT_DTYPE.fields["deadline"][1]  # type: ignore[index]
_TIMEOUT_OFF: int = _OUT_DTYPE.fields["timeout"][1]  # type: ignore[index]
_IN_DTYPE = np.dtype("<u4")  # reply entry -> slot of its outbound record


class MazuNAT(RuleSteps, EndpointClaims, FastSteps, VNF):
    """The Mazu Networks NAT gateway (see the package docstring). One instance per worker."""

    name = "mazunat"
    dirty_tracked = True  # writes through kept slots (replies, ICMP) are marked with mark_dirty
    #: make new TCP/UDP mappings inside the native fast path where the pools allow it (False: always
    #: through :meth:`_new_mappings`; same decisions, slower; for comparisons)
    native_new_flows = True
    #: take the common batch (TCP/UDP both ways, no expiry scan due) in one call of the native
    #: :class:`~vnfkit._core.NatFastPath` (False: split and fast path as separate calls; same
    #: decisions, slower; for comparisons)
    native_batch = True

    # ------------------------------------------------------------------------------------ setup
    def setup(self, ctx: Context, **config: Any) -> None:
        cfg = parse_config(config)
        self.cfg: NatConfig = cfg
        self.net, self.mask, self.public = cfg.net, cfg.mask, cfg.public
        raw = cfg.raw
        ctx.control.setdefault(RULES, NatRules(raw["forwards"], raw["deny"], internal_net=raw["internal_net"]))
        if ctx.shared is None:  # driven directly without a runner: a private SharedState
            from ...state import SharedState

            ctx.shared = SharedState()
            ctx.state = ctx.shared.context(ctx.queue)
        cl = ctx.classifier
        self.affinity = cfg.affinity and cl is not None and ctx.num_queues > 1 and not cl.symmetric and cl.use_ports
        subpool_of = subpool_map(cl, cfg.port_lo, cfg.port_hi) if self.affinity else None
        self.pools = NatPools(ctx, cfg.port_lo, cfg.port_hi, cfg.icmp_lo, cfg.icmp_hi, subpool_of)
        self.aff = Affinity(cl, ctx.queue, self.public) if self.affinity else None
        self.edm = EndpointPorts(cfg.port_lo, cfg.port_hi, subpool_of) if cfg.endpoint_dependent else None
        # new TCP/UDP mappings are made inside the native fast path from the shared pools (this
        # queue's shares, the affinity sub-pools: the same choice and pool calls as
        # NatPools.allocate); endpoint-dependent ports, in Python
        kw = self.pools.fast_path_args(self.aff) if self.edm is None and self.native_new_flows else None
        self._native_pools = (self.pools.tcp, self.pools.udp) if kw is not None else None
        self._native_kw: dict[str, Any] = kw or {}
        self.icmp_lo = cfg.icmp_lo
        self.timeout_ns = dict(cfg.timeout_ns)
        self.done_ns = cfg.done_ns
        self.gc_ns = cfg.gc_ns
        self.next_gc = 0
        cap = cfg.max_flows
        self._capacity = cap
        # One outbound table (all protocols: the key holds the protocol) and one reply table
        # (TCP/UDP). Expiry is the NAT's own (see the module docstring); the engine timers are unused.
        # declared on the context, so a checkpointer images (and restores in place) both tables
        self.out: FlowTable = ctx.flow_table("mazunat.out", capacity=cap, value_dtype=_OUT_DTYPE)
        self.inb: FlowTable = ctx.flow_table("mazunat.reply", capacity=cap, value_dtype=_IN_DTYPE)
        # ICMP only: the values this worker stored in the shared echo map, per outbound slot
        self._enc_int = np.zeros(cap, np.uint64)
        self._enc_peer = np.zeros(cap, np.uint64)
        # whether an ICMP mapping may be live (set when an echo request reaches the outbound table,
        # which is the only way one is made): while not, snapshot() need not scan the table for them
        self._icmp_seen = False
        self._pub = np.full(1 << 16, self.public, np.uint32)  # sliced, never written
        # the fast path's buffers: one mark byte per outbound slot, the deferred lists (grown)
        self._mark = np.zeros(cap, np.uint8)
        # the GC index: 1 for (at least) every outbound record whose deadline is non-zero, so the
        # expiry scan reads only those records (set wherever a deadline leaves 0, cleared by the scan)
        self._armed = np.zeros(cap, np.uint8)
        self._bind()
        self._sctx = state_context(ctx)  # the recording context the native fast path allocates through
        self._grow(1024)  # the fast path's buffers and the native object over them
        self.c: dict[str, int] = dict.fromkeys(
            ["translations", "reverse_translations", "forwards", "forward_replies", "new_mappings",
             "expired_mappings", "drop_no_mapping", "drop_pool_exhausted", "drop_table_full",
             "drop_denied", "drop_proto", "drop_ipv6", "drop_not_routed", "drop_spoofed",
             "drop_fragment", "pool_exhausted_events"], 0)

    def _bind(self) -> None:
        """Field views of the records read on every batch (engine memory: made once per table)."""
        self._out_vals = self.out.values
        self._nat_port = self._out_vals["nat_port"]
        self._int_addr = self._out_vals["int_addr"]
        self._int_port = self._out_vals["int_port"]
        self._in_vals = self.inb.values

    def stats(self) -> dict[str, int]:
        """Counters of this worker (the runner sums them over workers): translations,
        reverse_translations, forwards (inbound port forwards), forward_replies, new_mappings,
        expired_mappings, drop_* by cause, pool_exhausted_events (allocations that found the pool
        empty), and the gauges ``mappings`` = ``pool_in_use`` (live mappings = pool ports / ICMP
        ids this worker holds)."""
        out = dict(self.c)
        out["mappings"] = out["pool_in_use"] = len(self.out)
        return out

    def snapshot(self) -> dict[str, Any]:
        """This worker's Python-side state at a batch boundary (see :meth:`VNF.snapshot`): counters,
        the GC clock, and the ICMP echo-map values of live ICMP mappings. The two tables
        (``mazunat.out``, ``mazunat.reply`` in ``ctx.tables``) and the shared pools are imaged by the
        checkpointer itself."""
        if self._icmp_seen:
            live = self.out.live_slots(mark_dirty=False)  # read only
            icmp = live[self._out_vals["proto"][live] == ICMP]
        else:
            icmp = np.zeros(0, np.uint32)
        return {"counters": dict(self.c), "next_gc": int(self.next_gc), "icmp_slots": icmp.copy(),
                "icmp_enc_int": self._enc_int[icmp].copy(), "icmp_enc_peer": self._enc_peer[icmp].copy()}

    def restore(self, state: dict[str, Any]) -> None:
        """Roll back to a :meth:`snapshot` of a twin instance, in place (the tables are restored in
        place by the checkpointer, so the cached record views stay valid)."""
        missing = {"counters", "next_gc", "icmp_slots", "icmp_enc_int", "icmp_enc_peer"} - set(state)
        if missing:
            raise ValueError(f"MazuNAT.restore: state lacks {sorted(missing)}")
        slots = np.asarray(state["icmp_slots"], np.int64)
        if len(slots) and (slots.min() < 0 or slots.max() >= self._capacity):
            raise ValueError(f"MazuNAT.restore: ICMP slots outside max_flows={self._capacity}")
        counters = dict(state["counters"])
        if set(counters) != set(self.c):
            raise ValueError("MazuNAT.restore: counters of another configuration or version")
        self.c = counters
        self.next_gc = int(state["next_gc"])
        self._armed[:] = 1  # the restored records' deadlines are unknown here: the next scan reads all
        self._enc_int[:] = 0
        self._enc_peer[:] = 0
        self._enc_int[slots] = state["icmp_enc_int"]
        self._enc_peer[slots] = state["icmp_enc_peer"]
        self._icmp_seen = bool(len(slots))

    # ------------------------------------------------------------------------------- mappings
    def _free(self, slots: npt.NDArray[np.uint32], sctx: Any, pid: int) -> None:
        """Remove the mappings in `slots` of the outbound table: release their ports, drop the
        reply entries (TCP/UDP) or clear the shared echo map (ICMP)."""
        if len(slots) == 0:
            return
        slots = np.ascontiguousarray(slots, dtype=np.uint32)
        t = self.out
        v = t.values[slots]
        for proto in (TCP, UDP, ICMP):
            m = (v["proto"] == proto) & (v["nat_port"] != 0)
            if not m.any():
                continue
            vv = v[m]
            ports = np.ascontiguousarray(vv["nat_port"])
            ids = np.full(len(ports), pid, np.uint64)
            if proto == ICMP:
                keys = (ports - self.icmp_lo).astype(np.uint64)
                ms = slots[m]
                self.pools.icmp_map.add(sctx, keys, -self._enc_int[ms].astype(np.int64), ids)
                self.pools.icmp_peer.add(sctx, keys, -self._enc_peer[ms].astype(np.int64), ids)
            else:
                self.inb.remove_slots(np.ascontiguousarray(vv["in_slot"]))
            if proto == ICMP or self.edm is None:
                self.pools.by_proto[proto].release(sctx, ports, ids)
            self.c["expired_mappings"] += len(ports)
        t.values["deadline"][slots] = 0
        t.remove_slots(slots)

    def _gc(self, now: int, sctx: Any, pid: int) -> None:
        if len(self.out) == 0:
            return
        dead = _core.nat_expired(self.out._t, now, self._armed)  # one native pass over the armed records
        if len(dead):
            self._free(dead, sctx, pid)

    # -------------------------------------------------------------------------------- process
    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        n = len(batch)
        if n == 0:
            return
        rules: NatRules = ctx.control.get(RULES)  # read once: the whole batch uses this version
        sctx = state_context(ctx)
        if self.native_batch and not len(rules.deny):
            # the common batch (TCP/UDP both ways, no expiry scan due) in one native call; anything
            # else (status 4) takes the general path below, which splits the batch again
            if n > self._d_cap or sctx is not self._sctx:  # (a replay harness may swap the context)
                self._sctx = sctx
                self._grow(n)
            r = self._engine.run(batch, rules.fwd_rev_flags, rules.fwd_in_flags, self.next_gc)
            if r[0] == 5:  # the common batch, but an expiry scan is due first (r[1]: its earliest time)
                self._gc(r[1], sctx, int(batch.packet_id[0]))
                self.next_gc = r[1] + self.gc_ns
                r = self._engine.run(batch, rules.fwd_rev_flags, rules.fwd_in_flags, self.next_gc)
            if r[0] < 4:  # 0-3: done (4, or 5 again: the general path below)
                self._fast_done(batch, sctx, rules, r)
                return
        c = self.c
        key = batch.key
        # One native pass: host-order addresses; TCP/UDP outbound / inbound lists (their output
        # port preset to EXTERNAL / INTERNAL, every other packet's to 0); other IPv4, non-IPv4,
        # and the non-TCP/UDP outbound / inbound packets. Every drop below zeroes the port again.
        src, dst, oidx, iidx, other, nv4, onp, inp, t_min = _core.split_gateway(
            batch, self.net, self.mask, self.public, EXTERNAL, INTERNAL, True, min_ts=True)
        if len(nv4):
            batch.drop[nv4] = _POLICY
            fam6 = int(np.count_nonzero(key["family"][nv4] == 6))
            c["drop_ipv6"] += fam6
            c["drop_proto"] += len(nv4) - fam6
        if len(other):
            batch.drop[other] = _POLICY
            fl = batch.flags[other]
            fragm = (fl & (_FLAG_FRAGMENT | _FLAG_FIRST_FRAGMENT)) == _FLAG_FRAGMENT
            frag = int(np.count_nonzero(fragm))
            spoofed = int(np.count_nonzero((dst[other] == np.uint32(self.public)) & ~fragm))
            c["drop_fragment"] += frag
            c["drop_spoofed"] += spoofed
            c["drop_not_routed"] += len(other) - spoofed - frag

        if t_min >= self.next_gc:  # t_min: the batch's earliest packet time (from split_gateway)
            self._gc(t_min, sctx, int(batch.packet_id[0]))
            self.next_gc = t_min + self.gc_ns

        if not len(onp) and not len(rules.deny):
            if len(oidx) or len(iidx):
                self._fast(batch, sctx, rules, src, dst, oidx, iidx)
        else:
            self._stepwise(batch, sctx, rules, key, src, dst, oidx, iidx, onp)
        if len(inp):  # ICMP echo replies through the shared echo map; other protocols dropped
            rep = key["proto"][inp] == ICMP
            if rep.any():
                rep[rep] = self._icmp_type(batch, inp[rep]) == 0
            self._drop(batch, inp[~rep], _POLICY, "drop_proto")
            if rep.any():
                self._inbound_icmp(batch, sctx, inp[rep])

    def _stepwise(self, batch: _core.PacketBatch, sctx: Any, rules: NatRules, key: npt.NDArray[Any],
                  src: npt.NDArray[np.uint32], dst: npt.NDArray[np.uint32], oidx: npt.NDArray[np.uint32], iidx: npt.NDArray[np.uint32], onp: npt.NDArray[np.uint32]) -> None:
        """Outbound (ICMP echo requests, then TCP/UDP) and TCP/UDP inbound, one step at a time."""
        # ---------------------------------------------------------------- outbound
        if len(onp):  # ICMP echo requests are translated; anything else that is not TCP/UDP is not
            req = (key["proto"][onp] == ICMP)
            if req.any():
                req[req] = self._icmp_type(batch, onp[req]) == 8
            self._drop(batch, onp[~req], _POLICY, "drop_proto")
            onp = onp[req]
            if len(onp) and len(rules.deny):
                onp = self._deny(batch, rules, onp, dst)
            if len(onp):
                self._icmp_seen = True
                self._outbound(batch, sctx, onp, set_port=True)
        if len(oidx):
            if len(rules.forwards):
                oidx = self._forward_replies(batch, rules, oidx, key, src)
            if len(rules.deny) and len(oidx):
                oidx = self._deny(batch, rules, oidx, dst)
            if len(oidx):
                self._outbound(batch, sctx, oidx)
        # ---------------------------------------------------------------- inbound
        if len(iidx):
            if len(rules.forwards):
                iidx = self._forward_in(batch, rules, iidx, key)
            if len(iidx):
                self._inbound(batch, sctx, iidx)

    @staticmethod
    def _const(arr: npt.NDArray[Any], n: int) -> npt.NDArray[Any]:
        """n copies of a constant: a slice of a cached array when it is long enough."""
        return arr[:n] if n <= len(arr) else np.full(n, arr[0], arr.dtype)

    def _touch(self, slots: npt.NDArray[np.uint32], batch: _core.PacketBatch,
               idx: npt.NDArray[np.uint32]) -> tuple[npt.NDArray[np.bool_], int]:
        """Refresh the deadlines of `slots` at the times of packets `idx`, in order; FIN/RST
        switches a TCP mapping to the done timeout (tcp_flags is 0 for non-TCP). Returns the mask
        of packets that found their mapping already expired, and its count: only a flow's first
        packet of the call can (later ones see the deadline it just set)."""
        self._armed[slots] = 1
        self.out.mark_dirty(slots)  # replies reach these records by the slot kept in the reply table
        return _core.touch_deadlines_at(self._out_vals, _DEADLINE_OFF, _TIMEOUT_OFF, slots, batch, idx,
                                        0x05, self.done_ns)

    def _outbound(self, batch: _core.PacketBatch, sctx: Any, idx: npt.NDArray[np.uint32],
                  set_port: bool = False) -> None:
        # the native call straight on the batch's key, flow-id and time columns at rows idx (no
        # gather); no TCP flags (the NAT keeps its own deadlines)
        slots, new = self.out._t.lookup_or_insert(batch.key, batch.flow_id, batch.ts_ns, None, idx)
        self._outbound_rest(batch, sctx, idx, slots, new, set_port)

    def _outbound_rest(self, batch: _core.PacketBatch, sctx: Any, idx: npt.NDArray[np.uint32],
                       slots: npt.NDArray[np.uint32], new: npt.NDArray[np.bool_], set_port: bool = False) -> None:
        """Outbound packets `idx` after their lookup_or_insert (`slots`, `new`): new mappings,
        refresh, expiry, rewrite."""
        t = self.out
        # an insert can only have failed if the table is full now (its size never shrinks in a call)
        full = slots == NO_SLOT if len(t) >= self._capacity else None
        if full is not None and full.any():
            self._drop(batch, idx[full], _TABLE_FULL, "drop_table_full")
            keep = ~full
            idx, slots, new = idx[keep], slots[keep], new[keep]
        if np.count_nonzero(new):
            idx, slots = self._new_mappings(batch, sctx, idx, slots, new)
            if len(idx) == 0:
                return
        stale, n_stale = self._touch(slots, batch, idx)  # new records (deadline 0) are never stale
        if n_stale:
            # the mapping had expired at the flow's first packet of this batch: free it and map
            # every packet of the flow again (a new mapping)
            dead = np.unique(slots[stale])
            self._free(dead, sctx, int(batch.packet_id[idx[0]]))
            again = np.isin(slots, dead)
            self._outbound(batch, sctx, idx[again], set_port)
            keep = ~again
            idx, slots = idx[keep], slots[keep]
            if len(idx) == 0:
                return
        batch.rewrite_source(idx, self._const(self._pub, len(idx)), self._nat_port[slots])
        if set_port:
            batch.port[idx] = EXTERNAL
        self.c["translations"] += len(idx)

    def _new_mappings(self, batch: _core.PacketBatch, sctx: Any, idx: npt.NDArray[np.uint32],
                      slots: npt.NDArray[np.uint32], new: npt.NDArray[np.bool_]
                      ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
        """Give the new flows among `slots` a public port (or ICMP id) and install their reply
        side. Flows that get none (pool exhausted) are dropped and forgotten, so a later packet
        retries. Returns the packets and slots that keep going."""
        keys = _keys_at(batch.key, idx)
        ni = np.flatnonzero(new)
        lost_slots = []
        for proto in (TCP, UDP, ICMP):
            sel = ni[keys["proto"][ni] == proto]
            if len(sel) == 0:
                continue
            nslots = slots[sel]
            ids = batch.packet_id[idx[sel]]
            ks = keys[sel]
            if proto != ICMP and self.edm is not None:
                ok = self._claim(proto, nslots, ks, batch.hash[idx[sel]])
            else:
                got = self.pools.allocate(proto, sctx, ids, self.aff, addr_column(ks["dst"]),
                                          np.ascontiguousarray(ks["dport"]), batch.hash[idx[sel]])
                ok = got != 0
                if not ok.all():
                    nslots_ok, got, ids = nslots[ok], got[ok], ids[ok]
                else:
                    nslots_ok = nslots
                self._install(proto, sctx, nslots_ok, got, ids)
            if not ok.all():
                lost_slots.append(nslots[~ok])
                self.c["pool_exhausted_events"] += int(np.count_nonzero(~ok))
            self.c["new_mappings"] += int(np.count_nonzero(ok))
        if not lost_slots:
            return idx, slots
        # pool exhausted: drop every packet of these flows and forget them (retry later)
        bad = np.concatenate(lost_slots)
        self.out.remove_slots(np.ascontiguousarray(bad))
        lost = np.isin(slots, bad)
        self._drop(batch, idx[lost], _POOL_EXHAUSTED, "drop_pool_exhausted")
        keep = ~lost
        return idx[keep], slots[keep]

    def _record(self, proto: int, nslots: npt.NDArray[np.uint32], ports: npt.NDArray[np.uint16]) -> npt.NDArray[Any]:
        """Fill the outbound records of new mappings; returns their stored outbound keys."""
        v = self._out_vals
        v["nat_port"][nslots] = ports
        v["proto"][nslots] = proto
        v["timeout"][nslots] = self.timeout_ns[proto]
        ent = _entry_keys(self.out, nslots)
        v["int_addr"][nslots] = addr_column(ent["src"])
        v["int_port"][nslots] = ent["sport"]
        return ent

    def _reply_keys(self, ent: npt.NDArray[Any], ports: npt.NDArray[np.uint16], proto: int) -> npt.NDArray[Any]:
        reply = np.zeros(len(ent), _KEY_DTYPE)
        reply["src"] = ent["dst"]
        reply["dst"][:, :4] = np.array([self.public], ">u4").view(np.uint8)
        reply["sport"] = ent["dport"]
        reply["dport"] = ports
        reply["proto"] = proto
        reply["family"] = 4
        return reply

    def _install(self, proto: int, sctx: Any, nslots: npt.NDArray[np.uint32],
                 ports: npt.NDArray[np.uint16], ids: npt.NDArray[np.uint64]) -> None:
        """Record freshly allocated ports for the new flows in `nslots` and install their reply side."""
        if len(nslots) == 0:
            return
        ent = self._record(proto, nslots, ports)
        if proto == ICMP:
            int_addr = addr_column(ent["src"]).astype(np.uint64)
            orig = ent["sport"].astype(np.uint64)
            peer = addr_column(ent["dst"]).astype(np.uint64)
            tag = (ids & np.uint64(0x7FFF))
            enc_int = (tag << np.uint64(48)) | (int_addr << np.uint64(16)) | orig
            enc_peer = (tag << np.uint64(33)) | (peer << np.uint64(1)) | np.uint64(1)
            self._enc_int[nslots] = enc_int
            self._enc_peer[nslots] = enc_peer
            k = (ports - self.icmp_lo).astype(np.uint64)
            self.pools.icmp_map.add(sctx, k, enc_int.astype(np.int64), ids)
            self.pools.icmp_peer.add(sctx, k, enc_peer.astype(np.int64), ids)
            return
        islots, inew = self.inb.lookup_or_insert(self._reply_keys(ent, ports, proto))
        if not (inew.all() and (islots != NO_SLOT).all()):
            raise RuntimeError("MazuNAT: reply table out of sync with the outbound table (bug)")
        self._in_vals[islots] = nslots
        self._out_vals["in_slot"][nslots] = islots

    def _inbound(self, batch: _core.PacketBatch, sctx: Any, idx: npt.NDArray[np.uint32]) -> None:
        islots = self.inb._t.lookup(batch.key, idx)  # native call on the key column at rows idx (no gather)
        if int(islots.max()) == NO_SLOT:  # some miss (one reduction in the common all-hit case)
            hit = islots != NO_SLOT
            self._drop(batch, idx[~hit], _NO_MAPPING, "drop_no_mapping")
            idx, islots = idx[hit], islots[hit]
            if len(idx) == 0:
                return
        oslots = self._in_vals[islots]
        stale, n_stale = self._touch(oslots, batch, idx)
        if n_stale:
            dead = np.unique(oslots[stale])
            self._free(dead, sctx, int(batch.packet_id[idx[0]]))
            gone = np.isin(oslots, dead)
            self._drop(batch, idx[gone], _NO_MAPPING, "drop_no_mapping")
            keep = ~gone
            idx, oslots = idx[keep], oslots[keep]
            if len(idx) == 0:
                return
        # the records were just touched: in cache
        batch.rewrite_destination(idx, self._int_addr[oslots], self._int_port[oslots])
        self.c["reverse_translations"] += len(idx)

    def _inbound_icmp(self, batch: _core.PacketBatch, sctx: Any, idx: npt.NDArray[np.uint32]) -> None:
        keys = _keys_at(batch.key, idx)
        nid = keys["dport"]
        pool = self.pools.icmp
        inr = (nid >= pool.lo) & (nid <= pool.hi)
        ids = batch.packet_id[idx]
        enc_int = np.zeros(len(idx), np.uint64)
        enc_peer = np.zeros(len(idx), np.uint64)
        if inr.any():
            k = (nid[inr] - self.icmp_lo).astype(np.uint64)
            enc_peer[inr] = self.pools.icmp_peer.read(sctx, k, np.ascontiguousarray(ids[inr]))
            enc_int[inr] = self.pools.icmp_map.read(sctx, k, np.ascontiguousarray(ids[inr]))
        remote = addr_column(keys["src"]).astype(np.uint64)
        ok = ((enc_peer & np.uint64(1)) == 1) & (((enc_peer >> np.uint64(1)) & np.uint64(0xFFFFFFFF)) == remote) \
            & ((enc_peer >> np.uint64(33)) == (enc_int >> np.uint64(48)))
        self._drop(batch, idx[~ok], _NO_MAPPING, "drop_no_mapping")
        good = idx[ok]
        if len(good):
            e = enc_int[ok]
            addr = ((e >> np.uint64(16)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            orig = (e & np.uint64(0xFFFF)).astype(np.uint16)
            batch.rewrite_destination(good, addr, orig)
            batch.port[good] = INTERNAL
            self.c["reverse_translations"] += len(good)
