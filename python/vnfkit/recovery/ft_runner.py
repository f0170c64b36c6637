"""A streaming fault-tolerant master: checkpoint + replay in the process runtime's streaming loop.

Unlike :func:`.process_master.process_trial`, which calls ``runner.run([batch])`` per input batch
(a barrier of every worker each time), :class:`StreamingMaster` feeds the native
:class:`~vnfkit._core.Dispatcher` of a :class:`~vnfkit.runtime.process.ProcessRunner` one input
batch at a time and never waits for the workers between two batches: up to ``depth`` slabs per
queue stay in flight while this process, the input handler and the output handler, does per batch:

1. **input handler**: numbers the batch's packets and queues its record for stable storage
   (:class:`~.input_log.InputHandler`); the one group commit of step 4 makes it stable together with
   the determinant records harvested meanwhile (no output of the input leaves before, and an input
   whose record never became stable is still in the input handler, which re-delivers it to the
   backup);
2. **dispatch**: one native call; ``flush_us=0`` with ``hold_while_busy=False`` commits each
   queue's part of the batch as one slab, so a worker's slab boundaries are the input batch's (the
   backup replays per input batch);
3. **determinant harvest**: every worker runs its VNF inside :class:`_Bounded`, which, once a slab
   is processed, writes the log positions of every worker into a shared *boundary board* (its
   slab ``k`` has row ``k``). When every queue's slab of input ``s`` is back, the records of input
   ``s`` (worker ``q``: from its boundary after input ``s - 1`` to its boundary after ``s``) are read
   out of the shared segment and appended as determinant record ``s``;
4. **output commit** (native, :class:`vnfkit._core.StreamCommit`, strategy ``replay``): each output slab is
   tagged with the board's position vector at the end of that slab (everything it can depend
   on: its own records and whatever other workers had logged by then) and leaves once storage
   acknowledged all of those records, its input and its input's determinant record (the backup
   re-executes, outputs on, every input whose record is not stable: none of its outputs may have
   left).

Every ``checkpoint_interval_s`` (default 50 ms; later while the previous one is still being
written) a checkpoint is taken at a batch boundary of every worker: the stream pauses only while
the dispatcher drains and this process images the shared state; then it goes on, and each worker
writes its image just before its next slab (the boundary board carries the request): what its
tables changed since its previous image (``worker_images="delta"``, the default for a
dirty-tracked VNF, where storage gets incremental checkpoints), a whole image, or a whole image
through a copy-on-write child. The checkpoint commits when the images are in. Strategy ``none``
runs the same loop with no logging and no commit (the baseline). Latency is taken per output packet from its arrival (the ``arrival_ns``
given to :meth:`StreamingMaster.feed`) to the moment this master hands it to ``on_release``, so
the wait for the commit counts; between two arrivals, :meth:`StreamingMaster.idle` waits for the
workers' outputs and releases them (else an output would wait for the next input to be handed on).
"""

from __future__ import annotations

import bisect
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _core
from ..hdr import HdrHistogram
from ..runtime._segments import owned_dir
from .backup import CKPT_STREAM, DET_STREAM
from .checkpoint import Checkpoint, image_diff
from .cow import DeltaImages, collect_image, worker_reap
from .detector import FailureDetector, HeartbeatBoard
from .ft_board import (_COUNT, _HEAD, BOARD_ROWS, WORKER_IMAGES, _Board, _Bounded, _inner_visible, _precopy_stalls,
                       _take_requested)
from .input_log import INPUT_STREAM, InputHandler
from .storage.base import StableStorage, prune
from .storage.memory import MemoryStorage

__all__ = ["BOARD_ROWS", "FT_STRATEGIES", "MasterFailed", "StreamingMaster", "weighted_percentiles"]

