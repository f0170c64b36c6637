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
  native scan that reads only the records holding a deadline); their reply entries are removed and
  their pool ports released for reuse.
* **Checksums** are updated incrementally (RFC 1624) by ``PacketBatch.rewrite_source`` /
  ``rewrite_destination``.
* **Output ports**: :data:`EXTERNAL` (1) towards the Internet, :data:`INTERNAL` (2) towards the
  internal network, 0 = dropped (``batch.drop`` says why).

Rules (port forwards and the outbound deny list) are **control state**: see
:mod:`vnfkit.nfs.mazunat.rules`.

**Multi-queue affinity.** With several queues (a non-symmetric RSS classifier that hashes ports),
the NAT port of a new TCP/UDP flow is chosen so that the *reply* is classified to the same queue as
the outbound packets: Toeplitz is linear, so ``h(reply with port p) = h(reply with port 0) XOR C(p)``
and the queue is ``RETA[h & mask]``; the pool is split statically into ``reta_size`` sub-pools by
``C(p) & mask``, and a new flow on queue ``q`` with ``h0 = h(reply, port 0)`` asks for a sub-pool
``g`` with ``RETA[(h0 ^ g) & mask] == q``. The pool is lock-free shared state and the sub-pool
choice is computed per batch with numpy, so the packet path takes no lock. With several queues,
each queue owns a round-robin share of every sub-pool (and of the ICMP ids) and allocates only from
its own shares, so workers never compete for a port: the ports chosen depend on each worker's own
packets only, not on how the workers interleave, and the thread and process backends agree packet
by packet. ICMP echo replies are
hashed on addresses only (no ports), so no identifier can steer them: ICMP echo mappings are kept in
shared counters (``mazunat.icmp_map``/``mazunat.icmp_peer``, logged reads) so that the worker
that receives the reply can translate it; only echo requests refresh an ICMP mapping.

Configuration keys (``setup`` keyword arguments, also the CLI's --config JSON) and defaults: see
:data:`DEFAULTS` (``max_flows`` is the capacity of each worker's two tables; ``affinity`` turns
the sub-pool choice off, e.g. to show what plain RSS does to replies).

**Endpoint-dependent mode** (``"endpoint_dependent": true``): TCP/UDP mappings are keyed by the
full 5-tuple and a public port is reused towards different remote endpoints (as VPP NAT44-ED and
Linux conntrack do), so one public address serves far more than 64 k concurrent flows; ports are
then chosen per worker without the shared pools (:class:`~vnfkit.nfs.mazunat.endpoint.EndpointPorts`).

Package layout: :mod:`.config` (keys, defaults, validation), :mod:`.rules` (compiled rules,
publishing), :mod:`.firewall` (applying the rules to a batch), :mod:`.pools` (shared pools, port
choice), :mod:`.translator` (the VNF). The simulated remote host that answers the NAT's packets is
:func:`vnfkit.traffic.replies_to` (re-exported here).

The data path is numpy over native batch calls: ``split_gateway`` (one pass: addresses, direction
lists, default output ports), ``FlowTable.lookup_or_insert`` / ``lookup`` (on the batch's key
column at the rows of each list, so no keys are gathered), ``touch_deadlines`` and
``PacketBatch.rewrite_source`` / ``rewrite_destination``; per batch, outbound packets are handled
before inbound ones.
"""

from __future__ import annotations

from ...traffic import replies_to, run_with_replies
from .config import DEFAULTS
from .firewall import EXTERNAL, INTERNAL
from .rules import RULES, NatRules, publish_rules
from .translator import MazuNAT

__all__ = ["DEFAULTS", "EXTERNAL", "INTERNAL", "RULES", "MazuNAT", "NatRules", "publish_rules", "replies_to",
           "run_with_replies"]
