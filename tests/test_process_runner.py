"""The process backend: same decisions as the thread backend, worker death, cleanup, control state."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from vnfkit import _core, traffic
from vnfkit.nfs.mazunat import MazuNAT
from vnfkit.traffic import replies_to
from vnfkit.runtime import Runner, WorkerError, iter_batches
from vnfkit.runtime._segments import SHM_DIR
from vnfkit.vnf import VNF, Context

POLICY = int(_core.DropReason.POLICY)


class TcpOnly(VNF):
    """Forwards TCP to port 1, drops the rest (POLICY); raises on packet id `fail_on`."""

    def setup(self, ctx: Context, **config: object) -> None:
        self.fail_on = config.pop("fail_on", None)
        self.crash_on = config.pop("crash_on", None)
        super().setup(ctx, **config)
        self.seen = 0

    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        if self.fail_on is not None and np.any(batch.packet_id == self.fail_on):
            raise ZeroDivisionError(f"boom at {self.fail_on}")
        if self.crash_on is not None and np.any(batch.packet_id == self.crash_on):
            os.kill(os.getpid(), signal.SIGSEGV)
        tcp = (batch.drop == 0) & (batch.key["proto"] == 6)
        batch.port[:] = np.where(tcp, 1, 0)
        batch.drop[~tcp] = POLICY
        self.seen += len(batch)

    def stats(self) -> dict[str, int]:
        return {"seen": self.seen}


class Tagger(VNF):
    """Writes the published control value "tag" into every packet's port (one version per batch)."""

    def setup(self, ctx: Context, **config: object) -> None:
        ctx.control.setdefault("tag", 1)

    def process(self, batch: _core.PacketBatch, ctx: Context) -> None:
        batch.port[:] = ctx.control.get("tag")


def _leftovers() -> tuple[list[str], list[int]]:
    shm = [f for f in os.listdir(SHM_DIR) if f.startswith(f"vnfkit-{os.getpid()}-")]
    kids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
                # multiprocessing's own resource tracker (one per parent, started by spawn) is not ours
                if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"resource_tracker" not in cmd:
                    kids.append(int(pid))
            except (OSError, IndexError):
                pass
    return shm, kids


def _run_collect(backend: str, queues: int, trace: _core.PacketBatch, batch: int, **kw: object):
    """Decisions per packet id: (port, drop, bytes); outbound trace, then the replies to it."""
    got: dict[int, tuple[int, int, bytes]] = {}

    def on_output(_q: int, b: _core.PacketBatch) -> None:
        for pid, port, drop, raw in zip(b.packet_id.tolist(), b.port.tolist(), b.drop.tolist(), b.to_list()):
            got[pid] = (port, drop, raw)

    with Runner(MazuNAT, backend=backend, queues=queues, logged=False, assign_ids=True, **kw) as r:
        reps: list[tuple[int, bytes, int]] = []

        def outbound(q: int, b: _core.PacketBatch) -> None:
            on_output(q, b)
            rep = replies_to(b)
            if rep is not None:  # (original id, frame, time): ordered the same way on every backend
                reps.extend(zip(rep.packet_id.tolist(), rep.to_list(), rep.ts_ns.tolist()))

        r.run(iter_batches(trace, batch), on_output=outbound)
        reps.sort()
        replies = _core.PacketBatch([raw for _, raw, _ in reps], ts_ns=np.array([t for *_, t in reps], np.uint64))
        r.run(iter_batches(replies, batch), on_output=on_output)
    return got


@pytest.mark.parametrize("queues", [1, 2, 4])
def test_mazunat_same_decisions_as_thread_backend(queues: int, tmp_path) -> None:
    """Per packet, the same output port, drop reason and output bytes (so the same public ports)
    on both backends with 1, 2 and 4 queues, on a 3 000-flow trace and the replies to it."""
    trace = traffic.generate(flows=3000, packets=30_000, seed=11)
    want = _run_collect("thread", queues, trace.select(np.arange(len(trace), dtype=np.uint32)), 512)
    got = _run_collect("process", queues, trace, 512, batch_size=256)
    assert len(got) == len(want) > 30_000
    # per packet: output port and drop reason
    assert {k: v[:2] for k, v in got.items()} == {k: v[:2] for k, v in want.items()}
    assert _leftovers() == ([], [])
    # ... and output bytes: the public ports chosen. Each worker allocates only from its own share
    # of the pools, so its ports depend on its own packets alone, not on how workers interleave.
    assert got == want
    if queues == 2 and shutil.which("tshark"):
        fwd = [raw for port, _, raw in got.values() if port != 0]
        path = tmp_path / "out.pcap"
        _core.PacketBatch(fwd).to_pcap(str(path))
        cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
               "-o", "udp.check_checksum:TRUE", "-Y",
               'ip.checksum.status=="Bad" || tcp.checksum.status=="Bad" || udp.checksum.status=="Bad"',
               "-T", "fields", "-e", "frame.number"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [], "tshark found bad checksums"


