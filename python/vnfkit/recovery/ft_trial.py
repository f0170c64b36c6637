"""Crash trials and cost runs through the streaming fault-tolerant master (:mod:`.ft_runner`).

:func:`stream_trial` offers a workload's batches to a :class:`~.ft_runner.StreamingMaster`
(closed loop, or paced at ``rate_pps``: batch ``i`` arrives when its last packet is due), SIGKILLs
one worker from a timer once input batch ``crash_at`` is fed (``delay_s`` later), lets the pidfd
detector report it, and fails over to a passive in-process :class:`~.backup.Backup` (``hot``:
it follows every stable determinant record while the master runs, so the failover replays only
the tail), which then serves the rest of the traffic. The oracle judges every released packet.
A worker that dies while storage is away is failed over as in :func:`.process_master.process_trial`:
the backup waits for storage (``storage_wait_s``), the held outputs it finds stable leave, the input
handler re-delivers what storage never acknowledged; if storage does not return, all stays held.

:func:`stream_cost` runs the same loop with no crash and reports throughput and latency
(arrival to release, so the output-commit wait counts), for a no-FT against replay comparison.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any


from .backup import Backup
from .ft_runner import MasterFailed, StreamingMaster, weighted_percentiles
from .harness import TrialResult, _key_rows, _record
from .process_master import BACKUP_MODES, DETECTOR_SWITCH_S, _failover_held, _recover_when_stored, _redeliver
from .oracle import Released, Verdict, judge, visible_state
from .storage.base import StableStorage, StorageUnavailable
from .storage.memory import MemoryStorage
from .workloads import Workload

__all__ = ["runtime_cost", "stream_cost", "stream_trial"]


def _due(t0: int, i_pkts: int, rate_pps: float) -> int:
    """When the batch whose last packet is packet `i_pkts` of the schedule arrives."""
    return t0 + int(i_pkts * 1e9 / rate_pps)


def _pace(t0: int, i_pkts: int, rate_pps: float | None) -> int:
    """Arrival time of a batch whose last packet is packet `i_pkts` of the schedule (spin until then)."""
    if rate_pps is None:
        return time.monotonic_ns()
    due = _due(t0, i_pkts, rate_pps)
    while True:
        now = time.monotonic_ns()
        if now >= due:
            return due
        if due - now > 200_000:
            time.sleep((due - now - 100_000) / 1e9)


def _cpu_ns(pid: int) -> int | None:
    """CPU time `pid` has run for so far (ns), from /proc/PID/schedstat; None where there is none."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stream_cost(w: Workload, strategy: str, *, queues: int = 2, rate_pps: float | None = None,
                checkpoint_interval_s: float = 0.050, storage: StableStorage | None = None,
                worker_images: str = "auto", master_cpus: Any = None, worker_cpus: Any = None) -> dict[str, Any]:
    """Run `w` (parsed batches) through a streaming master with no crash; returns packets released,
    seconds, packets per second, the CPU time per packet of the master's thread and of all workers
    together (ns; the workers' None where /proc has no schedstat), latency percentiles (µs),
    checkpoint pauses, the workers' stalls
    for their images and the master's own work per checkpoint (ms), and the way images were
    written. `worker_images`, `master_cpus`, `worker_cpus`: see :class:`~.ft_runner.StreamingMaster`."""
    m = StreamingMaster(w.vnf, w.config, queues=queues, strategy=strategy, storage=storage,
                        checkpoint_interval_s=checkpoint_interval_s, batch_size=_slab_size(w),
                        worker_images=worker_images, master_cpus=master_cpus, worker_cpus=worker_cpus)
    try:
        n = 0
        pids = m.runner.pids
        w_cpu0 = [_cpu_ns(p) for p in pids]
        m_cpu0 = time.thread_time_ns()
        t_start = time.perf_counter()
        t0 = time.monotonic_ns()
        for b in w.batches:
            n += len(b)
            if rate_pps is not None:
                m.idle(_due(t0, n, rate_pps))  # outputs leave while the master waits for the next input
            m.feed(b, _pace(t0, n, rate_pps))
        m.finish()
        wall = time.perf_counter() - t_start
        m_cpu = time.thread_time_ns() - m_cpu0
        w_cpu1 = [_cpu_ns(p) for p in pids]
        w_cpu: float | None = 0.0
        for a, b in zip(w_cpu0, w_cpu1):
            w_cpu = None if a is None or b is None or w_cpu is None else w_cpu + (b - a) / max(n, 1)
        lat, counts = m.latency_ns()
        return {"strategy": strategy, "packets": n, "released": m.released_packets, "held": m.held(),
                "seconds": wall, "pps": n / wall,
                "cpu_ns_per_packet": {"master": m_cpu / max(n, 1), "workers": w_cpu},
                "latency_us": weighted_percentiles(lat, counts),
                "checkpoints": m.checkpoints_committed, "events": list(m.events),
                "pause_ms": [p * 1e3 for p in m.checkpoint_pauses_s],
                "image_stall_ms": [p * 1e3 for p in m.checkpoint_fork_s],
                "image_stall_cpu_ms": [p * 1e3 for p in m.checkpoint_fork_cpu_s],
                "checkpoint_work_ms": [p * 1e3 for p in m.checkpoint_work_s],
                "worker_images": m.worker_images}
    finally:
        m.close()


