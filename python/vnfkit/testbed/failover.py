"""The failover testbed: client, master host, backup host, storage host, server and the input
handler's switch, each its own namespace::

  client 10.0.0.10 -- c|ci ----+                          +---- so|s -- server 192.0.2.100
                               |   switch (tc, no IPs)    |
                  master ni|mi +--  ci: mirror->bi,       +-- mo|no master
                  backup ni|bi +--      redirect->mi      +-- bo|no backup
                                    so: mirror->bo, redirect->mo
  master st 198.51.100.2 -- sm 198.51.100.1 \\
                                             storage host (Redis primary + replica)
  backup st 198.51.100.6 -- sb 198.51.100.5 /

Master and backup hosts have the *same* interface names (``<p>ni`` inside, ``<p>no`` outside) and
the same MACs (the NAT's inside and outside MACs), and no IP address on them: the client and the
server each see one NAT, and the switch (:class:`vnfkit.live.steering.TcSteering`) decides which
node gets their frames and whose frames get out. The client's and server's static neighbour
entries point at the NAT's MACs, as in :func:`~vnfkit.testbed.nat.nat_testbed`. Storage traffic
uses a link of its own per node (TEST-NET-2 addresses), never the switch. Every address lives only
inside the testbed's namespaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..live.steering import TcSteering
from .nat import NatTopology, address_endpoints
from .netns import Testbed

__all__ = ["FailoverTopology", "failover_testbed"]


@dataclass(frozen=True)
class FailoverTopology:
    """Names and addresses of a :func:`failover_testbed`: ``nat`` holds the client/server side
    (its ``inside_if``/``outside_if`` are the names on both nodes), ``steering`` the switch."""

    nat: NatTopology
    master_netns: str
    backup_netns: str
    storage_netns: str
    storage_addrs: dict[str, str]  # node role -> the storage host's address on that node's link
    steering: TcSteering

    def to_json(self) -> str:
        """The ``vnfkit live --topology`` file for this testbed."""
        return json.dumps({"master_netns": self.master_netns, "backup_netns": self.backup_netns,
                           "storage": {"netns": self.storage_netns, "addrs": self.storage_addrs},
                           "steering": self.steering.to_dict()}, indent=1)


def failover_testbed(tb: Testbed) -> FailoverTopology:
    """Build the six-namespace failover topology in ``tb`` and install the switch's rules with the
    master active (see the module docstring)."""
    p = tb.prefix
    nat = NatTopology(
        client_if=p + "c", client_ip="10.0.0.10", client_mac="02:00:0a:00:00:0a",
        inside_if=p + "ni", inside_mac="02:00:0a:00:00:01", gateway_ip="10.0.0.1",
        outside_if=p + "no", outside_mac="02:00:c0:00:02:01", public_ip="192.0.2.1",
        server_if=p + "s", server_ip="192.0.2.100", server_mac="02:00:c0:00:02:64",
    )
    for h in ("client", "switch", "master", "backup", "storage", "server"):
        tb.add_host(h)
    # switch-side MACs are never seen by anyone (the switch forwards at layer 1)
    tb.link("client", "switch", "c", "ci", nat.client_mac, "02:00:5e:00:00:01")
    tb.link("server", "switch", "s", "so", nat.server_mac, "02:00:5e:00:00:02")
    for i, role in enumerate(("master", "backup")):
        tag = role[0]
        tb.link(role, "switch", "ni", tag + "i", nat.inside_mac, f"02:00:5e:00:01:{i:02x}")
        tb.link(role, "switch", "no", tag + "o", nat.outside_mac, f"02:00:5e:00:02:{i:02x}")
    addrs = {}
    for i, role in enumerate(("master", "backup")):
        base = 4 * i
        st_if, _ = tb.link(role, "storage", "st", "s" + role[0], f"02:00:c6:33:64:{base + 2:02x}",
                           f"02:00:c6:33:64:{base + 1:02x}")
        tb.ip(role, "addr", "add", f"198.51.100.{base + 2}/30", "dev", st_if)
        tb.ip("storage", "addr", "add", f"198.51.100.{base + 1}/30", "dev", p + "s" + role[0])
        addrs[role] = f"198.51.100.{base + 1}"
    address_endpoints(tb, nat)
    sw = tb.hosts["switch"].netns  # the sink: a veth pair of the switch kept down (dropped frames go there)
    tb.ip("switch", "link", "add", "name", p + "fz", "type", "veth", "peer", "name", p + "fy", "netns", sw)
    steering = TcSteering(sw, {
        "inside": {"peer": p + "ci", "master": p + "mi", "backup": p + "bi"},
        "outside": {"peer": p + "so", "master": p + "mo", "backup": p + "bo"},
    }, p + "fz")
    steering.install("master")
    return FailoverTopology(nat, tb.hosts["master"].netns, tb.hosts["backup"].netns, tb.hosts["storage"].netns,
                            addrs, steering)
