"""pcap / pcapng I/O: round trips through scapy, hand-built files of every flavour, streaming, errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from scapy.utils import PcapReader as ScapyPcapReader
from scapy.utils import PcapWriter as ScapyPcapWriter
from scapy.utils import rdpcap, wrpcap

import vnfkit
from vnfkit import packets as vp
from vnfkit import traffic


def sample(n=300, seed=4):
    return traffic.generate(flows=min(20, n), packets=n, seed=seed, ipv6_fraction=0.3)


@pytest.mark.parametrize("nano", [False, True])
def test_vnfkit_pcap_reads_back_identically_in_scapy(tmp_path, nano):
    b = sample()
    path = tmp_path / "v.pcap"
    b.to_pcap(str(path), nanosecond=nano)
    pkts = rdpcap(str(path))
    assert [bytes(p) for p in pkts] == b.to_list()
    res = 1 if nano else 1000
    got = [int(round(p.time * 1_000_000_000)) for p in pkts]
    assert got == (b.ts_ns // res * res).tolist()
    again = vnfkit.PacketBatch.from_pcap(str(path))
    assert again.to_list() == b.to_list()
    assert np.array_equal(again.ts_ns, b.ts_ns // res * res)
    assert again.packet_id.tolist() == list(range(len(b)))


@pytest.mark.parametrize("nano", [False, True])
def test_reads_scapy_written_pcap(tmp_path, nano):
    b = sample(50)
    pkts = vp.to_scapy(b)
    path = tmp_path / "s.pcap"
    w = ScapyPcapWriter(str(path), nano=nano, linktype=1)
    w.write(pkts)
    w.close()
    got = vp.read_pcap(path)
    assert got.to_list() == b.to_list()
    diff = np.abs(got.ts_ns.astype(np.int64) - b.ts_ns.astype(np.int64))
    if nano:
        assert diff.max() == 0
    else:  # scapy rounds to the microsecond; vnfkit reads exactly what is in the file
        assert diff.max() < 1000 and np.all(got.ts_ns % 1000 == 0)


def test_reads_scapy_pcapng(tmp_path):
    b = sample(50)
    path = tmp_path / "s.pcapng"
    try:
        from scapy.utils import PcapNgWriter
    except ImportError:  # pragma: no cover
        pytest.skip("scapy has no PcapNgWriter")
    w = PcapNgWriter(str(path))
    for p in vp.to_scapy(b):
        w.write(p)
    w.close()
    r = vnfkit._core.PcapReader(str(path))
    got = r.read(1000)
    assert r.pcapng and r.linktype == 1
    assert got.to_list() == b.to_list()
    # scapy writes microsecond resolution by default
    assert np.allclose(got.ts_ns.astype(np.float64), b.ts_ns.astype(np.float64), atol=1000)


def _classic(pkts, ts_pairs, big_endian=False, nano=False, caplens=None):
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for i, p in enumerate(pkts):
        cap = len(p) if caplens is None else caplens[i]
        out += struct.pack(e + "IIII", ts_pairs[i][0], ts_pairs[i][1], cap, len(p)) + p[:cap]
    return out


def _opt(code, val):
    pad = (-len(val)) % 4
    return struct.pack("<HH", code, len(val)) + val + b"\0" * pad


def _block(btype, body, e="<"):
    ln = 12 + len(body)
    return struct.pack(e + "II", btype, ln) + body + struct.pack(e + "I", ln)


def _pcapng(pkts, tsresol=None, e="<"):
    shb = _block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)
    opts = b""
    if tsresol is not None:
        opts = struct.pack(e + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0" + struct.pack(e + "HH", 0, 0)
    idb = _block(1, struct.pack(e + "HHI", 1, 0, 0) + opts, e)
    unknown = _block(0x0BAD, b"\x01\x02\x03\x04", e)
    nrb = _block(4, struct.pack(e + "HH", 0, 0), e)  # name resolution block: skipped
    out = shb + idb + unknown + nrb
    for ts, p in pkts:
        pad = b"\0" * ((-len(p)) % 4)
        out += _block(6, struct.pack(e + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(p), len(p)) + p + pad, e)
    out += _block(3, struct.pack(e + "I", len(pkts[0][1])) + pkts[0][1] + b"\0" * ((-len(pkts[0][1])) % 4), e)
    return out


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_hand_built_classic_both_byte_orders(tmp_path, big_endian, nano):
    pkts = [bytes(range(60)), bytes(70), b"\x01" * 61]
    ts = [(10, 5), (11, 999_999 if not nano else 999_999_999), (12, 0)]
    path = tmp_path / "h.pcap"
    path.write_bytes(_classic(pkts, ts, big_endian, nano))
    b = vp.read_pcap(path)
    assert b.to_list() == pkts
    mul = 1 if nano else 1000
    assert b.ts_ns.tolist() == [s * 1_000_000_000 + f * mul for s, f in ts]


@pytest.mark.parametrize("e", ["<", ">"])
@pytest.mark.parametrize("tsresol,factor", [(None, 1000), (9, 1), (3, 1_000_000), (0x80 | 10, None)])
def test_hand_built_pcapng(tmp_path, e, tsresol, factor):
    pkts = [(123456789, bytes(range(60))), (123456790, bytes(66)), (2**33 + 7, b"\xaa" * 65)]
    path = tmp_path / "h.pcapng"
    path.write_bytes(_pcapng(pkts, tsresol, e))
    b = vp.read_pcap(path)
    assert b.to_list() == [p for _, p in pkts] + [pkts[0][1]]  # the SPB repeats the first packet
    if factor is None:  # 2^-10 s units
        want = [int(ts * 1_000_000_000 / 1024) for ts, _ in pkts]
        assert np.allclose(b.ts_ns[:3].astype(np.float64), want, atol=2)
    else:
        assert b.ts_ns[:3].tolist() == [ts * factor for ts, _ in pkts]
    assert b.ts_ns[3] == 0  # simple packet blocks carry no timestamp


def test_streaming_chunks_cover_the_file(tmp_path):
    b = sample(1000)
    path = tmp_path / "big.pcap"
    assert vp.write_pcap(path, (b.select(np.arange(i, min(i + 128, 1000), dtype=np.uint32))
                                for i in range(0, 1000, 128))) == 1000
    chunks = list(vp.iter_pcap(path, chunk=300))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    assert sum((c.to_list() for c in chunks), []) == b.to_list()
    assert np.concatenate([c.packet_id for c in chunks]).tolist() == list(range(1000))
    with pytest.raises(ValueError):
        next(vp.iter_pcap(path, chunk=0))


def test_snapped_records_are_kept_and_counted(tmp_path):
    full = bytes(range(80))
    path = tmp_path / "snap.pcap"
    path.write_bytes(_classic([full, full], [(1, 0), (2, 0)], caplens=[40, 80]))
    r = vnfkit._core.PcapReader(str(path))
    b = r.read()
    assert b.to_list() == [full[:40], full]
    assert r.snapped == 1
    assert r.read() is None


def test_cut_off_last_record_reads_every_whole_packet(tmp_path):
    b = sample(5)
    good = tmp_path / "g.pcap"
    b.to_pcap(str(good))
    raw = good.read_bytes()
    first_len = len(b.packet(0))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[:24 + 16 + first_len + 16 + 3])  # record 1: header whole, 3 bytes of its data
    r = vnfkit._core.PcapReader(str(cut))
    got = r.read()
    assert got.to_list() == b.to_list()[:1]
    assert r.read() is None and r.read() is None
    assert r.truncated_offset == 24 + 16 + first_len and r.truncated_bytes == 16 + 3
    assert vp.read_pcap(cut).to_list() == b.to_list()[:1]
    hdr_cut = tmp_path / "hcut.pcap"
    hdr_cut.write_bytes(raw[:24 + 16 + first_len + 9])  # record 1: 9 bytes of its 16-byte header
    r = vnfkit._core.PcapReader(str(hdr_cut))
    assert len(r.read()) == 1 and r.truncated_offset == 24 + 16 + first_len and r.truncated_bytes == 9
    whole = vnfkit._core.PcapReader(str(good))
    assert len(whole.read()) == 5 and whole.truncated_offset is None and whole.truncated_bytes == 0
    ng = tmp_path / "t.pcapng"
    ngraw = _pcapng([(1, bytes(60)), (2, bytes(61))])
    ng.write_bytes(ngraw[:-7])  # the final simple packet block loses its last 7 bytes
    r = vnfkit._core.PcapReader(str(ng))
    assert len(r.read()) == 2 and r.truncated_offset is not None and r.truncated_bytes > 0


def test_corrupt_files_name_the_offset(tmp_path):
    b = sample(5)
    good = tmp_path / "g.pcap"
    b.to_pcap(str(good))
    raw = good.read_bytes()
    assert issubclass(vnfkit.PcapError, ValueError)
    hdr = tmp_path / "hdr.pcap"
    hdr.write_bytes(raw[:10])
    with pytest.raises(vnfkit.PcapError, match="offset 4"):
        vp.read_pcap(hdr)
    bad = bytearray(raw)
    struct.pack_into("<I", bad, 24 + 8, 10_000_000)  # absurd caplen in record 0
    corrupt = tmp_path / "corrupt.pcap"
    corrupt.write_bytes(bytes(bad))
    with pytest.raises(vnfkit.PcapError, match="offset 32"):
        list(vp.iter_pcap(corrupt))
    bad = bytearray(raw)
    second = 24 + 16 + len(b.packet(0))
    struct.pack_into("<I", bad, second + 4, 2_000_000)  # microseconds out of range in record 1
    corrupt.write_bytes(bytes(bad))
    with pytest.raises(vnfkit.PcapError, match=f"offset {second + 4}"):
        vp.read_pcap(corrupt)
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"GIF89a not a capture")
    with pytest.raises(vnfkit.PcapError, match="magic"):
        vp.read_pcap(junk)
    ngbad = bytearray(_pcapng([(1, bytes(60))]))
    struct.pack_into("<I", ngbad, len(ngbad) - 4, 999)  # trailing length of the last block disagrees
    ng = tmp_path / "bad.pcapng"
    ng.write_bytes(bytes(ngbad))
    with pytest.raises(vnfkit.PcapError, match=f"offset {len(ngbad) - 4}"):
        vp.read_pcap(ng)


def test_missing_file_and_bad_output_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        vp.read_pcap(tmp_path / "nope.pcap")
    with pytest.raises(FileNotFoundError):
        list(vp.iter_pcap(tmp_path / "nope.pcap"))
    with pytest.raises(FileNotFoundError):
        sample(3).to_pcap(str(tmp_path / "no" / "dir.pcap"))


def test_scapy_streaming_reader_agrees(tmp_path):
    b = sample(200)
    path = tmp_path / "x.pcap"
    wrpcap(str(path), vp.to_scapy(b))
    with ScapyPcapReader(str(path)) as r:
        assert [bytes(p) for p in r] == b.to_list()
    assert vp.read_pcap(path).to_list() == b.to_list()


def _fallocate_supported(directory) -> bool:
    """Whether the file system under ``directory`` takes fallocate(FALLOC_FL_KEEP_SIZE) (probed apart
    from the writer under test)."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    probe = directory / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return libc.fallocate(fd, 1, 0, 1 << 20) == 0
    finally:
        os.close(fd)
        probe.unlink()


