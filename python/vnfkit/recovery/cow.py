"""Copy-on-write checkpoints: a ``fork()`` of the master writes the image while the master goes on.

The synchronous :func:`~.checkpoint.take_checkpoint` stops the master for as long as imaging every
table takes (milliseconds at 100 k flows). As Redis does for ``BGSAVE``, :func:`fork_checkpoint`
instead forks this process at the batch boundary: the child sees a frozen copy-on-write image of
all state, serialises the checkpoint into a file and exits; the master is paused only for the
``fork()`` itself (page-table copy) and touches pages as usual, each first write to a page copying
it. :meth:`ForkedCheckpoint.wait` collects the child and returns the checkpoint bytes, which the
master then appends to stable storage; outputs that wait for the checkpoint (buffering) wait for
that. Call it only at a batch boundary, with no worker thread inside a batch.

A fork still costs its page-table copy, which grows with the worker's whole address space (about
1.3 ms of CPU for a MazuNAT worker, 0.7 ms for a bare interpreter with numpy, on this kind of
virtual machine). :func:`worker_delta_image` does without it: the worker's FlowTables track the
slots they change or hand out (:meth:`vnfkit.tables.FlowTable.take_delta`), so at the batch boundary
the worker writes only what changed since its previous checkpoint, and :class:`DeltaImages`, kept
by the checkpointer outside the worker, brings its shadow image of every table up to date and
yields the full images, the same bytes as the live tables' snapshots at the cut. Between cuts, a
worker may pre-copy what changed (:func:`worker_precopy`), so the delta at the cut, and so its
stall, holds only what changed since; the checkpointer applies pre-copies with the next cut's
delta and stores one delta per table for them all (:meth:`vnfkit.tables.FlowTableImage.take_delta`).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import take_checkpoint
from .hugeheap import CollapseReport, collapse_private_memory, small_page_kib

__all__ = ["DeltaImages", "ForkedCheckpoint", "collect_image", "fork_checkpoint", "worker_delta_image", "worker_delta_reset",
           "worker_fork_image", "worker_huge_pages", "worker_memory", "worker_precopy", "worker_reap",
           "worker_write_image"]


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
    exits. Returns (child pid, seconds the fork took). The child runs with the cyclic garbage
    collector off: a collection would write to every tracked object's header and so copy most of
    the heap (copy-on-write) for a process that lives only to write one image."""
    pid, wall_s, _ = _fork_writing_timed(path, make)
    return pid, wall_s


def _fork_writing_timed(path: str, make: Callable[[], bytes]) -> tuple[int, float, float]:
    """:func:`_fork_writing`, also returning the CPU seconds this thread spent in the fork (the
    pause without the time a loaded machine kept it off a core)."""
    c0 = time.thread_time()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            gc.disable()
            blob = make()
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
            code = 0
        finally:
            os._exit(code)
    return pid, time.perf_counter() - t0, time.thread_time() - c0


# ---- copy-on-write checkpoints of worker processes (run inside a worker through ProcessRunner.call_workers)
_children: list[int] = []  # this worker's checkpoint children not reaped yet
_collapsed: list[CollapseReport] = []  # this worker's huge-page collapse (done at its first fork)
_huge = [False]  # whether the first fork collapses this worker's memory into huge pages


def _reap() -> None:
    for pid in list(_children):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            _children.remove(pid)


