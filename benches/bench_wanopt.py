"""WAN optimizer (redundancy elimination) throughput: encoder and decoder, Mpps and Gbps.

Traffic: IPv4/UDP frames of 64, 256, 1500 bytes and an IMIX-like mix. Redundancy level: half of the
payloads are slices (random offset) of a 64 KiB corpus that repeats over the stream, the other half
are fresh random bytes, i.e. about 50 % of payload bytes are redundant. Every benchmark checks the
round trip (decoded frames == original frames, bit for bit) and records the compression ratio.
Baseline in the same run: a pure-Python encoder/decoder with the same algorithm (Buzhash anchors,
fingerprint dict, ring cache, shims) on a small sample.
"""

from __future__ import annotations

import random
import struct
import time

import numpy as np
import pytest

from vnfkit import _core, _wanopt
from vnfkit.nfs.wanopt import DecoderCache, EncoderCache

BATCH = 512
BATCHES = 8
SIZES = {"64B": [64], "256B": [256], "1500B": [1500], "imix": [64] * 7 + [576] * 4 + [1500]}
CORPUS = random.Random(99).randbytes(1 << 16)


def _frames(sizes: list[int], n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.choice(sizes)
        plen = size - 42
        if rng.random() < 0.5:
            off = rng.randrange(len(CORPUS) - plen)
            payload = CORPUS[off:off + plen]
        else:
            payload = rng.randbytes(plen)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + plen, i & 0xFFFF, 0x4000, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 1, 2]))
        words = struct.unpack("!10H", ip)
        csum = sum(words)
        csum = (csum & 0xFFFF) + (csum >> 16)
        csum = (csum & 0xFFFF) + (csum >> 16)
        ip = ip[:10] + struct.pack("!H", ~csum & 0xFFFF) + ip[12:]
        udp = struct.pack("!HHHH", 1024 + i % 64, 80, 8 + plen, 0)
        seg = bytes([10, 0, 0, 1, 10, 0, 1, 2, 0, 17]) + struct.pack("!H", 8 + plen) + udp + payload
        csum = int(np.frombuffer(seg + b"\0" * (len(seg) & 1), ">u2").sum(dtype=np.uint64))
        while csum >> 16:
            csum = (csum & 0xFFFF) + (csum >> 16)
        udp = udp[:6] + struct.pack("!H", (~csum & 0xFFFF) or 0xFFFF)
        out.append(b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + udp + payload)
    return out


def _batch(frames: list[bytes]) -> _core.PacketBatch:
    """A batch with the parser's columns filled for IPv4/UDP without options."""
    b = _core.PacketBatch(frames)
    lens = np.diff(b.offsets)
    b.l3_offset[:] = 14
    b.l4_offset[:] = 34
    b.l4_len[:] = (lens - 34).astype(np.uint16)
    b.key["proto"][:] = 17
    b.key["family"][:] = 4
    b.flags[:] = 4
    return b


def _packets(b: _core.PacketBatch) -> list[bytes]:
    return [b.packet(i) for i in range(len(b))]


# ---- pure-Python baseline: the same algorithm, one payload at a time -----------------------------

class PyRE:
    def __init__(self, cache_size: int = 1 << 20, window: int = 32, anchor_bits: int = 4, min_match: int = 32):
        self.size, self.w, self.mask, self.min_match = cache_size, window, (1 << anchor_bits) - 1, min_match
        self.ring = bytearray(cache_size)
        self.pos = 0
        self.table: dict[int, int] = {}
        m = (1 << 64) - 1
        x, self.T = 0x57414E4F50543031, []
        for _ in range(256):
            x = (x + 0x9E3779B97F4A7C15) & m
            z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
            self.T.append(z ^ (z >> 31))

    def _rotl(self, v: int, r: int) -> int:
        r &= 63
        return ((v << r) | (v >> (64 - r))) & 0xFFFFFFFFFFFFFFFF if r else v

    def _get(self, p: int, n: int) -> bytes:
        o = p % self.size
        return bytes(self.ring[o:o + n]) if o + n <= self.size else bytes(self.ring[o:] + self.ring[:o + n - self.size])

    def _put(self, p: int, data: bytes) -> None:
        for k, byte in enumerate(data):
            self.ring[(p + k) % self.size] = byte

    def encode(self, p: bytes) -> list:
        w, anchors, h = self.w, [], 0
        if len(p) >= w:
            for j in range(w):
                h = self._rotl(h, 1) ^ self.T[p[j]]
            for j in range(len(p) - w + 1):
                if j:
                    h = self._rotl(h, 1) ^ self._rotl(self.T[p[j - 1]], w) ^ self.T[p[j + w - 1]]
                if h & self.mask == 0:
                    anchors.append((j, h))
        base, out, covered = self.pos, [], 0
        for j, h in anchors:
            c = self.table.get(h)
            if j < covered or c is None or c < base - self.size or self._get(c, w) != p[j:j + w]:
                continue
            k = 0
            while j - k > covered and c - k > max(0, base - self.size) and self._get(c - k - 1, 1)[0] == p[j - k - 1]:
                k += 1
            r = w
            while j + r < len(p) and c + r < base and self._get(c + r, 1)[0] == p[j + r]:
                r += 1
            if k + r >= self.min_match:
                if j - k > covered:
                    out.append(p[covered:j - k])
                out.append((c - k, k + r))
                covered = j + r
        if covered < len(p):
            out.append(p[covered:])
        self._put(base, p)
        self.pos += len(p)
        for j, h in anchors:
            self.table[h] = base + j
        return out

    def decode(self, records: list) -> bytes:
        out = b"".join(r if isinstance(r, bytes) else self._get(*r) for r in records)
        self._put(self.pos, out)
        self.pos += len(out)
        return out


