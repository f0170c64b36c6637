"""Parse throughput of 64-byte packets from Python, vs a pure-Python struct parser on a small sample."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from vnfkit import traffic

SIZES = [64, 512, 8192]
_HDR = struct.Struct("!12sH")


def _sample(n: int):
    # IPv4 TCP/UDP 64-byte frames, as in the study's workload.
    return traffic.generate(flows=max(1, n // 16), packets=n, seed=1, udp_fraction=0.3)


def py_parse(pkts: list[bytes]) -> list[tuple[bytes, bytes, int, int, int]]:
    """Baseline: the same fields (Ethernet, IPv4, TCP/UDP ports) with struct, packet by packet."""
    out = []
    for p in pkts:
        if len(p) < 34 or _HDR.unpack_from(p)[1] != 0x0800:
            out.append((b"", b"", 0, 0, 0))
            continue
        ihl = (p[14] & 15) * 4
        proto = p[23]
        sport = dport = 0
        if proto in (6, 17) and len(p) >= 14 + ihl + 4:
            sport, dport = struct.unpack_from("!HH", p, 14 + ihl)
        out.append((p[26:30], p[30:34], sport, dport, proto))
    return out


def _expected(b):
    k = b.key
    return k["sport"].copy(), k["dport"].copy(), k["proto"].copy()


@pytest.mark.benchmark(group="parse")
@pytest.mark.parametrize("n", SIZES)
def test_parse_64b(benchmark, n):
    b = _sample(n)
    sport, dport, proto = _expected(b)  # what the builder wrote
    b.key[:] = np.zeros(1, dtype=b.key.dtype)

    result = benchmark(b.parse)
    assert result == 0
    assert np.array_equal(b.key["sport"], sport) and np.array_equal(b.key["dport"], dport)
    assert np.array_equal(b.key["proto"], proto)
    assert np.all(b.l4_offset == 34)

    # Baseline in the same run: pure-Python struct parsing of a small sample.
    pkts = b.to_list()[:512]
    t0 = time.perf_counter()
    reps = 0
    while True:
        ref = py_parse(pkts)
        reps += 1
        if time.perf_counter() - t0 > 0.05:
            break
    base_pps = reps * len(pkts) / (time.perf_counter() - t0)
    assert [r[2] for r in ref] == sport[:512].tolist() and [r[3] for r in ref] == dport[:512].tolist()
    benchmark.extra_info["packets"] = n
    benchmark.extra_info["baseline_python_mpps"] = round(base_pps / 1e6, 3)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        mean = stats.stats.mean
        benchmark.extra_info["mpps"] = round(n / mean / 1e6, 2)
        benchmark.extra_info["speedup_vs_python"] = round(n / mean / base_pps, 1)
