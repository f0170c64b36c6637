"""Failure detector: heartbeats in shared memory plus the OS's own word on process death.

A :class:`HeartbeatBoard` is one 64-bit word per worker in a shared-memory segment; a worker (a
thread or another process that attaches by name) stores ``time.monotonic_ns()`` into its word as
it works (:meth:`HeartbeatBoard.beat`, a single aligned store). The :class:`FailureDetector`
thread watches the board and, for worker processes, their ``pidfd`` (Linux >= 5.3): a pidfd turns
readable the moment the process dies, so a ``SIGKILL`` is seen at once, while a stalled or hung
worker (``SIGSTOP``, a livelock) is caught when its heartbeat is older than ``timeout_s``.
Each failure is reported once to ``on_failure(worker, reason, detected_ns)`` with reason ``"exited"``
or ``"heartbeat"``; :attr:`FailureDetector.events` keeps them.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from multiprocessing import shared_memory

import numpy as np

__all__ = ["FailureDetector", "HeartbeatBoard"]


class HeartbeatBoard:
    """One heartbeat word per worker in shared memory (create it, or attach with `name`)."""

    def __init__(self, workers: int, name: str | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected a positive int, got {workers!r}")
        self.workers = workers
        self._owner = name is None
        self._shm = shared_memory.SharedMemory(name=name, create=name is None, size=8 * workers)
        if not self._owner:
            # Python < 3.13 registers an attached segment with this process's resource tracker,
            # which would unlink it when this (worker) process exits: the creator owns it.
            from multiprocessing import resource_tracker

            resource_tracker.unregister(self._shm._name, "shared_memory")  # type: ignore[attr-defined]
        self.words = np.ndarray((workers,), dtype=np.uint64, buffer=self._shm.buf)
        if self._owner:
            self.words[:] = time.monotonic_ns()

    @property
    def name(self) -> str:
        return self._shm.name

    def beat(self, worker: int) -> None:
        self.words[worker] = time.monotonic_ns()

    def age_ns(self, worker: int) -> int:
        return time.monotonic_ns() - int(self.words[worker])

    def close(self) -> None:
        """Detach (and remove the segment if this board created it)."""
        del self.words
        self._shm.close()
        if self._owner:
            self._shm.unlink()


class FailureDetector:
    """Watches a :class:`HeartbeatBoard` (and optional pids) from a background thread.

    Args:
        board: the heartbeat words.
        timeout_s: a worker whose heartbeat is older than this is declared failed.
        poll_s: how often the board is scanned (default: timeout / 4, at least 100 us).
        on_failure: called from the detector thread as ``on_failure(worker, reason, detected_ns)``.
    """

    def __init__(self, board: HeartbeatBoard, *, timeout_s: float = 0.005, poll_s: float | None = None,
                 on_failure: Callable[[int, str, int], None] | None = None) -> None:
        if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or not timeout_s > 0:
            raise ValueError(f"timeout_s: must be a positive number, got {timeout_s!r}")
        self.board = board
        self.timeout_ns = int(timeout_s * 1e9)
        self.poll_s = max(1e-4, timeout_s / 4) if poll_s is None else float(poll_s)
        self.on_failure = on_failure
        self.events: list[tuple[int, str, int]] = []
        self._failed: set[int] = set()
        self._pidfds: dict[int, int] = {}  # fd -> worker
        self._poll = select.poll()
        self._stop = threading.Event()
        self._paused: set[int] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="vnfkit-failure-detector", daemon=True)
        self._thread.start()

    def watch_process(self, worker: int, pid: int) -> None:
        """Also watch process `pid` (worker `worker`): its death is reported at once."""
        fd = os.pidfd_open(pid)
        with self._lock:
            self._pidfds[fd] = worker
            self._poll.register(fd, select.POLLIN)

    def pause(self, worker: int) -> None:
        """Stop judging `worker` (e.g. it is idle on purpose) until :meth:`resume`."""
        self._paused.add(worker)

    def resume(self, worker: int) -> None:
        self.board.beat(worker)
        self._paused.discard(worker)

    def rearm(self) -> None:
        """Forget every report so far (after a false suspicion: the worker turned out to be alive)."""
        self._failed.clear()
        self.events.clear()

    def failed(self, worker: int) -> bool:
        return worker in self._failed

    def _report(self, worker: int, reason: str) -> None:
        if worker in self._failed:
            return
        now = time.monotonic_ns()
        self._failed.add(worker)
        self.events.append((worker, reason, now))
        if self.on_failure is not None:
            self.on_failure(worker, reason, now)

    def _run(self) -> None:
        # poll() waits in whole milliseconds: a shorter period looks without waiting, then sleeps
        # (a poll(0) loop would spin, taking a core and the GIL from the process it watches)
        timeout_ms = int(self.poll_s * 1000)
        while not self._stop.is_set():
            with self._lock:
                has_fds = bool(self._pidfds)
            if has_fds:
                ready = self._poll.poll(timeout_ms)
                if not ready and timeout_ms == 0:
                    time.sleep(self.poll_s)
                for fd, _ in ready:
                    with self._lock:
                        w = self._pidfds.pop(fd, None)
                        if w is not None:
                            self._poll.unregister(fd)
                            os.close(fd)
                    if w is not None:
                        self._report(w, "exited")
            else:
                time.sleep(min(self.poll_s, 0.001))  # pick up a newly watched pid soon
            now = time.monotonic_ns()
            words = self.board.words
            for w in range(self.board.workers):
                if w not in self._failed and w not in self._paused and now - int(words[w]) > self.timeout_ns:
                    self._report(w, "heartbeat")

    def wait(self, timeout_s: float) -> bool:
        """Block until some failure was reported (True) or `timeout_s` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.events:
                return True
            time.sleep(min(self.poll_s, 1e-4))
        return bool(self.events)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for fd in self._pidfds:
                os.close(fd)
            self._pidfds.clear()
