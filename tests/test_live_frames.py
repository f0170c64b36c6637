"""The backup's frame ring: which buffered frames the master never logged (no root needed)."""

from __future__ import annotations

import numpy as np
import pytest

from vnfkit import _core
from vnfkit.live.frames import FrameRing, NodeSpec, frame_ids


def _batch(marks: list[int]) -> _core.PacketBatch:
    data = np.concatenate([np.full(60, m, np.uint8) for m in marks])
    offs = np.arange(len(marks) + 1, dtype=np.uint32) * 60
    return _core.PacketBatch.from_arrays(data, offs, np.zeros(len(marks), np.uint64))


def _marks(out: list[tuple[_core.PacketBatch, np.ndarray]]) -> list[int]:
    return [int(np.asarray(b.data)[int(np.asarray(b.offsets)[i])]) for b, idx in out for i in idx]


def test_frame_ids_are_per_frame_and_content_defined() -> None:
    a, b = frame_ids(_batch([1, 2, 1])), frame_ids(_batch([1]))
    assert len(a) == 3 and a[0] == a[2] == b[0] and a[0] != a[1] and all(len(x) == 16 for x in a)
    assert frame_ids(_batch([5]).select(np.zeros(0, np.uint32))) == []


def test_ring_returns_the_frames_after_the_last_logged_one() -> None:
    r = FrameRing(10.0)
    for marks in ([1, 2, 3], [4, 5], [6, 7, 8]):
        r.add(_batch(marks), now=0.0)
    assert len(r) == 8
    logged = set(frame_ids(_batch([2, 3, 5])))
    assert _marks(list(r.after_last_of(logged))) == [6, 7, 8]
    assert len(r) == 0 and list(r.after_last_of(logged)) == []  # emptied
    for marks in ([1, 2], [9, 3, 10]):
        r.add(_batch(marks), now=0.0)
    assert _marks(list(r.after_last_of(logged))) == [10]  # 3 is the last logged frame
    r.add(_batch([11, 12]), now=0.0)
    assert _marks(list(r.after_last_of(set()))) == [11, 12]  # nothing logged: everything buffered


def test_ring_forgets_old_batches_and_checks_its_bound() -> None:
    r = FrameRing(1.0)
    r.add(_batch([1, 2]), now=0.0)
    r.add(_batch([3]), now=0.5)
    r.add(_batch([4]), now=1.6)
    assert len(r) == 1 and _marks(list(r.after_last_of(set()))) == [4]
    with pytest.raises(ValueError, match="max_age_s"):
        FrameRing(0)


def test_node_spec_round_trips() -> None:
    s = NodeSpec(inside="a", outside="b", inside_peer="02:00:00:00:00:01", outside_peer="02:00:00:00:00:02",
                 config={"max_flows": 64}, storage={"kind": "file", "root": "/x"}, board="psm_1", master_pid=7)
    assert NodeSpec.loads(s.dumps()) == s