def _allocated(path) -> int:
    import os

    return os.stat(path).st_blocks * 512


# 70 000 64-byte frames: 5.6 MB of records, more than the writer's 4 MiB buffer (so one flush runs
# before close) and less than its first 16 MiB preallocation step.
BIG = 70_000
FIRST_FLUSH = 24 + ((4 << 20) - 24) // 80 * 80  # the whole 80-byte records that fit the buffer


@pytest.fixture(scope="module")
def big_batch():
    return traffic.generate(flows=500, packets=BIG, seed=6, frame_size=64)


def test_sink_preallocates_ahead_and_close_frees_the_rest(tmp_path, big_batch):
    import os

    from vnfkit.io import PcapSink

    path = tmp_path / "big.pcap"
    sink = PcapSink(path)
    sink.write(big_batch)
    size = os.path.getsize(path)
    assert size == FIRST_FLUSH  # one full buffer written; the file is never longer than its data
    if _fallocate_supported(tmp_path):
        assert _allocated(path) >= 16 << 20  # blocks reserved past the end of the data
    sink.close()
    size = os.path.getsize(path)
    assert size == 24 + BIG * 16 + int(big_batch.offsets[-1])
    assert _allocated(path) < size + (1 << 20)  # the unused preallocation was given back
    back = vnfkit.PacketBatch.from_pcap(str(path))
    assert back.to_list() == big_batch.to_list()


