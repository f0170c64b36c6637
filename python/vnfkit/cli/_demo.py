"""`vnfkit demo`: MazuNAT on generated traffic with replies, over several queues."""

from __future__ import annotations

import argparse
import time

import numpy as np

from ._classify import MAX_QUEUES
from ._common import SubParsers, int_arg, one_line_errors
from ._run import classifier_for, print_run_summary


def add(sub: SubParsers) -> None:
    p = sub.add_parser("demo", help="the main demo: MazuNAT on generated traffic with 2 queues",
                       description="Generate a synthetic trace, show how software RSS spreads it over the "
                                   "receive queues, then run the MazuNAT NAT/firewall over it with one worker "
                                   "per queue while a simulated remote host answers every translated "
                                   "packet, and print the summary table.")
    p.add_argument("--flows", type=int_arg(1, 1 << 26), default=5000, help="flows in the generated trace")
    p.add_argument("--packets", type=int_arg(1, 1 << 28), default=200_000, help="packets in the generated trace")
    p.add_argument("--queues", type=int_arg(1, MAX_QUEUES), default=2, help="receive queues / workers")
    p.add_argument("--backend", choices=("process", "thread"), default="process",
                   help="workers: one process per queue (default) or one thread per queue (GIL-bound, for debugging)")
    p.add_argument("--batch", type=int_arg(1, 1 << 24), default=4096, help="packets per batch")
    p.add_argument("--seed", type=int_arg(0, 2**63 - 1), default=1, help="random seed")
    p.set_defaults(func=run)
    one_line_errors(p, "demo")


def run(args: argparse.Namespace) -> int:
    from .. import traffic
    from ..nfs.mazunat import MazuNAT, run_with_replies
    from ..runtime import Runner, iter_batches

    if args.flows < 1 or args.packets < args.flows:
        raise ValueError("--packets must be >= --flows >= 1")
    t0 = time.perf_counter()
    batch = traffic.generate(flows=args.flows, packets=args.packets, seed=args.seed, ipv6_fraction=0.02)
    t_gen = time.perf_counter() - t0
    print(f"vnfkit demo: {len(batch)} packets of {args.flows} flows (TCP/UDP, 2 % IPv6, 64-byte frames), "
          f"generated in {t_gen:.2f} s")

    clf = classifier_for(args.queues)
    probe = batch.select(np.arange(len(batch), dtype=np.uint32))
    t0 = time.perf_counter()
    malformed = probe.parse()
    parts = clf.classify(probe)
    t_cls = time.perf_counter() - t0
    print(f"1. software RSS (parse + Toeplitz + RETA) over {args.queues} queues: {len(probe) / t_cls / 1e6:.1f} Mpps "
          f"in one call, {malformed} malformed")
    for q, idx in enumerate(parts):
        flows = len(np.unique(probe.flow_id[idx])) if len(idx) else 0
        print(f"   queue {q}: {len(idx):>8} packets ({100.0 * len(idx) / len(probe):5.1f} %), {flows} flows")
    print()
    print("2. MazuNAT (10.0.0.0/8 behind 192.0.2.1, ports 50000-65535, RSS affinity), with a remote host")
    print("   answering every translated packet (replies enter the runner interleaved with the trace):")
    with Runner(MazuNAT, backend=args.backend, queues=args.queues, logged=False, classifier=classifier_for(args.queues)) as runner:
        res = run_with_replies(runner, iter_batches(batch, args.batch))
    print()
    print_run_summary(res, f"MazuNAT, {args.queues} queues, batches of {args.batch}: {res.packets} packets "
                           f"in {res.wall_s:.2f} s")
    return 0
