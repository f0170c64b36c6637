"""MazuNAT: the Mazu Networks Click NAT/firewall gateway, as a vnfkit VNF.

What it does (the Click configuration summarised in /work/shared/MISSION.md):

* **Outbound** (source in ``internal_net``, destination outside it): TCP and UDP are source-NATed to
  ``public_addr`` with a port drawn from a shared :class:`~vnfkit.state.PortPool` (one pool per
  protocol, default ports 50000-65535, as Click keeps separate TCP and UDP rewriters); ICMP echo
  requests get their identifier translated the same way, from a third pool (the ICMP *id* pool,
  default 50000-65535). Every allocation goes through the worker's recording context, so it is
  logged as a determinant. Outbound packets to a destination matched by a *deny* rule are dropped
  (``policy``). Other outbound ICMP and other IP protocols are dropped (``policy``).
* **Inbound** (destination ``public_addr``): only replies to an existing mapping pass -- the whole
  reply tuple must match (remote address and port, public port, protocol) -- and are translated
  back; configured **port forwards** (default TCP 22/80/443 -> ``10.0.0.2``) are translated to their
  internal server. Anything else is dropped: unsolicited TCP/UDP/echo replies with ``no-mapping``,
  other protocols and other ICMP with ``policy``; inbound packets claiming an internal source
  (spoofed) with ``policy``.
* **IPv6**: the Click configuration had none (its classifiers pass only IPv4 and ARP), so IPv6
  packets are dropped with ``policy`` and counted in ``drop_ipv6``. Packets that are neither
  outbound nor inbound (internal to internal, or external to someone else) are dropped with
  ``policy`` (``drop_not_routed``); non-first IP fragments, which carry no ports, too
  (``drop_fragment``). Malformed packets keep the parser's drop reason.
* **Timeouts** on packet time, Click's IPRewriter defaults: ``tcp_timeout_s`` 24 h (established),
  ``tcp_done_timeout_s`` 240 s (after a FIN or RST in either direction), ``udp_timeout_s`` 300 s;
  ``icmp_timeout_s`` 60 s (our choice). Both directions refresh a TCP/UDP mapping. A mapping is
  expired for a packet whose time is at or past its deadline; within one batch, a flow's first
  packet decides (so the decisions depend only on how the input is cut into batches, not on how many
  queues share it). Mappings live in two per-worker :class:`~vnfkit.tables.FlowTable` s (outbound
  key -> record, reply key -> record); because packets of *both* directions refresh one mapping and
  each protocol has its own timeout, the deadline is kept in the outbound record (refreshed in
  order by the native ``touch_deadlines``) rather than in the table's own single-timeout timer.
  Expired mappings are garbage-collected at most every ``gc_interval_s`` of packet time (a
  vectorised scan of the deadlines); their reply entries are removed and their pool ports released
  for reuse.
* **Checksums** are updated incrementally (RFC 1624) by ``PacketBatch.rewrite_source`` /
  ``rewrite_destination``.
* **Output ports**: :data:`EXTERNAL` (1) towards the Internet, :data:`INTERNAL` (2) towards the
  internal network, 0 = dropped (``batch.drop`` says why).

Rules (port forwards and the outbound deny list) are **control state**: an immutable
:class:`NatRules` object published in the runner's :class:`~vnfkit.vnf.ControlState` under
:data:`RULES`. A control thread replaces it with :func:`publish_rules` while traffic flows; each
worker reads the reference once at the start of every batch and uses only that object for the whole
batch. Replacing a dict value is one reference store (atomic under the GIL), and a NatRules object
(with read-only numpy arrays) is never changed after it is built, so every batch sees the whole old
rule set or the whole new one, never a mix.

Forwards are stateless (like a static port-forward): inbound ``(proto, public_port)`` goes to
``(server, server_port)``, and outbound packets from ``(server, server_port)`` get their source
rewritten back to ``(public_addr, public_port)``. Keeping no state for them means the server's
replies are translated on whichever queue RSS puts them.

**Multi-queue affinity.** With several queues (a non-symmetric RSS classifier that hashes ports),
the NAT port of a new TCP/UDP flow is chosen so that the *reply* is classified to the same queue as
the outbound packets: Toeplitz is linear, so ``h(reply with port p) = h(reply with port 0) XOR C(p)``
and the queue is ``RETA[h & mask]``; the pool is split statically into ``reta_size`` sub-pools by
``C(p) & mask``, and a new flow on queue ``q`` with ``h0 = h(reply, port 0)`` asks for a sub-pool
``g`` with ``RETA[(h0 ^ g) & mask] == q``. The pool is lock-free shared state and the sub-pool
choice is computed per batch with numpy, so the packet path takes no lock. ICMP echo replies are
hashed on addresses only (no ports), so no identifier can steer them: ICMP echo mappings are kept in
shared counters (``mazunat.icmp_map``/``mazunat.icmp_peer``, logged reads) so that the worker
that receives the reply can translate it; only echo requests refresh an ICMP mapping.

Configuration keys (``setup`` keyword arguments, also the CLI's --config JSON) and defaults: see
:data:`DEFAULTS` (``max_flows`` is the capacity of each worker's two tables; ``affinity`` turns
the sub-pool choice off, e.g. to show what plain RSS does to replies).

The data path is numpy over native batch calls: ``split_gateway`` (one pass: addresses, direction
lists, default output ports), ``FlowTable.lookup_or_insert`` / ``lookup`` (on the batch's key
column at the rows of each list, so no keys are gathered), ``touch_deadlines`` and
``PacketBatch.rewrite_source`` / ``rewrite_destination``; per batch, outbound packets are handled
before inbound ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import numpy.typing as npt

from .. import _core
from ..tables import NO_SLOT, FlowTable
from ..vnf import VNF, Context, ControlState

__all__ = ["DEFAULTS", "EXTERNAL", "INTERNAL", "RULES", "MazuNAT", "NatRules", "publish_rules", "replies_to", "run_with_replies"]

EXTERNAL = 1
INTERNAL = 2
RULES = "mazunat.rules"
_POOLS = "mazunat.pools"

TCP, UDP, ICMP = 6, 17, 1
_PROTO_NAMES = {"tcp": TCP, "udp": UDP}
_POLICY = int(_core.DropReason.POLICY)
_NO_MAPPING = int(_core.DropReason.NO_MAPPING)
_POOL_EXHAUSTED = int(_core.DropReason.POOL_EXHAUSTED)
_TABLE_FULL = int(_core.DropReason.TABLE_FULL)
_FLAG_FRAGMENT, _FLAG_FIRST_FRAGMENT = 1, 2

DEFAULTS: dict[str, Any] = {
    "internal_net": "10.0.0.0/8",
    "public_addr": "192.0.2.1",
    "port_lo": 50000,
    "port_hi": 65535,
    "icmp_id_lo": 50000,
    "icmp_id_hi": 65535,
    "tcp_timeout_s": 86400.0,
    "tcp_done_timeout_s": 240.0,
    "udp_timeout_s": 300.0,
    "icmp_timeout_s": 60.0,
    "gc_interval_s": 1.0,
    "max_flows": 65536,
    "affinity": True,
    "forwards": [
        {"proto": "tcp", "port": 22, "to": "10.0.0.2", "to_port": 22},
        {"proto": "tcp", "port": 80, "to": "10.0.0.2", "to_port": 80},
        {"proto": "tcp", "port": 443, "to": "10.0.0.2", "to_port": 443},
    ],
    "deny": [],
}

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


def _ip4(text: Any, what: str) -> int:
    try:
        return int(ipaddress.IPv4Address(text if not isinstance(text, int) else int(text)))
    except (ipaddress.AddressValueError, ValueError, TypeError) as exc:
        raise ValueError(f"{what}: not an IPv4 address: {text!r}") from exc


def _net4(text: Any, what: str) -> tuple[int, int]:
    try:
        n = ipaddress.IPv4Network(text, strict=True)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError, TypeError) as exc:
        raise ValueError(f"{what}: not an IPv4 prefix: {text!r}") from exc
    return int(n.network_address), int(n.netmask)


def _port(v: Any, what: str, lo: int = 1) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not lo <= int(v) <= 65535:
        raise ValueError(f"{what}: must be an int in [{lo}, 65535], got {v!r}")
    return int(v)


def _ro(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class _Forward:
    proto: int
    port: int
    to_addr: int
    to_port: int


@dataclass(frozen=True)
class _Deny:
    net: int
    mask: int
    proto: int  # 0 = any
    port_lo: int
    port_hi: int


class NatRules:
    """Immutable, compiled firewall rules: inbound port forwards and the outbound deny list.

    ``forwards``: iterable of dicts ``{"proto": "tcp"|"udp", "port": public port, "to": internal
    IPv4 address, "to_port": port}`` (to_port defaults to port). ``deny``: iterable of dicts
    ``{"dst": "prefix", "proto": "tcp"|"udp"|"icmp"|None, "ports": [lo, hi] | port | None}``: an
    outbound packet whose destination matches is dropped (``policy``).
    All arrays are read-only; build a new object to change the rules (see :func:`publish_rules`).
    """

    __slots__ = ("forwards", "deny", "version", "_fwd_in", "_fwd_rev", "_fwd_addr", "_fwd_port",
                 "_fwd_pub", "_deny_arr", "_internal", "_fwd_in_any", "_fwd_rev_any")

    def __init__(self, forwards: Iterable[Mapping[str, Any]] = (), deny: Iterable[Mapping[str, Any]] = (),
                 *, internal_net: str = "10.0.0.0/8", version: int = 0) -> None:
        inet, imask = _net4(internal_net, "internal_net")
        fw: list[_Forward] = []
        seen_in: set[tuple[int, int]] = set()
        seen_rev: set[tuple[int, int, int]] = set()
        for i, f in enumerate(forwards):
            if not isinstance(f, Mapping):
                raise TypeError(f"forwards[{i}]: expected a dict, got {type(f).__name__}")
            extra = set(f) - {"proto", "port", "to", "to_port"}
            if extra:
                raise ValueError(f"forwards[{i}]: unknown keys {sorted(extra)}")
            proto = _PROTO_NAMES.get(str(f.get("proto", "tcp")).lower())
            if proto is None:
                raise ValueError(f"forwards[{i}].proto: must be 'tcp' or 'udp', got {f.get('proto')!r}")
            port = _port(f.get("port"), f"forwards[{i}].port")
            to = _ip4(f.get("to"), f"forwards[{i}].to")
            if (to & imask) != inet:
                raise ValueError(f"forwards[{i}].to: {f.get('to')} is not in internal_net {internal_net}")
            to_port = _port(f.get("to_port", port), f"forwards[{i}].to_port")
            if (proto, port) in seen_in:
                raise ValueError(f"forwards[{i}]: {f.get('proto')} port {port} is forwarded twice")
            if (proto, to, to_port) in seen_rev or any(
                    g.proto == proto and g.to_port == to_port and g.to_addr != to for g in fw):
                raise ValueError(f"forwards[{i}]: server port {to_port} is already the target of another forward")
            seen_in.add((proto, port))
            seen_rev.add((proto, to, to_port))
            fw.append(_Forward(proto, port, to, to_port))
        dn: list[_Deny] = []
        for i, d in enumerate(deny):
            if not isinstance(d, Mapping):
                raise TypeError(f"deny[{i}]: expected a dict, got {type(d).__name__}")
            extra = set(d) - {"dst", "proto", "ports"}
            if extra:
                raise ValueError(f"deny[{i}]: unknown keys {sorted(extra)}")
            net, mask = _net4(d.get("dst", "0.0.0.0/0"), f"deny[{i}].dst")
            p = d.get("proto")
            proto = 0 if p is None else {"tcp": TCP, "udp": UDP, "icmp": ICMP}.get(str(p).lower(), -1)
            if proto < 0:
                raise ValueError(f"deny[{i}].proto: must be 'tcp', 'udp', 'icmp' or null, got {p!r}")
            ports = d.get("ports")
            if ports is None:
                lo, hi = 0, 65535
            elif isinstance(ports, (int, np.integer)) and not isinstance(ports, bool):
                lo = hi = _port(ports, f"deny[{i}].ports", 0)
            else:
                if len(ports) != 2:
                    raise ValueError(f"deny[{i}].ports: expected a port or [lo, hi]")
                lo, hi = _port(ports[0], f"deny[{i}].ports", 0), _port(ports[1], f"deny[{i}].ports", 0)
                if lo > hi:
                    raise ValueError(f"deny[{i}].ports: lo > hi")
            dn.append(_Deny(net, mask, proto, lo, hi))
        self.forwards: tuple[_Forward, ...] = tuple(fw)
        self.deny: tuple[_Deny, ...] = tuple(dn)
        self.version = version
        # forward lookup tables: [0] tcp, [1] udp; value = forward index + 1 (0 = none)
        fin = np.zeros((2, 65536), np.uint16)
        frev = np.zeros((2, 65536), np.uint16)
        for j, fwd in enumerate(fw):
            fin[0 if fwd.proto == TCP else 1, fwd.port] = j + 1
            frev[0 if fwd.proto == TCP else 1, fwd.to_port] = j + 1
        self._fwd_in = _ro(fin)
        self._fwd_rev = _ro(frev)
        self._fwd_in_any = _ro((fin != 0).any(axis=0))
        self._fwd_rev_any = _ro((frev != 0).any(axis=0))
        self._fwd_addr = _ro(np.array([0] + [f.to_addr for f in fw], np.uint32))
        self._fwd_port = _ro(np.array([0] + [f.to_port for f in fw], np.uint16))
        self._fwd_pub = _ro(np.array([0] + [f.port for f in fw], np.uint16))
        self._deny_arr = _ro(np.array([(d.net, d.mask, d.proto, d.port_lo, d.port_hi) for d in dn],
                                      dtype=np.int64).reshape(-1, 5))
        self._internal = (inet, imask)  # set last: from here on the object is frozen

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_internal"):
            raise AttributeError("NatRules is immutable: build a new one and publish it")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"NatRules(version={self.version}, forwards={len(self.forwards)}, deny={len(self.deny)})"


def publish_rules(control: ControlState | Any, *, forwards: Iterable[Mapping[str, Any]] | None = None,
                  deny: Iterable[Mapping[str, Any]] | None = None) -> NatRules:
    """Replace the MazuNAT rules of a runner (or a ControlState) while traffic flows.

    Arguments left as None keep the current forwards / deny list. Returns the new NatRules.
    """
    if not isinstance(control, ControlState):
        control = control.control
    cur: NatRules = control.get(RULES)
    inet, imask = cur._internal
    net = str(ipaddress.IPv4Network((inet, bin(imask).count("1"))))
    old_fw = [{"proto": "tcp" if f.proto == TCP else "udp", "port": f.port,
               "to": str(ipaddress.IPv4Address(f.to_addr)), "to_port": f.to_port} for f in cur.forwards]
    old_dn = [{"dst": str(ipaddress.IPv4Network((d.net, bin(d.mask).count("1")))),
               "proto": {0: None, TCP: "tcp", UDP: "udp", ICMP: "icmp"}[d.proto],
               "ports": [d.port_lo, d.port_hi]} for d in cur.deny]
    new = NatRules(old_fw if forwards is None else forwards, old_dn if deny is None else deny,
                   internal_net=net, version=cur.version + 1)
    control.publish(RULES, new)
    return new


class _Pools:
    """The NAT's shared aggregate state: one port pool per protocol and the ICMP echo map."""

    def __init__(self, shared: Any, cfg: dict[str, Any], subpool_of: npt.NDArray[np.uint16] | None,
                 icmp_lo: int, icmp_hi: int) -> None:
        self.tcp = shared.port_pool("mazunat.tcp_ports", lo=cfg["port_lo"], hi=cfg["port_hi"], subpool_of=subpool_of)
        self.udp = shared.port_pool("mazunat.udp_ports", lo=cfg["port_lo"], hi=cfg["port_hi"], subpool_of=subpool_of)
        self.icmp = shared.port_pool("mazunat.icmp_ids", lo=icmp_lo, hi=icmp_hi)
        n = icmp_hi - icmp_lo + 1
        self.icmp_map = shared.counters("mazunat.icmp_map", slots=n)
        self.icmp_peer = shared.counters("mazunat.icmp_peer", slots=n)
        self.subpooled = subpool_of is not None
        self.config = dict(cfg)