#: Strategies of the streaming master: no fault tolerance, or checkpoint + replay.
FT_STRATEGIES = ("none", "replay")
#: Longest a native dispatcher call blocks before this loop looks at the failure detector.
STEP_S = 0.0005
#: Default of StreamingMaster's ``service_every_s``.
SERVICE_EVERY_S = 0.0003
#: With delta images, the checkpoint records storage keeps may add up to the whole state plus this many
#: times it; beyond, the item (a worker's table, the shared-state image) whose newest whole image is
#: the oldest is written whole again, one per record. A reader of the newest checkpoint then reads
#: about 1 + this many whole states; with deltas larger than one item's share, up to a record per
#: item more.
CHAIN_RATIO = 1.0
#: Default of StreamingMaster's ``precopy_packets``.
PRECOPY_PACKETS = 8192
#: Released slabs whose latencies are binned together (one histogram update per this many).
LAT_FLUSH = 4096
#: Inputs whose first id and arrival are kept before older ones are looked at for dropping.
TRIM_AT = 8192
#: A worker with no slab this long after a checkpoint request is asked to take it through its pipe.
IDLE_ASK_NS = 2_000_000


class MasterFailed(RuntimeError):
    """A worker of the streaming master died (see :attr:`StreamingMaster.failure`)."""


