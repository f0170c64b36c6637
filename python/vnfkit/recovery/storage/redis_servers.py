"""A private Redis primary + one replica, started and stopped by pid (for the Redis backend).

``RedisPair`` runs Debian's ``redis-server`` twice inside a temporary directory: the primary
listens on a unix socket there and on a free loopback TCP port (which the replica replicates from:
Redis replication needs TCP), the replica on its own unix socket only. A record is stable once it is on
both; the primary also keeps an append-only file fsynced on every write, so that a killed and
restarted primary comes back with its data (an empty restarted primary would otherwise resync the
replica to empty, the classic Redis failure mode). ``stop()`` -- also called by ``with`` on any error --
resumes a stalled server, asks it to exit, kills it if it does not, and removes the directory.
With ``netns`` both servers run inside that network namespace (``ip netns exec``, which execs, so
the pids are the servers'), and ``bind`` adds addresses of that namespace the primary listens on
(other hosts reach it over TCP there; the unix sockets work from any namespace).
Fault injection for tests: :meth:`kill`, :meth:`stall` (SIGSTOP), :meth:`resume` (SIGCONT),
:meth:`restart`.

A harness killed without running ``stop()`` (SIGKILL, or Python's default SIGTERM) leaves no server
running: each gets SIGKILL from the kernel when its parent ends (``_procs.dying_with_parent``; KILL,
not TERM, so that a stalled server goes too), and the directory, ``vnfkit-<pid>-redis-*``, is
removed by the next process runner of the same user (``runtime._segments.sweep_stale``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..._procs import dying_with_parent
from ...runtime._segments import owned_dir

__all__ = ["RedisPair", "redis_server_path"]


def redis_server_path() -> str | None:
    """Path of the redis-server binary, or None if it is not installed."""
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisPair:
    """A primary and one replica on private sockets (see the module docstring)."""

    def __init__(self, *, start_timeout_s: float = 10.0, netns: str | None = None,
                 bind: tuple[str, ...] = ()) -> None:
        exe = redis_server_path()
        if exe is None:
            raise RuntimeError("redis-server not found (Debian package redis-server)")
        self.exe = exe
        self.start_timeout_s = start_timeout_s
        if netns is not None and (not netns or "/" in netns):
            raise ValueError(f"netns: expected a network namespace name, got {netns!r}")
        self.netns = netns
        self.bind = tuple(bind)
        self._owned = owned_dir("redis")
        self.dir = Path(self._owned.name)
        self.port = _free_port()
        self.primary_socket = str(self.dir / "primary.sock")
        self.replica_socket = str(self.dir / "replica.sock")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            self._start("primary")
            self._start("replica")
            self.wait_replicated()
        except BaseException:
            self.stop()
            raise

    def _args(self, role: str) -> list[str]:
        common = ["--save", "", "--dir", str(self.dir), "--protected-mode", "no",
                  "--unixsocketperm", "700", "--logfile", str(self.dir / f"{role}.log")]
        if role == "primary":
            return [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", *self.bind, "--unixsocket", self.primary_socket,
                    "--dbfilename", "primary.rdb", "--appendonly", "yes", "--appendfsync", "always",
                    "--appenddirname", "primary-aof", "--repl-diskless-sync-delay", "0", *common]
        return [self.exe, "--port", "0", "--unixsocket", self.replica_socket, "--dbfilename", "replica.rdb",
                "--appendonly", "no", "--replicaof", "127.0.0.1", str(self.port), "--repl-diskless-load", "swapdb", *common]

    def _start(self, role: str) -> None:
        sock = self.primary_socket if role == "primary" else self.replica_socket
        if os.path.exists(sock):
            os.unlink(sock)
        argv = self._args(role) if self.netns is None else ["ip", "netns", "exec", self.netns, *self._args(role)]
        p = subprocess.Popen(dying_with_parent(argv, "KILL"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs[role] = p
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"redis-server ({role}) exited with {p.returncode}; log: {self.dir}/{role}.log")
            if os.path.exists(sock) and self._ping(sock):
                return
            time.sleep(0.01)
        raise RuntimeError(f"redis-server ({role}) did not start within {self.start_timeout_s} s")

    @staticmethod
    def _ping(sock: str) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(sock)
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def wait_replicated(self, timeout_s: float | None = None) -> None:
        """Wait until the replica's link to the primary is up."""
        import redis

        r = redis.Redis(unix_socket_path=self.replica_socket, socket_timeout=1.0)
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        try:
            while time.monotonic() < deadline:
                try:
                    if r.info("replication").get("master_link_status") == "up":
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.02)
        finally:
            r.close()
        raise RuntimeError("redis replica did not link to the primary in time")

    @property
    def pids(self) -> dict[str, int]:
        return {role: p.pid for role, p in self.procs.items()}

    # ---- fault injection
    def kill(self, role: str = "primary") -> None:
        p = self.procs[role]
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stall(self, role: str = "primary") -> None:
        self.procs[role].send_signal(signal.SIGSTOP)

    def resume(self, role: str = "primary") -> None:
        self.procs[role].send_signal(signal.SIGCONT)

    def restart(self, role: str = "primary") -> None:
        """Start a killed server again (the primary reloads its append-only file)."""
        p = self.procs.get(role)
        if p is not None and p.poll() is None:
            raise RuntimeError(f"redis {role} is still running")
        self._start(role)

    # ---- lifecycle
    def stop(self) -> None:
        for role, p in list(self.procs.items()):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.terminate()
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self._owned.cleanup()

    def __enter__(self) -> RedisPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
