"""pytest plugin: benchmark your own VNF the way vnfkit benchmarks its own.

Installed with vnfkit and registered under the ``pytest11`` entry point, so any test suite that has
pytest-benchmark gets the :func:`vnf_benchmark` fixture with no import::

    import numpy as np
    import vnfkit as vk

    class TcpOnly(vk.VNF):
        def process(self, batch, ctx):
            tcp = batch.key["proto"] == 6
            batch.port[:] = np.where(tcp, 1, 0)
            batch.drop[~tcp] = int(vk.DropReason.POLICY)

    def test_tcp_only(vnf_benchmark):
        res = vnf_benchmark(TcpOnly, flows=10_000, packets=200_000, batch=1024)
        assert res.forwarded > 0

What a run does: one trace of generated traffic (Poisson flow arrivals, heavy-tailed flow sizes,
packet time advancing, see :mod:`vnfkit.traffic`) is cut into ``rounds`` consecutive slices, so
every timed round sees new flows arrive and old ones end; each slice runs through one
:class:`~vnfkit.Runner` (parse, RSS, the queues' workers, in-order release) under
pytest-benchmark's timer. With ``replies=True`` a simulated remote host answers every packet the
VNF sends to its external port (what a NAT needs for its reply path); the replies are part of the
timed work. The timing includes parse, classification, the workers and release; generating the
traffic is outside it.

Recorded in ``benchmark.extra_info`` (so it lands in ``--benchmark-json``): ``mpps`` (packets of
one round over that round's median time), ``p50_us``/``p99_us`` (arrival at the runner to release),
``packets``, ``forwarded``, ``dropped``, ``drops`` (by reason), and the run's parameters.

Checked after every run, and the test fails otherwise: every packet that entered came out, and each
was either forwarded or dropped *with a reason* (a packet on port 0 whose drop reason is unset
counts as lost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

__all__ = ["VNFBenchResult", "LostPacketsError", "vnf_benchmark", "run_vnf_benchmark"]


class LostPacketsError(AssertionError):
    """A benchmarked VNF lost packets: some did not come out, or were dropped without a reason."""


@dataclass
class VNFBenchResult:
    """What :func:`run_vnf_benchmark` measured (all timed rounds together)."""

    packets: int
    forwarded: int
    dropped: int
    drops: dict[str, int]
    mpps: float
    p50_us: float
    p99_us: float
    rounds: int


def _check_int(value: Any, field: str, lo: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{field}: expected an int, got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{field}: must be >= {lo}, got {value}")
    return value


def run_vnf_benchmark(
    benchmark: Any,
    vnf: Any,
    *,
    config: dict[str, Any] | None = None,
    flows: int = 10_000,
    packets: int = 200_000,
    batch: int = 1024,
    queues: int = 1,
    backend: str | None = None,
    frame_size: int = 64,
    rate_pps: float = 1.49e6,
    udp_fraction: float = 0.2,
    replies: bool | Callable[[Any], Any] = False,
    rounds: int = 5,
    seed: int = 0,
) -> VNFBenchResult:
    """Time `vnf` (a VNF class) on generated traffic with pytest-benchmark's `benchmark` fixture.

    Args:
        vnf: the VNF class; one instance per queue, ``setup(ctx, **config)``.
        flows / packets: flows and packets per timed round (each round is the next slice of one
            trace, so new flows keep arriving).
        batch: packets per input batch handed to the runner.
        queues: receive queues (workers).
        backend: the runner backend (``"process"`` or ``"thread"``; None = the runner's default).
        frame_size: bytes per generated frame (64 = minimum Ethernet).
        rate_pps: packet time advances at this rate (expiry runs on packet time).
        replies: True for the simulated remote host answering packets sent to the external side
            (NATs), or a callable ``out_batch -> reply batch | None``.
        rounds: timed rounds (the median round gives ``mpps``).
    """
    import numpy as np

    from . import traffic
    from .runtime import Runner, RunResult

    _check_int(flows, "flows", 1)
    _check_int(packets, "packets", 1)
    _check_int(batch, "batch", 1)
    _check_int(queues, "queues", 1)
    _check_int(frame_size, "frame_size", 60)
    _check_int(rounds, "rounds", 1)
    if packets < flows:
        raise ValueError(f"packets: must be >= flows ({flows}), got {packets}")
    if not callable(getattr(vnf, "process", None)):
        raise TypeError(f"vnf: expected a vnfkit.VNF class, got {vnf!r}")
    reply_fn: Callable[..., Any] | None
    if replies is True:
        from .nfs.mazunat import replies_to as reply_fn
    elif replies is False:
        reply_fn = None
    elif callable(replies):
        reply_fn = replies
    else:
        raise TypeError(f"replies: expected a bool or a callable, got {type(replies).__name__}")

    # One trace for every round, cut into slices: rounds see flows arrive, live on and end.
    trace = traffic.generate(flows * rounds, packets * rounds, seed, rate_pps=rate_pps,
                             udp_fraction=udp_fraction, frame_size=frame_size)
    bounds = np.linspace(0, len(trace), rounds + 1).astype(np.int64)
    slices = [trace.select(np.arange(bounds[r], bounds[r + 1], dtype=np.uint32)) for r in range(rounds)]

    kwargs: dict[str, Any] = {"queues": queues, "config": config or {}}
    if backend is not None:
        kwargs["backend"] = backend
    runner = Runner(vnf, **kwargs)
    results: list[RunResult] = []
    fed = [0]
    state = {"round": 0}

    def one_round() -> None:
        part = slices[state["round"] % rounds]
        state["round"] += 1
        pending: list[Any] = []

        def on_output(_q: int, out: Any) -> None:
            if reply_fn is not None:
                rep = reply_fn(out)
                if rep is not None:
                    pending.append(rep)

        def feed() -> Any:
            for start in range(0, len(part), batch):
                chunk = part.select(np.arange(start, min(start + batch, len(part)), dtype=np.uint32))
                fed[0] += len(chunk)
                yield chunk
                while pending:
                    rep = pending.pop(0)
                    fed[0] += len(rep)
                    yield rep

        got = [runner.run(feed(), on_output=on_output)]
        while pending:
            todo, pending[:] = list(pending), []
            fed[0] += sum(len(b) for b in todo)
            got.append(runner.run(todo, on_output=on_output))
        results.append(RunResult.combine(got))

    try:
        benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    finally:
        runner.close()

    total = RunResult.combine(results)
    per_round = total.packets / len(results)
    stats = getattr(benchmark, "stats", None)
    median_s = float(stats.stats.median) if stats is not None else total.wall_s / len(results)
    res = VNFBenchResult(
        packets=total.packets, forwarded=total.forwarded, dropped=total.dropped, drops=total.drops,
        mpps=per_round / median_s / 1e6 if median_s > 0 else 0.0,
        p50_us=total.p50_us, p99_us=total.p99_us, rounds=len(results),
    )
    benchmark.extra_info.update({
        "mpps": round(res.mpps, 3), "p50_us": round(res.p50_us, 2), "p99_us": round(res.p99_us, 2),
        "packets": res.packets, "forwarded": res.forwarded, "dropped": res.dropped, "drops": res.drops,
        "vnf": getattr(vnf, "__name__", repr(vnf)), "flows_per_round": flows, "batch": batch,
        "queues": queues, "backend": backend or "default", "frame_size": frame_size,
        "replies": reply_fn is not None,
        "timing": "parse + RSS + workers + in-order release; traffic generation excluded",
    })

    lost = fed[0] - total.packets
    unexplained = total.drops.get("unspecified", 0)
    if lost or unexplained:
        raise LostPacketsError(
            f"{getattr(vnf, '__name__', vnf)} lost packets: {fed[0]} entered, {total.packets} came out"
            f" ({lost} missing), {unexplained} dropped without a reason (port 0, drop reason unset)")
    if total.forwarded + total.dropped != total.packets:
        raise LostPacketsError(f"forwarded {total.forwarded} + dropped {total.dropped} != {total.packets} packets")
    return res


@pytest.fixture
def vnf_benchmark(benchmark: Any) -> Callable[..., VNFBenchResult]:
    """``vnf_benchmark(VNFClass, **options)``: time a VNF on generated traffic; see
    :func:`run_vnf_benchmark` for the options. Fails the test if any packet is lost."""

    def run(vnf: Any, **options: Any) -> VNFBenchResult:
        return run_vnf_benchmark(benchmark, vnf, **options)

    return run