def worker_fork_image(vnf: Any, ctx: Any, prefix: str) -> tuple[int, int, float, float]:
    """At this worker's batch boundary: fork; the child images the worker's tables and VNF state
    (``(tables, vnf_state)`` pickled) into ``f"{prefix}-{ctx.queue}"`` and exits, while the worker drains its log and
    goes on. Returns (child pid, log position of the cut, seconds the fork took, CPU seconds it
    took). The file appears (atomically renamed into place) only when it is whole;
    :func:`collect_image` reads it.

    With :func:`worker_huge_pages` on, a worker moves its private memory to huge pages before its
    first fork (:func:`.hugeheap.collapse_private_memory`: fewer page-table entries for every
    later fork to copy; a one-time cost of ~0.1 s on the first checkpoint, which the recovery
    master takes before any input). Off by default: with MazuNAT at 100 k flows per worker it
    did not shorten the fork measurably (``benches/bench_checkpoint.py`` compares both)."""
    import pickle

    _reap()
    if not _collapsed and _huge[0]:
        _collapsed.append(collapse_private_memory())
    path = f"{prefix}-{ctx.queue}"
    pos = int(ctx.state.position) if ctx.state is not None else 0
    pid, fork_s, fork_cpu_s = _fork_writing_timed(path, lambda: pickle.dumps(
        ({name: t.snapshot() for name, t in ctx.tables.items()}, vnf.snapshot()), protocol=5))
    _children.append(pid)
    if ctx.state is not None:
        ctx.state.drain_chunk()  # the dispatcher has read every record up to the cut
    return pid, pos, fork_s, fork_cpu_s


def worker_write_image(vnf: Any, ctx: Any, prefix: str) -> tuple[int, float]:
    """At this worker's batch boundary, without a fork: image the worker's tables and VNF state
    into ``f"{prefix}-{ctx.queue}"`` (the file :func:`worker_fork_image`'s child would write, renamed
    into place when whole) and drain its log. The worker stalls for the imaging and the write
    instead of for a fork and a child competing for the cores: cheaper while the tables are small.
    Returns (log position of the cut, seconds it took)."""
    import pickle

    _reap()
    t0 = time.perf_counter()
    path = f"{prefix}-{ctx.queue}"
    pos = int(ctx.state.position) if ctx.state is not None else 0
    blob = pickle.dumps(({name: t.snapshot() for name, t in ctx.tables.items()}, vnf.snapshot()), protocol=5)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    if ctx.state is not None:
        ctx.state.drain_chunk()  # the dispatcher has read every record up to the cut
    return pos, time.perf_counter() - t0


_seeded: set[str] = set()  # this worker's tables that have sent their base image
_pre = [0]  # pre-copies this worker wrote since its tables were last seeded (worker_precopy)


def worker_delta_image(vnf: Any, ctx: Any, path: str) -> tuple[int, int, float, float]:
    """At this worker's batch boundary, without a fork: write ``(tables, vnf_state)`` pickled to
    ``f"{path}-{ctx.queue}"`` (through a temporary file renamed into place), where ``tables`` maps
    each table name to ``("base", snapshot)`` the first time (the dirty interval starts there),
    ``("delta", FlowTable.take_delta())`` after that, or ``("full", snapshot)`` for a table
    without dirty tracking; :meth:`DeltaImages.collect` turns it back into full images. The VNF
    state (:meth:`vnfkit.VNF.snapshot`) is taken first, so any slot it marks is in the same delta.
    The file also says how many pre-copies (:func:`worker_precopy`) this worker wrote before it:
    the deltas in those come first. Returns (bytes written, log position of the cut, seconds the
    worker was stopped, CPU seconds); the worker then drains its log and goes on."""
    import pickle

    from ..tables import FlowTable

    c0 = time.thread_time()
    t0 = time.perf_counter()
    pos = int(ctx.state.position) if ctx.state is not None else 0
    state = vnf.snapshot()
    tables: dict[str, tuple[str, bytes]] = {}
    for name, t in ctx.tables.items():
        if not isinstance(t, FlowTable):
            tables[name] = ("full", t.snapshot())
        elif name in _seeded:
            tables[name] = ("delta", t.take_delta())
        else:
            tables[name] = ("base", t.snapshot())
            t.clear_dirty()
            _seeded.add(name)
    out = f"{path}-{ctx.queue}"
    # the file the checkpointer read last time, if it handed it back (DeltaImages.collect): its
    # pages are written over instead of allocated and zeroed afresh (a rename claims it, so a
    # file handed back meanwhile is never written while it is read)
    try:
        os.rename(_spare(out, ctx.queue), out + ".tmp")
        mode = "r+b"
    except OSError:
        mode = "wb"
    with open(out + ".tmp", mode) as f:
        pickle.dump((tables, state, _pre[0]), f, protocol=5)  # large deltas go to the file as they are, no blob
        size = f.tell()
        f.truncate()
    os.replace(out + ".tmp", out)
    pause_s, cpu_s = time.perf_counter() - t0, time.thread_time() - c0
    if ctx.state is not None:
        ctx.state.drain_chunk()  # the dispatcher has read every record up to the cut
    return size, pos, pause_s, cpu_s


