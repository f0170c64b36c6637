"""Harness: a master, its storage, a crash at a chosen point, a failover to the backup, a verdict.

This first harness runs the master on the thread :class:`vnfkit.runtime.Runner` in this process:
*crashing* it means stopping it at a chosen input batch and phase and throwing all of its state
away (only stable storage survives). Phases of input batch ``crash_at``:

* ``"before-process"`` -- the batch was admitted (numbered, its input record synced), not processed;
* ``"after-process"`` -- processed, its determinant record queued but not synced, nothing released;
* ``"after-sync"`` -- synced, and its outputs released if the strategy allowed it.

Per input batch: the input handler numbers it and makes its record stable; the master processes it on every worker,
queues one determinant record with every worker's log chunk (replay), tags its outputs with the
log positions (output commit), syncs storage (one group commit), releases what may leave, and every
``checkpoint_every`` batches takes a checkpoint at that batch boundary. A heartbeat per batch feeds
the failure detector; after the crash the detector's report starts the failover
(:class:`~.backup.Backup`), the backup processes the rest of the traffic, and the oracle judges
everything released. :class:`TrialResult` holds the timings (detect / restore / replay), the
checkpoint pauses and the verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runtime import Runner
from ..traffic import merge_by_time
from .backup import CKPT_STREAM, DET_STREAM, Backup, RecoveryReport, det_ranges, encode_det
from .checkpoint import take_checkpoint
from .detector import FailureDetector, HeartbeatBoard
from .input_log import INPUT_STREAM, InputHandler
from .oracle import Released, Verdict, judge, visible_state
from .output import OutputHandler, check_strategy
from .storage.base import StableStorage, prune
from .storage.memory import MemoryStorage

__all__ = ["PHASES", "Harness", "TrialResult"]

PHASES = ("before-process", "after-process", "after-sync")


@dataclass
class TrialResult:
    strategy: str
    crash_at: int | None
    phase: str
    verdict: Verdict
    detect_s: float = 0.0
    #: from detection to the backup's start of recover(): fencing the master (its other workers
    #: killed) and, when storage is down, the wait for it to answer
    handover_s: float = 0.0
    recovery: RecoveryReport = field(default_factory=RecoveryReport)
    released_master: int = 0
    released_backup: int = 0
    held_at_crash: int = 0
    #: input batches handed to the backup by neither storage nor the input handler (inputs dropped)
    lost_batches: int = 0
    #: input batches storage never acknowledged that the input handler re-delivered to the backup
    redelivered_batches: int = 0
    #: outputs held at the crash released after it, once the backup found their inputs and
    #: determinant records stable (storage acknowledged them too late for the master)
    released_held: int = 0
    #: packets the input handler still holds at the end: logged, never acknowledged by storage
    #: (storage did not return in time; with a crash, no backup went live to process them)
    held_inputs: int = 0
    checkpoint_pauses_s: list[float] = field(default_factory=list)
    #: seconds each fork of a copy-on-write checkpoint took (the slowest worker's), if any
    checkpoint_fork_s: list[float] = field(default_factory=list)
    #: wall time of the master's loop over the batches (seconds), set by the process master
    master_s: float = 0.0
    #: seconds the passive backup spent getting ahead of the failure, per call (warm / hot backups)
    backup_stage_s: list[float] = field(default_factory=list)
    storage_events: list[str] = field(default_factory=list)
    false_suspicions: int = 0
    #: index of the input batch whose dispatch reported the dead worker: the crash batch, or a later
    #: one when a mid-batch kill's timer fired only after that batch was done (a loaded machine)
    failed_batch: int = -1
    #: id of the first packet of the crash batch, and that batch's packet time since the trace began (ms)
    crash_packet: int = -1
    crash_time_ms: float = 0.0
    #: admit / release times of every released packet, when the trial records them (:class:`.sigkill.Timeline`)
    timeline: Any = None

    @property
    def recovery_s(self) -> float:
        """Detection + handover + restore + replay: from the crash to the backup live."""
        return self.detect_s + self.handover_s + self.recovery.restore_s + self.recovery.replay_s

    def summary(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy, "crash_at": self.crash_at, "phase": self.phase,
            "correct": self.verdict.correct, "verdict": str(self.verdict),
            "detect_ms": self.detect_s * 1e3, "handover_ms": self.handover_s * 1e3, "restore_ms": self.recovery.restore_s * 1e3,
            "replay_ms": self.recovery.replay_s * 1e3, "recovery_ms": self.recovery_s * 1e3,
            "replayed_batches": self.recovery.replayed_batches,
            "reexecuted_batches": self.recovery.reexecuted_batches,
            "released_packets": self.released_master + self.released_backup,
            "held_at_crash": self.held_at_crash, "lost_batches": self.lost_batches,
            "redelivered_batches": self.redelivered_batches, "released_held": self.released_held,
            "held_inputs": self.held_inputs, "crash_packet": self.crash_packet, "crash_time_ms": self.crash_time_ms,
        }


class Harness:
    """One VNF under one fault-tolerance strategy, with one injected crash (see the module docstring).

    Args:
        vnf: VNF class; config: its ``setup`` keywords; queues: workers of the master.
        strategy: "none", "checkpoint", "buffer" or "replay".
        storage: stable storage (default: a new :class:`MemoryStorage`).
        checkpoint_every: input batches between checkpoints.
        checkpoint_interval_s: if given, checkpoint instead whenever this much *packet time* has
            passed since the last one (the study's 20-200 ms intervals at the offered rate).
        heartbeat: run this process's own failure detector (turn off when another process watches
            the master, as :func:`.sigkill.sigkill_trial` does; a crash_at then needs it on).
        heartbeat_timeout_s: failure-detector timeout.
        per_flow_decisions / non_monotone: passed to the oracle (see :func:`.oracle.judge`).
        sync_timeout_s: bound on each storage sync.
        release_replayed: deliberately wrong recovery for testing the oracle: the backup releases
            the outputs of replayed inputs again.
    """

    def __init__(self, vnf: Callable[[], Any], config: dict[str, Any] | None = None, *, queues: int = 2,
                 strategy: str = "replay", storage: StableStorage | None = None, checkpoint_every: int = 8,
                 heartbeat_timeout_s: float = 0.010, per_flow_decisions: bool = True,
                 non_monotone: Sequence[str] = (), sync_timeout_s: float = 1.0,
                 release_replayed: bool = False, checkpoint_interval_s: float | None = None,
                 heartbeat: bool = True) -> None:
        self.vnf = vnf
        self.config = dict(config or {})
        self.queues = queues
        self.strategy = check_strategy(strategy)
        self.storage = storage if storage is not None else MemoryStorage()
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every: expected a positive int, got {checkpoint_every!r}")
        self.checkpoint_every = checkpoint_every
        if checkpoint_interval_s is not None and not checkpoint_interval_s > 0:
            raise ValueError(f"checkpoint_interval_s: must be a positive number, got {checkpoint_interval_s!r}")
        self.checkpoint_interval_ns = None if checkpoint_interval_s is None else int(checkpoint_interval_s * 1e9)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.per_flow_decisions = per_flow_decisions
        self.non_monotone = tuple(non_monotone)
        self.sync_timeout_s = sync_timeout_s
        self.release_replayed = release_replayed
        self.heartbeat = heartbeat
        #: packets released so far by the running master (progress, readable from a hook)
        self.released_count = 0

    # ------------------------------------------------------------------------------------------ run
    def run(self, batches: Sequence[Any], crash_at: int | None, phase: str = "after-process", *,
            before_batch: Callable[[int], None] | None = None, released: Released | None = None,
            on_visible: Callable[[dict[str, dict[Any, int]]], None] | None = None,
            respond: Callable[[Any], Any] | None = None,
            on_admit: Callable[[int, Any, int], None] | None = None) -> TrialResult:
        """Run `batches` (unnumbered PacketBatches) with a crash at input batch `crash_at` (None: no
        crash). `before_batch(i)` is called before the master takes input batch i (fault injection
        into storage, for example); `released` collects what leaves (e.g. a subclass that ships it
        to another process) and `on_visible` receives the master's visible state at each release.
        `respond(released_batch)` is the remote hosts: the batch of replies it returns (or None) is
        merged by time into the next input batch (replies pending at a crash are lost, like any
        packet in flight). `on_admit(seq, batch, t_ns)` is told of each numbered input batch."""
        if phase not in PHASES:
            raise ValueError(f"phase: expected one of {list(PHASES)}, got {phase!r}")
        if crash_at is not None and not 0 <= crash_at < len(batches):
            raise ValueError(f"crash_at: must be in [0, {len(batches)}), got {crash_at}")
        st = self.storage
        logged = self.strategy == "replay"
        res = TrialResult(self.strategy, crash_at, phase, Verdict())
        released = released if released is not None else Released()
        in_keys: dict[int, bytes] = {}
        visible: dict[str, dict[Any, int]] = {}
        side = [0]

        runner = Runner(self.vnf, queues=self.queues, config=self.config, parse=False, logged=logged)
        backup = Backup(self.vnf, self.config, self.queues,
                        on_replayed=self._rerelease(released, in_keys) if self.release_replayed else None)
        inp = InputHandler(st if logged else None)

        replies: list[Any] = []

        def answer(b: Any) -> None:
            if respond is not None and (r := respond(b)) is not None:
                replies.append(r)

        def with_replies(batch: Any) -> Any:
            if not replies:
                return batch
            merged = merge_by_time([batch, *replies])
            replies.clear()
            return merged if merged is not None else batch

        def on_release(q: int, b: Any) -> None:
            _record(released, in_keys, b, side[0])
            self.released_count = len(released)
            answer(b)

        out = OutputHandler(self.strategy, self.queues, self.queues, on_release)
        pending_det: dict[int, list[tuple[int, int, int]]] = {}
        if crash_at is not None and not self.heartbeat:
            raise ValueError("crash_at: an in-process crash needs heartbeat=True (the detector)")
        board: HeartbeatBoard | _NoBoard
        detector: FailureDetector | _NoDetector
        if self.heartbeat:
            hb = board = HeartbeatBoard(1)
            detector = FailureDetector(hb, timeout_s=self.heartbeat_timeout_s)
        else:
            board, detector = _NoBoard(), _NoDetector()
        epoch = [0]

        def sync() -> None:
            if self.strategy == "none":
                return
            r = st.sync(self.sync_timeout_s)
            if not r.ok:
                res.storage_events.append(f"{r.status}: {r.detail}")
                return
            acked_det = st.acked(DET_STREAM)
            for seq in [s for s in pending_det if s < acked_det]:
                for thread, first, count in pending_det.pop(seq):
                    out.ack_determinants(thread, first, count)
            out.input_acked(st.acked(INPUT_STREAM))

        def release() -> None:
            # (none / checkpoint release at once: the visible state was taken right after processing)
            if out.poll():
                visible.update(visible_state(runner.vnfs))
                if on_visible is not None:
                    on_visible(visible)

        def checkpoint(next_input: int) -> None:
            ck = take_checkpoint(runner.vnfs, runner.contexts, runner.shared, epoch=epoch[0],
                                 next_input=next_input, last_packet_id=inp.next_id - 1)
            epoch[0] += 1
            res.checkpoint_pauses_s.append(ck.pause_s)
            off = st.append(CKPT_STREAM, ck.to_bytes())
            r = st.sync(self.sync_timeout_s)
            if not r.ok:
                res.storage_events.append(f"checkpoint {ck.epoch}: {r.status}: {r.detail}")
                return
            if logged:
                for seq in [s for s in pending_det if s < st.acked(DET_STREAM)]:
                    for thread, first, count in pending_det.pop(seq):
                        out.ack_determinants(thread, first, count)
                out.input_acked(st.acked(INPUT_STREAM))
            out.checkpoint_committed(next_input)
            # Older checkpoints and the logs before this cut are useless now.
            cuts = [(CKPT_STREAM, off)] + ([(INPUT_STREAM, next_input), (DET_STREAM, next_input)] if logged else [])
            put_off = prune(st, cuts)
            if put_off is not None:
                res.storage_events.append(f"checkpoint {ck.epoch}: {put_off}")

        crashed_at_seq: int | None = None
        last_ckpt_ts = [int(batches[0].ts_ns.min()) if len(batches) and len(batches[0]) else 0]
        trace_t0 = last_ckpt_ts[0]  # the trace's first packet time
        try:
            if self.strategy != "none":
                checkpoint(0)
            for i, batch in enumerate(batches):
                if before_batch is not None:
                    before_batch(i)
                board.beat(0)
                if detector.events:  # a false suspicion while the master was fine (a slow batch)
                    res.false_suspicions += len(detector.events)
                    detector.rearm()
                batch = with_replies(batch)
                batch.parse()
                seq = inp.admit(batch)
                if on_admit is not None:
                    on_admit(seq, batch, time.monotonic_ns())
                in_keys.update(zip(batch.packet_id.tolist(), _key_rows(batch)))
                if logged:
                    sync()  # the input handler makes the input stable as it arrives, before processing
                if crash_at == i and phase == "before-process":
                    crashed_at_seq = seq
                    break
                outs: list[tuple[int, Any]] = []
                runner.run([batch], on_output=lambda q, b: outs.append((q, b)))
                board.beat(0)
                if logged:
                    chunks = [ctx.state.drain_chunk() for ctx in runner.contexts]
                    off = st.append(DET_STREAM, encode_det(seq, chunks))
                    if off != seq:
                        raise RuntimeError(f"determinant record offset {off} != input {seq}")
                    pending_det[seq] = det_ranges(chunks)
                positions = runner.shared.positions() if logged else None
                for q, b in outs:
                    out.emit(seq, q, b, positions)
                if self.strategy in ("none", "checkpoint"):
                    visible.update(visible_state(runner.vnfs))
                    if on_visible is not None:
                        on_visible(visible)
                if crash_at == i and phase == "after-process":
                    crashed_at_seq = seq
                    break
                sync()
                release()
                board.beat(0)
                if self.strategy != "none" and self._checkpoint_due(i, batch, last_ckpt_ts):
                    checkpoint(seq + 1)
                    last_ckpt_ts[0] = int(batch.ts_ns.max()) if len(batch) else last_ckpt_ts[0]
                    release()
                if crash_at == i:
                    crashed_at_seq = seq
                    break
            if crash_at is None:
                res.released_master = len(released)
                res.held_at_crash = out.held()
                res.verdict = judge(released, visible, visible_state(runner.vnfs), runner.vnfs,
                                    per_flow_decisions=self.per_flow_decisions, non_monotone=self.non_monotone)
                return res

            # ---- crash: the master and all its state are gone; only storage survives
            t_crash = time.monotonic_ns()
            cb = batch  # the crash batch as admitted (with any replies merged in)
            if len(cb):
                res.crash_packet = int(cb.packet_id[0])
                res.crash_time_ms = (int(cb.ts_ns.min()) - trace_t0) / 1e6
            # Reports from before the crash were false suspicions (a slow batch on a busy box).
            res.false_suspicions += sum(1 for e in detector.events if e[2] < t_crash)
            detector.rearm()
            res.held_at_crash = out.held()
            res.released_master = len(released)
            runner.close()
            del runner
            if not detector.wait(5.0):
                raise RuntimeError("failure detector did not report the crash within 5 s")
            res.detect_s = (detector.events[-1][2] - t_crash) / 1e9
            side[0] = 1
            replies.clear()  # in flight when the master died
            if self.strategy != "none":
                st.fence()  # no write of the dead master's epoch lands after the backup read storage
            rep = backup.recover(st if self.strategy != "none" else None, self.strategy)
            res.recovery = rep
            res.handover_s = max(0, rep.started_ns - detector.events[-1][2]) / 1e9
            for q, b in rep.outputs:
                _record(released, in_keys, b, 1)
                answer(b)
            assert crashed_at_seq is not None
            res.lost_batches = crashed_at_seq + 1 - rep.next_seq
            # Inputs the input handler admitted but that never became stable are lost (the
            # senders retransmit); the backup takes the traffic from the next batch on.
            backup_state = visible_state(backup.vnfs)
            for batch in batches[crash_at + 1:]:
                batch = with_replies(batch)
                batch.parse()
                inp.admit(batch)
                in_keys.update(zip(batch.packet_id.tolist(), _key_rows(batch)))
                for q, b in backup.process(batch):
                    _record(released, in_keys, b, 1)
                    answer(b)
            res.released_backup = len(released) - res.released_master
            res.verdict = judge(released, visible, backup_state, backup.vnfs,
                                per_flow_decisions=self.per_flow_decisions, non_monotone=self.non_monotone)
            return res
        finally:
            detector.close()
            board.close()

    def _checkpoint_due(self, i: int, batch: Any, last_ts: list[int]) -> bool:
        if self.checkpoint_interval_ns is None:
            return (i + 1) % self.checkpoint_every == 0
        return len(batch) > 0 and int(batch.ts_ns.max()) - last_ts[0] >= self.checkpoint_interval_ns

    @staticmethod
    def _rerelease(released: Released, in_keys: dict[int, bytes]) -> Callable[[int, Any], None]:
        return lambda q, b: _record(released, in_keys, b, 1)


class _NoBoard:
    def beat(self, worker: int) -> None:
        pass

    def close(self) -> None:
        pass


class _NoDetector:
    """Without heartbeats: watches nothing, so it never reports."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, int]] = []

    def rearm(self) -> None:
        pass

    def wait(self, timeout_s: float) -> bool:
        return False

    def close(self) -> None:
        pass


def _key_rows(batch: Any) -> list[bytes]:
    k = np.ascontiguousarray(batch.key)
    raw = k.view(np.uint8).reshape(len(k), -1) if len(k) else np.zeros((0, 1), np.uint8)
    return [r.tobytes() for r in raw]


def _record(released: Released, in_keys: dict[int, bytes], b: Any, side: int) -> None:
    """Append a released sub-batch: its outgoing keys come from re-parsing its (rewritten) bytes."""
    c = b.select(np.arange(len(b), dtype=np.uint32))
    c.parse()
    ids = b.packet_id.tolist()
    released.add(ids, [in_keys[i] for i in ids], _key_rows(c), (b.port != 0).tolist(), side)