class StreamingMaster:
    """A process master under checkpoint + replay (or none), streaming (see the module docstring).

    Args:
        vnf: a module-level VNF class (or picklable factory), as for ProcessRunner.
        config: the VNF's setup keywords.
        queues: worker processes.
        strategy: ``"replay"`` or ``"none"`` (:data:`FT_STRATEGIES`).
        storage: stable storage (default: in-process :class:`~.storage.memory.MemoryStorage`).
        checkpoint_interval_s: wall time between two checkpoints (replay only).
        on_release: ``on_release(queue, batch)``, the outside world.
        batch_size: most packets per slab; every input batch must be no larger.
        depth: slabs in flight per queue.
        sync_timeout_s: how long one storage sync may take before it is reported.
        heartbeat_timeout_s: with replay, declare a worker failed once it has had a slab in
            flight and finished none for this long (its heartbeat on the board is older), besides
            the pidfd's word on its death; the master is then *fenced*: every worker is
            SIGKILLed, so a worker that was only slow cannot release anything more (output commit
            makes failing over safe at any point; a false suspicion costs a failover, not
            correctness). A worker is judged only once it finished its first slab, and not while a
            checkpoint image is asked of it and not yet taken (writing one stops its heartbeat for
            longer than a short timeout): there the pidfd alone tells. None: the pidfd only.
        worker_images: how each worker writes its checkpoint image (:data:`.ft_board.WORKER_IMAGES`):
            ``fork`` (a copy-on-write child writes it), ``inline`` (the worker writes it itself
            before its next slab), ``delta`` (the worker writes only what its tables changed since
            its previous image, and storage gets incremental checkpoints; this process keeps whole
            images, :class:`.cow.DeltaImages`, and writes a whole checkpoint now and then) or
            ``auto`` (the default: ``delta`` for a VNF class whose ``dirty_tracked`` is true, every
            middlebox of :mod:`vnfkit.nfs` but the WAN optimizer; else inline while its tables are
            small, where a fork and a child writing costs the worker more than writing the image
            itself, and a fork beyond). :attr:`worker_images` is the way chosen.
        master_cpus, worker_cpus: CPU placement of this process's calling thread (the master's
            dispatcher and fault-tolerance loop) and of the workers, as ProcessRunner's
            ``dispatcher_cpus`` / ``worker_cpus``; default: the scheduler's. The master is the
            bottleneck of a light VNF: ``master_cpus=[0], worker_cpus=[1]`` gives it a core the
            workers do not preempt it on.
        service_every_s: while input batches keep coming and the dispatcher has room, take the
            workers' outputs, harvest, commit and release at most this often (always when the
            dispatcher has to wait for a worker, and at once between arrivals, :meth:`idle`): the
            per-call work is shared by the input batches fed meanwhile, at the cost of at most
            this much added wait for an output under saturation. 0: after every input batch.
        precopy_packets: with delta images, each worker also writes what its tables changed once
            it processed this many packets since its last image or pre-copy, at a slab boundary
            (:func:`.cow.worker_precopy`), and this process applies those with the next
            checkpoint's delta. A stall at a cut, or for a pre-copy, then copies what at most
            about this many packets changed, however long the interval and however fast the
            traffic (see :meth:`precopy_stalls_s`); a slot that changes again after a pre-copy
            is copied again. A worker under light load never pre-copies. Default (None):
            :data:`PRECOPY_PACKETS`. 0: off.
    """

    def __init__(self, vnf: Any, config: dict[str, Any] | None = None, *, queues: int = 2,
                 strategy: str = "replay", storage: StableStorage | None = None,
                 checkpoint_interval_s: float = 0.050, on_release: Callable[[int, Any], None] | None = None,
                 batch_size: int = 256, depth: int = 8, sync_timeout_s: float = 1.0,
                 heartbeat_timeout_s: float | None = None, worker_images: str = "auto", master_cpus: Any = None,
                 worker_cpus: Any = None, service_every_s: float = SERVICE_EVERY_S,
                 precopy_packets: int | None = None) -> None:
        from ..runtime.process import ProcessRunner

        if strategy not in FT_STRATEGIES:
            raise ValueError(f"strategy: expected one of {list(FT_STRATEGIES)}, got {strategy!r}")
        if isinstance(checkpoint_interval_s, bool) or not isinstance(checkpoint_interval_s, (int, float)) \
                or not checkpoint_interval_s > 0:
            raise ValueError(f"checkpoint_interval_s: must be a positive number, got {checkpoint_interval_s!r}")
        if heartbeat_timeout_s is not None and (isinstance(heartbeat_timeout_s, bool) or not isinstance(
                heartbeat_timeout_s, (int, float)) or not heartbeat_timeout_s > 0):
            raise ValueError(f"heartbeat_timeout_s: must be a positive number or None, got {heartbeat_timeout_s!r}")
        if worker_images not in WORKER_IMAGES:
            raise ValueError(f"worker_images: expected one of {list(WORKER_IMAGES)}, got {worker_images!r}")
        if isinstance(service_every_s, bool) or not isinstance(service_every_s, (int, float)) \
                or not 0 <= service_every_s <= 1.0:
            raise ValueError(f"service_every_s: must be a number in [0, 1], got {service_every_s!r}")
        if precopy_packets is None:
            precopy_packets = PRECOPY_PACKETS
        elif isinstance(precopy_packets, bool) or not isinstance(precopy_packets, int) \
                or not 0 <= precopy_packets <= 1 << 40:
            raise ValueError(f"precopy_packets: must be None or an integer in [0, 2**40], got {precopy_packets!r}")
        self.service_every_ns = int(service_every_s * 1e9)
        self._serviced_ns = 0
        self.strategy = strategy
        self.queues = queues
        if worker_images == "auto" and getattr(vnf, "dirty_tracked", False) is True:
            worker_images = "delta"
        #: how the workers write their checkpoint images (``auto`` resolved for a dirty-tracked VNF)
        self.worker_images = worker_images
        self._delta = DeltaImages() if worker_images == "delta" else None
        # Incremental checkpoints (delta images), per item (a worker's table, or the shared-state
        # image): [offset of the record with its newest whole image, that image's bytes, bytes of
        # its deltas since]. Pruning keeps every record from the oldest of those offsets on.
        self._items: dict[tuple[int, str], list[Any]] = {}
        self._whole_now: list[tuple[int, str]] = []  # items whole in the record being written
        self._kept: list[tuple[int, int]] = []  # (offset, bytes) of the records storage keeps
        self._prev_shared = b""  # the previous checkpoint's whole shared-state image
        self.heartbeat_ns = int(heartbeat_timeout_s * 1e9) if heartbeat_timeout_s is not None and \
            strategy == "replay" else 0
        self.batch_size = batch_size
        self.logged = strategy == "replay"
        self.storage = storage if storage is not None else MemoryStorage()
        self.checkpoint_interval_ns = int(checkpoint_interval_s * 1e9)
        self.sync_timeout_s = sync_timeout_s
        self._on_release = on_release
        self.events: list[str] = []
        self.checkpoint_pauses_s: list[float] = []
        #: per committed checkpoint, the slowest worker's stall for its image (its fork, or its inline
        #: write; seconds, in the worker, not a pause of the stream)
        self.checkpoint_fork_s: list[float] = []
        #: the CPU time of each stall in :attr:`checkpoint_fork_s` (seconds; what the worker itself
        #: spent, where the wall time also counts other processes' time slices on its CPU)
        self.checkpoint_fork_cpu_s: list[float] = []
        #: per committed checkpoint, this process's own work once the images were in: reading them,
        #: building the record, the group commit (seconds; the stream is not stopped for it, but
        #: nothing is released meanwhile)
        self.checkpoint_work_s: list[float] = []
        self._requested_ns = 0
        self._collecting = False
        self.checkpoints_committed = 0
        self.failure: tuple[int, str, int] | None = None
        # latency of every released packet: a bounded histogram, filled a few thousand slabs at a time
        self._lat = HdrHistogram()
        self._lat_pending: list[tuple[int, int]] = []  # (latency ns, packets) not in the histogram yet
        # first packet id and arrival of every input from _seq_base on; older ones are dropped once
        # no slab in flight and no held output can need them (_trim), so a long run stays bounded
        self._seq_base = 0
        self._seq_first: list[int] = []
        self._arrival: list[int] = []
        self._last_seq = [0] * queues  # without FT: input of the last slab each queue released
        self._linktype = 1
        self._closed = False
        self._board = _Board(queues)
        # the workers' image files go to memory (tmpfs) where there is one: writing, reading and
        # removing them is then a copy, never a wait for a file system's journal
        self._tmp = owned_dir("ftckpt", tmpfs=True)
        self._hb = HeartbeatBoard(1)
        self.runner: Any = None
        self._deaths: Any = None
        self.detector: FailureDetector | None = None
        try:
            #: packets a worker processes between two pre-copies (0: none; delta images only)
            self.precopy_packets = precopy_packets if worker_images == "delta" else 0
            factory = functools.partial(_Bounded, vnf, self._board.name, queues, self._tmp.name, worker_images,
                                        self.precopy_packets)
            self.runner = ProcessRunner(factory, queues=queues, config=config, parse=False, logged=self.logged,
                                        keep_log=self.logged, assign_ids=False, batch_size=batch_size,
                                        flush_us=0.0, depth=depth, hold_while_busy=False, worker_cpus=worker_cpus,
                                        dispatcher_cpus=master_cpus)
            self.detector = FailureDetector(self._hb, timeout_s=3600.0, poll_s=0.0005)
            for pid in self.runner.pids:
                self.detector.watch_process(0, pid)
            self._deaths = self.runner.death_watch
            self.detector.watch_deaths(self._deaths, list(range(queues)))
        except BaseException:
            self.close()
            raise
        self._d = self.runner.dispatcher
        self._d.clear_counters()
        self._d.set_collect(True)
        self._shared = self.runner.shared_state
        self.inputs = InputHandler(self.storage if self.logged else None)
        self.released_packets = 0
        # replay: the per-batch bookkeeping over the boundary board (slabs in flight, determinant
        # records, output commit; native, one call per step), holding the outputs that wait
        self._commit: Any = _core.StreamCommit(queues, self._board._flat, self._board._stride, _HEAD, BOARD_ROWS,
                                               _COUNT) if self.logged else None
        self._epoch = 0
        self._forking: list[tuple[Checkpoint, str]] = []
        self._last_ckpt_ns = time.monotonic_ns()
        if self.logged:
            self._checkpoint()
            self._collect(wait=True)  # the first cut is stable before any input

    # ---- the outside world
    def _release(self, q: int, b: Any, seq: int | None = None) -> None:
        if seq is None:  # without FT the slab's input is found from its first packet id
            i = bisect.bisect_right(self._seq_first, int(b.packet_id[0])) - 1
            if i < 0:
                raise RuntimeError(f"queue {q}: output of an input before {self._seq_base}, whose arrival was dropped")
            seq = self._seq_base + i
        else:
            i = seq - self._seq_base
        self._last_seq[q] = seq
        self._lat_pending.append((time.monotonic_ns() - self._arrival[i], len(b)))
        if len(self._lat_pending) >= LAT_FLUSH:
            self._flush_latency()
        if self._on_release is not None:
            self._on_release(q, b)

    # ---- the streaming loop
    def feed(self, batch: Any, arrival_ns: int | None = None) -> int:
        """Admit one parsed input batch (arrived at `arrival_ns`, ``time.monotonic_ns()`` clock;
        default now), dispatch it, harvest, commit; returns its input sequence number. Raises
        :class:`MasterFailed` once a worker died."""
        if len(batch) > self.batch_size:
            raise ValueError(f"batch: at most batch_size={self.batch_size} packets per input batch, got {len(batch)}")
        self._check_alive()
        arrival = time.monotonic_ns() if arrival_ns is None else int(arrival_ns)
        first = self.inputs.next_id
        seq = self.inputs.admit(batch)
        self._seq_first.append(first)
        self._arrival.append(arrival)
        self._linktype = batch.linktype
        done = self._d.dispatch(batch, _core.now_ns(), STEP_S)
        if self._commit is not None:
            # the dispatcher classified the batch and no output of it was handed to this process
            # yet: each queue with packets of it has one slab of it
            self._commit.dispatched(seq, first, len(batch), self._d)
        if not done:
            self._service()
            while not self._d.resume(STEP_S):
                self._check_alive()
                self._service()
            self._service()
        elif time.monotonic_ns() - self._serviced_ns >= self.service_every_ns:
            self._service()
        # Due, and the previous checkpoint committed (one image in progress at a time, as Redis
        # runs one BGSAVE at a time): the interval stretches while images take longer to write.
        if self.logged and not self._forking and time.monotonic_ns() - self._last_ckpt_ns >= self.checkpoint_interval_ns:
            self._checkpoint()
        return seq

    def idle(self, until_ns: int) -> None:
        """Between two arrivals: until `until_ns` (``time.monotonic_ns()`` clock) or until nothing is
        in flight, wait for the workers' outputs and release whatever may leave (so an output does
        not wait for the next input batch to be handed on). Raises :class:`MasterFailed` once a
        worker died."""
        while True:
            self._check_alive()
            left = int(until_ns) - time.monotonic_ns()
            if left <= 0:
                return
            done = self._d.drain(min(left / 1e9, STEP_S))
            self._service()
            if done:
                return

    def _check_alive(self) -> None:
        if self.failure is None:
            q = self._deaths.first_dead()  # a lock-free look: no wait for the detector thread's GIL
            if q >= 0:
                self.failure = (q, "died", self._deaths.lines.died_ns(q))
        if self.failure is None and self.detector is not None and self.detector.events:
            self.failure = self.detector.events[0]
        if self.failure is None and self.heartbeat_ns:
            now = time.monotonic_ns()
            c, board = self._commit, self._board
            for q in range(self.queues):
                # judged only once the worker finished its first slab (start-up is slow) and while
                # no checkpoint image is asked of it (writing one stops its heartbeat): there the
                # pidfd alone tells
                if not c.in_flight(q) or not board.slabs(q) or board.image_pending(q):
                    continue
                if now - max(c.busy_since_ns(q), board.beat_ns(q)) > self.heartbeat_ns:
                    self.failure = (q, "heartbeat", now)
                    self.fence()
                    break
        if self.failure is not None:
            raise MasterFailed(f"worker process died ({self.failure[1]})")

    def fence(self) -> None:
        """SIGKILL every worker, without waiting for them to be gone (a failed or suspected master
        must release nothing more; :meth:`close` reaps them later)."""
        self.runner.kill_workers()

    def _service(self) -> None:
        """Take the dispatcher's released slabs; harvest determinants; commit and release."""
        self._serviced_ns = time.monotonic_ns()
        outs = self._d.take_outputs()
        linktype = self._linktype
        c = self._commit
        if c is None:
            for q, b in outs:
                b.linktype = linktype
                self.released_packets += len(b)
                self._release(q, b)
            if len(self._seq_first) > TRIM_AT:
                self._trim()
            return
        if outs:
            c.take(outs, linktype)  # each slab's clock from the board; it waits for output commit
        self._harvest()
        self._acks()
        self._poll()  # outputs first: collecting a checkpoint's images takes a while
        if self._forking and self._collect(wait=False):
            self._poll()  # the checkpoint's group commit may have made more of them stable
        if len(self._seq_first) > TRIM_AT:
            self._trim()

    def _poll(self) -> None:
        """Release every output slab output commit lets leave."""
        for q, b, seq in self._commit.release():
            self.released_packets += len(b)
            self._release(q, b, seq)

    def _trim(self) -> None:
        """Drop the first ids and arrivals of inputs that nothing can ask for any more: with replay,
        those before every slab in flight and every held output; without FT (outputs leave as they
        come back, in order per queue), those before every queue's last released input."""
        if self._commit is not None:
            pending = self._commit.oldest_pending()
            low = self.inputs.next_seq if pending is None else min(self.inputs.next_seq, pending)
        else:
            low = min(self._last_seq)
        k = low - self._seq_base
        if k > TRIM_AT // 2:
            del self._seq_first[:k]
            del self._arrival[:k]
            self._seq_base = low

    def _harvest(self) -> None:
        """Append the determinant record of every input whose slabs are all back, in order."""
        for s, rec in self._commit.cut_records(self._shared):
            if self.storage.append(DET_STREAM, rec) != s:
                raise RuntimeError(f"determinant record offset != input {s}")

    def _sync(self) -> Any:
        """One group commit of everything queued; the result, or None (reported) if it failed."""
        r = self.storage.sync(self.sync_timeout_s)
        if not r.ok:
            self.events.append(f"{r.status}: {r.detail}")
            return None
        return r

    def _acks(self) -> None:
        r = self._sync()
        if r is None:
            return
        # An input counts as acknowledged once its determinant record is, too: the backup re-executes
        # (outputs on) every input without a stable record, so none of its outputs may have left.
        self._commit.acknowledged(r.acked.get(DET_STREAM, 0), r.acked.get(INPUT_STREAM, 0))

    # ---- checkpoints
    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every dispatched packet is processed, harvested and (if committed) released."""
        deadline = time.monotonic() + timeout_s
        while not self._d.drain(STEP_S):
            self._check_alive()
            self._service()
            if time.monotonic() > deadline:
                raise TimeoutError(f"drain: workers still busy after {timeout_s} s")
        self._service()

    def checkpoint(self) -> Checkpoint:
        """Take a checkpoint now (after the one in progress, if any) and wait until its images are
        in and it is committed to storage (a sync that fails is reported in :attr:`events`
        instead); returns it as written, whole or incremental. The interval starts again from
        here. Only under checkpoint + replay (``strategy="replay"``)."""
        if not self.logged:
            raise ValueError(f"checkpoint: strategy {self.strategy!r} takes no checkpoints")
        self._check_alive()
        self._checkpoint()
        ck = self._forking[-1][0]
        self._collect(wait=True)
        self._poll()
        return ck

    def _checkpoint(self) -> None:
        """A cut at a batch boundary of every worker: the stream stops only to drain and to image
        the shared state; each worker forks its image before its next slab (or when asked, if it
        gets none), and the checkpoint commits once every image is in (:meth:`_collect`)."""
        if self._forking:
            self._collect(wait=True)  # one image in progress at a time
        t0 = time.perf_counter()
        self.drain()
        ck = Checkpoint(self._epoch, self.inputs.next_seq, self.inputs.next_id - 1, self._commit.bound,
                        self._shared.snapshot(), [{} for _ in range(self.queues)], [{} for _ in range(self.queues)])
        self._board.request(self._epoch)  # before any slab past the cut
        ck.pause_s = time.perf_counter() - t0
        self.checkpoint_pauses_s.append(ck.pause_s)
        self._last_ckpt_ns = time.monotonic_ns()
        self._forking.append((ck, os.path.join(self._tmp.name, f"ckpt-{self._epoch}")))
        self._requested_ns = time.monotonic_ns()
        self._epoch += 1
        self._collect(wait=False)

    def _collect(self, wait: bool) -> bool:
        """Commit the checkpoint in progress once every worker took its cut and its image is in;
        a worker idle since the request (no slab to take it before) is asked through its pipe.
        Returns whether a checkpoint was committed."""
        if self._collecting:
            return False  # called again from the _service() of the wait below
        self._collecting = True
        before = self.checkpoints_committed
        try:
            self._collect_next(wait)
        finally:
            self._collecting = False
        return self.checkpoints_committed != before

    def _collect_next(self, wait: bool) -> None:
        while self._forking:
            ck, prefix = self._forking[0]
            deadline = time.monotonic() + 30.0
            asked = False
            while True:
                taken = [self._board.taken(q, ck.epoch) for q in range(self.queues)]
                idle = [q for q in range(self.queues) if taken[q] is None and not self._commit.in_flight(q)]
                if idle and not asked and (wait or time.monotonic_ns() - self._requested_ns > IDLE_ASK_NS):
                    self.runner.call_workers(_take_requested)
                    asked = True
                    continue
                missing = [q for q in range(self.queues) if taken[q] is None or not os.path.exists(f"{prefix}-{q}")]
                if not missing or not wait:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"checkpoint {ck.epoch}: worker images {missing} not written within 30 s")
                self._service()
                time.sleep(0.0002)
            if missing:
                return
            t_work = time.perf_counter()
            for q, t in enumerate(taken):
                assert t is not None
                if t[0] != ck.positions[q]:
                    raise RuntimeError(f"checkpoint {ck.epoch}: worker {q} cut at log position {t[0]}, "
                                       f"the master's cut is {ck.positions[q]}")
                if self._delta is not None:
                    if not self._delta.collect(q, f"{prefix}-{q}"):
                        raise RuntimeError(f"checkpoint {ck.epoch}: worker {q} wrote no delta image")
                    continue
                img = collect_image(f"{prefix}-{q}")
                if img is not None:
                    ck.tables[q], ck.vnf_state[q] = img
            if self._delta is not None:
                self._delta_record(ck)
            slowest = max((t for t in taken if t is not None), key=lambda t: t[1])
            self.checkpoint_fork_s.append(slowest[1])
            self.checkpoint_fork_cpu_s.append(slowest[2])
            self._forking.pop(0)
            self._commit_checkpoint(ck)
            self.checkpoint_work_s.append(time.perf_counter() - t_work)

    def _delta_record(self, ck: Checkpoint) -> None:
        """Fill `ck` from the workers' delta images just collected: each table's delta as the
        worker wrote it (nothing rebuilt here) and the 64-byte blocks of the shared-state image
        that changed since the previous checkpoint. Every item (a worker's table, the shared-state
        image) is written whole in the first record; after that, at most one item per record is
        written whole again (from the shadow images) once the records storage keeps add up to
        more than :data:`CHAIN_RATIO` times the whole state beyond it: the item whose newest whole
        image is the oldest (it holds the oldest kept record). A reader reads about
        ``1 + CHAIN_RATIO`` times the whole state (see :data:`CHAIN_RATIO`), and no single record
        costs this process a whole image of every table."""
        assert self._delta is not None
        items = self._items
        first = not items or len(self._prev_shared) != len(ck.shared)
        rebase: tuple[int, str] | None = None
        if not first:
            state = sum(v[1] for v in items.values())
            if sum(n for _, n in self._kept) - state >= CHAIN_RATIO * state:
                rebase = min(items, key=lambda k: (items[k][0] if items[k][0] is not None else -1, -items[k][2]))
        self._whole_now = []
        for q in range(self.queues):
            tables, deltas, ck.vnf_state[q] = self._delta.last(q)
            out, still = dict(tables), []
            for name in tables:
                key = (q, name)
                if name in deltas and not first and key in items and key != rebase:
                    still.append(name)
                    items[key][2] += len(tables[name])
                    continue
                if name in deltas:
                    out[name] = self._delta.table(q, name)
                items[key] = [None, len(out[name]), 0]
                self._whole_now.append(key)
            ck.tables[q] = out
            ck.delta_tables.append(still)
        shared, key = ck.shared, (-1, "shared")
        if first or key == rebase or key not in items:
            items[key] = [None, len(shared), 0]
            self._whole_now.append(key)
        else:  # the blocks of the shared-state image that changed (counters, pools)
            ck.shared, ck.shared_delta = image_diff(self._prev_shared, shared), True
            items[key][2] += len(ck.shared)
        self._prev_shared = shared

    def _commit_checkpoint(self, ck: Checkpoint) -> None:
        st = self.storage
        blob = ck.to_bytes()
        off = st.append(CKPT_STREAM, blob)
        for key in self._whole_now:
            self._items[key][0] = off
        self._whole_now = []
        self._kept.append((off, len(blob)))
        r = st.sync(self.sync_timeout_s)
        if not r.ok:
            self.events.append(f"checkpoint {ck.epoch}: {r.status}: {r.detail}")
            return
        self._acks()
        # every record from the oldest newest-whole-image of an item on is needed to read the newest
        keep = min([v[0] for v in self._items.values() if v[0] is not None], default=off)
        self._kept = [(o, n) for o, n in self._kept if o >= keep]
        put_off = prune(st, [(CKPT_STREAM, keep), (INPUT_STREAM, ck.next_input), (DET_STREAM, ck.next_input)])
        if put_off is not None:
            self.events.append(f"checkpoint {ck.epoch}: {put_off}")
        self.checkpoints_committed += 1

    def release_recovered(self, replayed_to: int) -> int:
        """After a failover: the backup found every input and determinant record below
        `replayed_to` stable (storage acknowledged them too late for this master); release the held
        outputs output commit now lets leave. Returns the packets released."""
        before = self.released_packets
        if self._commit is not None:
            self._commit.acknowledged(replayed_to, replayed_to)
            self._poll()
        return self.released_packets - before

    # ---- results
    def finish(self) -> None:
        """Drain, commit the checkpoint in progress, release everything that may leave."""
        self.drain()
        if self.logged:
            self._collect(wait=True)
            self._poll()

    def visible(self) -> dict[str, dict[Any, int]]:
        """The workers' visible state (shared counters, summed stats), for the oracle."""
        from .process_master import _merge_visible

        return _merge_visible(self.runner.call_workers(_inner_visible))

    def precopy_stalls_s(self, reset: bool = False) -> tuple[list[float], list[float], list[int]]:
        """Every worker's pre-copy stalls since the start or the last call with `reset` (the
        newest :data:`.ft_board.PRECOPY_KEPT` each): (wall seconds, CPU seconds, bytes written),
        one entry per stall."""
        got = [st for per in self.runner.call_workers(_precopy_stalls, bool(reset)) for st in per]
        return [w / 1e9 for w, _, _ in got], [c / 1e9 for _, c, _ in got], [n for _, _, n in got]

    def held(self) -> int:
        """Packets processed and waiting for output commit."""
        return self._commit.held_packets if self._commit is not None else 0

    def _flush_latency(self) -> None:
        if self._lat_pending:
            a = np.asarray(self._lat_pending, dtype=np.int64)
            self._lat_pending.clear()
            self._lat.record_counts(a[:, 0], a[:, 1])

    @property
    def latency(self) -> HdrHistogram:
        """Latency (ns, arrival to release) of every packet released so far."""
        self._flush_latency()
        return self._lat

    def latency_ns(self) -> tuple[np.ndarray, np.ndarray]:
        """(latency ns, packets) of every packet released so far, one pair per non-empty bucket of
        :attr:`latency` (each value its bucket's highest, within 0.1 % of the latencies in it)."""
        return self.latency.buckets()

    def close(self) -> None:
        """Stop the workers (reaping checkpoint children first when alive) and free everything (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.runner is not None and self.failure is None and self.logged:
                deadline = time.monotonic() + 10.0
                try:
                    while any(self.runner.call_workers(worker_reap, timeout_s=5.0)) and time.monotonic() < deadline:
                        time.sleep(0.001)
                except Exception:  # a dead worker: the runner's close() stops the rest
                    pass
        finally:
            if self.detector is not None:
                self.detector.close()  # first: the workers the runner stops now are no failures to report
            if self.runner is not None:
                self.runner.close()
            self._hb.close()
            self._commit = None  # it holds the board's buffer exported (and the outputs that waited)
            self._board.close()
            self._tmp.cleanup()

    def __enter__(self) -> StreamingMaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def weighted_percentiles(lat: np.ndarray, counts: np.ndarray, qs: tuple[float, ...] = (50, 99, 99.9)) -> dict[str, float]:
    """Percentiles (in µs) of latencies `lat` (ns) each weighing `counts` packets."""
    if not len(lat):
        raise ValueError("lat: no latency samples")
    order = np.argsort(lat, kind="stable")
    v, c = lat[order], np.cumsum(counts[order])
    out = {}
    for q in qs:
        i = int(np.searchsorted(c, q / 100 * c[-1], side="left"))
        out[f"p{q:g}"] = float(v[min(i, len(v) - 1)]) / 1e3
    return out
