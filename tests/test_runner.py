"""The multi-queue Runner: per-queue order, totals, drops by reason, latency, failures, close()."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vnfkit import _core, traffic
from vnfkit.classify import MultiQueueClassifier
from vnfkit.runtime import Runner, WorkerError, iter_batches
from vnfkit.vnf import VNF, Context, ControlState

POLICY = int(_core.DropReason.POLICY)


class TcpOnly(VNF):
    """Forwards TCP to port 1, drops UDP (POLICY), drops anything else (OTHER). Records its thread."""

    name = "tcp-only"

    def setup(self, ctx: Context, **config: object) -> None:
        self.fail_on = config.pop("fail_on", None)
        super().setup(ctx, **config)
        self.seen = 0
        self.threads: set[int] = set()

    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        self.threads.add(threading.get_ident())
        if self.fail_on is not None and np.any(batch.packet_id == self.fail_on):
            raise ZeroDivisionError(f"boom at {self.fail_on}")
        proto = batch.key["proto"]
        ok = batch.drop == 0
        tcp = ok & (proto == 6)
        udp = ok & (proto == 17)
        batch.port[:] = np.where(tcp, 1, 0)
        batch.drop[udp] = POLICY
        batch.drop[ok & ~tcp & ~udp] = int(_core.DropReason.OTHER)
        self.seen += len(batch)

    def stats(self) -> dict[str, int]:
        return {"seen": self.seen}


def _trace(n: int = 4000, flows: int = 300) -> _core.PacketBatch:
    return traffic.generate(flows, n, seed=7, udp_fraction=0.3)


@pytest.mark.parametrize("queues", [1, 2, 4])
def test_order_totals_drops_latency(queues: int) -> None:
    trace = _trace()
    trace.parse()
    proto = trace.key["proto"].copy()
    ref_q = MultiQueueClassifier(queues)
    ref_parts = ref_q.classify(trace)
    expected_ids = {q: trace.packet_id[idx].tolist() for q, idx in enumerate(ref_parts)}

    got: dict[int, list[int]] = {q: [] for q in range(queues)}
    ports: dict[int, int] = {}

    def on_output(q: int, b: _core.PacketBatch) -> None:
        assert np.all(b.queue == q)
        got[q].extend(b.packet_id.tolist())
        ports.update(zip(b.packet_id.tolist(), b.port.tolist()))

    with Runner(TcpOnly, queues=queues, depth=2) as r:
        res = r.run(iter_batches(trace, 256), on_output=on_output)
        threads = set().union(*(v.threads for v in r.vnfs))  # type: ignore[attr-defined]
        for v in r.vnfs:
            assert len(v.threads) <= 1  # type: ignore[attr-defined]
    # each queue saw exactly its RSS share, in arrival order
    for q in range(queues):
        assert got[q] == expected_ids[q]
        assert got[q] == sorted(got[q])
    n_tcp = int((proto == 6).sum())
    n_udp = int((proto == 17).sum())
    assert res.packets == len(trace) == n_tcp + n_udp
    assert res.forwarded == n_tcp
    assert res.dropped == n_udp
    assert res.drops == {"policy": n_udp}
    assert res.vnf_stats == {"seen": len(trace)}
    assert sum(q.packets for q in res.queues) == len(trace)
    assert [q.packets for q in res.queues] == [len(expected_ids[q]) for q in range(queues)]
    assert all(ports[int(i)] == (1 if p == 6 else 0) for i, p in zip(trace.packet_id, proto))
    # one distinct thread per queue, none of them the caller
    busy = [v for v in r.vnfs if v.threads]  # type: ignore[attr-defined]
    assert len(threads) == len(busy)
    assert threading.get_ident() not in threads
    # latency: one sample per packet, sane percentiles
    assert res.latency.total == len(trace)
    assert 0 < res.p50_us <= res.p99_us
    s = res.summary()
    assert s["packets"] == len(trace) and s["drops"] == {"policy": n_udp}
    assert all(not w.is_alive() for w in r.threads)


def test_failing_vnf_raises_and_stops_threads() -> None:
    trace = _trace(3000)
    trace.parse()
    bad = int(trace.packet_id[1700])
    r = Runner(TcpOnly, queues=2, config={"fail_on": bad}, depth=1)
    with pytest.raises(WorkerError, match="boom") as ei:
        r.run(iter_batches(trace, 64))
    assert isinstance(ei.value.__cause__, ZeroDivisionError)
    for w in r.threads:
        w.join(timeout=5)
        assert not w.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        r.run([trace])


def test_close_stops_idle_threads_and_is_idempotent() -> None:
    r = Runner(TcpOnly, queues=4)
    trace = _trace(500, 50)
    r.run([trace])
    assert all(w.is_alive() for w in r.threads)
    r.close()
    r.close()
    assert not any(w.is_alive() for w in r.threads)


def test_unspecified_drop_reason_and_contexts() -> None:
    class DropAll(VNF):
        def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
            batch.port[:] = 0

    with Runner(DropAll, queues=2) as r:
        res = r.run([_trace(400, 40)])
        assert res.drops == {"unspecified": 400}
        assert [c.queue for c in r.contexts] == [0, 1]
        assert r.contexts[0].control is r.contexts[1].control is r.control
        assert r.contexts[0].state.thread == 0 and r.contexts[1].state.thread == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Runner(TcpOnly, queues=0)
    with pytest.raises(ValueError):
        Runner(TcpOnly, queues=2, classifier=MultiQueueClassifier(3))
    with pytest.raises(ValueError):
        Runner(TcpOnly, depth=0)
    with pytest.raises(TypeError, match="no configuration"):
        Runner(TcpOnly, config={"nope": 1})
    with pytest.raises(ValueError):
        list(iter_batches(_trace(10, 2), 0))


def test_control_state_publish() -> None:
    c = ControlState()
    assert c.setdefault("r", (1,)) == (1,)
    assert c.setdefault("r", (2,)) == (1,)
    assert c.publish("r", (3,)) == 2
    assert c.get("r") == (3,) and "r" in c and c.version("r") == 2
    with pytest.raises(KeyError):
        c.get("missing")


def test_each_run_reports_its_own_stats() -> None:
    trace = _trace(1000, 80)
    with Runner(TcpOnly, queues=2) as r:
        a = r.run(iter_batches(trace, 100))
        b = r.run(iter_batches(trace, 100))
    assert a.packets == b.packets == len(trace)
    assert a.latency.total == b.latency.total == len(trace)
    assert b.vnf_stats["seen"] == 2 * len(trace)  # the VNF's own counters are cumulative
