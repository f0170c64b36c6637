"""The one seam through which the process backend creates and attaches shared aggregate state.

``make_shared(num_workers)`` runs in the parent and returns a picklable spec; ``attach_shared(spec,
queue)`` runs in each worker and returns the :class:`vnfkit.state.SharedState` its ``ctx.shared``
is. Today each worker gets a **process-local** SharedState: counters, token buckets, port pools and
registers are per worker process, not shared across workers (VNFs whose shared state is
partitioned by queue, like MazuNAT's per-queue port sub-pools, decide exactly as on the thread
backend; ones that aggregate across queues, like QoS's shared buckets, see per-worker totals).
A shared-memory SharedState slots in here without touching the rest of the runtime.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SHARED_ACROSS_PROCESSES", "attach_shared", "make_shared"]

#: whether workers of one process runner see one shared state (False: one per worker, see above)
SHARED_ACROSS_PROCESSES = False


def make_shared(num_workers: int) -> Any:
    """Create the runner's shared state (parent side); returns the spec handed to every worker."""
    return {"kind": "process-local", "workers": num_workers}


def attach_shared(spec: Any, queue: int) -> Any:
    """The SharedState of worker `queue` for `spec` (worker side)."""
    from ..state import SharedState

    if spec.get("kind") != "process-local":
        raise ValueError(f"shared state spec: unknown kind {spec.get('kind')!r}")
    return SharedState()


def release_shared(spec: Any) -> None:
    """Free what make_shared created (parent side, at close); nothing for process-local state."""
