"""Open vSwitch's userspace datapath on a private run directory (root only).

:class:`OpenVSwitch` starts its own ``ovsdb-server`` and ``ovs-vswitchd`` -- never the system's
service, which it neither uses nor stops -- in a fresh directory::

    with OpenVSwitch(OvsConfig(netns="vk-sw-1234")) as ovs:
        ovs.add_bridge("br0")                 # datapath_type=netdev: no kernel module
        ovs.add_port("br0", "p1", ofport=1)
        ovs.ofctl("dump-flows", "br0")

* ``start()``: ``ovsdb-tool create`` a database from the installed schema, ``ovsdb-server`` on a
  unix socket in the directory, ``ovs-vsctl --no-wait init``, then ``ovs-vswitchd`` pointed at that
  socket with ``--disable-system`` (only userspace datapaths). Both run in the foreground as this
  process's children, so their pids are known exactly; ``ovs-vswitchd`` optionally runs inside a
  network namespace (``ip netns exec`` execs it in place: same pid), so the bridges' internal
  ports and every port it opens live in that namespace, not in the caller's. Readiness is bounded:
  each step waits at most ``ready_timeout_s``.
* ``stop()`` (also on leaving the ``with`` block, even when its body raised): deletes the bridges it
  added, sends SIGTERM to ``ovs-vswitchd`` and then ``ovsdb-server`` *by pid*, SIGKILL after
  ``stop_timeout_s``, reaps them and removes the directory. Nothing else is signalled.
* A parent killed without ``stop()`` (SIGKILL, or Python's default SIGTERM) leaves no daemon: the
  kernel sends each SIGTERM when it ends (``_procs.dying_with_parent``). The directory,
  ``vnfkit-<pid>-ovs-*``, stays; in the system's temporary directory the next process runner of
  the same user removes it (``runtime._segments.sweep_stale``).

Every command gets ``OVS_RUNDIR``/``OVS_DBDIR``/``OVS_LOGDIR``/``OVS_SYSCONFDIR`` pointing at the
private directory, so no tool falls back to the system's ``/var/run/openvswitch``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .._procs import dying_with_parent
from ..runtime._segments import OwnedDir

#: The tools this module runs (Debian package ``openvswitch-switch`` + ``openvswitch-common``).
TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
SCHEMA_PATHS = ("/usr/share/openvswitch/vswitch.ovsschema", "/usr/local/share/openvswitch/vswitch.ovsschema")


class OvsError(OSError):
    """An Open vSwitch daemon or tool failed or is unavailable (the message has its stderr or log tail)."""


def find_schema() -> str | None:
    """The installed vswitch.ovsschema, or None."""
    for p in SCHEMA_PATHS:
        if os.path.exists(p):
            return p
    return None


def unavailable_reason() -> str | None:
    """Why this process cannot run OVS here (not root, a tool or the schema missing), or None."""
    if os.geteuid() != 0:
        return "Open vSwitch needs root (ovs-vswitchd opens raw sockets and tap devices)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"Open vSwitch is not installed ({', '.join(missing)} not found; Debian: openvswitch-switch)"
    if find_schema() is None:
        return f"the OVS schema is missing (looked in {', '.join(SCHEMA_PATHS)})"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (the netdev datapath's internal ports are tap devices)"
    return None


@dataclass(frozen=True)
class OvsConfig:
    """``parent``: where the private run directory is made (default: the system temp dir).
    ``netns``: run ``ovs-vswitchd`` in this existing network namespace (None: the caller's).
    ``ready_timeout_s``: the bound on each start-up wait; ``stop_timeout_s``: SIGTERM -> SIGKILL."""

    parent: str | None = None
    netns: str | None = None
    ready_timeout_s: float = 10.0
    stop_timeout_s: float = 5.0

    def validated(self) -> "OvsConfig":
        if self.parent is not None and not os.path.isdir(self.parent):
            raise ValueError(f"parent: {self.parent!r} is not a directory")
        if self.netns is not None:
            if not isinstance(self.netns, str) or not self.netns or "/" in self.netns:
                raise ValueError(f"netns: expected a namespace name, got {self.netns!r}")
        for name in ("ready_timeout_s", "stop_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 300:
                raise ValueError(f"{name}: expected seconds in (0, 300], got {v!r}")
        return self


class OpenVSwitch:
    """ovsdb-server + ovs-vswitchd of our own (see the module docstring)."""

    def __init__(self, config: OvsConfig | None = None) -> None:
        self.config = (config or OvsConfig()).validated()
        self.run_dir: Path | None = None
        self._db: subprocess.Popen[bytes] | None = None
        self._vswitchd: subprocess.Popen[bytes] | None = None
        self.bridges: list[str] = []

    # ------------------------------------------------------------------ paths and environment
    @property
    def db_socket(self) -> str:
        return str(self._dir() / "db.sock")

    def _dir(self) -> Path:
        if self.run_dir is None:
            raise OvsError("Open vSwitch is not running (call start() or use it as a context manager)")
        return self.run_dir

    def env(self) -> dict[str, str]:
        d = str(self._dir())
        return {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d, "OVS_SYSCONFDIR": d}

    @property
    def pids(self) -> dict[str, int]:
        """The daemons' pids (only those running)."""
        out = {}
        for name, p in (("ovsdb-server", self._db), ("ovs-vswitchd", self._vswitchd)):
            if p is not None and p.poll() is None:
                out[name] = p.pid
        return out

    def mgmt_target(self, bridge: str) -> str:
        """The OpenFlow target of ``bridge`` for ovs-ofctl (its unix management socket)."""
        return f"unix:{self._dir() / (bridge + '.mgmt')}"

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> "OpenVSwitch":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Create the database and start both daemons (bounded waits); stops everything it started
        if a step fails."""
        reason = unavailable_reason()
        if reason:
            raise OvsError(reason)
        if self.run_dir is not None:
            raise OvsError("start: already started")
        self._owned = OwnedDir("ovs", self.config.parent)
        self.run_dir = Path(self._owned.name)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        d = self._dir()
        schema = find_schema()
        assert schema is not None
        self._tool(["ovsdb-tool", "create", str(d / "conf.db"), schema])
        self._db = subprocess.Popen(
            dying_with_parent(["ovsdb-server", str(d / "conf.db"), f"--remote=punix:{self.db_socket}",
                               f"--unixctl={d / 'ovsdb-server.ctl'}", f"--log-file={d / 'ovsdb-server.log'}",
                               "--no-chdir"]),
            env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda: os.path.exists(self.db_socket), "ovsdb-server's socket", self._db, "ovsdb-server.log")
        self.vsctl("--no-wait", "init")
        cmd = ["ovs-vswitchd", f"unix:{self.db_socket}", f"--unixctl={d / 'ovs-vswitchd.ctl'}",
               f"--log-file={d / 'ovs-vswitchd.log'}", "--no-chdir", "--disable-system"]
        if self.config.netns is not None:
            cmd = ["ip", "netns", "exec", self.config.netns, *cmd]
        self._vswitchd = subprocess.Popen(dying_with_parent(cmd), env=self.env(), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctl = str(d / "ovs-vswitchd.ctl")
        self._wait(lambda: os.path.exists(ctl) and self._ok(["ovs-appctl", "-t", ctl, "version"]),
                   "ovs-vswitchd's control socket", self._vswitchd, "ovs-vswitchd.log")
        # ovs-vswitchd has read the database once it reports the configuration it applied
        self.vsctl(f"--timeout={max(1, int(self.config.ready_timeout_s))}", "--", "set", "Open_vSwitch", ".",
                   "other_config:vnfkit=1")

    def _wait(self, cond: Callable[[], bool], what: str, proc: "subprocess.Popen[bytes]", log: str) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        while not cond():
            if proc.poll() is not None:
                prog = proc.args[0] if isinstance(proc.args, list) else proc.args
                raise OvsError(f"{prog!s} exited with status {proc.returncode} before {what} was ready; "
                               f"log: {self._log_tail(log)}")
            if time.monotonic() > deadline:
                raise OvsError(f"{what} not ready after {self.config.ready_timeout_s:g} s; log: {self._log_tail(log)}")
            time.sleep(0.02)

    def _log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = (self._dir() / name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self) -> None:
        """Delete our bridges, stop both daemons by pid (SIGTERM, then SIGKILL), remove the directory.
        Safe to call twice, and after a failed start."""
        if self._vswitchd is not None and self._vswitchd.poll() is None and self._db is not None \
                and self._db.poll() is None:
            for br in list(self.bridges):  # so the netdev datapath's tap devices go away too
                self._ok(["ovs-vsctl", f"--db=unix:{self.db_socket}", "--timeout=2", "--if-exists", "del-br", br])
        self.bridges.clear()
        for p in (self._vswitchd, self._db):
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(self.config.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self._vswitchd = self._db = None
        if self.run_dir is not None:
            self._owned.cleanup()
            self.run_dir = None

    # ------------------------------------------------------------------ tools
    def _tool(self, cmd: list[str], *, input_text: str | None = None) -> str:
        try:
            r = subprocess.run(cmd, env=self.env(), input=input_text, capture_output=True, text=True,
                               timeout=self.config.ready_timeout_s + 20)
        except subprocess.TimeoutExpired:
            raise OvsError(f"{' '.join(cmd[:3])}: timed out") from None
        if r.returncode != 0:
            raise OvsError(f"{' '.join(cmd[:3])} failed (status {r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def _ok(self, cmd: list[str]) -> bool:
        try:
            return subprocess.run(cmd, env=self.env(), capture_output=True, timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def vsctl(self, *args: str) -> str:
        """Run ``ovs-vsctl`` against our database; returns stdout (OvsError on failure)."""
        return self._tool(["ovs-vsctl", f"--db=unix:{self.db_socket}", *args])

    def ofctl(self, command: str, bridge: str, *args: str, input_text: str | None = None,
              options: tuple[str, ...] = ()) -> str:
        """Run ``ovs-ofctl [options] command <bridge's socket> args...``; returns stdout."""
        if bridge not in self.bridges:
            raise ValueError(f"bridge: {bridge!r} is not a bridge of this OVS (have {self.bridges})")
        return self._tool(["ovs-ofctl", *options, command, self.mgmt_target(bridge), *args], input_text=input_text)

    def appctl(self, *args: str) -> str:
        """Run ``ovs-appctl`` against our ovs-vswitchd."""
        return self._tool(["ovs-appctl", "-t", str(self._dir() / "ovs-vswitchd.ctl"), *args])

    # ------------------------------------------------------------------ bridges and ports
    def add_bridge(self, name: str, *, fail_mode: str = "secure") -> None:
        """A bridge on the userspace datapath (``datapath_type=netdev``). ``fail_mode=secure``: no
        default NORMAL flow; a packet that matches no flow is dropped. Waits until ovs-vswitchd has
        created it."""
        _check_ifname(name, "name")
        if fail_mode not in ("secure", "standalone"):
            raise ValueError(f"fail_mode: expected 'secure' or 'standalone', got {fail_mode!r}")
        self.vsctl(f"--timeout={max(1, int(self.config.ready_timeout_s))}", "add-br", name, "--", "set", "bridge",
                   name, "datapath_type=netdev", f"fail_mode={fail_mode}")
        self.bridges.append(name)

    def add_port(self, bridge: str, port: str, *, ofport: int | None = None) -> int:
        """Attach the existing interface ``port`` (in ovs-vswitchd's namespace) to ``bridge``;
        returns its OpenFlow port number (``ofport`` requests one)."""
        if bridge not in self.bridges:
            raise ValueError(f"bridge: {bridge!r} is not a bridge of this OVS (have {self.bridges})")
        _check_ifname(port, "port")
        extra = []
        if ofport is not None:
            if isinstance(ofport, bool) or not isinstance(ofport, int) or not 1 <= ofport <= 0xFEFF:
                raise ValueError(f"ofport: expected an OpenFlow port number in [1, 65279], got {ofport!r}")
            extra = ["--", "set", "interface", port, f"ofport_request={ofport}"]
        self.vsctl(f"--timeout={max(1, int(self.config.ready_timeout_s))}", "add-port", bridge, port, *extra)
        got = self.vsctl("get", "interface", port, "ofport").strip()
        n = int(got) if got.lstrip("-").isdigit() else -1
        if n < 1:
            err = self.vsctl("get", "interface", port, "error").strip()
            raise OvsError(f"add_port: {port} got no OpenFlow port (ofport {got}): {err}")
        return n


def _check_ifname(name: str, what: str) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 15 or any(c in name for c in "/ \t\n:"):
        raise ValueError(f"{what}: expected an interface name of 1-15 characters without '/', ':' or "
                         f"spaces, got {name!r}")


__all__ = ["OpenVSwitch", "OvsConfig", "OvsError", "TOOLS", "find_schema", "unavailable_reason"]
