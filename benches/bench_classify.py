"""Software RSS benchmarks.

(a) Toeplitz hash alone over a batch of IPv4 5-tuples held in numpy arrays (M hashes/s; the
    AVX-512 + GFNI kernel when the CPU has it, and the portable per-byte table path), with two
    baselines measured in the same run: a pure-Python/numpy bit-by-bit reference (on a small
    sample) and a bit-serial C++ implementation in the style of DPDK's rte_softrss.
(b) classify (RSS hash + flow id + RETA + per-queue split) of batches of 64..8192 packets whose
    keys are pre-filled, in Mpps. Once the parser lands, the full "parse + RSS + queue split"
    benchmark is a one-line change: build the batch from real frames and call `batch.parse()` at
    the marked line inside `run()`.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from vnfkit import _core
from vnfkit.classify import MICROSOFT_RSS_KEY, MultiQueueClassifier, Toeplitz

N_HASH = 1 << 16


def _tuples(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 1 << 32, n, dtype=np.uint32), rng.integers(0, 1 << 32, n, dtype=np.uint32),
            rng.integers(0, 1 << 16, n, dtype=np.uint16), rng.integers(0, 1 << 16, n, dtype=np.uint16))


def _numpy_reference(src, dst, sport, dport, key: bytes = MICROSOFT_RSS_KEY):
    """Bit-by-bit Toeplitz in numpy: for each of the 96 input bits, XOR its key window where set."""
    k = int.from_bytes(key, "big")
    klen = len(key) * 8
    fields = [(src.astype(np.uint64), 32), (dst.astype(np.uint64), 32),
              (sport.astype(np.uint64), 16), (dport.astype(np.uint64), 16)]
    h = np.zeros(len(src), np.uint32)
    bit = 0
    for val, width in fields:
        for b in range(width - 1, -1, -1):
            window = np.uint32((k >> (klen - 32 - bit)) & 0xFFFFFFFF)
            h ^= np.where((val >> np.uint64(b)) & np.uint64(1), window, np.uint32(0))
            bit += 1
    return h


def _rate(fn, n: int, min_time: float = 0.05) -> float:
    """Items per second of fn() (each call does n items), best of a few short repeats."""
    best = float("inf")
    for _ in range(5):
        reps, t0 = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            dt = time.perf_counter() - t0
            if dt >= min_time / 5:
                break
        best = min(best, dt / reps)
    return n / best


@pytest.mark.benchmark(group="classify-toeplitz")
def test_toeplitz_hash_v4_batch(benchmark):
    src, dst, sp, dp = _tuples(N_HASH)
    t = Toeplitz()
    out = benchmark(t.hash_v4, src, dst, sp, dp)
    # Correctness: the table-driven hash equals the bit-by-bit numpy reference and the bit-serial C++.
    sample = slice(0, 2048)
    ref = _numpy_reference(src[sample], dst[sample], sp[sample], dp[sample])
    assert np.array_equal(out[sample], ref)
    serial = _core._toeplitz_hash_v4_bitserial(src, dst, sp, dp)
    assert np.array_equal(out, serial)
    t_table = Toeplitz(simd=False)
    assert np.array_equal(out, t_table.hash_v4(src, dst, sp, dp))
    # Baselines, same run.
    fast_rate = _rate(lambda: t.hash_v4(src, dst, sp, dp), N_HASH)
    table_rate = _rate(lambda: t_table.hash_v4(src, dst, sp, dp), N_HASH)
    serial_rate = _rate(lambda: _core._toeplitz_hash_v4_bitserial(src, dst, sp, dp), N_HASH)
    ns = 2048
    numpy_rate = _rate(lambda: _numpy_reference(src[:ns], dst[:ns], sp[:ns], dp[:ns]), ns)
    benchmark.extra_info.update({
        "ops": N_HASH,
        "simd": t.simd,
        "Mhash_per_s": round(fast_rate / 1e6, 1),
        "table_Mhash_per_s": round(table_rate / 1e6, 1),
        "bitserial_cpp_Mhash_per_s": round(serial_rate / 1e6, 1),
        "numpy_bitwise_Mhash_per_s": round(numpy_rate / 1e6, 3),
    })
    print(f"\ntoeplitz v4: default (simd={t.simd}) {fast_rate / 1e6:.1f} M/s, table {table_rate / 1e6:.1f} M/s, bit-serial C++ {serial_rate / 1e6:.1f} M/s, "
          f"numpy bitwise {numpy_rate / 1e6:.3f} M/s")


@pytest.mark.benchmark(group="classify-toeplitz")
def test_toeplitz_hash_v4_table_path(benchmark):
    src, dst, sp, dp = _tuples(N_HASH, 2)
    t = Toeplitz(simd=False)
    out = benchmark(t.hash_v4, src, dst, sp, dp)
    assert np.array_equal(out[:512], _numpy_reference(src[:512], dst[:512], sp[:512], dp[:512]))
    benchmark.extra_info["ops"] = N_HASH


@pytest.mark.benchmark(group="classify-toeplitz")
def test_toeplitz_hash_v4_bitserial_baseline(benchmark):
    src, dst, sp, dp = _tuples(N_HASH, 1)
    out = benchmark(_core._toeplitz_hash_v4_bitserial, src, dst, sp, dp)
    assert np.array_equal(out[:512], _numpy_reference(src[:512], dst[:512], sp[:512], dp[:512]))
    benchmark.extra_info["ops"] = N_HASH


def _prefilled_batch(n: int, seed: int = 0) -> _core.PacketBatch:
    src, dst, sp, dp = _tuples(n, seed)
    b = _core.PacketBatch([b"\0" * 64] * n)
    k = b.key
    k["src"][:, :4] = src.byteswap().view(np.uint8).reshape(n, 4)  # network order
    k["dst"][:, :4] = dst.byteswap().view(np.uint8).reshape(n, 4)
    k["sport"] = sp
    k["dport"] = dp
    k["proto"] = np.where(np.arange(n) % 4 == 0, 17, 6).astype(np.uint8)
    k["family"] = 4
    return b


@pytest.mark.benchmark(group="classify-split")
@pytest.mark.parametrize("n", [64, 512, 8192])
def test_classify_batch(benchmark, n):
    queues = 8
    c = MultiQueueClassifier(queues)
    b = _prefilled_batch(n)

    def run():
        # b.parse()   # <- the full "parse + RSS + queue split" benchmark: add this one line
        return c.classify(b)

    lists = benchmark(run)
    # Correctness: the lists partition the batch, agree with the RETA and with the reference hash.
    assert len(lists) == queues
    assert sorted(np.concatenate(lists).tolist()) == list(range(n))
    for q, idx in enumerate(lists):
        assert np.all(b.queue[idx] == q)
    assert np.array_equal(b.queue, c.reta.table[b.hash & (c.reta.size - 1)])
    k = b.key
    src = k["src"][:, :4].copy().view(">u4").ravel().astype(np.uint32)
    dst = k["dst"][:, :4].copy().view(">u4").ravel().astype(np.uint32)
    m = min(n, 512)
    assert np.array_equal(b.hash[:m], _numpy_reference(src[:m], dst[:m], k["sport"][:m], k["dport"][:m]))
    # Baseline, same run: the numpy bitwise hash + argsort split of the same batch (on <= 512 packets).
    sub = slice(0, m)

    def numpy_classify():
        h = _numpy_reference(src[sub], dst[sub], k["sport"][sub], k["dport"][sub])
        qs = c.reta.table[h & (c.reta.size - 1)]
        order = np.argsort(qs, kind="stable")
        return np.split(order, np.cumsum(np.bincount(qs, minlength=queues))[:-1])

    ref_lists = numpy_classify()
    assert all(np.array_equal(a[a < m], r) for a, r in zip(lists, ref_lists))
    engine_rate = _rate(run, n)
    numpy_rate = _rate(numpy_classify, m)
    benchmark.extra_info.update({"packets": n, "engine_Mpps": round(engine_rate / 1e6, 2),
                                 "numpy_baseline_Mpps": round(numpy_rate / 1e6, 4)})
    print(f"\nclassify n={n}: engine {engine_rate / 1e6:.2f} Mpps, numpy baseline {numpy_rate / 1e6:.4f} Mpps")


@pytest.mark.benchmark(group="classify-parse-rss-split")
@pytest.mark.parametrize("n", [64, 256, 1024, 4096, 8192])
def test_parse_rss_split_64b(benchmark, n):
    """The issue's headline figure: real 64-byte frames -> parse -> Toeplitz RSS -> per-queue split.

    Baseline, same run: the same three steps in pure Python (struct parse, bit-by-bit numpy hash,
    argsort split) on up to 512 of the same packets.
    """
    import struct

    from vnfkit import traffic

    queues = 2
    c = MultiQueueClassifier(queues)
    b = traffic.generate(flows=max(1, n // 16), packets=n, seed=3, udp_fraction=0.3)

    def run():
        b.parse()
        return c.classify(b)

    lists = benchmark(run)
    assert int(np.count_nonzero(b.drop)) == 0
    assert sorted(np.concatenate(lists).tolist()) == list(range(n))
    assert np.array_equal(b.queue, c.reta.table[b.hash & (c.reta.size - 1)])

    m = min(n, 512)
    pkts = b.to_list()[:m]

    def python_pipeline():
        src = np.empty(m, np.uint32)
        dst = np.empty(m, np.uint32)
        sp = np.zeros(m, np.uint16)
        dp = np.zeros(m, np.uint16)
        for i, p in enumerate(pkts):
            ihl = (p[14] & 15) * 4
            src[i], dst[i] = struct.unpack_from("!II", p, 26)
            sp[i], dp[i] = struct.unpack_from("!HH", p, 14 + ihl)
        h = _numpy_reference(src, dst, sp, dp)
        qs = c.reta.table[h & (c.reta.size - 1)]
        order = np.argsort(qs, kind="stable")
        return h, np.split(order, np.cumsum(np.bincount(qs, minlength=queues))[:-1])

    h_ref, ref_lists = python_pipeline()
    assert np.array_equal(b.hash[:m], h_ref)
    assert all(np.array_equal(a[a < m], r) for a, r in zip(lists, ref_lists))
    engine_rate = _rate(run, n)
    python_rate = _rate(python_pipeline, m)
    benchmark.extra_info.update({"packets": n, "engine_Mpps": round(engine_rate / 1e6, 2),
                                 "python_baseline_Mpps": round(python_rate / 1e6, 4),
                                 "speedup": round(engine_rate / python_rate, 1)})
    print(f"\nparse+rss+split n={n}: engine {engine_rate / 1e6:.2f} Mpps, "
          f"pure-Python baseline {python_rate / 1e6:.4f} Mpps ({engine_rate / python_rate:.0f}x)")
