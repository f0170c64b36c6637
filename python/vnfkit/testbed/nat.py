"""The NAT testbed: client -- NAT host (the VNF) -- server, as three namespaces and two veth pairs::

  client 10.0.0.10/24                NAT host (no IP addresses)               server 192.0.2.100/24
    <p>c  ----------------------  <p>ni (inside)   <p>no (outside) ----------------------  <p>s
    default via 10.0.0.1                                                     192.0.2.1 on-link

The NAT host's interfaces carry no IP address, so its kernel neither answers for the NAT's
addresses nor forwards: only the userspace NAT on AF_PACKET moves packets. The NAT does not answer
ARP; instead the testbed installs **static neighbour entries**: on the client, the gateway 10.0.0.1
-> the NAT's inside MAC; on the server, the public address 192.0.2.1 -> the NAT's outside MAC. The
NAT is given the MACs of its two next hops (client and server) on its command line. Every address
exists only inside the testbed's namespaces (10.0.0.0/24 and 192.0.2.0/24, the documentation
range TEST-NET-1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .netns import Testbed

__all__ = ["NatTopology", "address_endpoints", "nat_testbed"]


@dataclass(frozen=True)
class NatTopology:
    """Names and addresses of a :func:`nat_testbed` (hosts ``client``, ``nat``, ``server``)."""

    client_if: str
    client_ip: str
    client_mac: str
    inside_if: str
    inside_mac: str
    gateway_ip: str
    outside_if: str
    outside_mac: str
    public_ip: str
    server_if: str
    server_ip: str
    server_mac: str
    internal_net: str = "10.0.0.0/8"


def nat_testbed(tb: Testbed) -> NatTopology:
    """Build the client / NAT host / server topology in ``tb`` (see the module docstring)."""
    topo = NatTopology(
        client_if=tb.prefix + "c", client_ip="10.0.0.10", client_mac="02:00:0a:00:00:0a",
        inside_if=tb.prefix + "ni", inside_mac="02:00:0a:00:00:01", gateway_ip="10.0.0.1",
        outside_if=tb.prefix + "no", outside_mac="02:00:c0:00:02:01", public_ip="192.0.2.1",
        server_if=tb.prefix + "s", server_ip="192.0.2.100", server_mac="02:00:c0:00:02:64",
    )
    for h in ("client", "nat", "server"):
        tb.add_host(h)
    tb.link("client", "nat", "c", "ni", topo.client_mac, topo.inside_mac)
    tb.link("nat", "server", "no", "s", topo.outside_mac, topo.server_mac)
    address_endpoints(tb, topo)
    return topo


def address_endpoints(tb: Testbed, topo: NatTopology) -> None:
    """Give the client and the server of `topo` their addresses, the client its default route via
    the gateway, and both static neighbour entries for the NAT's MACs (the NAT answers no ARP)."""
    tb.ip("client", "addr", "add", f"{topo.client_ip}/24", "dev", topo.client_if)
    tb.ip("client", "route", "add", "default", "via", topo.gateway_ip, "dev", topo.client_if)
    tb.ip("client", "neigh", "replace", topo.gateway_ip, "lladdr", topo.inside_mac, "nud", "permanent",
          "dev", topo.client_if)
    tb.ip("server", "addr", "add", f"{topo.server_ip}/24", "dev", topo.server_if)
    tb.ip("server", "neigh", "replace", topo.public_ip, "lladdr", topo.outside_mac, "nud", "permanent",
          "dev", topo.server_if)
