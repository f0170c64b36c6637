"""pcap I/O: the native reader and writer against dpkt and the Wireshark tools on one file.

Workload: a generated trace of 64-byte frames (2 M packets, ~160 MB; 200 k in smoke runs with
--benchmark-disable) written once per session and then read from the page cache. Every benchmark
checks its result: the packet count and total bytes read (for ours also the sha256 of all packet
bytes, against a plain Python walk of the file's records), or a written file that is byte for byte
the original (ours), or that our reader reads back identically (the baselines').

- read: ``PcapSource`` chunks of 65 536 (what the CLI does), ``PacketBatch.from_pcap`` (one batch),
  ``dpkt.pcap.Reader``, ``capinfos`` (Wireshark's wiretap reading every record) and ``tshark``
  (reading and dissecting to the frame layer), the last two when on PATH.
- write: ``PcapSink`` of the whole trace in 65 536-packet batches, ``dpkt.pcap.Writer``, and
  ``editcap`` (read + write) when on PATH. Every round writes a new output file, as a user writing
  a capture does: the previous round's file is deleted before the round, untimed. (Truncating the
  same 160 MB file again each round would time the file system freeing -- and, on ext4 mounted
  with ``discard``, discarding -- the previous round's blocks, which cost 2-5x the write itself
  on the reference box.) The timing includes creating the file, building the records, the
  write(2) calls into the page cache and closing the file; not writeback to the disk.
Mpps = packets / median round time (pytest-benchmark's stats; extra_info carries the packet count).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

import vnfkit
from vnfkit import traffic
from vnfkit.io import PcapSink, PcapSource

FULL_PACKETS = 2_000_000
SMOKE_PACKETS = 200_000
CHUNK = 65_536


@pytest.fixture(scope="module")
def trace(request, tmp_path_factory):
    disabled = bool(request.config.getoption("benchmark_disable", False))
    n = SMOKE_PACKETS if disabled else FULL_PACKETS
    path = tmp_path_factory.mktemp("pcapbench") / "t64.pcap"
    stats = traffic.write_trace(str(path), n // 20, n, seed=8, frame_size=64, udp_fraction=0.3)
    assert stats["packets"] == n
    raw = path.read_bytes()  # also puts the file in the page cache
    return {"path": path, "packets": n, "bytes": stats["bytes"], "size": len(raw), "raw": raw,
            "sha": _packet_bytes_sha(raw)}


def _packet_bytes_sha(raw: bytes) -> str:
    """sha256 of every record's packet bytes back to back, by a plain Python walk of the classic
    pcap records (independent of the reader under test)."""
    h = hashlib.sha256()
    view = memoryview(raw)
    o = 24
    while o < len(raw):
        caplen = struct.unpack_from("<I", raw, o + 8)[0]
        h.update(view[o + 16:o + 16 + caplen])
        o += 16 + caplen
    assert o == len(raw)
    return h.hexdigest()


def _chunks_sha(batches) -> str:
    h = hashlib.sha256()
    for b in batches:
        h.update(b.data)
    return h.hexdigest()


def _rounds(trace, ours: bool) -> dict[str, int]:
    return {"rounds": 5 if ours else 1, "iterations": 1, "warmup_rounds": 1 if ours else 0}


def _mark(benchmark, trace) -> None:
    benchmark.extra_info["packets"] = trace["packets"]
    benchmark.extra_info["file_bytes"] = trace["size"]


@pytest.mark.benchmark(group="pcap-read")
def test_read_vnfkit_chunks(benchmark, trace):
    def run():
        n = total = 0
        for b in PcapSource(trace["path"], chunk=CHUNK):
            n += len(b)
            total += int(b.offsets[-1])
        return n, total

    _mark(benchmark, trace)
    assert benchmark.pedantic(run, **_rounds(trace, True)) == (trace["packets"], trace["bytes"])
    assert _chunks_sha(PcapSource(trace["path"], chunk=CHUNK)) == trace["sha"]  # untimed: the bytes too


@pytest.mark.benchmark(group="pcap-read")
def test_read_vnfkit_whole_file(benchmark, trace):
    _mark(benchmark, trace)
    b = benchmark.pedantic(lambda: vnfkit.PacketBatch.from_pcap(str(trace["path"])), **_rounds(trace, True))
    assert len(b) == trace["packets"] and int(b.offsets[-1]) == trace["bytes"]
    assert b.packet_id[-1] == trace["packets"] - 1
    assert hashlib.sha256(b.data).hexdigest() == trace["sha"]


@pytest.mark.benchmark(group="pcap-read")
def test_read_dpkt(benchmark, trace):
    dpkt = pytest.importorskip("dpkt")

    def run():
        n = total = 0
        with open(trace["path"], "rb") as fh:
            for _ts, buf in dpkt.pcap.Reader(fh):
                n += 1
                total += len(buf)
        return n, total

    _mark(benchmark, trace)
    assert benchmark.pedantic(run, **_rounds(trace, False)) == (trace["packets"], trace["bytes"])


@pytest.mark.benchmark(group="pcap-read")
@pytest.mark.skipif(shutil.which("capinfos") is None, reason="capinfos (Wireshark) not on PATH")
def test_read_capinfos(benchmark, trace):
    def run():
        r = subprocess.run(["capinfos", "-T", "-r", "-c", "-d", str(trace["path"])], capture_output=True,
                           text=True, check=True, timeout=600)
        _name, count, data = r.stdout.strip().split("\t")
        return int(count), int(data)

    _mark(benchmark, trace)
    assert benchmark.pedantic(run, **_rounds(trace, False)) == (trace["packets"], trace["bytes"])


@pytest.mark.benchmark(group="pcap-read")
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not on PATH")
def test_read_tshark(benchmark, trace):
    def run():
        r = subprocess.run(["tshark", "-n", "-r", str(trace["path"]), "-T", "fields", "-e", "frame.len"],
                           capture_output=True, text=True, check=True, timeout=1200)
        lens = np.array(r.stdout.split(), dtype=np.int64)
        return len(lens), int(lens.sum())

    _mark(benchmark, trace)
    assert benchmark.pedantic(run, **_rounds(trace, False)) == (trace["packets"], trace["bytes"])


class _NewFiles:
    """A new output path for every round: ``setup`` (untimed) deletes the previous round's file."""

    def __init__(self, directory, stem: str) -> None:
        self.directory, self.stem, self.rounds = directory, stem, 0
        self.path = directory / f"{stem}.pcap"

    def setup(self) -> None:
        self.path.unlink(missing_ok=True)
        self.rounds += 1
        self.path = self.directory / f"{self.stem}{self.rounds}.pcap"
        assert not self.path.exists()


