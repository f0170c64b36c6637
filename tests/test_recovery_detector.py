"""Failure detector: a SIGKILLed worker process is reported at once through its pidfd, a stalled
one (SIGSTOP) when its shared-memory heartbeat is older than the timeout; detection time measured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vnfkit.recovery.detector import FailureDetector, HeartbeatBoard

BEATER = r"""
import sys, time
from vnfkit.recovery.detector import HeartbeatBoard
b = HeartbeatBoard(2, name=sys.argv[1])
w = int(sys.argv[2])
print("up", flush=True)
while True:
    b.beat(w)
    time.sleep(0.0002)
"""


def start(board, w):
    p = subprocess.Popen([sys.executable, "-c", BEATER, board.name, str(w)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert p.stdout.readline().strip() == "up"
    return p


def test_sigkill_is_seen_via_pidfd_and_sigstop_via_heartbeat():
    board = HeartbeatBoard(2)
    procs = [start(board, 0), start(board, 1)]
    det = FailureDetector(board, timeout_s=0.25, poll_s=0.001)  # generous: a busy CI box starves beaters
    try:
        for w, p in enumerate(procs):
            det.watch_process(w, p.pid)
        time.sleep(0.3)
        assert not det.events  # live workers are not suspected
        t0 = time.monotonic_ns()
        procs[0].send_signal(signal.SIGKILL)
        assert det.wait(2.0)
        w, reason, t = det.events[0]
        assert (w, reason) == (0, "exited")
        kill_ms = (t - t0) / 1e6
        t0 = time.monotonic_ns()
        procs[1].send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 2
        while len(det.events) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        w, reason, t = det.events[1]
        assert (w, reason) == (1, "heartbeat")
        stall_ms = (t - t0) / 1e6
        # the timeout counts from the worker's last beat, which came a little before SIGSTOP was sent
        assert 200 <= stall_ms < 3000
        print(f"detection: SIGKILL {kill_ms:.2f} ms (pidfd), SIGSTOP {stall_ms:.2f} ms (heartbeat timeout 250 ms)")
        assert kill_ms < 250  # well before the heartbeat timeout could have fired
    finally:
        det.close()
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
            p.stdout.close()
        name = board.name
        board.close()
        assert not os.path.exists(f"/dev/shm/{name.lstrip('/')}")


def test_bad_arguments():
    with pytest.raises(ValueError, match="workers"):
        HeartbeatBoard(0)
    b = HeartbeatBoard(1)
    try:
        with pytest.raises(ValueError, match="timeout_s"):
            FailureDetector(b, timeout_s=0)
    finally:
        b.close()


class _CountingPoll:
    """A select.poll stand-in that counts the detector thread's looks."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def register(self, fd, events):
        self.inner.register(fd, events)

    def unregister(self, fd):
        self.inner.unregister(fd)

    def poll(self, timeout_ms):
        self.calls += 1
        return self.inner.poll(timeout_ms)


def test_sub_millisecond_poll_period_does_not_spin():
    board = HeartbeatBoard(2)  # the beater attaches to two words
    p = start(board, 0)
    det = FailureDetector(board, timeout_s=3600.0, poll_s=0.0005)
    counting = _CountingPoll(det._poll)
    det._poll = counting
    try:
        det.watch_process(0, p.pid)
        time.sleep(0.3)
        # one look per 0.5 ms period at most (~600 in 0.3 s); a poll(0) loop makes tens of thousands
        assert counting.calls < 1200, counting.calls
        t0 = time.monotonic_ns()
        p.kill()
        assert det.wait(2.0) and det.events[0][:2] == (0, "exited")  # a death is still seen
        print(f"{counting.calls} looks in 0.3 s; SIGKILL seen in {(det.events[0][2] - t0) / 1e6:.2f} ms")
    finally:
        det.close()
        p.kill()
        p.wait()
        p.stdout.close()
        board.close()


class _Counting(FailureDetector):
    looks = 0

    def _wait_s(self, now: int) -> float:
        self.looks += 1
        return super()._wait_s(now)


def test_a_long_timeout_wakes_the_thread_rarely_and_a_death_still_at_once():
    board = HeartbeatBoard(1)
    board.beat(0)
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    # poll_s of 0.5 ms, as the streaming master asks: the heartbeat cannot time out for an hour, so
    # the thread waits on the pidfd (MAX_WAIT_S at a time) instead of looking 2 000 times a second
    det = _Counting(board, timeout_s=3600.0, poll_s=0.0005)
    try:
        det.watch_process(0, p.pid)
        time.sleep(0.4)
        assert 1 <= det.looks <= 20, det.looks
        assert not det.events
        t0 = time.monotonic_ns()
        p.kill()
        assert det.wait(2.0)
        assert det.events[0][:2] == (0, "exited") and (det.events[0][2] - t0) / 1e6 < 50
    finally:
        t0 = time.monotonic()
        det.close()
        assert time.monotonic() - t0 < 0.5  # close() wakes the thread out of its wait
        p.kill()
        p.wait()
        board.close()


def test_a_heartbeat_is_judged_at_its_deadline_after_a_long_quiet_wait():
    board = HeartbeatBoard(1)
    board.beat(0)
    det = FailureDetector(board, timeout_s=0.2, poll_s=0.05)
    try:
        t0 = time.monotonic_ns()
        assert det.wait(2.0)
        w, reason, t = det.events[0]
        assert (w, reason) == (0, "heartbeat")
        assert 200 <= (t - t0) / 1e6 < 400  # at the deadline (one wait past it at most), not a poll later
    finally:
        det.close()
        board.close()


HOLDER = r"""
import sys, time
from vnfkit.recovery.detector import HeartbeatBoard
b = HeartbeatBoard(2, name=sys.argv[1])
w = int(sys.argv[2])
b.hold(w)
print("up", flush=True)
line = sys.stdin.readline().strip()
if line == "stop":
    b.let_go(w)
    b.close()
    sys.exit(0)
while True:
    b.beat(w)
    time.sleep(0.0002)
"""


def test_a_worker_holding_its_lifeline_is_told_dead_as_its_exit_begins_and_a_clean_stop_is_not():
    board = HeartbeatBoard(2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, board.name, str(w)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for w in range(2)]
    det = FailureDetector(board, timeout_s=10.0, poll_s=0.001)
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "up"
        det.watch_lifelines()
        for w, p in enumerate(procs):
            det.watch_process(w, p.pid)
        procs[1].stdin.write("stop\n")
        procs[1].stdin.flush()
        assert procs[1].wait(10) == 0
        time.sleep(0.05)
        # let go, then exited 0: its pidfd reports the exit, its lifeline nothing
        assert [e[:2] for e in det.events] in ([], [(1, "exited")]), det.events
        t0 = time.monotonic_ns()
        procs[0].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not any(e[0] == 0 for e in det.events) and time.monotonic() < deadline:
            time.sleep(0.0005)
        first = next(e for e in det.events if e[0] == 0)
        assert first[1] == "died" and first[2] >= t0, det.events
        assert board.lifelines.state(0) == "dead" and board.lifelines.state(1) == "let_go"
        print(f"lifeline: SIGKILL told {(first[2] - t0) / 1e3:.0f} us after the signal")
    finally:
        det.close()
        for p in procs:
            p.kill()
            p.wait()
        board.close()
