"""The backup node: passive until the master fails, then restore, replay, catch up and go live.

Before the failure it has its MazuNAT set up (:class:`vnfkit.recovery.Backup`), its storage client
connected (Redis; a file storage is reopened at failover so that a torn tail is cut), and its own
sockets open on both interfaces, whose frames it keeps for ``ring_s`` seconds
(:class:`.frames.FrameRing`) without processing them. A :class:`vnfkit.recovery.FailureDetector`
watches the master: its pidfd (a SIGKILL is seen at once) and its heartbeat word (a hung master,
after ``heartbeat_timeout_ms``; the backup then SIGKILLs the master's process group first, so that
the two never forward at the same time). A pipe wakes the receive loop the moment it fires.

With a steering switch in the spec (master and backup on hosts of their own behind the input
handler's switch, :class:`.steering.TcSteering`), the detector's decision also reprograms the
switch: the ``tc`` switch-over (fence the master's ports, open the backup's, steer the peers'
frames to the backup only) starts the moment the detector fires and runs while the backup
restores; the backup waits for it before it sends anything.

Failover, timed step by step (monotonic ns, so another process can compare with its own clock):
restore the last stable checkpoint and replay the logged inputs since, determinants forced and
outputs suppressed, re-executing (and sending) the stable inputs without a stable determinant record;
then the *catch-up*: the buffered frames after the last frame the master logged, processed and sent;
then live forwarding.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from .frames import FrameRing, NodeSpec, frame_ids, open_node_storage

__all__ = ["run_backup"]


def _fence(pid: int, timeout_s: float = 5.0, *, wait: bool = True) -> None:
    """SIGKILL the master's process group (it was started as one, pgid = pid) and, with `wait`,
    wait until it is gone (a master suspected by its heartbeat may still be running; one whose
    lifeline told its death runs no more code, so its unmap is not waited for)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if wait:
            select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)


