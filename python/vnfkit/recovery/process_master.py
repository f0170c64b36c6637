"""Recovery through the process runtime: a master of worker processes, one of them SIGKILLed.

The master is a :class:`vnfkit.runtime.process.ProcessRunner` (one worker process per queue, shared
state in a shared-memory segment) started with ``keep_log=True``: each worker leaves its
determinant log in the shared segment. Per input batch, this process (the dispatcher, which is
also the input handler and the output handler):

1. numbers the batch and makes its input record stable (:class:`~.input_log.InputHandler`);
2. dispatches it (``runner.run([batch])`` returns when every worker is done with it: a batch
   boundary of every worker);
3. reads every worker's new log records *out of the shared segment* and appends them as the batch's
   determinant record; holds the outputs, tagged with the log positions (output commit);
4. syncs storage, releases what may leave, and reads the workers' visible state (for the oracle);
5. every ``checkpoint_every`` batches takes a checkpoint: each worker images its own tables and VNF
   state at the boundary the parent requests (:meth:`vnfkit.runtime.process.ProcessRunner.call_workers`), ships it back,
   and drains its log; the parent images the shared state from its own mapping.

A crash is a ``SIGKILL`` of one worker process, either between two batches or in the middle of one
(from a timer, ``0..max_delay`` after the dispatch started). The pidfd failure detector reports the
death; the runtime itself raises ``WorkerError`` at its next look. The master is
then gone as a whole (the runtime stops the other workers) and the passive in-process
:class:`~.backup.Backup` restores the last checkpoint, replays the logged inputs with their
determinants forced, re-executes the stable inputs without a stable determinant record, and goes
live on the rest of the traffic. The oracle judges every released packet.

A worker may die while storage is away (the Redis primary stalled or killed): the inputs admitted
since are then not in storage, but the input handler, which outlives the master, still holds them
(:meth:`~.input_log.InputHandler.unacknowledged`). The failover waits up to ``storage_wait_s`` for
storage to answer; the output handler then releases the held outputs of every input the backup
found stable up to its replayed cut (storage acknowledged them too late for the master; the backup
replays them with outputs suppressed), and the input handler re-delivers the inputs storage never
acknowledged, which the backup executes afresh, outputs on: no input and no output is lost. If
storage does not return in time, the failover does not happen: that is reported in
``storage_events``, and the outputs and the inputs (``result.held_inputs``) stay held, none dropped.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from ..runtime import WorkerError
from .backup import CKPT_STREAM, DET_STREAM, Backup, RecoveryReport, det_ranges, encode_det
from .checkpoint import Checkpoint
from .cow import DeltaImages, collect_image, worker_delta_image, worker_delta_reset, worker_fork_image, worker_reap
from .detector import FailureDetector, HeartbeatBoard
from .harness import TrialResult, _key_rows, _record
from .input_log import INPUT_STREAM, InputHandler
from .oracle import Released, Verdict, judge, visible_state
from .output import OutputHandler, check_strategy
from .storage.base import StableStorage, StorageUnavailable
from .storage.memory import MemoryStorage
from .workloads import Workload

__all__ = ["BACKUP_MODES", "CHECKPOINT_MODES", "PROCESS_PHASES", "process_trial", "random_process_trials", "worker_snapshot", "worker_visible"]

PROCESS_PHASES = ("between-batches", "mid-batch")
#: How far ahead of a failure the passive backup gets: nothing, each checkpoint, or each group commit.
BACKUP_MODES = ("cold", "warm", "hot")
#: How a checkpoint images the workers: shipped back through the pipes, or written by a fork of each.
CHECKPOINT_MODES = ("sync", "fork", "delta")
#: The interpreter's thread switch interval during a trial (seconds).
DETECTOR_SWITCH_S = 0.0002


# ---- run inside a worker process (through ProcessRunner.call_workers)
def worker_snapshot(vnf: Any, ctx: Any) -> tuple[dict[str, bytes], dict[str, Any], int]:
    """This worker's tables and VNF state and its log position; then drain its log (the parent has
    read every record up to here out of the shared segment)."""
    tables = {name: t.snapshot() for name, t in ctx.tables.items()}
    state = vnf.snapshot()
    pos = int(ctx.state.position) if ctx.state is not None else 0
    if ctx.state is not None:
        ctx.state.drain_chunk()
    return tables, state, pos


def worker_visible(vnf: Any, ctx: Any) -> dict[str, dict[Any, int]]:
    """What the outside could see of this worker: the shared counters and its own stats()."""
    return visible_state([vnf])


def _noop(vnf: Any, ctx: Any) -> None:
    return None


def _merge_visible(parts: Sequence[dict[str, dict[Any, int]]]) -> dict[str, dict[Any, int]]:
    out: dict[str, dict[Any, int]] = {}
    for p in parts:
        for name, vals in p.items():
            if name == "vnf.stats":
                acc = out.setdefault(name, {})
                for k, x in vals.items():
                    acc[k] = acc.get(k, 0) + x
            else:
                out[name] = vals  # a shared variable: every worker sees the same one
    return out


def process_trial(w: Workload, crash_at: int | None, phase: str = "mid-batch", *, kill_worker: int = 0,
                  delay_s: float = 0.0, strategy: str = "replay", queues: int = 2,
                  storage: StableStorage | None = None, checkpoint_every: int = 8,
                  checkpoint_interval_s: float | None = None, sync_timeout_s: float = 1.0,
                  backup_mode: str = "cold", checkpoint_mode: str = "sync", oracle: bool = True,
                  storage_wait_s: float = 30.0) -> TrialResult:
    """Run `w` on a process master; SIGKILL worker `kill_worker` at input batch `crash_at` (see the
    module docstring; ``mid-batch``: `delay_s` after that batch's dispatch began); fail over; judge.
    Checkpoints every `checkpoint_every` batches, or with `checkpoint_interval_s` whenever that much
    packet time has passed since the last one. `backup_mode` (:data:`BACKUP_MODES`): ``cold``
    restores and replays everything at the failover; ``warm`` restores each checkpoint as it
    commits; ``hot`` also replays each group commit as it becomes stable (:meth:`.backup.Backup.stage`),
    so the failover replays only what was in flight. The time staging took is in
    ``result.backup_stage_s``. `checkpoint_mode` (:data:`CHECKPOINT_MODES`): ``sync`` ships each
    worker's image back while the master waits; ``fork`` pauses the master only for a ``fork()`` of
    each worker, whose child writes the image (copy-on-write, as Redis's BGSAVE) -- the checkpoint
    commits when every image is in; ``delta`` pauses each worker only to write what its tables saw
    change since its previous checkpoint (:func:`.cow.worker_delta_image`), which the master
    applies to its shadow images (:class:`.cow.DeltaImages`) and commits at once. Pauses are in
    ``result.checkpoint_pauses_s``. Without `oracle`
    (only with no crash) nothing is recorded for the oracle, so that ``result.master_s``, the wall
    time of the master's loop over every batch, is what fault tolerance costs (:mod:`benches.bench_recovery`).
    `storage_wait_s`: how long a failover waits for storage to answer (module docstring)."""
    import os
    import signal

    from ..runtime._segments import owned_dir
    from ..runtime.process import ProcessRunner

    strategy = check_strategy(strategy)
    if phase not in PROCESS_PHASES:
        raise ValueError(f"phase: expected one of {list(PROCESS_PHASES)}, got {phase!r}")
    if crash_at is not None and not 0 <= crash_at < len(w.batches):
        raise ValueError(f"crash_at: must be in [0, {len(w.batches)}), got {crash_at}")
    if not oracle and crash_at is not None:
        raise ValueError("oracle: a crash needs the oracle (oracle=False is for cost runs with crash_at=None)")
    if backup_mode not in BACKUP_MODES:
        raise ValueError(f"backup_mode: expected one of {list(BACKUP_MODES)}, got {backup_mode!r}")
    if checkpoint_mode not in CHECKPOINT_MODES:
        raise ValueError(f"checkpoint_mode: expected one of {list(CHECKPOINT_MODES)}, got {checkpoint_mode!r}")
    if not 0 <= kill_worker < queues:
        raise ValueError(f"kill_worker: must be in [0, {queues}), got {kill_worker}")
    if isinstance(storage_wait_s, bool) or not isinstance(storage_wait_s, (int, float)) or storage_wait_s < 0:
        raise ValueError(f"storage_wait_s: must be a non-negative number, got {storage_wait_s!r}")
    st = storage if storage is not None else MemoryStorage()
    logged = strategy == "replay"
    res = TrialResult(strategy, crash_at, f"{phase}, worker {kill_worker}", Verdict())
    released = Released()
    in_keys: dict[int, bytes] = {}
    visible: dict[str, dict[Any, int]] = {}
    side = [0]

    def on_release(q: int, b: Any) -> None:
        if oracle:
            _record(released, in_keys, b, side[0])
        else:
            res.released_master += len(b)

    out = OutputHandler(strategy, queues, queues, on_release)
    backup = Backup(w.vnf, w.config, queues)  # passive, ready before the crash
    inp = InputHandler(st if logged else None)
    tmp = owned_dir("ckpt")  # the workers' fork images
    runner = ProcessRunner(w.vnf, queues=queues, config=w.config, parse=False, logged=logged, keep_log=logged,
                           assign_ids=False)
    shared = runner.shared_state
    board = HeartbeatBoard(1)
    det = FailureDetector(board, timeout_s=3600.0, poll_s=0.001)  # death through the pidfds
    for pid in runner.pids:
        det.watch_process(0, pid)
    det.watch_deaths(runner.death_watch, list(range(queues)))  # told before the dead worker's unmap
    pending_det: dict[int, list[tuple[int, int, int]]] = {}
    read_pos = [0] * queues
    epoch = [0]
    kill = {"t": 0, "worker_error_t": 0}
    victim = runner.pids[kill_worker]

    def do_kill() -> None:
        if not kill["t"]:
            kill["t"] = time.monotonic_ns()
            os.kill(victim, signal.SIGKILL)

    def acks() -> None:
        if strategy == "none":
            return
        r = st.sync(sync_timeout_s)
        if not r.ok:
            res.storage_events.append(f"{r.status}: {r.detail}")
            return
        for seq in [s for s in pending_det if s < st.acked(DET_STREAM)]:
            for thread, first, count in pending_det.pop(seq):
                out.ack_determinants(thread, first, count)
        out.input_acked(st.acked(INPUT_STREAM))

    def commit_checkpoint(ck: Checkpoint) -> None:
        off = st.append(CKPT_STREAM, ck.to_bytes())
        r = st.sync(sync_timeout_s)
        if not r.ok:
            res.storage_events.append(f"checkpoint {ck.epoch}: {r.status}: {r.detail}")
            return
        acks()
        out.checkpoint_committed(ck.next_input)
        try:  # garbage collection only: what one checkpoint leaves, the next one drops
            st.truncate(CKPT_STREAM, off)
            if logged:
                st.truncate(INPUT_STREAM, ck.next_input)
                st.truncate(DET_STREAM, ck.next_input)
        except StorageUnavailable as exc:
            res.storage_events.append(f"checkpoint {ck.epoch}: {exc}")

    forking: list[tuple[Checkpoint, str]] = []  # fork checkpoints whose images are being written
    shadow = DeltaImages()  # delta checkpoints: the master's images of the workers' tables

    def collect(wait: bool) -> None:
        """Commit the fork checkpoint in progress once every worker's image is in."""
        while forking:
            ck, prefix = forking[0]
            deadline = time.monotonic() + 30.0
            while True:
                missing = [q for q in range(queues) if not ck.tables[q] and not os.path.exists(f"{prefix}-{q}")]
                if not missing or not wait:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"checkpoint {ck.epoch}: worker images {missing} not written within 30 s")
                time.sleep(0.0002)
            if missing:
                return
            for q in range(queues):
                img = collect_image(f"{prefix}-{q}")
                if img is not None:
                    ck.tables[q], ck.vnf_state[q] = img
            forking.pop(0)
            commit_checkpoint(ck)

    def checkpoint(next_input: int) -> None:
        if forking:
            collect(wait=True)  # one image in progress at a time
        t0 = time.perf_counter()
        ck_pause = 0.0
        if checkpoint_mode == "delta":
            if not shadow.queues:  # the first delta checkpoint: every worker sends base images
                runner.call_workers(worker_delta_reset)
                t0 = time.perf_counter()
            prefix = os.path.join(tmp.name, f"ckpt-{epoch[0]}")
            done = runner.call_workers(worker_delta_image, prefix)
            ck_pause = time.perf_counter() - t0
            positions = [d[1] for d in done]
            for q in range(queues):
                if not shadow.collect(q, f"{prefix}-{q}"):
                    raise RuntimeError(f"checkpoint {epoch[0]}: worker {q} wrote no delta image")
            images = [shadow.image(q) for q in range(queues)]
            ck = Checkpoint(epoch[0], next_input, inp.next_id - 1, positions, shared.snapshot(),
                            [im[0] for im in images], [im[1] for im in images])
            res.checkpoint_fork_s.append(max(d[2] for d in done))
        elif checkpoint_mode == "fork":
            prefix = os.path.join(tmp.name, f"ckpt-{epoch[0]}")
            forks = runner.call_workers(worker_fork_image, prefix)
            positions = [f[1] for f in forks]
            ck = Checkpoint(epoch[0], next_input, inp.next_id - 1, positions, shared.snapshot(),
                            [{} for _ in range(queues)], [{} for _ in range(queues)])
            res.checkpoint_fork_s.append(max(f[2] for f in forks))
        else:
            snaps = runner.call_workers(worker_snapshot)
            positions = [s[2] for s in snaps]
            ck = Checkpoint(epoch[0], next_input, inp.next_id - 1, positions, shared.snapshot(),
                            [s[0] for s in snaps], [s[1] for s in snaps])
        # delta: the workers' pause is the call; the master's work on the shadow images is its own
        ck.pause_s = ck_pause if checkpoint_mode == "delta" else time.perf_counter() - t0
        res.checkpoint_pauses_s.append(ck.pause_s)
        epoch[0] += 1
        if logged:
            read_pos[:] = positions  # the workers drained up to here
        if checkpoint_mode == "fork":
            forking.append((ck, prefix))
            collect(wait=False)
        else:
            commit_checkpoint(ck)

    def due(i: int, batch: Any) -> bool:
        if checkpoint_interval_s is None:
            return (i + 1) % checkpoint_every == 0
        if len(batch) and int(batch.ts_ns.max()) - last_ckpt_ts[0] >= checkpoint_interval_s * 1e9:
            last_ckpt_ts[0] = int(batch.ts_ns.max())
            return True
        return False

    def stage(follow: bool) -> None:
        try:
            res.backup_stage_s.append(backup.stage(st, follow=follow))
        except StorageUnavailable as exc:  # the backup catches up at the next stage, or at the failover
            res.storage_events.append(f"backup: {exc}")

    trace_t0 = int(w.batches[0].ts_ns.min()) if len(w.batches) and len(w.batches[0]) else 0
    last_ckpt_ts = [trace_t0]
    crashed = False
    current = [-1]  # the input batch being admitted and dispatched
    timer: threading.Timer | None = None
    # The detector thread stamps a death when it gets the GIL: a short switch interval (default
    # 5 ms) bounds how long the dispatcher's Python code can keep it waiting.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(DETECTOR_SWITCH_S)
    try:
        try:
            if strategy != "none":
                checkpoint(0)
                collect(wait=True)  # the first cut is stable before any input
            t_loop = time.perf_counter()
            for i, batch in enumerate(w.batches):
                current[0] = i
                if crash_at == i and phase == "between-batches":
                    do_kill()
                batch.parse()
                seq = inp.admit(batch)
                if oracle:
                    in_keys.update(zip(batch.packet_id.tolist(), _key_rows(batch)))
                if logged:
                    acks()  # the input is stable before it is processed
                if crash_at == i and phase == "mid-batch":
                    timer = threading.Timer(delay_s, do_kill)
                    timer.start()
                outs: list[tuple[int, Any]] = []
                runner.run([batch], on_output=lambda q, b: outs.append((q, b)))
                if logged:
                    chunks = []
                    for q in range(queues):
                        first, end = shared.log_range(q)
                        chunks.append(shared.log_chunk(q, read_pos[q]) if end > read_pos[q] else b"")
                        read_pos[q] = end
                    if st.append(DET_STREAM, encode_det(seq, chunks)) != seq:
                        raise RuntimeError(f"determinant record offset != input {seq}")
                    pending_det[seq] = det_ranges(chunks)
                positions = shared.positions() if logged else None
                for q, b in outs:
                    out.emit(seq, q, b, positions)
                acks()
                collect(wait=False)
                if backup_mode == "hot" and strategy != "none":  # before a checkpoint truncates what it follows
                    stage(follow=logged)
                if out.poll() and oracle or oracle and strategy in ("none", "checkpoint"):
                    visible.update(_merge_visible(runner.call_workers(worker_visible)))
                if strategy != "none" and due(i, batch):
                    checkpoint(seq + 1)
                    if out.poll() and oracle:
                        visible.update(_merge_visible(runner.call_workers(worker_visible)))
                if backup_mode == "warm" and strategy != "none":
                    stage(follow=False)  # restores a checkpoint newly committed
            res.master_s = time.perf_counter() - t_loop
            if kill["t"]:  # killed after the last look: the runtime notices at the next call
                current[0] = len(w.batches)
                runner.call_workers(_noop)
        except WorkerError as exc:
            kill["worker_error_t"] = time.monotonic_ns()
            res.failed_batch = current[0]
            res.storage_events.append(f"runtime: {exc}")
            crashed = True
        if crash_at is not None and not crashed:
            raise RuntimeError("the killed worker was not reported by the runtime")
        if not crashed:
            collect(wait=True)
            if oracle:
                res.released_master = len(released)
            res.held_at_crash = out.held()
            batches, res.held_inputs = inp.held()
            if res.held_at_crash or batches:
                res.storage_events.append(f"end of run: storage has not acknowledged {batches} input batches "
                                          f"({res.held_inputs} packets, held by the input handler); "
                                          f"{res.held_at_crash} outputs held")
            if checkpoint_mode == "fork":
                deadline = time.monotonic() + 10.0
                while any(runner.call_workers(worker_reap)) and time.monotonic() < deadline:
                    time.sleep(0.001)
            runner.close()
            return res
        # ---- the master is gone (the runtime stopped its other workers); storage survives
        if timer is not None:
            timer.join()
        res.held_at_crash = out.held()
        res.released_master = len(released)
        if not det.wait(5.0):
            raise RuntimeError("the failure detector did not report the killed worker within 5 s")
        detected_ns = min(det.events[0][2], kill["worker_error_t"])
        res.detect_s = (detected_ns - kill["t"]) / 1e9
        runner.kill_workers()  # fence: the rest of the master's workers; close() reaps them later
        if crash_at is not None and len(w.batches[crash_at]):
            res.crash_packet = int(w.batches[crash_at].packet_id[0])
            res.crash_time_ms = (int(w.batches[crash_at].ts_ns.min()) - trace_t0) / 1e6
        rep = _recover_when_stored(backup, st if strategy != "none" else None, strategy, storage_wait_s,
                                   res.storage_events)
        if rep is None:
            return _failover_held(res, w, inp, out, released, in_keys, visible, storage_wait_s)
        res.handover_s = max(0, rep.started_ns - detected_ns) / 1e9
        res.recovery = rep
        runner.close()
        # The output handler outlives the master: its held outputs of inputs the backup found stable
        # up to its replayed cut (determinant records included) may leave now -- the backup replayed
        # those inputs with outputs suppressed, and storage acknowledged them too late for the master.
        if strategy == "replay":
            for seq in sorted(s for s in pending_det if s < rep.replayed_to):
                for thread, first, count in pending_det.pop(seq):
                    out.ack_determinants(thread, first, count)
            out.input_acked(rep.replayed_to)
        elif strategy == "buffer":
            out.checkpoint_committed(rep.replayed_to)
        out.poll()
        res.released_held = len(released) - res.released_master
        res.released_master = len(released)
        side[0] = 1
        for q, b in rep.outputs:
            _record(released, in_keys, b, 1)
        _redeliver(res, inp, backup, rep, lambda b: _record(released, in_keys, b, 1))
        backup_state = visible_state(backup.vnfs)
        for batch in w.batches[inp.next_seq:]:
            batch.parse()
            inp.admit(batch)
            in_keys.update(zip(batch.packet_id.tolist(), _key_rows(batch)))
            for q, b in backup.process(batch):
                _record(released, in_keys, b, 1)
        res.released_backup = len(released) - res.released_master
        res.verdict = judge(released, visible, backup_state, backup.vnfs, per_flow_decisions=w.per_flow_decisions,
                            non_monotone=w.non_monotone)
        res.verdict.checked["detector_detect_us"] = int((det.events[0][2] - kill["t"]) / 1e3)
        res.verdict.checked["detected_by_lifeline"] = int(det.events[0][1] == "died")
        res.verdict.checked["runtime_detect_us"] = int((kill["worker_error_t"] - kill["t"]) / 1e3)
        res.verdict.checked["backup_restores"] = backup.restored_epochs
        res.verdict.checked["backup_followed_batches"] = backup.followed_batches
        return res
    finally:
        sys.setswitchinterval(switch)
        if timer is not None:
            timer.cancel()
        runner.close()
        tmp.cleanup()
        det.close()
        board.close()


def _recover_when_stored(backup: Backup, st: StableStorage | None, strategy: str, wait_s: float,
                         events: list[str]) -> RecoveryReport | None:
    """:meth:`.backup.Backup.recover`, once storage answers: retried for up to `wait_s` seconds
    (every failed try is a line of `events`); None if storage did not answer in that time. Storage
    is fenced first (:meth:`~.storage.base.StableStorage.fence`): no write of the dead master's epoch
    lands after the backup read what it replays."""
    wait_until = time.monotonic() + wait_s
    while True:
        try:
            if st is not None:
                st.fence()
            return backup.recover(st, strategy)
        except StorageUnavailable as exc:
            events.append(f"failover: {exc}")
            if time.monotonic() >= wait_until:
                return None
            time.sleep(0.05)


def _redeliver(res: TrialResult, inp: InputHandler, backup: Backup, rep: RecoveryReport,
               emit: Callable[[Any], None]) -> None:
    """The input handler re-delivers to the recovered backup what it logged and storage never
    acknowledged: no output of those inputs left, so the backup executes them afresh, outputs on
    (each output sub-batch to `emit`). Sets ``res.redelivered_batches`` and ``res.lost_batches``."""
    redeliver = inp.unacknowledged(rep.next_seq)
    done = rep.next_seq
    if redeliver and redeliver[0][0] != rep.next_seq:
        res.storage_events.append(f"failover: storage acknowledged input records {rep.next_seq}.."
                                  f"{redeliver[0][0] - 1}, but the backup did not find them")
        redeliver = []
    for seq, batch in redeliver:
        for _, b in backup.process(batch):
            emit(b)
        done = seq + 1
    res.redelivered_batches = len(redeliver)
    res.lost_batches = inp.next_seq - done


class _HoldsOutputs(Protocol):
    """An output handler, as far as a failover that never happened looks at it."""

    def held(self) -> int: ...


def _failover_held(res: TrialResult, w: Workload, inp: InputHandler, out: _HoldsOutputs, released: Released,
                   in_keys: dict[int, bytes], visible: dict[str, dict[Any, int]], waited_s: float) -> TrialResult:
    """No failover: storage did not answer within `waited_s`. The input handler keeps every input it
    could not get acknowledged (and the rest of the traffic, as it arrives); the master's held
    outputs stay held; the oracle judges what left."""
    for batch in w.batches[inp.next_seq:]:
        batch.parse()
        inp.admit(batch)
        in_keys.update(zip(batch.packet_id.tolist(), _key_rows(batch)))
    batches, packets = inp.held()
    res.held_inputs = packets
    res.storage_events.append(f"failover: storage did not answer within {waited_s} s; no backup went live: "
                              f"{batches} input batches ({packets} packets) held by the input handler, "
                              f"{out.held()} outputs held")
    res.verdict = judge(released, visible, visible, [], per_flow_decisions=w.per_flow_decisions,
                        non_monotone=w.non_monotone)
    res.verdict.checked["failover"] = 0
    return res


def random_process_trials(nf: str, strategy: str, trials: int, seed: int = 0, *, packets: int = 8000,
                          batch: int = 256, queues: int = 2, checkpoint_every: int = 8,
                          checkpoint_interval_s: float | None = None,
                          storage: Callable[[], StableStorage] = MemoryStorage,
                          on_trial: Callable[[int, TrialResult], None] | None = None,
                          backup_mode: str = "cold") -> list[TrialResult]:
    """`trials` process-master trials, each with a random batch, phase, worker and kill delay
    (0-2 ms into the batch's dispatch); `storage()` makes each trial's fresh storage;
    `backup_mode`: see :func:`process_trial`."""
    from .workloads import workload

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials: expected a positive int, got {trials!r}")
    rng = np.random.default_rng(seed)
    outs = []
    for t in range(trials):
        w = workload(nf, packets=packets, flows=max(10, packets // 20), batch=batch, seed=int(rng.integers(1 << 31)))
        crash = int(rng.integers(1, len(w.batches) - 2))
        phase = PROCESS_PHASES[int(rng.integers(len(PROCESS_PHASES)))]
        st = storage()
        try:
            r = process_trial(w, crash, phase, kill_worker=int(rng.integers(queues)),
                              delay_s=float(rng.uniform(0, 0.002)), strategy=strategy, queues=queues, storage=st,
                              checkpoint_every=checkpoint_every, checkpoint_interval_s=checkpoint_interval_s,
                              backup_mode=backup_mode)
        finally:
            st.close()
        outs.append(r)
        if on_trial is not None:
            on_trial(t, r)
    return outs
