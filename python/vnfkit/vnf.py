"""What a VNF author touches: the :class:`VNF` base class, its :class:`Context`, :class:`ControlState`.

A VNF is a Python class whose ``process(batch, ctx)`` decides, for a whole batch at once, each
packet's output port (``batch.port``; 0 = drop, with ``batch.drop`` saying why) and rewrites headers
in place, by calling native batch operations. The runner (:mod:`vnfkit.runtime`) plays a multi-queue
NIC: it spreads incoming packets over the receive queues by RSS, one worker (a process, or a thread
for debugging) per queue runs its own instance of the VNF on its share, and each queue's outputs are
released in arrival order.

Per-flow state lives in each worker's own tables (RSS keeps a flow on one queue); state shared by
all workers goes through ``ctx.shared`` so that it is lock-free and can be logged for replay.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import _core

__all__ = ["VNF", "Context", "ControlState"]


class ControlState:
    """Control state: named, immutable objects (rule sets) published by one writer, read by workers.

    A writer replaces a whole object with :meth:`publish`; a worker reads it with :meth:`get` once
    per batch and uses that reference for the whole batch. Publishing is a single reference store
    into a dict (atomic under the GIL: a reader sees the old object or the new one, never a mix), so
    as long as the published objects are never mutated, every batch sees exactly one version of the
    rules. ``version(name)`` counts publications (handy for tests and stats).

    Across processes (the process backend), the runner subscribes to the dispatcher side's
    ControlState and forwards every publication to each worker, which adopts it between two batches.
    """

    def __init__(self) -> None:
        self._objs: dict[str, Any] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()  # serialises writers only; readers never take it
        self._subscribers: list[Callable[[str, Any], None]] = []

    def subscribe(self, callback: Callable[[str, Any], None]) -> None:
        """Call ``callback(name, obj)`` after every :meth:`publish` (by the publishing thread)."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[str, Any], None]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def names(self) -> list[str]:
        """The names published so far."""
        return list(self._objs)

    def publish(self, name: str, obj: Any) -> int:
        """Replace `name` by `obj` (treat it as immutable from now on); returns the new version."""
        with self._lock:
            v = self._versions.get(name, 0) + 1
            self._objs[name] = obj  # one reference store: the atomic switch
            self._versions[name] = v
        for cb in list(self._subscribers):
            cb(name, obj)
        return v

    def setdefault(self, name: str, obj: Any) -> Any:
        """Publish `obj` unless `name` exists; return the current object."""
        with self._lock:
            if name not in self._objs:
                self._objs[name] = obj
                self._versions[name] = 1
            return self._objs[name]

    def get(self, name: str) -> Any:
        """The current object published under `name` (KeyError if none)."""
        return self._objs[name]

    def version(self, name: str) -> int:
        return self._versions.get(name, 0)

    def __contains__(self, name: object) -> bool:
        return name in self._objs


class Context:
    """What a VNF instance sees of its worker: its queue, the shared state, and helpers.

    ``ctx.shared`` is the same object for every worker of a runner; everything else is per queue.
    """

    def __init__(self, queue: int, num_queues: int, shared: Any = None, classifier: Any = None,
                 control: ControlState | None = None, *, logged: bool = True) -> None:
        self.queue = queue
        self.num_queues = num_queues
        self.shared = shared
        self.classifier = classifier
        #: control state (rule sets) shared by every worker; one writer, many readers
        self.control = control if control is not None else ControlState()
        #: this worker's recording context of ``shared`` (``shared.context(queue)``): every access
        #: to shared aggregate state goes through it so that it is logged as a determinant
        self.state: Any = shared.context(queue, logged) if shared is not None else None
        self.tables: dict[str, Any] = {}

    def _shared(self, kind: str, name: str, kwargs: dict[str, Any]) -> Any:
        # SharedState declarations create the variable or map the one another worker (thread or
        # process) declared; other parameters raise ValueError naming the variable.
        if self.shared is None:
            raise ValueError("ctx.shared: this VNF needs a vnfkit.state.SharedState (the Runner provides one)")
        return getattr(self.shared, kind)(name, **kwargs)

    def counters(self, name: str, **kwargs: Any) -> Any:
        """The shared Counters `name` (``SharedState.counters`` arguments), declared once for all workers."""
        return self._shared("counters", name, kwargs)

    def token_buckets(self, name: str, **kwargs: Any) -> Any:
        """The shared TokenBuckets `name`, declared once for all workers."""
        return self._shared("token_buckets", name, kwargs)

    def port_pool(self, name: str, **kwargs: Any) -> Any:
        """The shared PortPool `name`, declared once for all workers."""
        return self._shared("port_pool", name, kwargs)

    def registers(self, name: str, **kwargs: Any) -> Any:
        """The shared Registers `name`, declared once for all workers."""
        return self._shared("registers", name, kwargs)

    def shared_buffer(self, name: str, nbytes: int) -> Any:
        """The shared byte region `name` (a ``SharedBuffer``, zero-initialised, buffer protocol) of
        `nbytes` bytes, declared once for all workers: for state that manages its own atomics (e.g.
        the WAN optimizer's cache). Not logged."""
        return self._shared("buffer", name, {"nbytes": nbytes})

    def flow_table(self, name: str, **kwargs: Any) -> Any:
        """This worker's FlowTable called `name` (created on first use with `kwargs`)."""
        from .tables import FlowTable  # imported late: tables are optional for simple VNFs

        if name not in self.tables:
            self.tables[name] = FlowTable(**kwargs)
        return self.tables[name]