class _ReadCache:
    """Storage seen through a cache: each stream is read once, whole (a Redis read fetches the
    whole stream anyway); the failover uses the input log twice (the replay, the frame identities)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.streams: dict[str, list[tuple[int, bytes]]] = {}

    def read(self, stream: str, start: int = 0) -> list[tuple[int, bytes]]:
        if stream not in self.streams:
            self.streams[stream] = self.storage.read(stream, 0)
        return [r for r in self.streams[stream] if r[0] >= start]


def run_backup(spec: NodeSpec, emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The passive backup node: set up MazuNAT and its backup in advance, keep its own sockets on
    the master's interfaces buffering recent frames, and on the master's death (pidfd, or a stale
    heartbeat: the master's process group is then fenced with SIGKILL) restore the last checkpoint,
    replay the logged inputs with determinants forced and outputs suppressed, catch up on the
    buffered frames the master never logged, and forward live. `emit` reports events (one dict each);
    returns the node's summary."""
    from ..io.live import LiveSink, open_socket
    from ..nfs.mazunat import EXTERNAL, INTERNAL, MazuNAT
    from ..recovery.backup import CKPT_STREAM, Backup
    from ..recovery.detector import FailureDetector, HeartbeatBoard
    from ..recovery.input_log import INPUT_STREAM, decode_batch

    stopping = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stopping.update(flag=True))
    st = open_node_storage(spec.storage) if spec.storage["kind"] == "redis" else None
    board = HeartbeatBoard(1, name=spec.board)
    bk = Backup(MazuNAT, spec.config, 1)
    sockets = {"inside": open_socket(spec.inside, batch=spec.batch),
               "outside": open_socket(spec.outside, batch=spec.batch)}
    sinks = [LiveSink(sockets["inside"], dst_mac=spec.inside_peer, port=INTERNAL),
             LiveSink(sockets["outside"], dst_mac=spec.outside_peer, port=EXTERNAL)]
    ring = FrameRing(spec.ring_s)
    wake_r, wake_w = os.pipe()
    failure: dict[str, Any] = {}

    def on_failure(_w: int, reason: str, t_ns: int) -> None:
        failure.update(reason=reason, detected_ns=t_ns)
        os.write(wake_w, b"x")

    det = FailureDetector(board, timeout_s=spec.heartbeat_timeout_ms / 1e3, on_failure=on_failure)
    det.watch_process(0, spec.master_pid)
    det.watch_lifelines()  # the master holds line 0: its death is told before its unmap
    stats: dict[str, Any] = {"buffered_frames": 0, "received_live": 0, "sent": 0, "batches_live": 0, "drops": {}}

    def send(b: Any) -> None:
        for s in sinks:
            stats["sent"] += s.write(b)

    poller = select.poll()
    side_of = {}
    for side, s in sockets.items():
        poller.register(s.fileno(), select.POLLIN)
        side_of[s.fileno()] = side
    poller.register(wake_r, select.POLLIN)
    try:
        emit({"event": "ready", "role": "backup"})
        while not stopping["flag"] and not failure:  # passive: buffer what arrives
            for fd, _ev in poller.poll(20):
                if fd == wake_r:
                    continue
                b = sockets[side_of[fd]].recv(0)
                if len(b):
                    stats["buffered_frames"] += len(b)
                    ring.add(b)
        if failure:
            switching = None
            if spec.steering:
                from .steering import TcSteering

                switching = TcSteering.from_dict(spec.steering).switch_to("backup")
            try:  # the failover's critical path gets the CPU first on a busy host (root may do this)
                os.setpriority(os.PRIO_PROCESS, 0, -10)
            except OSError:
                pass
            if failure["reason"] != "exited":
                _fence(spec.master_pid, wait=failure["reason"] != "died")
            t_fenced = time.monotonic_ns()
            if st is None:
                st = open_node_storage(spec.storage)
            st.fence()  # before reading: no write of the dead master's lands after this point
            cached = _ReadCache(st)
            rep = bk.recover(cached, "replay")  # type: ignore[arg-type]  # (it only reads)
            if switching is not None:
                TcSteering.wait_switched(switching)
            t_switched = time.monotonic_ns()
            for _q, b in rep.outputs:
                send(b)
            t_replayed = time.monotonic_ns()
            known = set()  # every logged input frame still stored (the master keeps the last one before the cut)
            for _seq, rec in cached.read(INPUT_STREAM, 0):
                known.update(frame_ids(decode_batch(rec)))
            caught_up = 0
            for b, idx in ring.after_last_of(known):
                sub = b.select(idx)
                caught_up += len(sub)
                for _q, o in bk.process(sub):
                    send(o)
            t_live = time.monotonic_ns()
            fo = {"reason": failure["reason"], "detected_ns": failure["detected_ns"], "live_ns": t_live,
                  "restore_ms": round(rep.restore_s * 1e3, 3), "replay_ms": round(rep.replay_s * 1e3, 3),
                  "fence_ms": round((t_fenced - failure["detected_ns"]) / 1e6, 3),
                  "checkpoint_bytes": sum(len(r) for _o, r in cached.read(CKPT_STREAM)),
                  "recover_ms": round((t_replayed - t_fenced) / 1e6, 3),
                  "catch_up_ms": round((t_live - t_replayed) / 1e6, 3),
                  "detect_to_live_ms": round((t_live - failure["detected_ns"]) / 1e6, 3),
                  "steered": switching is not None,
                  "switched_by_ms": (round((t_switched - failure["detected_ns"]) / 1e6, 3)
                                     if switching is not None else None),
                  "checkpoint_epoch": rep.checkpoint_epoch, "replayed_batches": rep.replayed_batches,
                  "replayed_packets": rep.replayed_packets, "reexecuted_batches": rep.reexecuted_batches,
                  "logged_frames_seen": len(known), "caught_up_frames": caught_up}
            stats["failover"] = fo
            emit({"event": "live", "role": "backup", **fo})
            while not stopping["flag"]:
                for fd, _ev in poller.poll(20):
                    if fd == wake_r:
                        continue
                    b = sockets[side_of[fd]].recv(0)
                    if len(b) == 0:
                        continue
                    stats["received_live"] += len(b)
                    stats["batches_live"] += 1
                    for _q, o in bk.process(b):
                        send(o)
                    for reason, count in b.drop_counts().items():
                        stats["drops"][reason] = stats["drops"].get(reason, 0) + int(count)
    finally:
        det.close()
        for s in sockets.values():
            s.close()
        if st is not None:
            st.close()
        board.close()
        os.close(wake_r)
        os.close(wake_w)
    stats["vnf"] = {k: int(v) for v0 in [bk.vnfs[0].stats()] for k, v in sorted(v0.items()) if v}
    return stats
