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
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .backup import Backup
from .detector import FailureDetector, HeartbeatBoard
from .harness import Harness, TrialResult, _key_rows, _record
from .input_log import INPUT_STREAM
from .oracle import Released, judge, visible_state
from .storage.base import StableStorage
from .workloads import Workload

__all__ = ["sigkill_trial"]

_LEN = struct.Struct("<I")


class _PipeReleased(Released):
    """Released packets written to a pipe as they leave (the child's side)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def add(self, ids: Any, in_keys: Any, out_keys: Any, forwarded: Any, side: int) -> None:
        ids, in_keys, out_keys, forwarded = list(ids), list(in_keys), list(out_keys), list(forwarded)
        super().add(ids, in_keys, out_keys, forwarded, side)
        _send(self.fd, ("rel", ids, in_keys, out_keys, [bool(f) for f in forwarded]))


def _send(fd: int, obj: Any) -> None:
    blob = pickle.dumps(obj, protocol=5)
    data = memoryview(_LEN.pack(len(blob)) + blob)
    while data:
        data = data[os.write(fd, data):]


def _read_all(fd: int) -> list[Any]:
    buf = bytearray()
    while chunk := os.read(fd, 1 << 20):
        buf += chunk
    out, pos = [], 0
    while pos + 4 <= len(buf):
        (n,) = _LEN.unpack_from(buf, pos)
        if pos + 4 + n > len(buf):
            break  # a message cut by the kill
        out.append(pickle.loads(bytes(buf[pos + 4:pos + 4 + n])))
        pos += 4 + n
    return out


def sigkill_trial(w: Workload, open_storage: Callable[[], StableStorage], kill_after_s: float, *,
                  queues: int = 2, checkpoint_every: int = 8) -> TrialResult:
    """Run `w` on a master in a child process, SIGKILL it `kill_after_s` after it starts, fail over.

    `open_storage()` must open the same persistent storage in both processes (file or Redis)."""
    r_fd, w_fd = os.pipe()
    board = HeartbeatBoard(1)
    backup = Backup(w.vnf, w.config, queues)  # passive, ready before the crash
    pid = os.fork()
    if pid == 0:  # the master
        code = 1
        try:
            os.close(r_fd)
            h = Harness(w.vnf, w.config, queues=queues, strategy="replay", storage=open_storage(),
                        checkpoint_every=checkpoint_every, heartbeat=False)
            h.run(w.batches, None, before_batch=lambda i: board.beat(0), released=_PipeReleased(w_fd),
                  on_visible=lambda v: _send(w_fd, ("vis", v)))
            _send(w_fd, ("done",))
            code = 0
        finally:
            os._exit(code)
    os.close(w_fd)
    det = FailureDetector(board, timeout_s=10.0, poll_s=0.0005)  # death via pidfd, not the heartbeat
    res = TrialResult("replay", None, f"sigkill after {kill_after_s * 1e3:.0f} ms", judge(Released(), {}, {}, []))
    try:
        det.watch_process(0, pid)
        time.sleep(kill_after_s)
        t_kill = time.monotonic_ns()
        os.kill(pid, signal.SIGKILL)
        if not det.wait(5.0):
            raise RuntimeError("the master's death was not detected within 5 s")
        res.detect_s = (det.events[0][2] - t_kill) / 1e9
        os.waitpid(pid, 0)
        msgs = _read_all(r_fd)
    finally:
        det.close()
        os.close(r_fd)
        board.close()
    released = Released()
    visible: dict[str, dict[Any, int]] = {}
    finished = False
    for m in msgs:
        if m[0] == "rel":
            released.add(m[1], m[2], m[3], m[4], 0)
        elif m[0] == "vis":
            visible = m[1]
        else:
            finished = True
    res.released_master = len(released)
    st = open_storage()  # reopened after the crash: torn tails cut
    rep = backup.recover(st, "replay")
    res.recovery = rep
    in_keys: dict[int, bytes] = {}
    next_id = 0
    for b in w.batches:
        b.parse()
        b.packet_id[:] = np.arange(next_id, next_id + len(b), dtype=np.uint64)
        next_id += len(b)
        in_keys.update(zip(b.packet_id.tolist(), _key_rows(b)))
    for q, b in rep.outputs:
        _record(released, in_keys, b, 1)
    backup_state = visible_state(backup.vnfs)
    # The backup takes the traffic from the first input that never became stable.
    nxt = st.acked(INPUT_STREAM)
    res.crash_at = nxt
    for b in w.batches[nxt:]:
        for q, sub in backup.process(b):
            _record(released, in_keys, sub, 1)
    res.released_backup = len(released) - res.released_master
    res.verdict = judge(released, visible, backup_state, backup.vnfs, per_flow_decisions=w.per_flow_decisions,
                        non_monotone=w.non_monotone)
    res.verdict.checked["master_finished"] = int(finished)
    st.close()
    return res
