"""Failure detector: heartbeats in shared memory plus the OS's own word on process death.

A :class:`HeartbeatBoard` is one 64-bit word per worker in a shared-memory segment; a worker (a
thread or another process that attaches by name) stores ``time.monotonic_ns()`` into its word as
it works (:meth:`HeartbeatBoard.beat`, a single aligned store). The :class:`FailureDetector`
thread watches the board and, for worker processes, their ``pidfd`` (Linux >= 5.3): a pidfd turns
readable once the process is gone, so a ``SIGKILL`` is seen without a timeout, while a stalled or
hung worker (``SIGSTOP``, a livelock) is caught when its heartbeat is older than ``timeout_s``.
A pidfd waits for the dead process's memory to be unmapped, milliseconds for a Python worker on a
VM; a :class:`~vnfkit._core.DeathWatch` over the workers' lifelines (:meth:`FailureDetector.watch_deaths`)
tells as the kernel begins the exit. Each failure is reported once to
``on_failure(worker, reason, detected_ns)`` with reason ``"died"`` (a lifeline), ``"exited"`` (a
pidfd) or ``"heartbeat"``; :attr:`FailureDetector.events` keeps them.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from multiprocessing import shared_memory

import numpy as np

#: Longest the detector thread waits between two looks at the heartbeats (see FailureDetector._wait_s).
MAX_WAIT_S = 0.05

__all__ = ["FailureDetector", "HeartbeatBoard"]


class HeartbeatBoard:
    """One heartbeat word per worker in shared memory (create it, or attach with `name`), and after
    the words one lifeline per worker (:attr:`lifelines`, a :class:`~vnfkit._core.LifeLines`): a
    worker process that :meth:`hold` s its line is told dead the moment the kernel begins its exit
    (:meth:`FailureDetector.watch_lifelines`)."""

    def __init__(self, workers: int, name: str | None = None) -> None:
        from .. import _core

        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected a positive int, got {workers!r}")
        self.workers = workers
        self._owner = name is None
        self._lines_at = (8 * workers + 63) // 64 * 64
        size = self._lines_at + _core.LifeLines.required_bytes(workers)
        self._shm = shared_memory.SharedMemory(name=name, create=name is None, size=size)
        if not self._owner:
            # Python < 3.13 registers an attached segment with this process's resource tracker,
            # which would unlink it when this (worker) process exits: the creator owns it.
            from multiprocessing import resource_tracker

            resource_tracker.unregister(self._shm._name, "shared_memory")  # type: ignore[attr-defined]
        self.words = np.ndarray((workers,), dtype=np.uint64, buffer=self._shm.buf)
        if self._owner:
            self.words[:] = time.monotonic_ns()
        buf = self._shm.buf
        assert buf is not None  # an open segment
        self.lifelines: _core.LifeLines | None = _core.LifeLines(buf[self._lines_at:], create=self._owner,
                                                                lines=workers if self._owner else 0)

    @property
    def name(self) -> str:
        return self._shm.name

    def beat(self, worker: int) -> None:
        self.words[worker] = time.monotonic_ns()

    def age_ns(self, worker: int) -> int:
        return time.monotonic_ns() - int(self.words[worker])

    def hold(self, worker: int) -> None:
        """Take `worker`'s lifeline for the calling thread of this process (a worker, at start)."""
        if self.lifelines is None:
            raise ValueError("HeartbeatBoard is closed")
        self.lifelines.hold(worker)

    def let_go(self, worker: int) -> None:
        """A clean exit: give `worker`'s lifeline back (no death is reported)."""
        if self.lifelines is None:
            raise ValueError("HeartbeatBoard is closed")
        self.lifelines.let_go(worker)

    def close(self) -> None:
        """Detach (and remove the segment if this board created it). A death watch over the
        lifelines keeps their memory mapped until it is gone."""
        del self.words
        self.lifelines = None
        try:
            self._shm.close()
        except BufferError:  # a DeathWatch still holds the lines: the mapping goes with it
            pass
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
        self._deaths: list[tuple[object, int, list[int]]] = []  # (DeathWatch, its fd, worker by line)
        self._owned_watches: list[object] = []  # made by watch_lifelines: closed with this detector
        self._poll = select.poll()
        # a pipe that wakes the thread out of its wait (a new process to watch, close())
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poll.register(self._wake_r, select.POLLIN)
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
        self._wake()

    def watch_lifelines(self) -> None:
        """Watch the board's own lifelines (line w = worker w) with a death watch this detector owns."""
        from .. import _core

        if self.board.lifelines is None:
            raise ValueError("board: closed")
        watch = _core.DeathWatch(self.board.lifelines)
        self._owned_watches.append(watch)
        self.watch_deaths(watch, list(range(self.board.workers)))

    def watch_deaths(self, watch: object, workers: list[int]) -> None:
        """Also watch a :class:`~vnfkit._core.DeathWatch` whose line ``i`` is worker ``workers[i]``:
        a death is reported with the time the watch's native thread stamped. The detector polls its
        own duplicate of the watch's eventfd: the watch may be closed first."""
        fd = os.dup(watch.fileno())  # type: ignore[attr-defined]
        with self._lock:
            self._deaths.append((watch, fd, list(workers)))
            self._poll.register(fd, select.POLLIN)
        self._wake()

    def _wake(self) -> None:
        if self._wake_w < 0:  # closed
            return
        try:
            os.write(self._wake_w, b"w")
        except (BlockingIOError, OSError):  # full (a wake-up is pending anyway) or closed
            pass

    def pause(self, worker: int) -> None:
        """Stop judging `worker` (e.g. it is idle on purpose) until :meth:`resume`."""
        self._paused.add(worker)
        self._wake()

    def resume(self, worker: int) -> None:
        self.board.beat(worker)
        self._paused.discard(worker)
        self._wake()

    def rearm(self) -> None:
        """Forget every report so far (after a false suspicion: the worker turned out to be alive)."""
        self._failed.clear()
        self.events.clear()
        self._wake()  # the re-judged workers' deadlines may be due

    def failed(self, worker: int) -> bool:
        return worker in self._failed

    def _report(self, worker: int, reason: str, at_ns: int | None = None) -> None:
        if worker in self._failed:
            return
        now = time.monotonic_ns() if at_ns is None else at_ns
        self._failed.add(worker)
        self.events.append((worker, reason, now))
        if self.on_failure is not None:
            self.on_failure(worker, reason, now)

    def _wait_s(self, now: int) -> float:
        """How long the thread may wait before its next look at the heartbeats: until the earliest
        moment a judged worker can time out (heartbeats only move forward, so none can before
        then), capped at ``MAX_WAIT_S`` (a worker judged again after ``rearm``, say, is seen that
        soon), and never below ``poll_s``. A watched process that exits, a new one to watch and
        ``close()`` wake the wait at once."""
        words = self.board.words
        earliest = None
        for w in range(self.board.workers):
            if w not in self._failed and w not in self._paused:
                due = int(words[w]) + self.timeout_ns
                earliest = due if earliest is None else min(earliest, due)
        left = MAX_WAIT_S if earliest is None else (earliest - now) / 1e9
        return max(self.poll_s, min(MAX_WAIT_S, left))

    def _run(self) -> None:
        # poll() waits in whole milliseconds (rounded up): a wait below one looks without waiting,
        # then sleeps (a poll(0) loop would spin, taking a core and the GIL from the process it
        # watches). A long heartbeat timeout needs few looks: each look takes the GIL.
        while not self._stop.is_set():
            wait_s = self._wait_s(time.monotonic_ns())
            if wait_s >= 1e-3:
                ready = self._poll.poll(wait_s * 1e3)
            else:
                ready = self._poll.poll(0)
                if not ready:
                    time.sleep(wait_s)
            for fd, _ in ready:
                if fd == self._wake_r:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                dead = self._dead_lines(fd)
                if dead is not None:
                    for worker, at in dead:
                        self._report(worker, "died", at)
                    continue
                with self._lock:
                    w = self._pidfds.pop(fd, None)
                    if w is not None:
                        self._poll.unregister(fd)
                        os.close(fd)
                if w is not None:
                    self._report(w, "exited")
            now = time.monotonic_ns()
            words = self.board.words
            for w in range(self.board.workers):
                if w not in self._failed and w not in self._paused and now - int(words[w]) > self.timeout_ns:
                    self._report(w, "heartbeat")

    def _dead_lines(self, fd: int) -> list[tuple[int, int]] | None:
        """If `fd` is a DeathWatch's: its dead lines' (worker, stamp) (and it is unwatched once
        every line died); else None."""
        with self._lock:
            for k, (watch, wfd, workers) in enumerate(self._deaths):
                if wfd != fd:
                    continue
                try:
                    os.read(fd, 8)
                except BlockingIOError:
                    pass
                lines = watch.lines  # type: ignore[attr-defined]
                dead = [(workers[i], lines.died_ns(i)) for i in range(len(workers)) if lines.state(i) == "dead"]
                if len(dead) == len(workers):
                    self._poll.unregister(fd)
                    os.close(fd)
                    del self._deaths[k]
                return dead
        return None

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
        self._wake()
        self._thread.join(timeout=5)
        with self._lock:
            for fd in self._pidfds:
                os.close(fd)
            self._pidfds.clear()
            for _, fd, _ in self._deaths:
                os.close(fd)
            self._deaths.clear()
            if self._wake_w >= 0 and not self._thread.is_alive():
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
        for watch in self._owned_watches:
            watch.close()  # type: ignore[attr-defined]
        self._owned_watches.clear()