def worker_precopy(vnf: Any, ctx: Any, directory: str) -> tuple[int, float, float] | None:
    """Between two checkpoints, at this worker's batch boundary: write what its FlowTables changed
    since their previous delta to ``f"{directory}/pre-{queue}-{n}"`` (the n-th pre-copy since the
    tables were seeded) and start a new dirty interval, so the delta of the next checkpoint holds
    only what changes after this. Each stall is then proportional to what changed since the
    previous one, not over the whole checkpoint interval. Not a checkpoint: the checkpointer
    applies pre-copies only with the next checkpoint's delta file (:meth:`DeltaImages.collect`),
    which names how many precede it. None (nothing written) before the tables are seeded by a
    first :func:`worker_delta_image`; else (bytes written, seconds stopped, CPU seconds)."""
    import pickle

    from ..tables import FlowTable

    if not _seeded:
        return None
    c0 = time.thread_time()
    t0 = time.perf_counter()
    deltas = {name: t.take_delta() for name, t in ctx.tables.items() if isinstance(t, FlowTable) and name in _seeded}
    out = os.path.join(directory, f"pre-{ctx.queue}-{_pre[0]}")
    try:  # a pre-copy file the checkpointer read and handed back: its pages are written over
        os.rename(_pre_spare(directory, ctx.queue, _pre[0]), out + ".tmp")
        mode = "r+b"
    except OSError:
        mode = "wb"
    with open(out + ".tmp", mode) as f:
        pickle.dump(deltas, f, protocol=5)
        size = f.tell()
        f.truncate()
    os.replace(out + ".tmp", out)
    _pre[0] += 1
    return size, time.perf_counter() - t0, time.thread_time() - c0


#: Read pre-copy files a checkpointer hands back to each worker for writing over (see _pre_spare).
PRE_SPARES = 8


def _pre_spare(directory: str | os.PathLike[str], queue: int, n: int) -> str:
    """Where the checkpointer leaves worker `queue`'s read pre-copy file `n` for the worker's pre-copy
    ``n + PRE_SPARES`` (one of :data:`PRE_SPARES` per worker)."""
    return os.path.join(directory, f".prespare-{queue}-{n % PRE_SPARES}")


def _spare(image_path: str | os.PathLike[str], queue: int) -> str:
    """Where the checkpointer leaves worker `queue`'s last delta file for it to write over."""
    return os.path.join(os.path.dirname(image_path), f".spare-{queue}")


def worker_delta_reset(vnf: Any, ctx: Any) -> None:
    """Make this worker's next :func:`worker_delta_image` send base images again (a new
    checkpointer, or one that lost its shadow images)."""
    _seeded.clear()
    _pre[0] = 0