def _py_rate(frames: list[bytes]) -> tuple[float, float]:
    enc, dec = PyRE(), PyRE()
    payloads = [f[42:] for f in frames]
    t0 = time.perf_counter()
    encoded = [enc.encode(p) for p in payloads]
    t1 = time.perf_counter()
    decoded = [dec.decode(r) for r in encoded]
    t2 = time.perf_counter()
    assert decoded == payloads
    return len(frames) / (t1 - t0), len(frames) / (t2 - t1)


# ---- benchmarks -----------------------------------------------------------------------------------

def _stream(name: str) -> list[list[bytes]]:
    return [_frames(SIZES[name], BATCH, seed=1000 * k + len(name)) for k in range(BATCHES)]


def _encode_all(stream: list[list[bytes]]) -> tuple[list[list[bytes]], dict[str, int]]:
    enc = EncoderCache(1 << 22)
    st = _wanopt.Stats(_wanopt.ENCODER_STATS)
    out = []
    for frames in stream:
        b = _batch(frames)
        _wanopt.encode_batch(enc, b, 1, st)
        out.append(_packets(b))
    return out, st.as_dict()


def _decode_all(encoded: list[list[bytes]]) -> tuple[list[list[bytes]], dict[str, int]]:
    dec = DecoderCache(1 << 22)
    st = _wanopt.Stats(_wanopt.DECODER_STATS)
    out = []
    for frames in encoded:
        b = _batch(frames)
        _wanopt.decode_batch(dec, b, 1, st)
        assert np.all(b.port == 1)
        out.append(_packets(b))
    return out, st.as_dict()


def _record(benchmark, stream, label: str, py_sample: bool) -> None:
    n = sum(len(s) for s in stream)
    nbytes = sum(len(f) for s in stream for f in s)
    benchmark.extra_info["packets"] = n
    benchmark.extra_info["traffic"] = label
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    if stats is not None and stats.min > 0:
        benchmark.extra_info["mpps"] = round(n / stats.min / 1e6, 3)
        benchmark.extra_info["gbps"] = round(nbytes * 8 / stats.min / 1e9, 3)


@pytest.mark.benchmark(group="wanopt-encode")
@pytest.mark.parametrize("traffic", list(SIZES))
def test_encode(benchmark, traffic):
    stream = _stream(traffic)
    batches: list[_core.PacketBatch] = []
    enc_holder: list = []

    def setup():
        enc_holder[:] = [EncoderCache(1 << 22)]
        batches[:] = [_batch(f) for f in stream]
        return (), {}

    def run():
        enc = enc_holder[0]
        st = _wanopt.Stats(_wanopt.ENCODER_STATS)
        for b in batches:
            _wanopt.encode_batch(enc, b, 1, st)
        return st.as_dict()

    s = benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    encoded = [_packets(b) for b in batches]
    decoded, _ = _decode_all(encoded)
    assert decoded == stream  # bit-identical round trip
    ratio = s["bytes_out"] / s["bytes_in"]
    if traffic != "64B":
        assert ratio < 0.75  # ~50 % redundant payload bytes
    benchmark.extra_info["payload_ratio"] = round(ratio, 3)
    py_enc, _ = _py_rate(stream[0][:64])
    benchmark.extra_info["python_baseline_kpps"] = round(py_enc / 1e3, 2)
    _record(benchmark, stream, traffic, True)


@pytest.mark.benchmark(group="wanopt-decode")
@pytest.mark.parametrize("traffic", list(SIZES))
def test_decode(benchmark, traffic):
    stream = _stream(traffic)
    encoded, est = _encode_all(stream)
    batches: list[_core.PacketBatch] = []
    dec_holder: list = []

    def setup():
        dec_holder[:] = [DecoderCache(1 << 22)]
        batches[:] = [_batch(f) for f in encoded]
        return (), {}

    def run():
        dec = dec_holder[0]
        st = _wanopt.Stats(_wanopt.DECODER_STATS)
        for b in batches:
            _wanopt.decode_batch(dec, b, 1, st)
        return st.as_dict()

    s = benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    assert s["packets_decoded"] + s["packets_passthrough"] == BATCH * BATCHES
    assert sum(v for k, v in s.items() if k.startswith("fail_")) == 0
    assert [_packets(b) for b in batches] == stream
    benchmark.extra_info["payload_ratio"] = round(est["bytes_out"] / est["bytes_in"], 3)
    _, py_dec = _py_rate(stream[0][:64])
    benchmark.extra_info["python_baseline_kpps"] = round(py_dec / 1e3, 2)
    _record(benchmark, stream, traffic, True)
