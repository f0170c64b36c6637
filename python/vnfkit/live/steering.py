"""The input handler's switch: kernel ``tc`` steering between a master and a backup node.

The switch is a network namespace of its own with, per side (``inside``: towards the client,
``outside``: towards the server), three ports: ``peer`` (the client's or server's link), ``master``
and ``backup`` (the two nodes' links). Every port has a ``clsact`` qdisc and one ``matchall`` filter
on its ingress (``u32`` matching every frame, preference 1, handle ``800::800``: the kernel
here has neither ``matchall`` nor ``gact``), so a switch-over is one ``tc filter replace`` per port,
each atomic in the kernel:

* with ``active = "master"``: a frame from the peer is *mirrored* to the backup's port (the standby
  buffers it) and *redirected* to the master's; what the master sends is redirected to the peer;
  whatever the backup sends is dropped (redirected to ``sink``, an interface of the switch that
  stays down: the kernel frees the frame and the action counts it);
* with ``active = "backup"``: a frame from the peer is redirected to the backup's port only; what
  the backup sends goes to the peer; the master's port is **fenced**: whatever it sends is dropped
  (a zombie master cannot emit).

:meth:`TcSteering.switch_to` applies the new rules in this order: fence the old active port, open
the new one, then steer the peers' frames (so no frame of the old node passes once the new node can
send). The rules are given to one ``tc -n NS -batch`` process (a few milliseconds); the backup starts
it when its failure detector fires and waits for it before it sends anything. Each filter's action
counters (:meth:`counters`) start from zero when it is replaced, so after a switch-over they count
exactly what crossed the switch since.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ROLES", "SIDES", "TcSteering"]

ROLES = ("master", "backup")
SIDES = ("inside", "outside")
_PORTS = ("peer", "master", "backup")


def _check_name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 15 or not all(c.isalnum() or c in "-_." for c in value):
        raise ValueError(f"{field}: expected an interface or namespace name, got {value!r}")
    return value


@dataclass(frozen=True)
class TcSteering:
    """A tc switch in namespace ``netns``; ``ports[side][port]`` names the switch's interfaces
    (``side`` in :data:`SIDES`, ``port`` in ``peer``, ``master``, ``backup``); ``sink``: an interface
    of the switch that stays down, where dropped frames are redirected."""

    netns: str
    ports: dict[str, dict[str, str]]
    sink: str

    def __post_init__(self) -> None:
        if not isinstance(self.netns, str) or not self.netns or "/" in self.netns:
            raise ValueError(f"steering.netns: expected a namespace name, got {self.netns!r}")
        if not isinstance(self.ports, dict) or sorted(self.ports) != sorted(SIDES):
            raise ValueError(f"steering.ports: expected the sides {list(SIDES)}, got {self.ports!r}")
        for side in SIDES:
            p = self.ports[side]
            if not isinstance(p, dict) or sorted(p) != sorted(_PORTS):
                raise ValueError(f"steering.ports.{side}: expected the ports {list(_PORTS)}, got {p!r}")
            for k in _PORTS:
                _check_name(f"steering.ports.{side}.{k}", p[k])
        _check_name("steering.sink", self.sink)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TcSteering:
        if not isinstance(d, dict) or set(d) != {"netns", "ports", "sink"}:
            raise ValueError(f"steering: expected the keys netns, ports, sink, got {d!r}")
        return cls(d["netns"], d["ports"], d["sink"])

    # ------------------------------------------------------------------ rules

    def rules(self, active: str) -> list[str]:
        """The ``tc -batch`` lines that make ``active`` the node that receives and may send (the
        other one: standby receiving a mirror while the master is active; fenced once the backup is)."""
        if active not in ROLES:
            raise ValueError(f"active: expected one of {list(ROLES)}, got {active!r}")
        other = "backup" if active == "master" else "master"
        fence, open_, steer = [], [], []
        for side in SIDES:
            p = self.ports[side]
            fence.append(self._filter(p[other], f"action mirred egress redirect dev {self.sink}"))
            open_.append(self._filter(p[active], f"action mirred egress redirect dev {p['peer']}"))
            mirror = f"action mirred egress mirror dev {p['backup']} " if active == "master" else ""
            steer.append(self._filter(p["peer"], f"{mirror}action mirred egress redirect dev {p[active]}"))
        return fence + open_ + steer

    @staticmethod
    def _filter(dev: str, actions: str) -> str:
        return f"filter replace dev {dev} ingress protocol all pref 1 handle 800::800 u32 match u32 0 0 {actions}"

    def _batch_argv(self) -> list[str]:
        return ["tc", "-n", self.netns, "-force", "-batch", "-"]

    def install(self, active: str = "master") -> None:
        """Add a clsact qdisc to every port and the rules of ``active`` (raises RuntimeError with
        tc's message on failure)."""
        lines = [f"qdisc add dev {dev} clsact" for side in SIDES for dev in self.ports[side].values()]
        self._apply(lines + self.rules(active))

    def switch_to(self, active: str) -> subprocess.Popen[bytes]:
        """Start applying the rules of ``active`` (fence, open, steer; see the module docstring);
        returns the ``tc`` process: :meth:`wait_switched` it before sending."""
        return self._popen_lines(self.rules(active))

    @staticmethod
    def wait_switched(p: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
        """Wait for a :meth:`switch_to` process; RuntimeError with tc's message if it failed."""
        try:
            rc = p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise RuntimeError(f"tc switch-over: no answer within {timeout_s} s") from None
        err = p.stderr.read().decode(errors="replace").strip() if p.stderr is not None else ""
        if p.stderr is not None:
            p.stderr.close()
        if rc != 0:
            raise RuntimeError(f"tc switch-over: exit {rc}: {err}")

    def _apply(self, lines: list[str]) -> None:
        self.wait_switched(self._popen_lines(lines))

    def _popen_lines(self, lines: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(self._batch_argv(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        assert p.stdin is not None
        p.stdin.write(("\n".join(lines) + "\n").encode())
        p.stdin.close()
        return p

    # ------------------------------------------------------------------ counters

    def counters(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per side and port, what its ingress filter does and how many frames each action took
        since the filter was installed: ``{"inside": {"peer": {"actions": [{"kind": "mirred",
        "to": "bi", "mode": "mirror", "packets": 12}, ...]}, ...}, ...}``."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for side in SIDES:
            out[side] = {}
            for port, dev in self.ports[side].items():
                r = subprocess.run(["tc", "-n", self.netns, "-s", "-j", "filter", "show", "dev", dev, "ingress"],
                                   capture_output=True, text=True, timeout=10, check=False)
                if r.returncode != 0:
                    raise RuntimeError(f"tc filter show dev {dev}: exit {r.returncode}: {r.stderr.strip()}")
                out[side][port] = {"dev": dev, "actions": _actions(json.loads(r.stdout or "[]"))}
        return out

    def delivered(self, side: str, to_port: str) -> int:
        """Frames the switch sent to the ``to_port`` (``master`` or ``backup``) of ``side`` from the
        peer since the peer's filter was installed (mirror and redirect both count)."""
        dev = self.ports[side][to_port]
        return sum(a["packets"] for a in self.counters()[side]["peer"]["actions"] if a.get("to") == dev)

    def dropped(self, side: str, port: str) -> int:
        """Frames that ``port`` of ``side`` sent and the switch dropped, since its filter was installed."""
        return sum(a["packets"] for a in self.counters()[side][port]["actions"] if a.get("to") == self.sink)


def _actions(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    acts: list[dict[str, Any]] = []
    for f in filters:
        for a in f.get("options", {}).get("actions", []):
            st = a.get("stats", {})
            item = {"kind": a.get("kind"), "packets": int(st.get("packets", 0))}
            if a.get("kind") == "mirred":
                item["to"] = a.get("to_dev")
                item["mode"] = a.get("mirred_action")
            acts.append(item)
    return acts
