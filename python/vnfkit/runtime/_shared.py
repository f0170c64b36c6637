"""The one seam through which the process backend creates and attaches shared aggregate state.

``make_shared(num_workers)`` runs in the parent: it creates one :class:`vnfkit.state.SharedState`
in a POSIX shared-memory segment (``/dev/shm/vnfkit-<pid>-state-...``) and returns a picklable
spec; ``attach_shared(spec, queue)`` runs in each worker and maps the same segment, so counters,
token buckets, port pools, registers and shared byte regions are one set of lock-free variables
for every worker process (a variable declared by any worker is mapped by the others), and each
worker's determinant log lives in the segment too. ``workers_attached(spec)`` removes the segment's
name once every worker has mapped it; ``release_shared(spec)`` closes the parent's mapping.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

__all__ = ["SHARED_ACROSS_PROCESSES", "attach_shared", "make_shared", "release_shared", "workers_attached"]

#: whether workers of one process runner see one shared state
SHARED_ACROSS_PROCESSES = True

#: bytes of the shared-state segment (committed only as variables are declared)
STATE_BYTES = 256 << 20
#: determinant records each worker's log holds between two drains
LOG_RECORDS = 1 << 20

_counter = itertools.count()
_owned: dict[str, Any] = {}  # segment name -> the parent's SharedState (owner: unlinks on close)
_claims: dict[str, Any] = {}  # segment name -> the parent's Claim on it, held while the name exists


def make_shared(num_workers: int) -> Any:
    """Create the runner's shared state (parent side); returns the spec handed to every worker."""
    from ..state import SharedState

    from ._segments import SHM_DIR, Claim

    name = f"vnfkit-{os.getpid()}-state-{next(_counter)}"
    _owned[name] = SharedState.create_shm(name, STATE_BYTES, max_workers=max(1, num_workers),
                                          log_records=LOG_RECORDS)
    try:
        _claims[name] = Claim(os.path.join(SHM_DIR, name))  # tells sweep_stale the owner lives
    except BaseException:
        release_shared({"name": name})
        raise
    return {"kind": "shm", "name": name, "workers": num_workers}


def attach_shared(spec: Any, queue: int) -> Any:
    """The SharedState of worker `queue` for `spec` (worker side): the parent's segment, mapped."""
    from ..state import SharedState

    if not isinstance(spec, dict) or spec.get("kind") != "shm":
        raise ValueError(f"shared state spec: unknown kind {spec!r}")
    return SharedState.attach_shm(spec["name"])


def workers_attached(spec: Any) -> None:
    """Every worker has mapped the segment: remove its name, so nothing is left in /dev/shm even if
    the parent is killed (the mappings stay valid until each process unmaps them)."""
    if isinstance(spec, dict) and spec.get("kind") == "shm":
        try:
            os.unlink(os.path.join("/dev/shm", spec["name"]))
        except FileNotFoundError:
            pass
        _release_claim(spec["name"])


def _release_claim(name: str) -> None:
    claim = _claims.pop(name, None)
    if claim is not None:
        claim.release()


def owned_state(spec: Any) -> Any:
    """The parent's own mapping of the runner's SharedState (parent side; None once released)."""
    return _owned.get(spec.get("name", "")) if isinstance(spec, dict) else None


def release_shared(spec: Any) -> None:
    """Close the parent's mapping and unlink the segment (parent side, at close; idempotent)."""
    name = spec.get("name", "") if isinstance(spec, dict) else ""
    state = _owned.pop(name, None)
    if state is not None:
        state.close()
    _release_claim(name)
