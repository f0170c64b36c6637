"""The OVS scale-out testbed: a switch namespace running our own Open vSwitch, one namespace per host.

:class:`OvsTopology` (a context manager, root only) builds, with unique per-run names::

    client ns   c0 ─veth─ pc ┐
    server 0 ns s0 ─veth─ p0 ├─ bridge (OVS userspace datapath, in the switch ns)
    server 1 ns s1 ─veth─ p1 ┘

``ovs-vswitchd`` runs inside the switch namespace (its tap devices and the bridge's ports never
appear in the caller's namespace). Each host namespace has IPv6 disabled and no address, so the
kernel sends nothing on the links; traffic only flows inside these namespaces. Teardown (also when
the body raises) stops OVS by pid and deletes the namespaces, which deletes every veth.

:func:`packet_socket` opens an ``AF_PACKET`` socket bound to an interface inside a namespace: a
short-lived thread enters the namespace with ``setns(2)`` (which affects only that thread), opens
and binds the socket, and exits; the socket stays bound to the namespace's interface.

This is a small seam of its own: the general testbed (namespaces, veth, offloads) is
:mod:`vnfkit.testbed`'s; only what the OVS scale-out needs is here.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import socket
import subprocess
import threading
from typing import Any

from ..testbed.ovs import OpenVSwitch, OvsConfig

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_OUTGOING = 4

_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def packet_socket(netns: str, ifname: str, *, rcvbuf: int = 4 << 20) -> socket.socket:
    """A non-blocking ``AF_PACKET``/``SOCK_RAW`` socket bound to ``ifname`` in namespace ``netns``
    (all protocols). ``rcvbuf``: the receive buffer asked for (bytes)."""
    out: dict[str, Any] = {}

    def enter_and_open() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns into {netns}: {os.strerror(e)}")
            finally:
                os.close(fd)
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                s.bind((ifname, ETH_P_ALL))
                s.setblocking(False)
            except BaseException:
                s.close()
                raise
            out["sock"] = s
        except BaseException as exc:  # handed to the caller's thread
            out["error"] = exc

    t = threading.Thread(target=enter_and_open, name=f"netns-{netns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["sock"]  # type: ignore[no-any-return]


class OvsTopology:
    """Switch namespace + OVS bridge + a client and ``servers`` host namespaces (see module doc).

    After ``__enter__``: ``ovs`` (the :class:`OpenVSwitch`), ``bridge``, ``client_port`` (the
    bridge's OpenFlow port towards the client), ``server_ports`` (server id -> OpenFlow port),
    ``host_ns`` / ``host_if`` (server id -> namespace / interface name; the client's under key
    ``"client"``) and ``host_mac`` (server id -> the MAC of its interface)."""

    def __init__(self, servers: int = 2, *, tag: str | None = None) -> None:
        if isinstance(servers, bool) or not isinstance(servers, int) or not 1 <= servers <= 16:
            raise ValueError(f"servers: expected an int in [1, 16], got {servers!r}")
        self.servers = servers
        self.tag = tag or f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        if not self.tag.isalnum() or len(self.tag) > 10:
            raise ValueError(f"tag: expected up to 10 letters/digits, got {self.tag!r}")
        self.switch_ns = f"vkovs-{self.tag}-sw"
        self.bridge = "br-vk"
        self.ovs: OpenVSwitch | None = None
        self.namespaces: list[str] = []
        self.client_port = 0
        self.server_ports: dict[int, int] = {}
        self.host_ns: dict[Any, str] = {}
        self.host_if: dict[Any, str] = {}
        self.host_mac: dict[Any, bytes] = {}

    def __enter__(self) -> "OvsTopology":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        for knob in ("all", "default"):
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{knob}.disable_ipv6=1"],
                           capture_output=True, timeout=20, check=False)

    def _build(self) -> None:
        self._netns(self.switch_ns)
        hosts: list[tuple[Any, str]] = [("client", "pc")] + [(s, f"p{s}") for s in range(self.servers)]
        for host, sw_if in hosts:
            ns = f"vkovs-{self.tag}-{'cl' if host == 'client' else f's{host}'}"
            self._netns(ns)
            ifname = "c0" if host == "client" else f"s{host}"
            # created directly in the two namespaces: the caller's namespace never sees the pair
            _ip("-n", self.switch_ns, "link", "add", sw_if, "type", "veth", "peer", "name", ifname, "netns", ns)
            _ip("-n", self.switch_ns, "link", "set", sw_if, "up")
            _ip("-n", ns, "link", "set", ifname, "up")
            self.host_ns[host], self.host_if[host] = ns, ifname
            mac = _ip("-n", ns, "-o", "link", "show", ifname).stdout.split("link/ether ")[1].split()[0]
            self.host_mac[host] = bytes.fromhex(mac.replace(":", ""))
        self.ovs = OpenVSwitch(OvsConfig(netns=self.switch_ns))
        self.ovs.start()
        self.ovs.add_bridge(self.bridge)
        self.client_port = self.ovs.add_port(self.bridge, "pc", ofport=100)
        for s in range(self.servers):
            self.server_ports[s] = self.ovs.add_port(self.bridge, f"p{s}", ofport=s + 1)

    def socket(self, host: Any) -> socket.socket:
        """A packet socket on ``host``'s interface (``"client"`` or a server id)."""
        return packet_socket(self.host_ns[host], self.host_if[host])

    def close(self) -> None:
        """Stop OVS (by pid), then delete every namespace made (their veths go with them)."""
        try:
            if self.ovs is not None:
                self.ovs.stop()
        finally:
            for ns in reversed(self.namespaces):
                _ip("netns", "del", ns, check=False)
            self.namespaces.clear()

    def leftovers(self) -> list[str]:
        """Namespaces of this run still present (empty after :meth:`close`)."""
        have = _ip("netns", "list", check=False).stdout.split()
        return [n for n in have if n.startswith(f"vkovs-{self.tag}-")]


__all__ = ["OvsTopology", "PACKET_OUTGOING", "packet_socket"]
