"""`vnfkit demo`: MazuNAT on generated traffic with replies, over several queues; then the same NAT
under checkpoint + replay with one injected SIGKILL of its master, a table and a latency plot."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from ._classify import MAX_QUEUES
from ._common import SubParsers, int_arg, one_line_errors, positive_float_arg, print_table, stdout_console

PLOT = "latency_around_crash.png"
from ._run import classifier_for, print_run_summary


def add(sub: SubParsers) -> None:
    p = sub.add_parser("demo", help="the main demo: MazuNAT on generated traffic with 2 queues",
                       description="Generate a synthetic trace, show how software RSS spreads it over the "
                                   "receive queues, then run the MazuNAT NAT/firewall over it with one worker "
                                   "per queue while a simulated remote host answers every translated "
                                   "packet, and print the summary table. Then run MazuNAT under checkpoint + "
                                   "replay, SIGKILL its master mid-run, fail over to the backup, and print "
                                   "throughput, latency, the recovery time split and the oracle's verdict beside "
                                   "a run without fault tolerance; a PNG of latency around the crash goes to --out.")
    p.add_argument("--flows", type=int_arg(1, 1 << 26), default=5000, help="flows in the generated trace")
    p.add_argument("--packets", type=int_arg(1, 1 << 28), default=200_000, help="packets in the generated trace")
    p.add_argument("--queues", type=int_arg(1, MAX_QUEUES), default=2, help="receive queues / workers")
    p.add_argument("--backend", choices=("process", "thread"), default="process",
                   help="workers: one process per queue (default) or one thread per queue (GIL-bound, for debugging)")
    p.add_argument("--batch", type=int_arg(1, 1 << 24), default=4096, help="packets per batch")
    p.add_argument("--seed", type=int_arg(0, 2**63 - 1), default=1, help="random seed")
    p.add_argument("--recovery-packets", type=int_arg(0, 1 << 24), default=150_000,
                   help="packets of the recovery run's trace (0: skip the recovery run)")
    p.add_argument("--checkpoint-ms", type=positive_float_arg, default=50.0,
                   help="checkpoint interval of the recovery run, in packet time (traffic at 1.49 Mpps)")
    p.add_argument("--out", default=None, help="directory for the plot (default: a new temporary directory)")
    p.add_argument("--force", action="store_true", help="overwrite the plot if --out already holds one")
    p.set_defaults(func=run)
    one_line_errors(p, "demo")


def run(args: argparse.Namespace) -> int:
    from .. import traffic
    from ..nfs.mazunat import MazuNAT, run_with_replies
    from ..runtime import Runner, iter_batches

    if args.flows < 1 or args.packets < args.flows:
        raise ValueError("--packets must be >= --flows >= 1")
    out_dir = _out_dir(args) if args.recovery_packets else None
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
    if out_dir is not None:
        print()
        _recovery(args, out_dir)
    return 0


def _out_dir(args: argparse.Namespace) -> str:
    """The plot's directory, checked before anything runs (nothing of the user's is overwritten)."""
    if args.recovery_packets < 4096:
        raise ValueError("--recovery-packets: need at least 4096 (or 0 to skip the recovery run)")
    if args.out is None:
        return tempfile.mkdtemp(prefix="vnfkit-demo-")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out: {args.out} exists and is not a directory")
    if os.path.exists(os.path.join(args.out, PLOT)) and not args.force:
        raise ValueError(f"--out: {os.path.join(args.out, PLOT)} exists (pass --force to overwrite it)")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise ValueError(f"--out: directory {parent} does not exist")
    os.makedirs(args.out, exist_ok=True)
    return args.out


def _recovery(args: argparse.Namespace, out_dir: str) -> None:
    from ..recovery.demo import plot_latency, recovery_demo

    n = args.recovery_packets
    print(f"3. MazuNAT under checkpoint + replay ({args.queues} workers sharing the port pool, file storage with "
          f"fsync, checkpoint every {args.checkpoint_ms:g} ms of packet time), {n} packets of "
          f"{min(args.flows, n // 20)} flows and the replies, as fast as the master takes them; its master (a forked "
          f"process) is SIGKILLed mid-run and the passive backup takes over. Same trace without fault "
          f"tolerance beside it:")
    d = recovery_demo(packets=n, flows=max(10, min(args.flows, n // 20)), queues=args.queues,
                      seed=args.seed, checkpoint_interval_s=args.checkpoint_ms / 1e3)
    r, b, f = d.trial, d.baseline, d.recovered
    rows: list[list[object]] = [
        ["packets released", b.packets, f.packets],
        ["throughput (kpps, wall clock)", f"{b.kpps:.0f}", f"{f.kpps:.0f} (recovery included)"],
        ["latency p50 (us)", f"{b.p50_us:.0f}", f"{f.p50_us:.0f}"],
        ["latency p99 (us)", f"{b.p99_us:.0f}", f"{f.p99_us:.0f}"],
        ["latency p99.9 (us)", f"{b.p999_us:.0f}", f"{f.p999_us:.0f}"],
        ["killed after released packets", "-", r.released_master],
        ["recovery: detection (ms, pidfd)", "-", f"{r.detect_s * 1e3:.1f}"],
        ["recovery: handover (ms)", "-", f"{r.handover_s * 1e3:.1f}"],
        ["recovery: restore (ms)", "-", f"{r.recovery.restore_s * 1e3:.1f}"],
        ["recovery: replay (ms)", "-", f"{r.recovery.replay_s * 1e3:.1f} ({r.recovery.replayed_batches} batches, "
                                       f"{r.recovery.replayed_packets} packets)"],
        ["recovery: total (ms)", "-", f"{r.recovery_s * 1e3:.1f}"],
        ["oracle", "-", str(r.verdict)],
    ]
    console = stdout_console()
    print_table(None, [("", "left"), ("no fault tolerance", "right"), ("checkpoint + replay, one SIGKILL", "right")],
                rows, console)
    console.print("(latency: admit of the input batch to release of the packet, storage sync and output commit "
                  "included; indicative figures on a shared machine)")
    path = os.path.join(out_dir, PLOT)
    plot_latency(d.timeline, path, f"MazuNAT, checkpoint + replay, SIGKILL after {r.released_master} packets")
    console.print(f"latency over time around the crash: {path}")
