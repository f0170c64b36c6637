"""The streaming master's native bookkeeping (vnfkit._core.StreamCommit) through the bridge: each
slab's clock read from a boundary board, determinant records cut in order, output commit, the
held batches handed back, and clear errors for a board or slab that does not fit. (No worker
processes: this file also runs against the sanitized build.)"""

from __future__ import annotations

import numpy as np
import pytest

from vnfkit import _core as vk_core
from vnfkit.recovery.backup import decode_det


def _board(workers: int, rows: int = 4, head: int = 2):
    line = head + rows * workers
    return np.zeros(workers * line, dtype=np.uint64), line, head, rows


def _finish(words, line, head, rows, workers, q, k, clock):
    """Worker q finished its slab k at log positions `clock` (the row, then the counter)."""
    at = q * line + head + (k % rows) * workers
    words[at:at + workers] = clock
    words[q * line] = k + 1


def _slab(ids):
    b = vk_core.PacketBatch([bytes(60)] * len(ids))
    b.packet_id[:] = ids
    return b


def test_stream_commit_takes_each_slabs_clock_from_the_board_and_checks_the_logs_hold_its_records():
    words, line, head, rows = _board(2)
    c = vk_core.StreamCommit(2, words, line, head, rows, 0)
    c.dispatched(0, 0, 7, [3, 4])
    c.dispatched(1, 7, 2, [2, 0])
    _finish(words, line, head, rows, 2, 0, 0, [5, 0])
    _finish(words, line, head, rows, 2, 1, 0, [5, 9])
    _finish(words, line, head, rows, 2, 0, 1, [6, 12])  # saw worker 1's records up to 12
    a, b, d = _slab([0, 2, 5]), _slab([1, 3, 4, 6]), _slab([7, 8])
    c.take([(0, a), (1, b), (0, d)], 113)
    assert a.linktype == d.linktype == 113 and c.in_flight(0) == c.in_flight(1) == 0
    assert c.held_packets == 9 and c.oldest_pending() == 0
    sh = vk_core.SharedState()
    with pytest.raises(ValueError, match="shared: input 0: worker 0's determinants \\[0, 5\\) not in its log"):
        c.cut_records(sh)  # the board names records this state's (empty) logs do not hold
    assert c.next_record == 0 and c.release() == []


def test_stream_commit_releases_in_order_per_queue_as_storage_acknowledges():
    words, line, head, rows = _board(2)
    c = vk_core.StreamCommit(2, words, line, head, rows, 0)
    sh = vk_core.SharedState()
    c.dispatched(0, 0, 2, [1, 1])
    c.dispatched(1, 2, 2, [2, 0])
    for q, k in ((0, 0), (1, 0), (0, 1)):
        _finish(words, line, head, rows, 2, q, k, [0, 0])  # no determinants logged
    a, b, d = _slab([0]), _slab([1]), _slab([2, 3])
    c.take([(0, a), (1, b), (0, d)], 1)
    recs = c.cut_records(sh)
    assert [s for s, _ in recs] == [0, 1] and all(decode_det(r)[0] == s for s, r in recs)
    assert c.release() == []  # nothing acknowledged
    c.acknowledged(1, 5)
    out = c.release()
    assert [(q, s) for q, _, s in out] == [(0, 0), (1, 0)] and out[0][1] is a and out[1][1] is b
    c.acknowledged(2, 2)
    assert [(q, s) for q, _, s in c.release()] == [(0, 1)] and c.held_packets == 0 and c.oldest_pending() is None


def test_stream_commit_refuses_misuse():
    words, line, head, rows = _board(2)
    with pytest.raises(ValueError, match="board: a line of"):
        vk_core.StreamCommit(2, words, line, head, rows + 1, 0)
    with pytest.raises(TypeError, match="board: expected a writable contiguous 1-D buffer"):
        vk_core.StreamCommit(2, bytearray(8 * words.size), line, head, rows, 0)
    c = vk_core.StreamCommit(2, words, line, head, rows, 0)
    with pytest.raises(ValueError, match="counts: 1 queues, expected 2"):
        c.dispatched(0, 0, 1, [1])
    c.dispatched(3, 30, 2, [1, 1])
    with pytest.raises(ValueError, match="seq: input 5 dispatched, expected 4"):
        c.dispatched(5, 40, 1, [1, 0])
    with pytest.raises(ValueError, match="board: worker 0 has not recorded slab 0"):
        c.take([(0, _slab([30]))], 1)
    _finish(words, line, head, rows, 2, 0, 0, [0, 0])
    with pytest.raises(ValueError, match="outs: queue 0: a slab of ids 29..30 is not input 3 \\(a slab must not span"):
        c.take([(0, _slab([29, 30]))], 1)
    for q in (2, -1):
        with pytest.raises(ValueError, match=f"outs: queue {q} is not in \\[0, 2\\)"):
            c.take([(q, _slab([30]))], 1)
    with pytest.raises(ValueError, match="queue: 5 is not below 2"):
        c.in_flight(5)


def test_the_boundary_board_tells_a_pending_checkpoint_image():
    from vnfkit.recovery.ft_board import _DONE, _Board

    b = _Board(2)
    try:
        assert not b.image_pending(0) and not b.image_pending(1) and b.slabs(0) == 0
        b.request(0)  # checkpoint 0 asked of every worker
        assert b.image_pending(0) and b.image_pending(1)
        b.words[1, _DONE] = 1  # worker 1 took it (its "done" word = epoch + 1)
        assert b.image_pending(0) and not b.image_pending(1) and b.taken(1, 0) == (0, 0.0, 0.0)
    finally:
        b.close()
