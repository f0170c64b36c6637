"""The supervisor of a fault-tolerant live middlebox: storage, heartbeat board, master, backup.

:func:`run_failover` (the ``vnfkit live ... --strategy replay`` command) starts, in order, the
stable storage (``redis``: a private primary + replica, :class:`vnfkit.recovery.storage.RedisPair`;
``file``: a fresh directory), the heartbeat board, the master and then the backup (each a process
group of its own: ``python -m vnfkit.live ROLE SPEC``), waiting for each to report ``ready``. It
prints one ready line on stderr naming both process groups, then relays the nodes' events (a
failover line when the backup goes live). On SIGINT/SIGTERM or after ``duration_s`` it stops the
nodes that are still running (SIGTERM to each process group, SIGKILL after a grace period), then
the storage, removes what it created, and returns the JSON summary (each node's own summary,
``null`` for a node that was killed, and the failover's timings).

With a ``topology`` (:func:`load_topology`; :meth:`vnfkit.testbed.failover.FailoverTopology.to_json`
writes one) the nodes run on hosts of their own: the master in ``master_netns``, the backup in
``backup_netns`` (each started through ``ip netns exec``, which execs, so the process group is still
the node's), the Redis pair in the storage host's namespace, listening on its addresses on the
nodes' storage links, which each node uses. The input handler's switch (``steering``) is handed to
the backup: its failure detector's decision reprograms the switch (:mod:`.steering`).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from .._procs import dying_with_parent, stop_group
from .frames import NodeSpec

__all__ = ["load_topology", "run_failover"]

READY_TIMEOUT_S = 60.0


def _reader(role: str, stream: IO[bytes], q: queue.Queue[tuple[str, dict[str, Any] | None]]) -> None:
    for line in stream:
        try:
            q.put((role, json.loads(line)))
        except json.JSONDecodeError:
            continue
    q.put((role, None))  # end of stream: the node exited


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in reversed(list(procs.values())):
        stop_group(p, 5.0)


def _storage_dir(path: str | None) -> tuple[Path, bool]:
    """The file storage's directory and whether this run created it (an existing non-empty one
    would hold another run's logs: refused rather than reused or overwritten)."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="vnfkit-live-storage-")), True
    p = Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise ValueError(f"--storage-dir: {path} exists and is not an empty directory")
    created = not p.exists()
    p.mkdir(parents=True, exist_ok=True)
    return p, created


def _netns_exists(name: str) -> bool:
    return bool(name) and "/" not in name and os.path.exists(f"/run/netns/{name}")


def load_topology(text: str, inside: str, outside: str) -> dict[str, Any]:
    """A ``--topology`` file's content checked: the namespaces exist, ``inside`` and ``outside``
    exist on both nodes, the switch's description is well formed; ValueError naming the field."""
    from .steering import TcSteering

    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--topology: not JSON ({exc.msg} at line {exc.lineno})") from None
    want = {"master_netns", "backup_netns", "storage", "steering"}
    if not isinstance(d, dict) or set(d) != want:
        raise ValueError(f"--topology: expected the keys {sorted(want)}, got {sorted(d) if isinstance(d, dict) else d!r}")
    st = d["storage"]
    if not isinstance(st, dict) or set(st) != {"netns", "addrs"} or not isinstance(st["addrs"], dict) \
            or sorted(st["addrs"]) != ["backup", "master"]:
        raise ValueError(f"--topology: storage: expected {{netns, addrs: {{master, backup}}}}, got {st!r}")
    for field, ns in (("master_netns", d["master_netns"]), ("backup_netns", d["backup_netns"]),
                      ("storage.netns", st["netns"])):
        if not isinstance(ns, str) or not _netns_exists(ns):
            raise ValueError(f"--topology: {field}: no network namespace named {ns!r}")
    TcSteering.from_dict(d["steering"])
    if not _netns_exists(d["steering"]["netns"]):
        raise ValueError(f"--topology: steering.netns: no network namespace named {d['steering']['netns']!r}")
    for role in ("master", "backup"):
        for ifname in (inside, outside):
            r = subprocess.run(["ip", "-n", d[f"{role}_netns"], "link", "show", "dev", ifname], capture_output=True,
                               text=True, timeout=10, check=False)
            if r.returncode != 0:
                raise ValueError(f"interface: no interface named {ifname!r} on the {role} host "
                                 f"(namespace {d[f'{role}_netns']})")
    return d


