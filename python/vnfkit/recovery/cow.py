"""Copy-on-write checkpoints: a ``fork()`` of the master writes the image while the master goes on.

The synchronous :func:`~.checkpoint.take_checkpoint` stops the master for as long as imaging every
table takes (milliseconds at 100 k flows). As Redis does for ``BGSAVE``, :func:`fork_checkpoint`
instead forks this process at the batch boundary: the child sees a frozen copy-on-write image of
all state, serialises the checkpoint into a file and exits; the master is paused only for the
``fork()`` itself (page-table copy) and touches pages as usual, each first write to a page copying
it. :meth:`ForkedCheckpoint.wait` collects the child and returns the checkpoint bytes, which the
master then appends to stable storage; outputs that wait for the checkpoint (buffering) wait for
that. Call it only at a batch boundary, with no worker thread inside a batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import take_checkpoint

__all__ = ["ForkedCheckpoint", "collect_image", "fork_checkpoint", "worker_fork_image", "worker_reap"]


class ForkedCheckpoint:
    """A checkpoint being written by a child process; ``pause_s`` is what the master paid."""

    def __init__(self, pid: int, path: Path, pause_s: float) -> None:
        self.pid = pid
        self.path = path
        self.pause_s = pause_s
        self._status: int | None = None

    def done(self) -> bool:
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return False
            self._status = status
        return True

    def wait(self, timeout_s: float = 30.0) -> bytes:
        """The checkpoint bytes (RuntimeError if the child failed or took longer than `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while not self.done():
            if time.monotonic() > deadline:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                self._status = -9
                raise RuntimeError(f"checkpoint child {self.pid} took longer than {timeout_s} s (killed)")
            time.sleep(0.0005)
        if self._status != 0:
            raise RuntimeError(f"checkpoint child {self.pid} failed (wait status {self._status})")
        try:
            return self.path.read_bytes()
        finally:
            self.path.unlink(missing_ok=True)


def fork_checkpoint(vnfs: Sequence[Any], contexts: Sequence[Any], shared: Any, path: str | os.PathLike[str], *,
                    epoch: int, next_input: int, last_packet_id: int) -> ForkedCheckpoint:
    """Fork; the child writes ``take_checkpoint(...).to_bytes()`` to `path` and exits."""
    path = Path(path)
    pid, fork_s = _fork_writing(str(path), lambda: take_checkpoint(
        vnfs, contexts, shared, epoch=epoch, next_input=next_input, last_packet_id=last_packet_id).to_bytes())
    return ForkedCheckpoint(pid, path, fork_s)


def _fork_writing(path: str, make: Callable[[], bytes]) -> tuple[int, float]:
    """Fork; the child (a frozen copy of this process at this instant) writes ``make()`` to
    `path` (through a temporary file renamed into place, so the file appears only when whole) and
    exits. Returns (child pid, seconds the fork took)."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            blob = make()
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
            code = 0
        finally:
            os._exit(code)
    return pid, time.perf_counter() - t0


# ---- copy-on-write checkpoints of worker processes (run inside a worker through ProcessRunner.call_workers)
_children: list[int] = []  # this worker's checkpoint children not reaped yet


def _reap() -> None:
    for pid in list(_children):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            _children.remove(pid)


def worker_fork_image(vnf: Any, ctx: Any, prefix: str) -> tuple[int, int, float]:
    """At this worker's batch boundary: fork; the child images the worker's tables and VNF state
    (``(tables, vnf_state)`` pickled) into ``f"{prefix}-{ctx.queue}"`` and exits, while the worker drains its log and
    goes on. Returns (child pid, log position of the cut, seconds the fork took). The file appears
    (atomically renamed into place) only when it is whole; :func:`collect_image` reads it."""
    import pickle

    _reap()
    path = f"{prefix}-{ctx.queue}"
    pos = int(ctx.state.position) if ctx.state is not None else 0
    pid, fork_s = _fork_writing(path, lambda: pickle.dumps(
        ({name: t.snapshot() for name, t in ctx.tables.items()}, vnf.snapshot()), protocol=5))
    _children.append(pid)
    if ctx.state is not None:
        ctx.state.drain_chunk()  # the dispatcher has read every record up to the cut
    return pid, pos, fork_s


def worker_reap(vnf: Any, ctx: Any) -> int:
    """Reap this worker's finished checkpoint children; returns how many are still running."""
    _reap()
    return len(_children)


def collect_image(path: str | os.PathLike[str]) -> tuple[dict[str, bytes], dict[str, Any]] | None:
    """The image a worker's checkpoint child wrote to `path` (removing the file), or None if it is
    not there yet."""
    import pickle

    p = Path(path)
    try:
        blob = p.read_bytes()
    except FileNotFoundError:
        return None
    p.unlink()
    tables, state = pickle.loads(blob)
    return tables, state
