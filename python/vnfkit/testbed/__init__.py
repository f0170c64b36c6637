"""A testbed of real kernels and real components (root only).

- :class:`~vnfkit.testbed.netns.Testbed`: hosts as network namespaces joined by veth pairs with the
  offloads a userspace forwarder cannot live with turned off, processes started inside hosts; all
  of it torn down on exit, even when the body raised, under one unique per-run name prefix.
- :func:`~vnfkit.testbed.nat.nat_testbed`: the client -- NAT host -- server topology of the live
  NAT tests, with static neighbour entries towards the NAT (which does not answer ARP).
- :func:`~vnfkit.testbed.failover.failover_testbed`: client, master host, backup host, storage host,
  server and the input handler's tc switch between them (the live failover tests).
- :func:`~vnfkit.testbed.netns.leftovers`: what is left with a prefix (nothing, after a close).
- :mod:`.ovs` -- Open vSwitch's userspace datapath (``ovsdb-server`` + ``ovs-vswitchd``) on a
  private run directory.
"""

from __future__ import annotations

from .failover import FailoverTopology, failover_testbed
from .nat import NatTopology, nat_testbed
from .netns import Host, Testbed, TestbedError, leftovers, missing_tools, new_prefix

__all__ = ["FailoverTopology", "Host", "NatTopology", "Testbed", "TestbedError", "failover_testbed", "leftovers",
           "missing_tools", "nat_testbed", "new_prefix"]
