"""The runner: dispatcher, worker processes (or threads), shared-memory rings, stats, pacing.

- :class:`Runner` -- ``Runner(vnf, backend="process" | "thread", queues=..., config=...)``; see
  :class:`~vnfkit.runtime.process.ProcessRunner` (one worker process per queue, the parallel one)
  and :class:`~vnfkit.runtime.thread.ThreadRunner` (one thread per queue, GIL-bound, for debugging).
- :class:`RunResult`, :class:`QueueStats` -- what a run measured.
- :class:`WorkerError` -- a worker's VNF raised, or its process died (queue and signal named).
- :func:`iter_batches` -- slices of one big batch.
"""

from __future__ import annotations

from .runner import BACKENDS, Runner, WorkerError, iter_batches
from .stats import QueueStats, RunResult

__all__ = ["BACKENDS", "QueueStats", "RunResult", "Runner", "WorkerError", "iter_batches"]