_KEY_DTYPE = np.dtype(_core.flow_key_dtype())
_V40 = np.dtype((np.void, 40))
_V64 = np.dtype((np.void, 64))


def _keys_at(keys: npt.NDArray[Any], idx: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """keys[idx] for FLOW_KEY_DTYPE arrays, gathered as opaque 40-byte records (numpy's gather of
    structured records with sub-array fields is several times slower)."""
    return keys.view(_V40)[idx].view(_KEY_DTYPE)


def _entry_keys(t: FlowTable, slots: npt.NDArray[np.uint32]) -> npt.NDArray[Any]:
    """The stored keys of table slots (first 40 bytes of each 64-byte engine entry)."""
    rec = t._entries.view(_V64)[slots]  # same package: tables.FlowTable keeps the entry view
    return np.ascontiguousarray(rec.view(np.uint8).reshape(-1, 64)[:, :40]).view(_KEY_DTYPE).reshape(-1)


def _addr_column(addr_bytes: npt.NDArray[Any]) -> npt.NDArray[np.uint32]:
    """Host-order uint32 from the first 4 bytes of a (n, 16) uint8 address column."""
    return np.ascontiguousarray(addr_bytes[:, :4]).view(">u4").reshape(-1).astype(np.uint32)


class MazuNAT(VNF):
    """The Mazu Networks NAT gateway (see the module docstring). One instance per worker."""

    name = "mazunat"

    # ------------------------------------------------------------------------------------ setup
    def setup(self, ctx: Context, **config: Any) -> None:
        unknown = set(config) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"MazuNAT: unknown config keys {sorted(unknown)} (known: {sorted(DEFAULTS)})")
        cfg = {**DEFAULTS, **config}
        self.net, self.mask = _net4(cfg["internal_net"], "internal_net")
        self.public = _ip4(cfg["public_addr"], "public_addr")
        if (self.public & self.mask) == self.net:
            raise ValueError("public_addr: must not be inside internal_net")
        lo, hi = _port(cfg["port_lo"], "port_lo"), _port(cfg["port_hi"], "port_hi")
        ilo, ihi = _port(cfg["icmp_id_lo"], "icmp_id_lo"), _port(cfg["icmp_id_hi"], "icmp_id_hi")
        if lo > hi or ilo > ihi:
            raise ValueError("port_lo/port_hi, icmp_id_lo/icmp_id_hi: low must be <= high")
        for k in ("tcp_timeout_s", "tcp_done_timeout_s", "udp_timeout_s", "icmp_timeout_s", "gc_interval_s"):
            v = cfg[k]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ValueError(f"{k}: must be a positive number of seconds, got {v!r}")
        mf = cfg["max_flows"]
        if not isinstance(mf, int) or isinstance(mf, bool) or not 1 <= mf <= 1 << 26:
            raise ValueError(f"max_flows: must be an int in [1, 2**26], got {mf!r}")
        self.timeout_ns = {
            TCP: int(cfg["tcp_timeout_s"] * 1e9),
            UDP: int(cfg["udp_timeout_s"] * 1e9),
            ICMP: int(cfg["icmp_timeout_s"] * 1e9),
        }
        self.done_ns = min(int(cfg["tcp_done_timeout_s"] * 1e9), self.timeout_ns[TCP])
        self.gc_ns = int(cfg["gc_interval_s"] * 1e9)
        self.next_gc = 0
        rules = NatRules(cfg["forwards"], cfg["deny"], internal_net=cfg["internal_net"])
        ctx.control.setdefault(RULES, rules)

        # Shared state: declared by the first worker, found by the others through ctx.control.
        if ctx.shared is None:
            from ..state import SharedState

            ctx.shared = SharedState()
            ctx.state = ctx.shared.context(ctx.queue)
        cl = ctx.classifier
        self.affinity = bool(cfg["affinity"]) and cl is not None and ctx.num_queues > 1 \
            and not cl.symmetric and cl.use_ports
        if _POOLS in ctx.control:
            pools: _Pools = ctx.control.get(_POOLS)
            if pools.config != cfg or pools.subpooled != self.affinity:
                raise ValueError("MazuNAT workers of one runner must share one configuration")
        else:
            subpool_of = None
            if self.affinity:
                mask = cl.reta.size - 1
                ports = np.arange(lo, hi + 1, dtype=np.uint16)
                z32 = np.zeros(len(ports), np.uint32)
                contrib = cl_toeplitz(cl).hash_v4(z32, z32, np.zeros(len(ports), np.uint16), ports)
                subpool_of = (contrib & mask).astype(np.uint16)
            pools = _Pools(ctx.shared, cfg, subpool_of, ilo, ihi)
            ctx.control.publish(_POOLS, pools)
        self.pools = pools
        self.icmp_lo = ilo
        if self.affinity:
            reta = np.asarray(cl.reta.table)
            self.reta_mask = len(reta) - 1
            self.cand = np.flatnonzero(reta == ctx.queue).astype(np.uint32)  # RETA indices -> this queue
            self.toeplitz = cl_toeplitz(cl)
        cap = mf
        # One outbound table (all protocols: the key holds the protocol) and one reply table
        # (TCP/UDP). Expiry is the NAT's own: each record holds its deadline and timeout, checked
        # per packet and garbage-collected by a vectorised scan (the engine timers are unused).
        self._capacity = cap
        self.out = FlowTable(cap, _OUT_DTYPE)
        self.inb = FlowTable(cap, _IN_DTYPE)
        # field views of the records read on every batch (engine memory: views made once, not per batch)
        self._nat_port = self.out.values["nat_port"]
        self._int_addr = self.out.values["int_addr"]
        self._int_port = self.out.values["int_port"]
        self._in_vals = self.inb.values
        self._out_vals = self.out.values
        # ICMP only: the values this worker stored in the shared echo map, per outbound slot
        self._enc_int = np.zeros(cap, np.uint64)
        self._enc_peer = np.zeros(cap, np.uint64)
        self._pub = np.full(1 << 16, self.public, np.uint32)  # sliced, never written
        self._zeros32 = np.zeros(1 << 16, np.uint32)
        self.idle_lut = np.zeros(256, np.uint64)
        for p_, ns in self.timeout_ns.items():
            self.idle_lut[p_] = ns
        self.pool_of = {TCP: pools.tcp, UDP: pools.udp, ICMP: pools.icmp}
        self.c: dict[str, int] = dict.fromkeys(
            ["translations", "reverse_translations", "forwards", "forward_replies", "new_mappings",
             "expired_mappings", "drop_no_mapping", "drop_pool_exhausted", "drop_table_full",
             "drop_denied", "drop_proto", "drop_ipv6", "drop_not_routed", "drop_spoofed",
             "drop_fragment", "pool_exhausted_events"], 0)

    def stats(self) -> dict[str, int]:
        """Counters of this worker (the runner sums them over workers): translations,
        reverse_translations, forwards (inbound port forwards), forward_replies, new_mappings,
        expired_mappings, drop_* by cause, pool_exhausted_events (allocations that found the pool
        empty), and the gauges ``mappings`` = ``pool_in_use`` (live mappings = pool ports / ICMP
        ids this worker holds)."""
        out = dict(self.c)
        out["mappings"] = out["pool_in_use"] = len(self.out)
        return out

    # ------------------------------------------------------------------------------- mappings
    def _free(self, slots: npt.NDArray[np.uint32], ctx: Context, pid: int) -> None:
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
                self.pools.icmp_map.add(ctx.state, keys, -self._enc_int[ms].astype(np.int64), ids)
                self.pools.icmp_peer.add(ctx.state, keys, -self._enc_peer[ms].astype(np.int64), ids)
            else:
                self.inb.remove_slots(np.ascontiguousarray(vv["in_slot"]))
            self.pool_of[proto].release(ctx.state, ports, ids)
            self.c["expired_mappings"] += len(ports)
        t.values["deadline"][slots] = 0
        t.remove_slots(slots)

    def _gc(self, now: int, ctx: Context, pid: int) -> None:
        if len(self.out) == 0:
            return
        d = self.out.values["deadline"]
        dead = np.flatnonzero((d != 0) & (d <= np.uint64(now))).astype(np.uint32)
        if len(dead):
            self._free(dead, ctx, pid)

    def _allocate(self, proto: int, ctx: Context, ids: npt.NDArray[np.uint64], keys: npt.NDArray[Any],
                  hashes: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint16]:
        pool = self.pool_of[proto]
        if proto == ICMP or not self.affinity:
            return pool.allocate(ctx.state, ids)
        remote = _addr_column(keys["dst"])
        h0 = self.toeplitz.hash_v4(remote, np.full(len(ids), self.public, np.uint32),
                                   np.ascontiguousarray(keys["dport"]), np.zeros(len(ids), np.uint16))
        base = h0 & np.uint32(self.reta_mask)
        nc = len(self.cand)
        start = (hashes >> np.uint32(8)) % np.uint32(nc)
        ports = np.zeros(len(ids), np.uint16)
        todo = np.arange(len(ids))
        for r in range(nc):  # retries only where the preferred sub-pool is exhausted
            g = (self.cand[(start[todo] + r) % nc] ^ base[todo]).astype(np.uint16)
            got = pool.allocate(ctx.state, np.ascontiguousarray(ids[todo]), g)
            ports[todo] = got
            todo = todo[got == 0]
            if len(todo) == 0:
                break
        return ports

    # -------------------------------------------------------------------------------- process
    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        n = len(batch)
        if n == 0:
            return
        rules: NatRules = ctx.control.get(RULES)  # read once: the whole batch uses this version
        c = self.c
        key = batch.key
        # One native pass: host-order addresses; TCP/UDP outbound / inbound lists (their output
        # port preset to EXTERNAL / INTERNAL, every other packet's to 0); other IPv4, non-IPv4,
        # and the non-TCP/UDP outbound / inbound packets. Every drop below zeroes the port again.
        src, dst, oidx, iidx, other, nv4, onp, inp = _core.split_gateway(
            batch, self.net, self.mask, self.public, EXTERNAL, INTERNAL, True)
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

        ts = batch.ts_ns
        t_min = int(ts.min())
        if t_min >= self.next_gc:
            self._gc(t_min, ctx, int(batch.packet_id[0]))
            self.next_gc = t_min + self.gc_ns

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
                self._outbound(batch, ctx, onp, set_port=True)
        if len(oidx):
            if len(rules.forwards):
                oidx = self._forward_replies(batch, rules, oidx, key, src)
            if len(rules.deny) and len(oidx):
                oidx = self._deny(batch, rules, oidx, dst)
            if len(oidx):
                self._outbound(batch, ctx, oidx)
        # ---------------------------------------------------------------- inbound
        if len(iidx):
            if len(rules.forwards):
                iidx = self._forward_in(batch, rules, iidx, key)
            if len(iidx):
                self._inbound(batch, ctx, iidx)
        if len(inp):  # ICMP echo replies through the shared echo map; other protocols dropped
            rep = key["proto"][inp] == ICMP
            if rep.any():
                rep[rep] = self._icmp_type(batch, inp[rep]) == 0
            self._drop(batch, inp[~rep], _POLICY, "drop_proto")
            if rep.any():
                self._inbound_icmp(batch, ctx, inp[rep])

    def _drop(self, batch: _core.PacketBatch, idx: npt.NDArray[Any], reason: int, counter: str) -> None:
        if len(idx):
            batch.drop[idx] = reason
            batch.port[idx] = 0
            self.c[counter] += len(idx)

    def _deny(self, batch: _core.PacketBatch, rules: NatRules, idx: npt.NDArray[np.uint32],
              dst: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
        denied = self._denied(rules, dst[idx], batch.key["proto"][idx], batch.key["dport"][idx])
        if not denied.any():
            return idx
        self._drop(batch, idx[denied], _POLICY, "drop_denied")
        return idx[~denied]

    # ---------------------------------------------------------------------------- helpers
    @staticmethod
    def _icmp_type(batch: _core.PacketBatch, idx: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        pos = batch.offsets[idx].astype(np.int64) + batch.l4_offset[idx]
        has_l4 = (batch.flags[idx] & 4) != 0
        return np.where(has_l4, batch.data[np.where(has_l4, pos, 0)], 255).astype(np.uint8)

    @staticmethod
    def _denied(rules: NatRules, dst: npt.NDArray[np.uint32], proto: npt.NDArray[np.uint8],
                dport: npt.NDArray[np.uint16]) -> npt.NDArray[np.bool_]:
        hit = np.zeros(len(dst), bool)
        for net, mask, pr, lo, hi in rules._deny_arr.tolist():
            m = (dst & np.uint32(mask)) == np.uint32(net)
            if pr:
                m &= proto == pr
            if lo != 0 or hi != 65535:
                m &= (dport >= lo) & (dport <= hi)
            hit |= m
        return hit

    def _forward_in(self, batch: _core.PacketBatch, rules: NatRules, idx: npt.NDArray[np.uint32],
                    key: npt.NDArray[Any]) -> npt.NDArray[np.uint32]:
        """Port forwards: inbound (proto, public port) -> internal server. Returns the rest."""
        dport = key["dport"][idx]
        # fast path: no packet aims at a forwarded port (count_nonzero: a direct C call, unlike .any())
        if not np.count_nonzero(rules._fwd_in_any[dport]):
            return idx
        pr = key["proto"][idx]
        f = rules._fwd_in[(pr == UDP).view(np.uint8), dport]
        hit = f != 0
        if not hit.any():
            return idx
        hit &= (pr == TCP) | (pr == UDP)
        ii = idx[hit]
        fi = f[hit]
        batch.rewrite_destination(ii, rules._fwd_addr[fi], rules._fwd_port[fi])
        batch.port[ii] = INTERNAL
        self.c["forwards"] += len(ii)
        return idx[~hit]

    def _forward_replies(self, batch: _core.PacketBatch, rules: NatRules, idx: npt.NDArray[np.uint32],
                         key: npt.NDArray[Any], src: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
        """Outbound packets from a forward's server port leave from the forwarded public port."""
        sport = key["sport"][idx]
        if not np.count_nonzero(rules._fwd_rev_any[sport]):  # fast path: no packet comes from a server port
            return idx
        pr = key["proto"][idx]
        f = rules._fwd_rev[(pr == UDP).view(np.uint8), sport]
        hit = f != 0
        if not hit.any():
            return idx
        hit &= (rules._fwd_addr[f] == src[idx]) & ((pr == TCP) | (pr == UDP))
        if not hit.any():
            return idx
        ii = idx[hit]
        fi = f[hit]
        batch.rewrite_source(ii, np.full(len(ii), self.public, np.uint32), rules._fwd_pub[fi])
        batch.port[ii] = EXTERNAL
        self.c["forward_replies"] += len(ii)
        return idx[~hit]

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
        return _core.touch_deadlines_at(self._out_vals, _DEADLINE_OFF, _TIMEOUT_OFF, slots, batch, idx,
                                        0x05, self.done_ns)

    def _outbound(self, batch: _core.PacketBatch, ctx: Context, idx: npt.NDArray[np.uint32],
                  set_port: bool = False) -> None:
        t = self.out
        # the native call straight on the batch's key and time columns at rows idx (no gather);
        # flow ids 0, no TCP flags (the NAT keeps its own deadlines)
        slots, new = t._t.lookup_or_insert(batch.key, self._const(self._zeros32, len(batch)), batch.ts_ns, None, idx)
        # an insert can only have failed if the table is full now (its size never shrinks in a call)
        full = slots == NO_SLOT if len(t) >= self._capacity else None
        if full is not None and full.any():
            self._drop(batch, idx[full], _TABLE_FULL, "drop_table_full")
            keep = ~full
            idx, slots, new = idx[keep], slots[keep], new[keep]
        any_new = np.count_nonzero(new) != 0
        if any_new:
            keys = _keys_at(batch.key, idx)
            ni = np.flatnonzero(new)
            lost_slots = []
            for proto in (TCP, UDP, ICMP):
                sel = ni[keys["proto"][ni] == proto]
                if len(sel) == 0:
                    continue
                nslots = slots[sel]
                ids = batch.packet_id[idx[sel]]
                got = self._allocate(proto, ctx, ids, keys[sel], batch.hash[idx[sel]])
                ex = got == 0
                if ex.any():
                    lost_slots.append(nslots[ex])
                    self.c["pool_exhausted_events"] += int(ex.sum())
                    ok = ~ex
                    nslots, ids, got = nslots[ok], ids[ok], got[ok]
                self._install(proto, ctx, nslots, got, ids)
                self.c["new_mappings"] += len(nslots)
            if lost_slots:
                # pool exhausted: drop every packet of these flows and forget them (retry later)
                bad = np.concatenate(lost_slots)
                t.remove_slots(np.ascontiguousarray(bad))
                lost = np.isin(slots, bad)
                self._drop(batch, idx[lost], _POOL_EXHAUSTED, "drop_pool_exhausted")
                keep = ~lost
                idx, slots = idx[keep], slots[keep]
                if len(idx) == 0:
                    return
        stale, n_stale = self._touch(slots, batch, idx)  # new records (deadline 0) are never stale
        if n_stale:
            # the mapping had expired at the flow's first packet of this batch: free it and map
            # every packet of the flow again (a new mapping)
            dead = np.unique(slots[stale])
            self._free(dead, ctx, int(batch.packet_id[idx[0]]))
            again = np.isin(slots, dead)
            self._outbound(batch, ctx, idx[again], set_port)
            keep = ~again
            idx, slots = idx[keep], slots[keep]
            if len(idx) == 0:
                return
        batch.rewrite_source(idx, self._const(self._pub, len(idx)), self._nat_port[slots])
        if set_port:
            batch.port[idx] = EXTERNAL
        self.c["translations"] += len(idx)

    def _install(self, proto: int, ctx: Context, nslots: npt.NDArray[np.uint32],
                 ports: npt.NDArray[np.uint16], ids: npt.NDArray[np.uint64]) -> None:
        """Record freshly allocated ports for the new flows in `nslots` and install their reply side."""
        if len(nslots) == 0:
            return
        t = self.out
        v = t.values
        v["nat_port"][nslots] = ports
        v["proto"][nslots] = proto
        v["timeout"][nslots] = self.timeout_ns[proto]
        ent = _entry_keys(t, nslots)  # the outbound keys, as stored
        v["int_addr"][nslots] = _addr_column(ent["src"])
        v["int_port"][nslots] = ent["sport"]
        if proto == ICMP:
            int_addr = _addr_column(ent["src"]).astype(np.uint64)
            orig = ent["sport"].astype(np.uint64)
            peer = _addr_column(ent["dst"]).astype(np.uint64)
            tag = (ids & np.uint64(0x7FFF))
            enc_int = (tag << np.uint64(48)) | (int_addr << np.uint64(16)) | orig
            enc_peer = (tag << np.uint64(33)) | (peer << np.uint64(1)) | np.uint64(1)
            self._enc_int[nslots] = enc_int
            self._enc_peer[nslots] = enc_peer
            k = (ports - self.icmp_lo).astype(np.uint64)
            self.pools.icmp_map.add(ctx.state, k, enc_int.astype(np.int64), ids)
            self.pools.icmp_peer.add(ctx.state, k, enc_peer.astype(np.int64), ids)
            return
        reply = np.zeros(len(nslots), _KEY_DTYPE)
        reply["src"] = ent["dst"]
        reply["dst"][:, :4] = np.array([self.public], ">u4").view(np.uint8)
        reply["sport"] = ent["dport"]
        reply["dport"] = ports
        reply["proto"] = proto
        reply["family"] = 4
        it = self.inb
        islots, inew = it.lookup_or_insert(reply)
        if not (inew.all() and (islots != NO_SLOT).all()):
            raise RuntimeError("MazuNAT: reply table out of sync with the outbound table (bug)")
        it.values[islots] = nslots
        v["in_slot"][nslots] = islots

    def _inbound(self, batch: _core.PacketBatch, ctx: Context, idx: npt.NDArray[np.uint32]) -> None:
        it = self.inb
        islots = it._t.lookup(batch.key, idx)  # native call on the key column at rows idx (no gather)
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
            self._free(dead, ctx, int(batch.packet_id[idx[0]]))
            gone = np.isin(oslots, dead)
            self._drop(batch, idx[gone], _NO_MAPPING, "drop_no_mapping")
            keep = ~gone
            idx, oslots = idx[keep], oslots[keep]
            if len(idx) == 0:
                return
        # the records were just touched: in cache
        batch.rewrite_destination(idx, self._int_addr[oslots], self._int_port[oslots])
        self.c["reverse_translations"] += len(idx)

    def _inbound_icmp(self, batch: _core.PacketBatch, ctx: Context, idx: npt.NDArray[np.uint32]) -> None:
        keys = _keys_at(batch.key, idx)
        nid = keys["dport"]
        pool = self.pools.icmp
        inr = (nid >= pool.lo) & (nid <= pool.hi)
        ids = batch.packet_id[idx]
        enc_int = np.zeros(len(idx), np.uint64)
        enc_peer = np.zeros(len(idx), np.uint64)
        if inr.any():
            k = (nid[inr] - self.icmp_lo).astype(np.uint64)
            enc_peer[inr] = self.pools.icmp_peer.read(ctx.state, k, np.ascontiguousarray(ids[inr]))
            enc_int[inr] = self.pools.icmp_map.read(ctx.state, k, np.ascontiguousarray(ids[inr]))
        remote = _addr_column(keys["src"]).astype(np.uint64)
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


def replies_to(out: _core.PacketBatch, *, delay_ns: int = 1000, id_offset: int = 1 << 40) -> _core.PacketBatch | None:
    """A "remote host": for every packet of `out` sent to the external side (port EXTERNAL), a reply
    with addresses and ports swapped (TCP: ACK, or FIN|ACK when the packet carried a FIN; UDP:
    empty datagram), `delay_ns` later, with packet id = original id + `id_offset`. 64-byte frames
    with valid checksums. Returns None if nothing was sent out. Used by the tests and the demo."""
    sel = np.flatnonzero(out.port == EXTERNAL).astype(np.uint32)
    sel = sel[out.key["family"][sel] == 4]
    sel = sel[(out.key["proto"][sel] == TCP) | (out.key["proto"][sel] == UDP)]
    if len(sel) == 0:
        return None
    k = _keys_at(out.key, sel)
    r = np.zeros(len(sel), _KEY_DTYPE)
    r["src"], r["dst"] = k["dst"], k["src"]
    r["sport"], r["dport"] = k["dport"], k["sport"]
    r["proto"], r["family"] = k["proto"], k["family"]
    flags = np.where(k["proto"] == TCP, np.where(out.tcp_flags[sel] & 1, 0x11, 0x10), 0).astype(np.uint8)
    b = _core.build_packets(r, np.full(len(sel), 64, np.uint16), out.ts_ns[sel] + np.uint64(delay_ns), flags,
                            np.zeros(len(sel), np.uint32))
    b.packet_id[:] = out.packet_id[sel] + np.uint64(id_offset)
    return b


def run_with_replies(runner: Any, batches: Iterable[_core.PacketBatch], *,
                     on_output: Any = None, progress: Any = None) -> Any:
    """Run `batches` (outbound traffic, e.g. a generated trace) through a MazuNAT `runner` while a
    "remote host" (:func:`replies_to`) answers every translated TCP/UDP packet; the replies enter
    the runner interleaved with the trace. Returns one combined :class:`~vnfkit.runtime.RunResult`.
    This is what ``vnfkit demo`` shows."""
    from ..runtime import RunResult

    pending: list[_core.PacketBatch] = []

    def out(q: int, b: _core.PacketBatch) -> None:
        rep = replies_to(b)
        if rep is not None:
            pending.append(rep)
        if on_output is not None:
            on_output(q, b)

    def feed() -> Iterator[_core.PacketBatch]:
        for b in batches:
            yield b
            while pending:
                yield pending.pop(0)

    results = [runner.run(feed(), on_output=out, progress=progress)]
    while pending:
        todo, pending[:] = list(pending), []
        results.append(runner.run(todo, on_output=out, progress=progress))
    return RunResult.combine(results)


def cl_toeplitz(cl: Any) -> Any:
    """The Toeplitz hasher of a classifier (same key)."""
    from ..classify import Toeplitz

    return Toeplitz(cl.key)
