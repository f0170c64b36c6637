"""PacketBatch column storage: numpy views keep their memory alive when the engine replaces it.

The WAN optimizer's encoder and decoder rebuild a batch's data buffer; a ``batch.data`` view taken
before used to point at freed memory (a segfault on use). Run in a subprocess so a crash is a test
failure, not a dead test runner.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from vnfkit import traffic

WANOPT_REPRO = textwrap.dedent("""
    import numpy as np
    import vnfkit as vk
    from vnfkit import traffic
    from vnfkit.nfs.wanopt import WanOptimizer, WanOptDecoder
    b = traffic.generate(flows=100, packets=200_000, seed=778, frame_size=128)
    b.parse()
    before = bytes(b.data[:4096])
    d = b.data
    o = b.offsets
    ctx = vk.Context(0, 1, vk.SharedState())
    nf = WanOptimizer()
    nf.setup(ctx)
    nf.process(b, ctx)
    # the old views still see the old bytes (kept alive), the batch has its new buffer
    assert bytes(d[:4096]) == before, "old view changed"
    total = int(d.sum()) + int(o.sum())
    dec = WanOptDecoder()
    dec.setup(vk.Context(0, 1, vk.SharedState()))
    d2 = b.data
    dec.process(b, ctx)
    total += int(d2.sum())
    print("ok", total)
""")


def test_wanopt_replacing_data_leaves_earlier_views_valid() -> None:
    r = subprocess.run([sys.executable, "-c", WANOPT_REPRO], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.startswith("ok ")


def test_views_share_memory_with_the_batch_while_it_is_not_reallocated() -> None:
    b = traffic.generate(flows=10, packets=100, seed=1)
    b.parse()
    port = b.port
    port[:] = 7
    assert (b.port == 7).all()  # a view, not a copy
    d = b.data
    d[0] ^= 0xFF
    assert b.data[0] == d[0]


def test_view_outlives_its_batch() -> None:
    b = traffic.generate(flows=10, packets=1000, seed=2)
    ts = b.ts_ns
    expect = ts.copy()
    del b
    big = [np.ones(1 << 16, dtype=np.uint8) for _ in range(20)]  # reuse freed memory if it was freed
    assert (ts == expect).all()
    del big
