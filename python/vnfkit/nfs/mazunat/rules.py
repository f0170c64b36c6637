"""MazuNAT's firewall rules: inbound port forwards and the outbound deny list, as control state.

Rules are an immutable :class:`NatRules` object published in the runner's
:class:`~vnfkit.vnf.ControlState` under :data:`RULES`. A control thread replaces it with
:func:`publish_rules` while traffic flows; each worker reads the reference once at the start of
every batch and uses only that object for the whole batch. Replacing a dict value is one reference
store (atomic under the GIL), and a NatRules object (with read-only numpy arrays) is never changed
after it is built, so every batch sees the whole old rule set or the whole new one, never a mix.
On the process backend, the runner forwards each publication to every worker process (a NatRules
pickles as its rule specs and is rebuilt there), which adopts it between two batches.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import numpy.typing as npt

from ...vnf import ControlState

__all__ = ["ICMP", "RULES", "TCP", "UDP", "NatRules", "publish_rules"]

RULES = "mazunat.rules"
TCP, UDP, ICMP = 6, 17, 1
_PROTO_NAMES = {"tcp": TCP, "udp": UDP}


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
                 "_fwd_pub", "_deny_arr", "_internal", "_fwd_in_any", "_fwd_rev_any", "fwd_in_flags",
                 "fwd_rev_flags")

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
        #: uint8 flags by port for the native fast path (None when there is no forward)
        self.fwd_in_flags = _ro(self._fwd_in_any.view(np.uint8)) if fw else None
        self.fwd_rev_flags = _ro(self._fwd_rev_any.view(np.uint8)) if fw else None
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

    @property
    def internal_net(self) -> str:
        """The internal network the forwards' targets lie in, as a prefix string."""
        inet, imask = self._internal
        return str(ipaddress.IPv4Network((inet, bin(imask).count("1"))))

    def forward_specs(self) -> list[dict[str, Any]]:
        """The forwards as the dicts the constructor takes (building from them gives equal rules)."""
        return [{"proto": "tcp" if f.proto == TCP else "udp", "port": f.port,
                 "to": str(ipaddress.IPv4Address(f.to_addr)), "to_port": f.to_port} for f in self.forwards]

    def deny_specs(self) -> list[dict[str, Any]]:
        """The deny list as the dicts the constructor takes."""
        return [{"dst": str(ipaddress.IPv4Network((d.net, bin(d.mask).count("1")))),
                 "proto": {0: None, TCP: "tcp", UDP: "udp", ICMP: "icmp"}[d.proto],
                 "ports": [d.port_lo, d.port_hi]} for d in self.deny]

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as the rule specs and rebuilt (validated, compiled, frozen) on unpickling, so a
        # published rule set can cross to the worker processes of the process backend.
        return (_rebuild, (self.forward_specs(), self.deny_specs(), self.internal_net, self.version))


def _rebuild(forwards: list[dict[str, Any]], deny: list[dict[str, Any]], internal_net: str,
             version: int) -> NatRules:
    return NatRules(forwards, deny, internal_net=internal_net, version=version)


def publish_rules(control: ControlState | Any, *, forwards: Iterable[Mapping[str, Any]] | None = None,
                  deny: Iterable[Mapping[str, Any]] | None = None) -> NatRules:
    """Replace the MazuNAT rules of a runner (or a ControlState) while traffic flows.

    Arguments left as None keep the current forwards / deny list. Returns the new NatRules.
    """
    if not isinstance(control, ControlState):
        control = control.control
    cur: NatRules = control.get(RULES)
    new = NatRules(cur.forward_specs() if forwards is None else forwards,
                   cur.deny_specs() if deny is None else deny,
                   internal_net=cur.internal_net, version=cur.version + 1)
    control.publish(RULES, new)
    return new
