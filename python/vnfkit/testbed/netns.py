"""Network namespaces, veth pairs and the processes started in them, all torn down on exit.

A :class:`Testbed` owns everything it creates, under one unique per-run name prefix: namespaces
``<prefix>-<host>``, veth ends ``<prefix><tag>`` (at most 15 characters, the kernel's limit). Every
veth end is created directly inside its namespace (``ip -n NS link add ... peer ... netns NS2``), so
nothing ever appears in the caller's namespace, and every address used lives only inside the
testbed's namespaces. Links are created with the checksum and segmentation offloads off
(``ethtool -K``: rx/tx checksumming, TSO, GSO, GRO), because a userspace forwarder on AF_PACKET sees
frames before the kernel would fill in a partial checksum or split a large segment.

:meth:`Testbed.close` (also run by ``__exit__``, even when the body raised) stops the processes it
started (SIGTERM, then SIGKILL after a bounded wait, each by its pid / process group), then any other
process still inside one of its namespaces, then deletes the namespaces, which destroys their veth
ends. :func:`leftovers` lists what is left with a prefix (the tests assert it is nothing).
Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and iproute2's ``ip`` and ``ethtool``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from .._procs import dying_with_parent, stop_group

__all__ = ["Host", "Testbed", "TestbedError", "leftovers", "missing_tools", "new_prefix"]

#: The kernel's interface-name limit (IFNAMSIZ - 1).
MAX_IFNAME = 15
#: Offloads turned off on every veth end (ethtool -K feature names).
OFFLOADS = ("rx", "tx", "tso", "gso", "gro")


class TestbedError(RuntimeError):
    """An ``ip`` / ``ethtool`` command failed (the message holds the command and its stderr)."""

    __test__ = False  # not a pytest test class


def missing_tools(tools: Sequence[str] = ("ip", "ethtool")) -> list[str]:
    """The programs of ``tools`` that are not on PATH."""
    return [t for t in tools if shutil.which(t) is None]


def new_prefix() -> str:
    """A unique per-run name prefix: ``vk`` + 6 hex digits (8 characters)."""
    return "vk" + secrets.token_hex(3)


def _run(argv: Sequence[str], timeout: float = 20.0) -> str:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TestbedError(f"{' '.join(argv)}: no answer within {timeout:.0f} s") from None
    if r.returncode != 0:
        raise TestbedError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def leftovers(prefix: str) -> list[str]:
    """Namespaces and (caller-namespace) links whose names start with ``prefix``."""
    found = [f"netns {line.split()[0]}" for line in _run(["ip", "netns", "list"]).splitlines()
             if line.split() and line.split()[0].startswith(prefix)]
    for line in _run(["ip", "-o", "link", "show"]).splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(prefix):
            found.append(f"link {name}")
    return found


@dataclass
class Host:
    """One host: a network namespace of the testbed, and its interfaces (name -> MAC)."""

    name: str
    netns: str
    interfaces: dict[str, str] = field(default_factory=dict)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


class Testbed:
    """Hosts as network namespaces joined by veth pairs; everything removed by :meth:`close`.

    Use as a context manager. ``prefix`` defaults to :func:`new_prefix`.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, prefix: str | None = None) -> None:
        if prefix is None:
            prefix = new_prefix()
        if not prefix.isalnum() or not 2 <= len(prefix) <= 9:
            raise ValueError(f"prefix: must be 2..9 letters or digits, got {prefix!r}")
        missing = missing_tools()
        if missing:
            raise TestbedError(f"the testbed needs {', '.join(missing)} (iproute2, ethtool) on PATH")
        if os.geteuid() != 0:
            raise PermissionError("the testbed needs root (network namespaces and veth pairs)")
        self.prefix = prefix
        self.hosts: dict[str, Host] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self._closed = False

    # ------------------------------------------------------------------ building

    def add_host(self, name: str) -> Host:
        """A new namespace ``<prefix>-<name>`` with its loopback up and IPv6 off (no router or
        neighbour solicitations on the links: only the traffic a test makes)."""
        if not name.isalnum() or name in self.hosts:
            raise ValueError(f"name: must be a new alphanumeric host name, got {name!r}")
        ns = f"{self.prefix}-{name}"
        _run(["ip", "netns", "add", ns])
        host = Host(name, ns)
        self.hosts[name] = host  # registered before anything else can fail: close() removes it
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for key in ("all", "default"):
            _run(host.argv(["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"]))
        return host

    def link(self, a: str, b: str, tag_a: str, tag_b: str, mac_a: str, mac_b: str, mtu: int = 1500) -> tuple[str, str]:
        """A veth pair between hosts ``a`` and ``b``: ends ``<prefix><tag_a>`` in ``a`` and
        ``<prefix><tag_b>`` in ``b`` with the given MACs, up, offloads off. Returns the two names."""
        ha, hb = self.hosts[a], self.hosts[b]
        na, nb = self.prefix + tag_a, self.prefix + tag_b
        for n in (na, nb):
            if len(n) > MAX_IFNAME or not n.isalnum():
                raise ValueError(f"tag: interface name {n!r} must be alphanumeric and at most {MAX_IFNAME} characters")
        _run(["ip", "-n", ha.netns, "link", "add", na, "address", mac_a, "mtu", str(mtu), "type", "veth",
              "peer", "name", nb, "address", mac_b, "mtu", str(mtu), "netns", hb.netns])
        ha.interfaces[na] = mac_a
        hb.interfaces[nb] = mac_b
        for h, n in ((ha, na), (hb, nb)):
            _run(h.argv(["ethtool", "-K", n, *[x for o in OFFLOADS for x in (o, "off")]]))
            _run(["ip", "-n", h.netns, "link", "set", n, "up"])
        return na, nb

    def ip(self, host: str, *args: str) -> str:
        """``ip -n <host's namespace> args...`` (raises TestbedError on failure)."""
        return _run(["ip", "-n", self.hosts[host].netns, *args])

    def offloads(self, host: str, ifname: str) -> dict[str, bool]:
        """The offload features of an interface as ethtool -k reports them (name -> on)."""
        out = _run(self.hosts[host].argv(["ethtool", "-k", ifname]))
        feats: dict[str, bool] = {}
        for line in out.splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                feats[k.strip()] = v.strip().startswith("on")
        return feats

    # ------------------------------------------------------------------ processes

    def popen(self, host: str | None, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``'s namespace (``None``: the caller's, e.g. a supervisor that
        starts processes on several hosts) in its own process group; it is stopped by :meth:`close`
        (or :meth:`stop`)."""
        full = list(argv) if host is None else self.hosts[host].argv(argv)
        p: subprocess.Popen[bytes] = subprocess.Popen(dying_with_parent(full), start_new_session=True,
                                                      **kwargs)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def run(self, host: str, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host``'s namespace to completion (bounded by ``timeout``)."""
        return subprocess.run(self.hosts[host].argv(argv), capture_output=True, text=True, timeout=timeout,
                              check=False)

    @staticmethod
    def stop(p: subprocess.Popen[bytes], grace_s: float = 3.0) -> int | None:
        """SIGTERM the process group of ``p``, SIGKILL it after ``grace_s``; its exit code."""
        return stop_group(p, grace_s)

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Stop every process, then delete every namespace (idempotent; errors are collected and
        raised together at the end, after everything was tried)."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for p in reversed(self.procs):
            try:
                self.stop(p)
            except Exception as exc:  # keep tearing down
                errors.append(f"process {p.pid}: {exc}")
        for host in self.hosts.values():
            try:
                self._kill_inside(host)
                _run(["ip", "netns", "del", host.netns])
            except Exception as exc:
                errors.append(f"netns {host.netns}: {exc}")
        if errors:
            raise TestbedError("teardown: " + "; ".join(errors))

    @staticmethod
    def _kill_inside(host: Host) -> None:
        # Processes still in the namespace (e.g. a grandchild that left its group) would keep it
        # alive; they are in a namespace this testbed made, so they are the testbed's.
        try:
            pids = [int(x) for x in _run(["ip", "netns", "pids", host.netns]).split()]
        except TestbedError:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
            time.sleep(0.02)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
