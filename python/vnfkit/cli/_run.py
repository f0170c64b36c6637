"""`vnfkit run NF`: a shipped middlebox over a capture, the forwarded packets to a pcap, a summary."""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from ._classify import MAX_QUEUES, reta_size_for
from ._common import Progress, SubParsers, check_io, int_arg, one_line_errors, print_table, stdout_console, warn


def add(sub: SubParsers) -> None:
    from ..nfs import names

    p = sub.add_parser("run", help="run one of the shipped middleboxes over a pcap",
                       description="Run a middlebox over a pcap/pcapng trace through a multi-queue runner "
                                   "(RSS classifier, one worker per queue) and write the packets it "
                                   "forwards to a pcap. Prints a summary table.")
    p.add_argument("nf", choices=names(), help="which middlebox")
    p.add_argument("--in", dest="inp", required=True, help="input pcap or pcapng file")
    p.add_argument("--out", required=True, help="output pcap of the forwarded packets (in release order per queue)")
    p.add_argument("--queues", type=int_arg(1, MAX_QUEUES), default=1,
                   help=f"receive queues / workers (1..{MAX_QUEUES})")
    p.add_argument("--backend", choices=("process", "thread"), default="process",
                   help="workers: one process per queue (default) or one thread per queue (GIL-bound, for debugging)")
    p.add_argument("--config", default=None, help="JSON file with configuration keys (see the NF's DEFAULTS)")
    p.add_argument("--chunk", type=int_arg(1, 1 << 24), default=8192, help="packets read from the pcap per batch")
    p.add_argument("--batch", type=int_arg(1, 1 << 20), default=1024,
                   help="process backend: packets per slab handed to a worker (B; an offline run favours large ones)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
    one_line_errors(p, "run")


def load_config(path: str | None) -> dict[str, Any]:
    import json

    if path is None:
        return {}
    try:
        with open(path) as fh:
            cfg = json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"--config: {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config: {path} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"--config: {path} must hold a JSON object of configuration keys")
    return cfg


def print_run_summary(res: Any, title: str, notes: list[str] | None = None) -> None:
    """The summary of a Runner result: per queue and total, drops by reason, VNF counters."""
    console = stdout_console()
    console.print(title)
    console.print()
    rows: list[list[Any]] = []
    for q in res.queues:
        sq = q.summary()
        rate = sq["packets"] / sq["busy_s"] / 1e6 if sq["busy_s"] > 0 else 0.0
        rows.append([sq["queue"], sq["packets"], sq["forwarded"], sq["dropped"], f"{rate:.2f}",
                     f"{sq['p50_us']:.0f}", f"{sq['p99_us']:.0f}"])
    rows.append(["total", res.packets, res.forwarded, res.dropped, f"{res.mpps:.2f}", f"{res.p50_us:.0f}",
                 f"{res.p99_us:.0f}"])
    print_table(None, [("queue", "right"), ("packets", "right"), ("forwarded", "right"), ("dropped", "right"),
                       ("worker Mpps", "right"), ("p50 us", "right"), ("p99 us", "right")], rows, console)
    console.print("(total Mpps: end to end, wall clock)")
    if res.drops:
        console.print()
        print_table("drops by reason:", [("reason", "left"), ("packets", "right")], list(res.drops.items()), console)
    nonzero = [(k, v) for k, v in sorted(res.vnf_stats.items()) if v]
    if nonzero:
        console.print()
        print_table("VNF counters (non-zero):", [("counter", "left"), ("value", "right")], nonzero, console)
    if notes:
        console.print()
        console.print(f"warnings: {len(notes)}")
        for n in notes:
            console.print(f"  {n}")


def classifier_for(queues: int) -> Any:
    """An RSS classifier whose indirection table gives every one of ``queues`` at least one entry."""
    from ..classify import MultiQueueClassifier

    return MultiQueueClassifier(queues, reta_size=reta_size_for(queues, None))


def run(args: argparse.Namespace) -> int:
    from ..io import PcapSink, PcapSource
    from ..nfs import load
    from ..runtime import Runner

    check_io(args.chunk, args.inp, args.out, "--out")
    cls, _defaults = load(args.nf)
    cfg = load_config(args.config)
    source = PcapSource(args.inp, chunk=args.chunk)
    source.check_parsable()
    size = os.path.getsize(args.inp)
    try:
        kw: dict[str, Any] = {"batch_size": args.batch} if args.backend == "process" else {}
        runner = Runner(cls, backend=args.backend, queues=args.queues, config=cfg, logged=False,
                        classifier=classifier_for(args.queues), **kw)
    except TypeError as exc:  # unknown config keys etc. are configuration errors
        raise ValueError(str(exc)) from None

    with PcapSink(args.out, linktype=source.linktype) as sink, \
            Progress(f"run {args.nf}", source.file_size, not args.quiet) as prog:
        def on_output(_q: int, out: Any) -> None:
            fwd = np.flatnonzero(out.port != 0).astype(np.uint32)
            if len(fwd):
                sink.write(out if len(fwd) == len(out) else out.select(fwd))

        with runner:
            res = runner.run(iter(source), on_output=on_output,
                             progress=lambda n: prog.update(n, source.position))
        written = sink.packets_written
    notes = []
    cut = source.truncation_warning()
    if cut:
        warn("run", cut)
        notes.append(cut)
    print_run_summary(res, f"vnfkit run {args.nf}: {res.packets} packets from {args.inp} ({size} bytes) "
                           f"through {args.queues} queue(s) in {res.wall_s:.2f} s; {written} written to {args.out}",
                      notes)
    return 0