class DeltaImages:
    """The checkpointer's shadow images of every worker's tables, kept outside the workers and
    brought up to date by what :func:`worker_delta_image` wrote. :meth:`collect` reads one
    worker's file (removing it) and applies it; :meth:`image` gives that worker's full image,
    ``({name: table snapshot bytes}, vnf_state)``, equal to what the worker would have imaged
    synchronously at the same cut. A delta that does not follow the previous one of its table
    (lost, repeated) raises :class:`vnfkit.tables.SnapshotError`."""

    def __init__(self) -> None:
        self._tables: dict[int, dict[str, Any]] = {}
        self._state: dict[int, Any] = {}
        self._last: dict[int, tuple[dict[str, bytes], list[str]]] = {}
        self._pre: dict[int, int] = {}  # per worker: its pre-copies applied

    def collect(self, queue: int, path: str | os.PathLike[str]) -> bool:
        """Apply worker `queue`'s file at `path` (False if it is not there). The file is then moved
        to a spare name in its directory, for the worker to write its next delta over (one file
        per worker stays there)."""
        import pickle

        from ..tables import FlowTableImage

        p = Path(path)
        try:
            with open(p, "rb") as f:
                tables, state, pre = pickle.load(f)
        except FileNotFoundError:
            return False
        try:  # handed back for the worker's next delta (see worker_delta_image)
            os.replace(p, _spare(p, queue))
        except OSError:
            p.unlink(missing_ok=True)
        have = self._tables.setdefault(queue, {})
        if any(kind == "base" for kind, _ in tables.values()):
            self._pre[queue] = 0  # the worker's tables were seeded again: it counts pre-copies afresh
        if pre < self._pre.get(queue, 0):
            raise ValueError(f"delta image: worker {queue} counts {pre} pre-copies, {self._pre[queue]} were applied")
        for i in range(self._pre.get(queue, 0), pre):  # the pre-copies before this cut, in order
            pp = p.parent / f"pre-{queue}-{i}"
            try:
                with open(pp, "rb") as f:
                    deltas = pickle.load(f)
            except FileNotFoundError:
                raise ValueError(f"delta image: worker {queue}'s pre-copy {i} is missing") from None
            try:  # handed back for the worker's pre-copy PRE_SPARES later (see worker_precopy)
                os.replace(pp, _pre_spare(pp.parent, queue, i))
            except OSError:
                pp.unlink(missing_ok=True)
            for name, data in deltas.items():
                if not isinstance(have.get(name), FlowTableImage):
                    raise ValueError(f"delta image: worker {queue} pre-copied table {name!r} before its base")
                have[name].apply(data)
        self._pre[queue] = pre
        last: dict[str, bytes] = {}
        for name, (kind, data) in tables.items():
            if kind == "base":
                have[name] = FlowTableImage(data)
            elif kind == "delta":
                img = have.get(name)
                if not isinstance(img, FlowTableImage):
                    raise ValueError(f"delta image: worker {queue} sent a delta of table {name!r} before its base")
                img.apply(data)
                # pre-copies applied too: one delta for them all, else the worker's as it came
                data = img.take_delta() if img.pending_intervals > 1 else data
                img.clear_delta()
            elif kind == "full":
                have[name] = data
            else:
                raise ValueError(f"delta image: worker {queue}, table {name!r}: unknown kind {kind!r}")
            last[name] = data
        self._state[queue] = state
        self._last[queue] = (last, [name for name, (kind, _data) in tables.items() if kind == "delta"])
        return True

    @property
    def queues(self) -> list[int]:
        """The workers something was collected from."""
        return sorted(self._state)

    def last(self, queue: int) -> tuple[dict[str, bytes], list[str], dict[str, Any]]:
        """Worker `queue`'s last collected file as it came: ``(tables, delta_names, vnf_state)``,
        where ``tables[name]`` is a whole image, or for the names in ``delta_names`` the delta
        since the previous file (what an incremental :class:`.checkpoint.Checkpoint` holds)."""
        if queue not in self._last:
            raise KeyError(f"delta image: nothing collected from worker {queue}")
        tables, deltas = self._last[queue]
        return tables, deltas, self._state[queue]

    def table(self, queue: int, name: str) -> bytes:
        """The whole image of worker `queue`'s table `name` as of its last collected file."""
        t = self._tables[queue][name]
        return t if isinstance(t, bytes) else t.snapshot()

    def image(self, queue: int) -> tuple[dict[str, bytes], dict[str, Any]]:
        """Worker `queue`'s full image as of its last collected file."""
        if queue not in self._state:
            raise KeyError(f"delta image: nothing collected from worker {queue}")
        tables = {n: (t.snapshot() if not isinstance(t, bytes) else t) for n, t in self._tables[queue].items()}
        return tables, self._state[queue]


def worker_huge_pages(vnf: Any, ctx: Any, on: bool) -> None:
    """Whether this worker's first fork checkpoint moves its memory to huge pages (default off;
    see :func:`worker_fork_image`)."""
    _huge[0] = bool(on)


def worker_memory(vnf: Any, ctx: Any) -> dict[str, Any]:
    """This worker's fork-relevant memory: KiB still in small pages and its huge-page collapse
    report (None before its first fork checkpoint)."""
    return {"small_page_kib": small_page_kib(), "collapse": _collapsed[0] if _collapsed else None}


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
