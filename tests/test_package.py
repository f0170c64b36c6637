"""The package imports, exposes its native core, and PacketBatch holds bytes without copying."""

import numpy as np
import pytest

import vnfkit
from vnfkit import _core


def test_flow_key_dtype_is_40_bytes_with_named_fields():
    dt = vnfkit.FLOW_KEY_DTYPE
    assert dt.itemsize == 40
    assert dt.names == ("src", "dst", "sport", "dport", "proto", "family", "pad")


def test_native_batch_round_trips_bytes_and_views_share_memory():
    pkts = [b"\x01\x02\x03", b"", b"abcdef"]
    b = _core.PacketBatch(pkts, ts_ns=np.array([5, 6, 7], dtype=np.uint64))
    assert len(b) == 3
    assert [b.packet(i) for i in range(3)] == pkts
    assert b.offsets.tolist() == [0, 3, 3, 9]
    assert b.ts_ns.tolist() == [5, 6, 7]
    port = b.port
    port[:] = 7
    assert b.port.tolist() == [7, 7, 7]  # a view, not a copy
    b.validate()


def test_native_batch_rejects_wrong_types():
    with pytest.raises(TypeError, match="bytes"):
        _core.PacketBatch([b"ok", 3])
    with pytest.raises(TypeError, match="uint64"):
        _core.PacketBatch([b"ok"], ts_ns=np.array([1], dtype=np.int64))
    with pytest.raises(ValueError, match="length"):
        _core.PacketBatch([b"ok"], ts_ns=np.array([1, 2], dtype=np.uint64))


def test_drop_reason_names():
    assert _core.drop_reason_name(0) == ""
    assert _core.drop_reason_name(int(vnfkit.DropReason.TRUNCATED)) == "truncated"
    with pytest.raises(ValueError):
        _core.drop_reason_name(200)