def test_sink_dropped_without_close_frees_the_preallocation(tmp_path, big_batch):
    import gc
    import os

    from vnfkit.io import PcapSink

    path = tmp_path / "dropped.pcap"
    sink = PcapSink(path)
    sink.write(big_batch)
    del sink
    gc.collect()
    size = os.path.getsize(path)
    assert size == 24 + BIG * 16 + int(big_batch.offsets[-1])  # the destructor flushed
    assert _allocated(path) < size + (1 << 20)


def test_sink_killed_midway_leaves_only_whole_data(tmp_path):
    """A writer that dies before close leaves the bytes it wrote and no preallocated zeros after them."""
    import os
    import subprocess
    import sys

    path = tmp_path / "killed.pcap"
    code = (f"import os; from vnfkit import traffic; from vnfkit.io import PcapSink\n"
            f"b = traffic.generate(flows=500, packets={BIG}, seed=6, frame_size=64)\n"
            f"s = PcapSink({str(path)!r}); s.write(b); os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert os.path.getsize(path) == FIRST_FLUSH
    from vnfkit.io import PcapSource

    src = PcapSource(path)
    got = sum(len(b) for b in src)
    assert got == (FIRST_FLUSH - 24) // 80 and src.truncated_offset is None  # whole records and nothing after
