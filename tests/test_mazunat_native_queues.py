"""MazuNAT with several queues: new TCP/UDP mappings made inside the native fast path (per-queue
shares, affinity sub-pools) decide exactly as the Python ``_new_mappings`` path.

Each queue's worker gets the packets the classifier gives it, batch by batch, plus the replies of a
remote responder to what it translated; both runs (native new flows on, and forced off) must give
the same output bytes, drop reasons, output ports, logged determinants and counters per batch.
Small port ranges force affinity rounds past the preferred sub-pool and pool exhaustion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vnfkit import _core, traffic
from vnfkit.classify import MultiQueueClassifier
from vnfkit.nfs.mazunat import EXTERNAL, MazuNAT
from vnfkit.runtime import iter_batches
from vnfkit.state import SharedState
from vnfkit.vnf import Context

from test_nat_affinity import responder


class PythonNewFlows(MazuNAT):
    native_new_flows = False


def run(cls: type[MazuNAT], queues: int, affinity: bool, ports: int, max_flows: int) -> dict[str, Any]:
    trace = traffic.generate(1200, 8000, seed=7, udp_fraction=0.3)
    cl = MultiQueueClassifier(queues)
    shared = SharedState()
    ctxs = [Context(q, queues, shared=shared, classifier=cl) for q in range(queues)]
    nats = []
    for ctx in ctxs:
        n = cls()
        n.setup(ctx, affinity=affinity, port_lo=20000, port_hi=20000 + ports - 1, max_flows=max_flows)
        nats.append(n)
    seen: list[tuple[int, list[bytes], bytes, bytes, bytes]] = []

    def step(b: _core.PacketBatch) -> None:
        for q, idx in enumerate(cl.classify(b)):
            if len(idx) == 0:
                continue
            sb = b.select(np.ascontiguousarray(idx, np.uint32))
            nats[q].process(sb, ctxs[q])
            seen.append((q, sb.to_list(), sb.drop.tobytes(), sb.port.tobytes(), ctxs[q].state.drain_chunk()))
            rep = responder(sb)
            if rep is not None:
                step(rep)

    for b in iter_batches(trace, 256):
        step(b)
    return {"seen": seen, "stats": [n.stats() for n in nats],
            "native": [n._native_pools is not None for n in nats]}


@pytest.mark.parametrize("queues", [2, 4])
@pytest.mark.parametrize("affinity", [True, False])
@pytest.mark.parametrize("ports,max_flows", [(4096, 4096), (512, 4096), (4096, 200)])
def test_native_new_flows_match_python(queues: int, affinity: bool, ports: int, max_flows: int) -> None:
    nat = run(MazuNAT, queues, affinity, ports, max_flows)
    py = run(PythonNewFlows, queues, affinity, ports, max_flows)
    assert all(nat["native"]) and not any(py["native"])  # the two runs really took different paths
    assert len(nat["seen"]) == len(py["seen"])
    for a, b in zip(nat["seen"], py["seen"]):
        assert a[0] == b[0]
        assert a[1] == b[1], "output bytes differ"
        assert a[2] == b[2], "drop reasons differ"
        assert a[3] == b[3], "output ports differ"
        assert a[4] == b[4], "logged determinants differ"
    assert nat["stats"] == py["stats"]
    total = {k: sum(s[k] for s in nat["stats"]) for k in nat["stats"][0]}
    assert total["new_mappings"] > 0 and total["reverse_translations"] > 0
    assert any(len(s[4]) for s in nat["seen"])  # allocations were logged
    if ports == 512:
        assert total["drop_pool_exhausted"] > 0
    if max_flows == 200:
        assert total["drop_table_full"] > 0
    translated = sum(np.count_nonzero(np.frombuffer(s[3], np.uint16) == EXTERNAL) for s in nat["seen"])
    assert translated > 0
