"""The Runner facade: pick a backend (worker processes or threads) with one constructor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import _core

__all__ = ["BACKENDS", "Runner", "WorkerError", "iter_batches"]

#: the runner's backends: one worker process per queue, or one worker thread per queue
BACKENDS = ("process", "thread")


class WorkerError(RuntimeError):
    """A worker failed: its VNF raised (``__cause__`` is the original exception, when it could be
    carried over) or its process died (``queue`` and ``signal`` say which and how)."""

    def __init__(self, message: str, *, queue: int | None = None, signal: str | None = None,
                 exitcode: int | None = None) -> None:
        super().__init__(message)
        self.queue = queue
        self.signal = signal
        self.exitcode = exitcode


class Runner:
    """Runs one VNF over a multi-queue classifier, one worker per receive queue.

    ``Runner(vnf, backend="process" | "thread", queues=..., config=..., ...)`` returns a
    :class:`~vnfkit.runtime.process.ProcessRunner` (one worker process per queue over shared-memory
    rings: the parallel one) or a :class:`~vnfkit.runtime.thread.ThreadRunner` (one worker thread
    per queue under the GIL: for debugging; the default of this constructor, since its VNF
    instances and contexts are inspectable in-process). See those classes for their arguments.
    The same VNF classes run unchanged on both.
    """

    backend = ""

    def __new__(cls, *args: Any, backend: str = "thread", **kwargs: Any) -> Any:
        if cls is not Runner:
            return super().__new__(cls)
        if backend == "thread":
            from .thread import ThreadRunner

            return super().__new__(ThreadRunner)
        if backend == "process":
            from .process import ProcessRunner

            return super().__new__(ProcessRunner)
        raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")

    def close(self) -> None:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_batches(batch: _core.PacketBatch, size: int) -> Iterator[_core.PacketBatch]:
    """Slices of `size` packets of one big batch (each a copy made by ``select``)."""
    if size < 1:
        raise ValueError("size: must be >= 1")
    n = len(batch)
    for start in range(0, n, size):
        yield batch.select(np.arange(start, min(start + size, n), dtype=np.uint32))