def run_failover(*, inside: str, outside: str, inside_peer: str, outside_peer: str, config: dict[str, Any],
                 storage: str, storage_dir: str | None, batch: int, checkpoint_ms: float,
                 heartbeat_timeout_ms: float, duration_s: float | None, quiet: bool, label: str,
                 topology: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``vnfkit live mazunat --strategy replay`` runs: start stable storage (a private Redis
    primary + replica, or a fresh storage directory) and a heartbeat board, start the master and the
    backup as process groups of their own, report the failover when it happens, and on SIGTERM or
    after `duration_s` stop both groups and the storage it started. With `topology` (see
    :func:`load_topology`) each runs on its own host and the backup steers the switch when it takes
    over. Returns the run's summary."""
    from ..recovery.detector import HeartbeatBoard

    stopping = {"flag": False}

    def on_signal(_sig: int, _frame: Any) -> None:
        stopping["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    events: queue.Queue[tuple[str, dict[str, Any] | None]] = queue.Queue()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    summaries: dict[str, Any] = {"master": None, "backup": None}
    failover: dict[str, Any] | None = None
    board_name = ""
    storage_path = ""
    exited: set[str] = set()

    def take(role_wanted: str | None, timeout_s: float) -> tuple[str, dict[str, Any] | None] | None:
        nonlocal failover
        try:
            role, ev = events.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if ev is None:
            exited.add(role)
        elif ev.get("event") == "summary":
            summaries[role] = ev
        elif ev.get("event") == "live":
            failover = ev
            if not quiet:
                print(f"{label}: failover: backup live {ev['detect_to_live_ms']:.1f} ms after the detector fired "
                      f"({ev['reason']}; restore {ev['restore_ms']:.1f} ms, replay {ev['replay_ms']:.1f} ms of "
                      f"{ev['replayed_packets']} packets, catch-up {ev['catch_up_ms']:.1f} ms of "
                      f"{ev['caught_up_frames']} frames)", file=sys.stderr, flush=True)
        return role, ev

    def start(role: str, spec: NodeSpec, tmp: Path) -> None:
        f = tmp / f"{role}.json"
        f.write_text(spec.dumps())
        argv = [sys.executable, "-m", "vnfkit.live", role, str(f)]
        if topology is not None:
            argv = ["ip", "netns", "exec", topology[f"{role}_netns"], *argv]
        p = subprocess.Popen(dying_with_parent(argv), stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        procs[role] = p
        assert p.stdout is not None
        threading.Thread(target=_reader, args=(role, p.stdout, events), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            got = take(None, 0.1)
            if got is not None and got[0] == role and got[1] is not None and got[1].get("event") == "ready":
                return
            if role in exited or stopping["flag"]:
                break
        raise RuntimeError(f"the {role} did not start (exit status {p.poll()}; its error is above)")

    try:
        with ExitStack() as stack:
            tmp = Path(tempfile.mkdtemp(prefix="vnfkit-live-"))
            stack.callback(shutil.rmtree, tmp, True)
            if storage == "redis":
                from ..recovery.storage.redis_servers import RedisPair

                prefix = "vnfkit-live-" + os.urandom(4).hex()
                st_spec: dict[str, Any]
                if topology is None:
                    pair = RedisPair()
                    st_spec = {"kind": "redis", "unix_socket_path": pair.primary_socket, "prefix": prefix}
                else:  # on the storage host, reached by each node over its own link
                    addrs = topology["storage"]["addrs"]
                    pair = RedisPair(netns=topology["storage"]["netns"], bind=(addrs["master"], addrs["backup"]))
                    st_spec = {"kind": "redis", "host": addrs["master"], "port": pair.port, "prefix": prefix}
                stack.callback(pair.stop)
                storage_path = str(pair.dir)
            else:
                root, created = _storage_dir(storage_dir)
                storage_path = str(root)
                if created:
                    stack.callback(shutil.rmtree, root, True)
                st_spec = {"kind": "file", "root": str(root)}
            board = HeartbeatBoard(1)
            board_name = board.name
            stack.callback(board.close)
            spec = NodeSpec(inside=inside, outside=outside, inside_peer=inside_peer, outside_peer=outside_peer,
                            config=config, storage=st_spec, board=board.name, batch=batch, checkpoint_ms=checkpoint_ms,
                            heartbeat_timeout_ms=heartbeat_timeout_ms)
            stack.callback(_stop_all, procs)
            start("master", spec, tmp)
            spec.master_pid = procs["master"].pid
            if topology is not None:
                bst = {**spec.storage, "host": topology["storage"]["addrs"]["backup"]} if "host" in spec.storage \
                    else spec.storage
                spec = replace(spec, storage=bst, steering=topology["steering"])
            start("backup", spec, tmp)
            if not quiet:
                hosts = "" if topology is None else (f"; master host {topology['master_netns']}, backup host "
                                                     f"{topology['backup_netns']}, storage host "
                                                     f"{topology['storage']['netns']}, switch "
                                                     f"{topology['steering']['netns']}")
                print(f"{label}: ready on inside {inside}, outside {outside} (public address "
                      f"{config.get('public_addr', 'default')}; strategy replay, storage {storage}; "
                      f"master pgid {procs['master'].pid}, backup pgid {procs['backup'].pid}{hosts})",
                      file=sys.stderr, flush=True)
            t0 = time.monotonic()
            while not stopping["flag"] and (duration_s is None or time.monotonic() - t0 < duration_s):
                take(None, 0.05)
                if "backup" in exited:
                    raise RuntimeError(f"the backup exited (status {procs['backup'].poll()}; its error is above)")
            for role in ("backup", "master"):
                stop_group(procs[role], 5.0)
            deadline = time.monotonic() + 5
            while len(exited) < len(procs) and time.monotonic() < deadline:
                take(None, 0.05)
            while take(None, 0.0) is not None:
                pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return {"strategy": "replay", "storage": storage, "master": summaries["master"], "backup": summaries["backup"],
            "failover": failover, "heartbeat_board": board_name,
            "storage_path": storage_path,
            "exit_status": {r: p.returncode for r, p in procs.items()}}