def test_results_ids_and_stats() -> None:
    trace = traffic.generate(flows=200, packets=5000, seed=3)
    with Runner(TcpOnly, backend="process", queues=2, batch_size=64) as r:
        res = r.run(iter_batches(trace, 1000))
        ids: list[int] = []
        res2 = r.run(iter_batches(trace, 1000), on_output=lambda q, b: ids.extend(b.packet_id.tolist()))
    assert res.packets == res2.packets == 5000
    assert sorted(ids) == list(range(5000, 10000))  # runner-wide ids continue across runs
    assert res.vnf_stats["seen"] == 5000 and res2.vnf_stats["seen"] == 10000
    assert res.forwarded + res.dropped == 5000 and res.drops.get("policy", 0) == res.dropped
    assert res.latency.total == 5000 and res.p50_us > 0
    assert all(q.cpu_ns > 0 for q in res.queues)
    assert _leftovers() == ([], [])


def test_control_state_reaches_workers_between_batches() -> None:
    trace = traffic.generate(flows=50, packets=4000, seed=4)
    with Runner(Tagger, backend="process", queues=2, batch_size=32, flush_us=10) as r:
        assert r.control.get("tag") == 1  # published by the workers' setup, visible here
        res1 = r.run(iter_batches(trace, 500))
        r.control.publish("tag", 7)
        seen: list[np.ndarray] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen.clear()
            r.run(iter_batches(trace, 500), on_output=lambda q, b: seen.append(b.port.copy()))
            if all((s == 7).all() for s in seen):
                break
        for s in seen:
            assert len(np.unique(s)) == 1  # one version per batch, never a mix
    assert res1.forwarded == 4000
    assert all((s == 7).all() for s in seen)


def test_vnf_exception_is_a_worker_error() -> None:
    trace = traffic.generate(flows=20, packets=2000, seed=6)
    r = Runner(TcpOnly, backend="process", queues=2, config={"fail_on": 1500})
    with pytest.raises(WorkerError, match="ZeroDivisionError") as ei:
        r.run(iter_batches(trace, 256))
    assert isinstance(ei.value.__cause__, ZeroDivisionError)
    r.close()
    assert _leftovers() == ([], [])


def test_segfault_is_reported_with_its_signal() -> None:
    trace = traffic.generate(flows=20, packets=2000, seed=6)
    with pytest.raises(WorkerError, match="SIGSEGV") as ei:
        with Runner(TcpOnly, backend="process", queues=2, config={"crash_on": 700}) as r:
            r.run(iter_batches(trace, 256))
    assert ei.value.signal == "SIGSEGV"
    assert _leftovers() == ([], [])


def _die_mid_reply(vnf, ctx):
    """Run in a worker by call_workers: write the first bytes of a reply on the worker's pipe to the
    runner (a length header for 100 bytes, then 10 of them), then SIGKILL itself."""
    import struct
    import sys

    conn = sys._getframe(1).f_locals["conn"]  # the worker loop's end of the pipe
    os.write(conn.fileno(), struct.pack("!i", 100) + b"x" * 10)
    os.kill(os.getpid(), signal.SIGKILL)


def test_worker_killed_in_the_middle_of_a_reply_is_a_worker_error() -> None:
    r = Runner(TcpOnly, backend="process", queues=2)
    try:
        with pytest.raises(WorkerError) as ei:
            r.call_workers(_die_mid_reply, timeout_s=10.0)
        assert ei.value.queue == 0 and ei.value.signal == "SIGKILL"
    finally:
        r.close()
    assert _leftovers() == ([], [])