def _slab_size(w: Workload) -> int:
    """Most packets per slab for `w`: the master's default (256), or the largest input batch."""
    return max([256] + [len(b) for b in w.batches])


def runtime_cost(w: Workload, *, queues: int = 2) -> dict[str, Any]:
    """Run `w` (parsed batches) through the process runtime's own closed loop
    (:meth:`~vnfkit.runtime.process.ProcessRunner.run`: one native dispatch per batch, outputs
    counted natively, no fault tolerance) with the slab size of :func:`stream_cost`; returns packets
    processed, seconds (the run, not the workers' start) and packets per second: the no-FT ceiling
    the streaming master's own figures are measured against."""
    from ..runtime.process import ProcessRunner

    with ProcessRunner(w.vnf, queues=queues, config=w.config, parse=False, batch_size=_slab_size(w)) as r:
        res = r.run(w.batches)
    n = sum(len(b) for b in w.batches)
    return {"packets": res.packets, "expected": n, "seconds": res.wall_s, "pps": n / res.wall_s}


def stream_trial(w: Workload, crash_at: int, *, kill_worker: int = 0, delay_s: float = 0.0, queues: int = 2,
                 storage: StableStorage | None = None, checkpoint_interval_s: float = 0.050,
                 rate_pps: float | None = None, backup_mode: str = "hot",
                 heartbeat_timeout_s: float | None = None, storage_wait_s: float = 30.0,
                 worker_images: str = "auto", follow_every_s: float = 0.0, master_cpus: Any = None,
                 worker_cpus: Any = None, precopy_packets: int | None = None) -> TrialResult:
    """One crash of the streaming master under checkpoint + replay, failed over and judged (module
    docstring). `backup_mode` (:data:`.process_master.BACKUP_MODES`): ``cold`` (restore + replay at
    the failover), ``warm`` (it restores each new checkpoint as it becomes stable, so the failover
    replays only what came after the newest one) or ``hot`` (it also replays every stable input as
    it comes: the failover replays only the tail).
    `heartbeat_timeout_s`: see :class:`~.ft_runner.StreamingMaster`; a heartbeat suspicion before
    the kill fences the master early (counted in ``false_suspicions``, detection 0: the failover
    began before the crash). `storage_wait_s`: how long the failover waits for storage to answer.
    `worker_images`: how the workers write their checkpoint images (see
    :class:`~.ft_runner.StreamingMaster`). `follow_every_s`: a warm or hot backup looks at storage
    after an input batch once this long has passed since it last did (0: after every batch); it
    does so in this process, between the master's input batches. `master_cpus`, `worker_cpus`:
    CPU placement of this process's thread (the master, and the backup that follows) and of the
    workers, as for :class:`~.ft_runner.StreamingMaster`; `precopy_packets` too."""
    if isinstance(storage_wait_s, bool) or not isinstance(storage_wait_s, (int, float)) or storage_wait_s < 0:
        raise ValueError(f"storage_wait_s: must be a non-negative number, got {storage_wait_s!r}")
    if not 0 <= crash_at < len(w.batches):
        raise ValueError(f"crash_at: must be in [0, {len(w.batches)}), got {crash_at}")
    if isinstance(follow_every_s, bool) or not isinstance(follow_every_s, (int, float)) or not follow_every_s >= 0:
        raise ValueError(f"follow_every_s: must be a non-negative number, got {follow_every_s!r}")
    follow_every_ns = int(follow_every_s * 1e9)
    if backup_mode not in BACKUP_MODES:
        raise ValueError(f"backup_mode: expected one of {list(BACKUP_MODES)}, got {backup_mode!r}")
    if not 0 <= kill_worker < queues:
        raise ValueError(f"kill_worker: must be in [0, {queues}), got {kill_worker}")
    st = storage if storage is not None else MemoryStorage()
    res = TrialResult("replay", crash_at, f"stream, worker {kill_worker}", Verdict())
    released = Released()
    in_keys: dict[int, bytes] = {}
    side = [0]
    visible: dict[str, dict[Any, int]] = {}

    # The oracle's bookkeeping is kept off the master's clock: released batches are recorded
    # after the feed loop (in release order), and the input keys are read before it.
    out_log: list[tuple[Any, int]] = []

    def on_release(q: int, b: Any) -> None:
        out_log.append((b, side[0]))

    def flush_released() -> None:
        for b, sd in out_log:
            _record(released, in_keys, b, sd)
        out_log.clear()

    backup = Backup(w.vnf, w.config, queues)  # passive, ready before the crash
    m = StreamingMaster(w.vnf, w.config, queues=queues, strategy="replay", storage=st,
                        checkpoint_interval_s=checkpoint_interval_s, on_release=on_release,
                        heartbeat_timeout_s=heartbeat_timeout_s, worker_images=worker_images,
                        batch_size=_slab_size(w), master_cpus=master_cpus, worker_cpus=worker_cpus,
                        precopy_packets=precopy_packets)
    kill_t = [0]
    victim = m.runner.pids[kill_worker]
    timer: threading.Timer | None = None

    def do_kill() -> None:
        kill_t[0] = time.monotonic_ns()
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:  # fenced (and reaped) already
            pass

    first_id = m.inputs.next_id  # the ids feed() gives, batch after batch
    for b in w.batches:
        in_keys.update(zip(range(first_id, first_id + len(b)), _key_rows(b)))
        first_id += len(b)
    fed = fed_pkts = 0
    last_stage = 0
    fed_end = t_begin = time.monotonic_ns()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(DETECTOR_SWITCH_S)  # the detector thread stamps a death when it gets the GIL
    try:
        try:
            n = 0
            t0 = t_begin = time.monotonic_ns()
            epochs = m.checkpoints_committed
            for i, b in enumerate(w.batches):
                n += len(b)
                arrival = _pace(t0, n, rate_pps)
                if i == crash_at:
                    timer = threading.Timer(delay_s, do_kill)
                    timer.start()
                m.feed(b, arrival)
                fed = i + 1
                fed_pkts, fed_end = n, time.monotonic_ns()
                if backup_mode != "cold" and fed_end - last_stage >= follow_every_ns:
                    last_stage = fed_end
                    try:
                        res.backup_stage_s.append(backup.stage(st, follow=backup_mode == "hot"))
                    except StorageUnavailable as exc:  # it catches up at the next stage, or at the failover
                        res.storage_events.append(f"backup: {exc}")
                if m.checkpoints_committed != epochs:  # drained at the cut: a consistent look
                    epochs = m.checkpoints_committed
                    visible.update(m.visible())
            if timer is not None:
                timer.join()  # the kill came after the last batch: the detector reports it
            while m.failure is None:
                try:
                    m.drain(5.0)
                except TimeoutError:
                    pass
                if m.detector is not None and m.detector.wait(0.0005):
                    m.failure = m.detector.events[0]
        except MasterFailed:
            pass
        except Exception:
            if not kill_t[0]:
                raise
            # the runtime noticed first (a call to a dead worker): the detector has the time
            if not m.detector or not m.detector.wait(5.0):
                raise
            m.failure = m.detector.events[0]
        if timer is not None:
            timer.join()
        failure = m.failure if m.failure is not None else m.detector.events[0]  # type: ignore[union-attr]
        m.fence()  # the rest of the master's workers: the backup takes over at once, close() reaps later
        if not kill_t[0] or failure[2] < kill_t[0]:
            res.false_suspicions = 1  # fenced before the kill: recovery began before the crash
            res.detect_s = 0.0
        else:
            res.detect_s = (failure[2] - kill_t[0]) / 1e9
        res.held_at_crash = m.held()
        res.checkpoint_pauses_s = list(m.checkpoint_pauses_s)
        res.storage_events[:0] = m.events
        # ---- the master is fenced; storage, the input handler and the output handler survive
        rep = _recover_when_stored(backup, st, "replay", storage_wait_s, res.storage_events)
        flush_released()  # the oracle's books of what the master released (not part of the failover)
        res.released_master = len(released)
        res.crash_packet = int(w.batches[crash_at].packet_id[0]) if len(w.batches[crash_at]) else -1
        if rep is None:
            m.close()
            return _failover_held(res, w, m.inputs, m, released, in_keys, visible, storage_wait_s)
        res.handover_s = max(0, rep.started_ns - failure[2]) / 1e9
        res.recovery = rep
        res.released_held = m.release_recovered(rep.replayed_to)  # replayed, outputs suppressed: theirs leave
        flush_released()
        m.close()
        res.released_master = len(released)
        side[0] = 1
        for q, b in rep.outputs:
            _record(released, in_keys, b, 1)
        _redeliver(res, m.inputs, backup, rep, lambda out: _record(released, in_keys, out, 1))
        backup_state = visible_state(backup.vnfs)
        for b in w.batches[m.inputs.next_seq:]:
            m.inputs.admit(b)  # the input handler steers to the backup now
            in_keys.update(zip(b.packet_id.tolist(), _key_rows(b)))
            for q, out in backup.process(b):
                _record(released, in_keys, out, 1)
        res.released_backup = len(released) - res.released_master
        res.verdict = judge(released, visible, backup_state, backup.vnfs, per_flow_decisions=w.per_flow_decisions,
                            non_monotone=w.non_monotone)
        res.verdict.checked["fed_batches"] = fed
        # packets released by neither side: outputs the master still held for another worker's
        # determinants when it died, of an input whose own record was stable (the backup replays it
        # with outputs suppressed): lost, as on the network, never released twice
        res.verdict.checked["unreleased_packets"] = sum(len(b) for b in w.batches) - len(released)
        # the rate the master took the traffic in at, up to the crash (the offered rate may be higher)
        res.verdict.checked["fed_kpps"] = int(fed_pkts / max(1e-9, (fed_end - t_begin) / 1e9) / 1e3)
        res.verdict.checked["detected_by_heartbeat"] = int(failure[1] == "heartbeat")  # else a lifeline or the pidfd
        res.verdict.checked["backup_followed_batches"] = backup.followed_batches
        return res
    finally:
        sys.setswitchinterval(switch)
        if timer is not None:
            timer.cancel()
        m.close()