@pytest.fixture(scope="module")
def chunks(trace):
    return list(PcapSource(trace["path"], chunk=CHUNK))


@pytest.mark.benchmark(group="pcap-write")
def test_write_vnfkit(benchmark, trace, chunks, tmp_path):
    out = _NewFiles(tmp_path, "w")

    def run():
        with PcapSink(out.path) as sink:
            for b in chunks:
                sink.write(b)
        return sink.packets_written

    _mark(benchmark, trace)
    assert benchmark.pedantic(run, setup=out.setup, **_rounds(trace, True)) == trace["packets"]
    assert out.rounds == (1 if benchmark.disabled else 6)  # (warm-up + 5 rounds) each into a new file
    assert out.path.read_bytes() == trace["raw"]  # byte for byte the file it was read from


@pytest.mark.benchmark(group="pcap-write")
def test_write_dpkt(benchmark, trace, chunks, tmp_path):
    dpkt = pytest.importorskip("dpkt")
    pkts = [(ts / 1e9, p) for b in chunks for ts, p in zip(b.ts_ns.tolist(), b.to_list())]
    out = _NewFiles(tmp_path, "d")

    def run():
        with open(out.path, "wb") as fh:
            w = dpkt.pcap.Writer(fh, snaplen=262144)
            for ts, p in pkts:
                w.writepkt(p, ts)
        return os.path.getsize(out.path)

    _mark(benchmark, trace)
    assert benchmark.pedantic(run, setup=out.setup, **_rounds(trace, False)) == trace["size"]
    back = vnfkit.PacketBatch.from_pcap(str(out.path))
    assert len(back) == trace["packets"] and back.data.tobytes() == b"".join(c.data.tobytes() for c in chunks)


@pytest.mark.benchmark(group="pcap-write")
@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (Wireshark) not on PATH")
def test_copy_editcap(benchmark, trace, tmp_path):
    out = _NewFiles(tmp_path, "e")

    def run():
        subprocess.run(["editcap", "-F", "pcap", str(trace["path"]), str(out.path)], check=True,
                       capture_output=True, timeout=600)
        return os.path.getsize(out.path)

    _mark(benchmark, trace)
    benchmark.pedantic(run, setup=out.setup, **_rounds(trace, False))
    back = vnfkit.PacketBatch.from_pcap(str(out.path))
    assert len(back) == trace["packets"] and int(back.offsets[-1]) == trace["bytes"]