def test_sigkill_mid_run_raises_promptly_and_leaves_nothing() -> None:
    trace = traffic.generate(flows=100, packets=20_000, seed=8)
    r = Runner(TcpOnly, backend="process", queues=2, batch_size=64)
    victim = r.pids[1]
    killed_at: list[float] = []
    offered_after_kill = [0]

    def batches():
        for i, b in enumerate(iter_batches(trace, 100)):
            if i == 20:
                os.kill(victim, signal.SIGKILL)
                killed_at.append(time.monotonic())
            if i > 20:
                offered_after_kill[0] += 1
                time.sleep(0.001)  # a live source keeps offering traffic, a batch per >= 1 ms
            yield b

    with pytest.raises(WorkerError) as ei:
        r.run(batches())
    elapsed = time.monotonic() - killed_at[0]
    assert ei.value.queue == 1 and ei.value.signal == "SIGKILL"
    assert "queue 1" in str(ei.value) and "SIGKILL" in str(ei.value)
    # The dispatcher looks at its workers every CHECK_S (10 ms) of its own loop: counted in batches
    # it took from the source (one per >= 1 ms), that bound holds however loaded the box is; the
    # wall-clock bound is loose because a loaded 2-core box can deschedule the dispatcher for tens
    # of ms (on an idle box the report comes in ~10-20 ms).
    assert offered_after_kill[0] <= 40, f"{offered_after_kill[0]} batches taken after the kill"
    assert elapsed < 0.5, f"reported after {elapsed * 1e3:.0f} ms"
    r.close()
    assert _leftovers() == ([], [])


