"""A real crash: the master runs in a forked child process and is killed with SIGKILL.

:func:`sigkill_trial` forks; the child runs the whole master (thread runner, input handler, output
commit) over file or Redis storage and ships everything it releases -- and its visible state after
each release -- to the parent through a pipe (the "outside world": bytes written before the kill
are delivered, nothing after it). The parent, holding a passive :class:`~.backup.Backup` set up
ahead of time, kills the child at a chosen moment (most likely in the middle of a batch, a write or
an fsync), learns of the death through the child's pidfd (:class:`~.detector.FailureDetector`),
reopens the storage (a torn tail is cut), restores, replays, goes live on the rest of the traffic
and has the oracle judge every released packet. Timings: detection (kill -> pidfd report), restore,
replay.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..traffic import merge_by_time
from .backup import Backup
from .detector import FailureDetector, HeartbeatBoard
from .harness import Harness, TrialResult, _key_rows, _record
from .input_log import INPUT_STREAM, decode_batch
from .oracle import Released, judge, visible_state
from .storage.base import StableStorage
from .workloads import Workload

__all__ = ["Timeline", "sigkill_trial"]

_LEN = struct.Struct("<I")


class _PipeReleased(Released):
    """Released packets written to a pipe as they leave (the child's side), with their release time."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def add(self, ids: Any, in_keys: Any, out_keys: Any, forwarded: Any, side: int) -> None:
        ids, in_keys, out_keys, forwarded = list(ids), list(in_keys), list(out_keys), list(forwarded)
        super().add(ids, in_keys, out_keys, forwarded, side)
        _send(self.fd, ("rel", ids, in_keys, out_keys, [bool(f) for f in forwarded], time.monotonic_ns()))


def _send(fd: int, obj: Any) -> None:
    blob = pickle.dumps(obj, protocol=5)
    data = memoryview(_LEN.pack(len(blob)) + blob)
    while data:
        data = data[os.write(fd, data):]


class _PipeReader:
    """Reads the child's messages as they come (a full pipe would stall the master), in a thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.msgs: list[Any] = []
        self.released = 0
        self._buf = bytearray()
        self._thread = threading.Thread(target=self._run, name="vnfkit-sigkill-pipe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while chunk := os.read(self.fd, 1 << 20):
            self._buf += chunk
            pos = 0
            while pos + 4 <= len(self._buf):
                (n,) = _LEN.unpack_from(self._buf, pos)
                if pos + 4 + n > len(self._buf):
                    break
                m = pickle.loads(bytes(self._buf[pos + 4:pos + 4 + n]))
                if m[0] == "rel":
                    self.released += len(m[1])
                self.msgs.append(m)
                pos += 4 + n
            del self._buf[:pos]  # what is left is a message cut short (by the kill, at the end)

    def join(self) -> list[Any]:
        """All whole messages, once the child is dead (its end of the pipe closed)."""
        self._thread.join()
        return self.msgs


@dataclass
class Timeline:
    """When each released packet's input batch was admitted and when the packet left (monotonic ns),
    and when the master was killed and its death detected: what a latency-over-time plot needs."""

    admit_ns: np.ndarray
    release_ns: np.ndarray
    side: np.ndarray  # 0: released by the master, 1: by the backup
    kill_ns: int
    detect_ns: int
    live_ns: int  # the backup went live (restore + replay done)

    @property
    def latency_us(self) -> np.ndarray:
        return (self.release_ns.astype(np.int64) - self.admit_ns.astype(np.int64)) / 1e3


def sigkill_trial(w: Workload, open_storage: Callable[[], StableStorage], kill_after_s: float | None = None, *,
                  queues: int = 2, checkpoint_every: int = 8, checkpoint_interval_s: float | None = None,
                  kill_at_released: int | None = None, respond: Callable[[Any], Any] | None = None,
                  timeline: bool = False) -> TrialResult:
    """Run `w` on a master in a child process, SIGKILL it, fail over to the backup in this process.

    The kill comes `kill_after_s` after the start, or as soon as the master has released
    `kill_at_released` packets (whichever is given; both: whichever comes first). `respond` is the
    remote hosts (see :meth:`.harness.Harness.run`): the backup's outputs are answered too.
    `open_storage()` must open the same persistent storage in both processes (file or Redis).
    With `timeline`, ``result.timeline`` is a :class:`~.sigkill.Timeline`."""
    if kill_after_s is None and kill_at_released is None:
        raise ValueError("kill_after_s / kill_at_released: give at least one")
    r_fd, w_fd = os.pipe()
    board = HeartbeatBoard(1)
    backup = Backup(w.vnf, w.config, queues)  # passive, ready before the crash
    t_start = time.monotonic_ns()
    pid = os.fork()
    if pid == 0:  # the master
        code = 1
        try:
            os.close(r_fd)
            h = Harness(w.vnf, w.config, queues=queues, strategy="replay", storage=open_storage(),
                        checkpoint_every=checkpoint_every, checkpoint_interval_s=checkpoint_interval_s,
                        heartbeat=False)
            h.run(w.batches, None, before_batch=lambda i: board.beat(0), released=_PipeReleased(w_fd),
                  on_visible=lambda v: _send(w_fd, ("vis", v)), respond=respond,
                  on_admit=lambda seq, b, t: _send(w_fd, ("adm", seq, int(b.packet_id[0]) if len(b) else 0,
                                                          len(b), t)))
            _send(w_fd, ("done",))
            code = 0
        finally:
            os._exit(code)
    os.close(w_fd)
    reader = _PipeReader(r_fd)
    # death via the pidfd, not the heartbeat; a blocking 1 ms poll wakes at once on it and leaves the GIL free
    det = FailureDetector(board, timeout_s=10.0, poll_s=0.001)
    how = (f"sigkill after {kill_at_released} released packets" if kill_at_released is not None
           else f"sigkill after {(kill_after_s or 0.0) * 1e3:.0f} ms")
    res = TrialResult("replay", None, how, judge(Released(), {}, {}, []))
    try:
        det.watch_process(0, pid)
        deadline = None if kill_after_s is None else t_start + int(kill_after_s * 1e9)
        while not det.events:
            if deadline is not None and time.monotonic_ns() >= deadline:
                break
            if kill_at_released is not None and reader.released >= kill_at_released:
                break
            time.sleep(0.0002)
        if det.events:
            os.waitpid(pid, 0)
            raise RuntimeError(f"the master finished before the kill ({how}: choose an earlier point)")
        t_kill = time.monotonic_ns()
        os.kill(pid, signal.SIGKILL)
        if not det.wait(5.0):
            raise RuntimeError("the master's death was not detected within 5 s")
        t_detect = det.events[0][2]
        res.detect_s = (t_detect - t_kill) / 1e9
        os.waitpid(pid, 0)
        msgs = reader.join()
    finally:
        det.close()
        os.close(r_fd)
        board.close()
    st = open_storage()  # reopened after the crash: torn tails cut
    st.fence()  # no write of the dead writer's epoch lands after the backup read storage
    rep = backup.recover(st, "replay")
    t_live = time.monotonic_ns()
    res.handover_s = max(0, rep.started_ns - t_detect) / 1e9
    res.recovery = rep
    released = Released()
    rel_ns: list[int] = []
    admitted: dict[int, tuple[int, int]] = {}  # first packet id -> (count, admit time)
    visible: dict[str, dict[Any, int]] = {}
    finished = False
    for m in msgs:
        if m[0] == "rel":
            released.add(m[1], m[2], m[3], m[4], 0)
            rel_ns.extend([m[5]] * len(m[1]))
        elif m[0] == "vis":
            visible = m[1]
        elif m[0] == "adm":
            admitted[m[2]] = (m[3], m[4])
        else:
            finished = True
    res.released_master = len(released)
    in_keys: dict[int, bytes] = dict(zip(released.packet_id, released.in_key))
    for _seq, rec in st.read(INPUT_STREAM):  # the inputs the backup replayed or re-executed
        b = decode_batch(rec)
        b.parse()
        in_keys.update(zip(b.packet_id.tolist(), _key_rows(b)))
    replies: list[Any] = []

    def out(sub: Any) -> None:
        _record(released, in_keys, sub, 1)
        rel_ns.extend([time.monotonic_ns()] * len(sub))
        if respond is not None and (r := respond(sub)) is not None:
            replies.append(r)

    for q, b in rep.outputs:
        out(b)
    backup_state = visible_state(backup.vnfs)
    # The backup takes the traffic from the first input that never became stable; packet ids go on
    # after every id the master gave out (none of the lost inputs' packets was released).
    nxt = st.acked(INPUT_STREAM)
    res.crash_at = nxt
    next_id = max([f + n for f, (n, _) in admitted.items()] + [max(in_keys, default=-1) + 1])
    for b in w.batches[nxt:]:
        if replies:
            b = merge_by_time([b, *replies]) or b
            replies.clear()
        b.parse()
        b.packet_id[:] = np.arange(next_id, next_id + len(b), dtype=np.uint64)
        next_id += len(b)
        admitted[int(b.packet_id[0])] = (len(b), time.monotonic_ns())
        in_keys.update(zip(b.packet_id.tolist(), _key_rows(b)))
        for q, sub in backup.process(b):
            out(sub)
    res.released_backup = len(released) - res.released_master
    res.verdict = judge(released, visible, backup_state, backup.vnfs, per_flow_decisions=w.per_flow_decisions,
                        non_monotone=w.non_monotone)
    res.verdict.checked["master_finished"] = int(finished)
    st.close()
    if timeline:
        res.timeline = Timeline(_admit_times(np.asarray(released.packet_id, np.int64), admitted),
                                np.asarray(rel_ns, np.int64), np.asarray(released.side, np.int8),
                                t_kill, t_detect, t_live)
    return res


def _admit_times(ids: np.ndarray, admitted: dict[int, tuple[int, int]]) -> np.ndarray:
    """Each packet's admit time, from the (first id -> count, time) of the input batches."""
    firsts = np.array(sorted(admitted), dtype=np.int64)
    times = np.array([admitted[f][1] for f in firsts], dtype=np.int64)
    return times[np.searchsorted(firsts, ids, side="right") - 1]