class VNF:
    """Base class of every vnfkit VNF. Subclasses override :meth:`setup` and :meth:`process`."""

    #: short name used by the CLI and in stats
    name = "vnf"

    #: Whether every change this VNF makes to its FlowTables is seen by the tables' dirty tracking:
    #: values written only through slots the table handed out in the same batch (lookups,
    #: inserts), and any write through a slot number kept from an earlier batch followed by
    #: ``table.mark_dirty(slots)``. A checkpointer may then image only what changed since the
    #: previous checkpoint (``worker_images="auto"`` of the streaming recovery master uses deltas
    #: for such a VNF). Leave it False unless that holds: a write the tables were not told about is
    #: missing from a delta, and a recovery from it is wrong.
    dirty_tracked = False

    def setup(self, ctx: Context, **config: Any) -> None:
        """Create tables and shared state; `config` comes from the user (CLI --config or kwargs)."""
        if config:
            raise TypeError(f"{type(self).__name__} takes no configuration, got {sorted(config)}")

    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        """Decide every packet of `batch` (write batch.port, batch.drop; rewrite headers)."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """VNF-specific counters (e.g. translations made); merged across queues by the runner."""
        return {}

    # ---- checkpoints (rollback recovery)
    def snapshot(self) -> dict[str, Any]:
        """This instance's Python-side state for a checkpoint (default: none).

        The checkpointer (:mod:`vnfkit.recovery.checkpoint`) calls it at a batch boundary, with no
        batch in flight, together with an image of every table made with ``ctx.flow_table`` and of
        the shared state. Override it in any VNF that keeps state outside those -- per-worker
        counters, export lists, caches, clocks, Python-side per-flow arrays -- and return:

        * everything :meth:`restore` needs so that the next ``process()`` behaves exactly as if the
          instance had never stopped (a counter that is not in the snapshot goes backwards after a
          recovery, which the recovery oracle reports);
        * *copies*, never views of live arrays (the VNF keeps running after the snapshot), built
          from plain data: ints, floats, str, bytes, numpy arrays, and lists/tuples/dicts of them
          (it is pickled into stable storage);
        * nothing about the FlowTables of ``ctx.tables`` or the SharedState: those are imaged by
          the checkpointer itself (and restored in place, so views of them stay valid).

        Every middlebox of :mod:`vnfkit.nfs` follows this contract; a new VNF with extra state
        must too (a stateless default would silently lose it)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Roll this instance back to `state` (what :meth:`snapshot` returned on a twin instance:
        the same class and configuration, after ``setup``). Restore *in place* -- assign into the
        existing arrays or replace attributes that no other object caches -- so that nothing keeps
        pointing at the state of before. The default accepts only the default's empty snapshot."""
        if state:
            raise ValueError(f"{type(self).__name__}.restore: this VNF keeps no Python-side state, "
                             f"got keys {sorted(state)} (override snapshot()/restore())")