def test_a_killed_worker_is_told_by_its_lifeline_before_its_pidfd_and_a_clean_stop_is_not() -> None:
    import select

    r = Runner(TcpOnly, backend="process", queues=2, batch_size=64)
    try:
        r.run(iter_batches(traffic.generate(flows=50, packets=2_000, seed=4), 100))
        watch, lines = r.death_watch, r.lifelines
        assert [lines.state(q) for q in range(2)] == ["held", "held"]
        assert [lines.holder_pid(q) for q in range(2)] == r.pids
        assert watch.first_dead() == -1
        fd = os.pidfd_open(r.pids[0])
        t0 = _core.now_ns()
        os.kill(r.pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while watch.first_dead() < 0 and time.monotonic() < deadline:
            time.sleep(0.0001)
        assert watch.first_dead() == 0 and lines.state(0) == "dead" and lines.state(1) == "held"
        died = lines.died_ns(0)
        assert died >= t0
        assert select.select([watch.fileno()], [], [], 0)[0]  # the eventfd tells a poll loop
        assert select.select([fd], [], [], 5.0)[0]
        gone = _core.now_ns()
        os.close(fd)
        print(f"SIGKILL told by the lifeline after {(died - t0) / 1e3:.0f} us, by the pidfd after {(gone - t0) / 1e3:.0f} us")
    finally:
        r.close()
    assert _leftovers() == ([], [])
    r = Runner(TcpOnly, backend="process", queues=1)
    lines = r.lifelines
    r.close()  # a clean stop: the worker lets its line go, nothing is reported
    assert lines.state(0) == "let_go" and lines.died_ns(0) == 0


def test_segments_are_unlinked_once_workers_started() -> None:
    with Runner(TcpOnly, backend="process", queues=2):
        shm, kids = _leftovers()
        assert shm == []  # mapped by every worker, already unlinked
        assert len(kids) >= 2
    assert _leftovers() == ([], [])


def test_config_that_cannot_cross_a_process_is_rejected() -> None:
    with pytest.raises(TypeError, match="config: cannot cross a process boundary"):
        Runner(TcpOnly, backend="process", config={"fail_on": lambda: 1})

    class Local(VNF):
        pass

    with pytest.raises(TypeError, match="vnf: cannot cross a process boundary"):
        Runner(Local, backend="process")
    with pytest.raises(ValueError, match="backend"):
        Runner(TcpOnly, backend="fibers")
    assert _leftovers() == ([], [])


def test_bad_setup_config_raises_the_same_error_as_threads() -> None:
    with pytest.raises(TypeError, match="takes no configuration"):
        Runner(TcpOnly, backend="thread", config={"nope": 1})
    with pytest.raises(TypeError, match="takes no configuration"):
        Runner(TcpOnly, backend="process", config={"nope": 1})
    assert _leftovers() == ([], [])


def test_paced_open_loop_measures_latency_at_a_rate() -> None:
    trace = traffic.generate(flows=500, packets=20_000, seed=9)
    with Runner(TcpOnly, backend="process", queues=1, batch_size=64, flush_us=50) as r:
        t0 = time.perf_counter()
        res = r.run_paced(trace, 100_000)
        wall = time.perf_counter() - t0
    assert res.packets == 20_000
    assert wall >= 0.19  # 20 000 packets at 100 kpps cannot finish faster than 0.2 s
    assert res.latency.total == 20_000 and res.p99_us >= res.p50_us > 0


def test_spin_policy_by_cores_and_a_sleeping_runtime_gives_the_same_result(monkeypatch) -> None:
    """Waiting sides poll 200 us only while the dispatcher and every worker have a core each, else
    they sleep on the futex at once; either way the run's totals are the same."""
    from vnfkit.runtime import process

    monkeypatch.setattr(process, "usable_cores", lambda: 2)
    assert process.default_spin_us(1) == 200.0 and process.default_spin_us(2) == 0.0
    monkeypatch.setattr(process, "usable_cores", lambda: 8)
    assert process.default_spin_us(4) == 200.0
    with pytest.raises(ValueError, match="spin_us"):
        Runner(TcpOnly, backend="process", queues=1, spin_us=-1.0)
    trace = traffic.generate(flows=200, packets=6000, seed=9)
    got = []
    for spin in (0.0, 200.0):
        with Runner(TcpOnly, backend="process", queues=2, batch_size=64, spin_us=spin) as r:
            assert r.spin_us == spin
            res = r.run(iter_batches(trace, 1000))
        got.append((res.packets, res.forwarded, res.drops, res.vnf_stats["seen"]))
    assert got[0] == got[1] and got[0][0] == 6000
    assert _leftovers() == ([], [])


def _cpus_of(pid: int) -> set[int]:
    return set(os.sched_getaffinity(pid))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to place the processes apart")
def test_cpu_placement_pins_workers_and_the_dispatcher_and_gives_the_same_result() -> None:
    import threading

    a, b = sorted(os.sched_getaffinity(0))[:2]
    tid = threading.get_native_id()
    before = _cpus_of(tid)
    trace = traffic.generate(flows=200, packets=5000, seed=3)
    with Runner(TcpOnly, backend="process", queues=2, batch_size=64) as r:
        free = r.run(iter_batches(trace, 1000))
    with Runner(TcpOnly, backend="process", queues=2, batch_size=64, worker_cpus=[[a], [b]], dispatcher_cpus=[a]) as r:
        assert [_cpus_of(p) for p in r.pids] == [{a}, {b}]
        assert _cpus_of(tid) == {a}
        assert r.spin_us == 0  # the dispatcher shares worker 0's CPU: no polling
        placed = r.run(iter_batches(trace, 1000))
    assert _cpus_of(tid) == before  # the dispatcher thread's affinity is put back
    assert (placed.forwarded, placed.drops) == (free.forwarded, free.drops)
    with Runner(TcpOnly, backend="process", queues=2, worker_cpus=[b]) as r:
        assert [_cpus_of(p) for p in r.pids] == [{b}, {b}]
    assert _leftovers() == ([], [])


def test_bad_cpu_placement_names_the_field() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    bad = max(allowed) + 1000
    cases = [({"worker_cpus": [bad]}, ValueError, "worker_cpus: CPU"), ({"worker_cpus": []}, ValueError, "worker_cpus"),
             ({"worker_cpus": [[allowed[0]]]}, ValueError, "worker_cpus: 1 CPU sets for 2 workers"),
             ({"worker_cpus": [[allowed[0]], [bad]]}, ValueError, r"worker_cpus\[1\]"),
             ({"worker_cpus": "0"}, TypeError, "worker_cpus"), ({"worker_cpus": [0.5]}, TypeError, "worker_cpus"),
             ({"dispatcher_cpus": [bad]}, ValueError, "dispatcher_cpus"), ({"dispatcher_cpus": 0}, TypeError, "dispatcher_cpus")]
    for kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            Runner(TcpOnly, backend="process", queues=2, **kw)
    assert _leftovers() == ([], [])
