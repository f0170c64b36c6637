"""The master node: MazuNAT on two live interfaces with input logging, determinants and output commit.

Per poll round, for each interface with frames ready: receive a batch, let the input handler number
it and queue its record (:class:`vnfkit.recovery.InputHandler`), process it (every shared-state
access is logged to the worker's determinant log), queue the batch's determinant record and hand
its packets to the output handler tagged with the log positions. Then one storage sync (group
commit of every batch of the round) and the output handler sends whatever storage acknowledged:
no packet leaves before the input and every determinant it depends on are stable. A failed sync
(storage down or stalled) releases nothing and is retried next round; it is counted.

Every ``checkpoint_ms`` (only when traffic was processed since the last one) a checkpoint of the
tables, shared state and VNF state is taken at the round's batch boundary and made stable; then
older checkpoints and the logs before it are truncated, except the last input record before the
cut (the backup uses it to find where the log ends in its own receive order).
The heartbeat word is written every round.
"""

from __future__ import annotations

import select
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..recovery.storage.base import prune
from .frames import NodeSpec, open_node_storage

__all__ = ["run_master"]


def _percentiles_us(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    a = np.asarray(xs) * 1e6
    return {"p50": round(float(np.percentile(a, 50)), 1), "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1)}


def run_master(spec: NodeSpec, emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The master node: receive from both interfaces, number and log every input batch to stable
    storage, run MazuNAT with a logged context, release each output only once storage acknowledged
    what it depends on (output commit), heartbeat, and checkpoint every ``checkpoint_ms`` of
    `spec`. `emit` reports events; returns the node's summary (a killed master returns none)."""
    from ..classify import MultiQueueClassifier
    from ..io.live import LiveSink, open_socket
    from ..nfs.mazunat import EXTERNAL, INTERNAL, MazuNAT
    from ..recovery.backup import CKPT_STREAM, DET_STREAM, det_ranges, encode_det
    from ..recovery.checkpoint import take_checkpoint
    from ..recovery.detector import HeartbeatBoard
    from ..recovery.input_log import INPUT_STREAM, InputHandler
    from ..recovery.output import OutputHandler
    from ..state import SharedState
    from ..vnf import Context

    stopping = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stopping.update(flag=True))
    st = open_node_storage(spec.storage)
    board = HeartbeatBoard(1, name=spec.board)
    board.hold(0)  # the backup's detector hears of this process's death on this line
    shared = SharedState()
    ctx = Context(0, 1, shared=shared, classifier=MultiQueueClassifier(1), logged=True)
    vnf = MazuNAT()
    vnf.setup(ctx, **spec.config)
    sockets = {"inside": open_socket(spec.inside, batch=spec.batch),
               "outside": open_socket(spec.outside, batch=spec.batch)}
    sinks = [LiveSink(sockets["inside"], dst_mac=spec.inside_peer, port=INTERNAL),
             LiveSink(sockets["outside"], dst_mac=spec.outside_peer, port=EXTERNAL)]
    stats: dict[str, Any] = {"received": {"inside": 0, "outside": 0}, "sent": 0, "batches": 0, "syncs": 0,
                             "failed_syncs": 0, "checkpoints": 0, "drops": {}}
    sync_s: list[float] = []
    pauses_s: list[float] = []
    ckpt_bytes = [0]

    def release(_q: int, b: Any) -> None:
        for s in sinks:
            stats["sent"] += s.write(b)

    inp = InputHandler(st)
    out = OutputHandler("replay", 1, 1, release)
    pending_det: dict[int, list[tuple[int, int, int]]] = {}
    epoch = [0]
    events: list[str] = []

    def sync() -> bool:
        r = st.sync(1.0)
        stats["syncs"] += 1
        sync_s.append(r.seconds)
        if not r.ok:
            stats["failed_syncs"] += 1
            if len(events) < 20:
                events.append(f"{r.status}: {r.detail}")
            return False
        acked = st.acked(DET_STREAM)
        for seq in [s for s in pending_det if s < acked]:
            for thread, first, count in pending_det.pop(seq):
                out.ack_determinants(thread, first, count)
        out.input_acked(st.acked(INPUT_STREAM))
        out.poll()
        return True

    def checkpoint() -> None:
        ck = take_checkpoint([vnf], [ctx], shared, epoch=epoch[0], next_input=inp.next_seq,
                             last_packet_id=inp.next_id - 1)
        pauses_s.append(ck.pause_s)
        blob = ck.to_bytes()
        ckpt_bytes[0] = len(blob)
        off = st.append(CKPT_STREAM, blob)
        if not sync():
            return  # retried at the next checkpoint; the logs since the last stable one are kept
        epoch[0] += 1
        stats["checkpoints"] += 1
        keep_from = max(0, ck.next_input - 1)
        put_off = prune(st, [(CKPT_STREAM, off), (INPUT_STREAM, keep_from), (DET_STREAM, keep_from)])
        if put_off is not None and len(events) < 20:
            events.append(put_off)

    poller = select.poll()
    side_of = {}
    for side, s in sockets.items():
        poller.register(s.fileno(), select.POLLIN)
        side_of[s.fileno()] = side
    try:
        # the first checkpoint may meet storage still warming up on a busy host: retry for a while
        first_deadline = time.monotonic() + 10.0
        checkpoint()
        while stats["checkpoints"] != 1 and time.monotonic() < first_deadline:
            time.sleep(0.05)
            checkpoint()
        if stats["checkpoints"] != 1:
            raise RuntimeError(f"stable storage did not take the first checkpoint within 10 s: {events}")
        emit({"event": "ready", "role": "master", "checkpoint_bytes": ckpt_bytes[0]})
        period_s = spec.checkpoint_ms / 1e3
        last_ckpt = time.monotonic()
        dirty = False
        while not stopping["flag"]:
            board.beat(0)
            got = 0
            for fd, _ev in poller.poll(5):
                side = side_of[fd]
                b = sockets[side].recv(0)
                if len(b) == 0:
                    continue
                got += len(b)
                stats["received"][side] += len(b)
                stats["batches"] += 1
                b.parse()
                seq = inp.admit(b)
                vnf.process(b, ctx)
                chunk = ctx.state.drain_chunk()
                if st.append(DET_STREAM, encode_det(seq, [chunk])) != seq:
                    raise RuntimeError(f"determinant record offset != input {seq}")
                pending_det[seq] = det_ranges([chunk])
                out.emit(seq, 0, b, shared.positions())
                for reason, count in b.drop_counts().items():
                    stats["drops"][reason] = stats["drops"].get(reason, 0) + int(count)
            if got or out.held():
                sync()
                dirty = dirty or bool(got)
            if dirty and time.monotonic() - last_ckpt >= period_s:
                checkpoint()
                last_ckpt = time.monotonic()
                dirty = False
    finally:
        for s in sockets.values():
            s.close()
        st.close()
        if stopping["flag"]:
            board.let_go(0)  # told to stop: not a failure
        board.close()
    stats.update(held=out.held(), sync_us=_percentiles_us(sync_s), checkpoint_pause_us=_percentiles_us(pauses_s),
                 checkpoint_bytes=ckpt_bytes[0], storage_events=events,
                 vnf={k: int(v) for k, v in sorted(vnf.stats().items()) if v})
    return stats
