"""Test helper: record a multi-queue run of a VNF, then replay each worker's determinant log.

Shared by the middlebox tests (imported as a plain module: tests/ has no __init__.py)."""

from __future__ import annotations

import numpy as np

from vnfkit.state import Replayer, SharedState
from vnfkit.runtime import Runner
from vnfkit.vnf import Context


def record_and_replay(vnf_cls, config, batches, queues=2, shared=None):
    """Run `batches` through a `queues`-worker Runner recording each worker's inputs and decisions,
    then replay every worker's determinant log on a fresh SharedState, one worker after the other.
    `shared`: the master's SharedState (default: a new heap one; e.g. a shared-memory one).
    Returns (recorded decisions, replayed decisions, master state image, replayed state image)."""
    inputs = {q: [] for q in range(queues)}
    decided = {q: [] for q in range(queues)}

    class Recording(vnf_cls):
        def process(self, batch, ctx):
            inputs[ctx.queue].append(batch.select(np.arange(len(batch), dtype=np.uint32)))
            super().process(batch, ctx)
            decided[ctx.queue].append((batch.port.copy(), batch.drop.copy(), batch.to_list()))

    shared = SharedState() if shared is None else shared
    with Runner(Recording, queues=queues, config=config, shared=shared) as r:
        r.run(batches)
        classifier = r.classifier  # the backup's workers see the same classifier (e.g. NAT affinity)
    chunks = [shared.context(q).drain_chunk() for q in range(queues)]
    backup = SharedState()
    workers = []
    for q in range(queues):
        ctx = Context(q, queues, shared=backup, classifier=classifier)
        v = vnf_cls()
        v.setup(ctx, **config)  # declares the same variables in the same order
        workers.append((v, ctx))
    rp = Replayer(backup, chunks)
    replayed = {q: [] for q in range(queues)}
    for q, (v, ctx) in enumerate(workers):
        ctx.state = rp.context(q)  # the replay context takes the place of the recording one
        for b in inputs[q]:
            v.process(b, ctx)
            replayed[q].append((b.port.copy(), b.drop.copy(), b.to_list()))
    rp.finish()
    return decided, replayed, shared.snapshot(), backup.snapshot()


def _same(a, b):
    return all(len(a[q]) == len(b[q]) and all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a[q], b[q]))
        for q in a)
