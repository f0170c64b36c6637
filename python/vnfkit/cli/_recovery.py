"""`vnfkit recovery-test`: many crash-and-recover trials of one middlebox, each judged by the oracle.

Each trial runs the middlebox on a master of ``--queues`` workers (threads, or with ``--runtime
process`` worker processes of which one is SIGKILLed) over fresh generated traffic
(shared state under contention), crashes it at a random point -- input batch, phase of that batch
(before processing, after processing, after the storage sync) and so packet and time -- fails over
to the passive backup, lets the backup take the rest of the traffic and has the correctness oracle
judge everything released (:mod:`vnfkit.recovery.trials`). Every trial is one line on stdout; the
totals follow (correct / incorrect, recovery time p50 / p99 / max split into detection, restore and
replay). The exit status is 1 if any replay trial was incorrect: replay must always recover.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from ._classify import MAX_QUEUES
from ._common import SubParsers, int_arg, one_line_errors, positive_float_arg, print_table, stdout_console

STRATEGIES = ("replay", "checkpoint", "buffer")


def add(sub: SubParsers) -> None:
    from ..recovery.workloads import NFS

    p = sub.add_parser("recovery-test", help="random crash points, failover, and the oracle's verdict",
                       description="Crash a middlebox's master at N random points (batch, phase, packet, "
                                   "time), fail over to the backup and check with the correctness oracle that "
                                   "everything released stays consistent. Exits 1 if a replay trial is incorrect.")
    p.add_argument("--nf", required=True, choices=NFS, help="which middlebox")
    p.add_argument("--strategy", required=True, choices=STRATEGIES,
                   help="checkpoint + replay, checkpoint only, or checkpoint + buffering")
    p.add_argument("--trials", type=int_arg(1, 1_000_000), required=True, help="number of crash points")
    p.add_argument("--seed", type=int_arg(0, 2**63 - 1), default=0, help="random seed of crash points and traffic")
    p.add_argument("--queues", type=int_arg(1, MAX_QUEUES), default=2, help="workers of the master")
    p.add_argument("--runtime", choices=("thread", "process"), default="thread",
                   help="the master: the thread runner crashed as a whole at a batch and phase, or worker "
                        "processes of which one is SIGKILLed between two batches or 0-2 ms into one")
    p.add_argument("--backup", choices=("cold", "warm", "hot"), default="cold",
                   help="(--runtime process) the passive backup: restores and replays everything at the failover "
                        "(cold), restores each checkpoint as it commits (warm), or also replays each group commit "
                        "as it becomes stable, so that only the batches in flight are left to replay (hot)")
    p.add_argument("--storage", choices=("memory", "file", "redis"), default="memory",
                   help="stable storage: in-process, files with fsync, or a private Redis primary + replica")
    p.add_argument("--packets", type=int_arg(1000, 1 << 24), default=20_000, help="packets per trial")
    p.add_argument("--batch", type=int_arg(1, 1 << 16), default=256, help="packets per input batch")
    p.add_argument("--checkpoint-interval-ms", type=positive_float_arg, default=50.0,
                   help="checkpoint whenever this much packet time has passed (traffic at 1.49 Mpps)")
    p.add_argument("--json", default=None, help="write the totals and every trial to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines and no progress")
    p.set_defaults(func=run)
    one_line_errors(p, "recovery-test")


@contextlib.contextmanager
def _storage_factory(kind: str) -> Iterator[Callable[[], Any]]:
    """A factory of fresh, empty stable storage per trial; servers and directories are removed after."""
    from ..recovery.storage import FileStorage, MemoryStorage

    if kind == "memory":
        yield MemoryStorage
        return
    if kind == "file":
        with tempfile.TemporaryDirectory(prefix="vnfkit-recovery-") as root:
            n = [0]

            def new_file() -> Any:
                n[0] += 1
                return FileStorage(os.path.join(root, f"trial-{n[0]}"))

            yield new_file
        return
    from ..recovery.storage.redis_servers import RedisPair, redis_server_path

    if redis_server_path() is None:
        raise ValueError("--storage redis: redis-server is not installed (apt-get install redis-server)")
    from ..recovery.storage.redis import RedisStorage

    with RedisPair() as pair:
        pair.wait_replicated()
        n = [0]

        def new_redis() -> Any:
            n[0] += 1
            return RedisStorage(unix_socket_path=pair.primary_socket, prefix=f"trial{n[0]}")

        yield new_redis


def _trial_line(i: int, total: int, r: Any) -> str:
    s = r.summary()
    verdict = "correct" if r.verdict.correct else "INCORRECT (" + ", ".join(sorted(r.verdict.kinds())) + ")"
    return (f"trial {i + 1:>{len(str(total))}}/{total}: crash at batch {s['crash_at']} (packet {s['crash_packet']}, "
            f"t={s['crash_time_ms']:.2f} ms) {s['phase']:<14} -> {verdict}; recovery {s['recovery_ms']:.2f} ms "
            f"(detect {s['detect_ms']:.2f} + handover {s['handover_ms']:.2f} + restore {s['restore_ms']:.2f} + replay {s['replay_ms']:.2f}), "
            f"replayed {s['replayed_batches']} / re-executed {s['reexecuted_batches']} batches, "
            f"lost {s['lost_batches']}, released {s['released_packets']}")


def run(args: argparse.Namespace) -> int:
    from ..recovery.trials import run_trials, summarize

    if args.json is not None:
        d = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(d):
            raise ValueError(f"--json: directory {d} does not exist")
        if os.path.isdir(args.json):
            raise ValueError(f"--json: {args.json} is a directory")
        if os.path.exists(args.json) and not args.force:
            raise ValueError(f"--json: {args.json} exists (pass --force to overwrite it)")
    if args.backup != "cold" and args.runtime != "process":
        raise ValueError("--backup: warm and hot backups need --runtime process")
    if args.packets < 4 * args.batch:
        raise ValueError(f"--packets: need at least 4 batches of --batch {args.batch} for a crash point inside the run")
    interval = args.checkpoint_interval_ms / 1e3
    console = stdout_console()
    t0 = time.monotonic()
    master = "worker processes, one SIGKILLed" if args.runtime == "process" else "threads, crashed as a whole"
    header = (f"vnfkit recovery-test: {args.nf}, {args.strategy}, {args.trials} trials, seed {args.seed}, "
              f"{args.queues} workers ({master}), {args.backup} backup, {args.storage} storage, {args.packets} packets in batches of {args.batch}, "
              f"checkpoint every {args.checkpoint_interval_ms:g} ms of packet time")
    print(header, flush=True)

    def on_trial(i: int, r: Any) -> None:
        if args.quiet:
            return
        print(_trial_line(i, args.trials, r), flush=True)
        if not sys.stdout.isatty() and sys.stderr.isatty():  # stdout is a file: show progress on the terminal
            el = time.monotonic() - t0
            print(f"\r{i + 1}/{args.trials} trials, {el:.0f} s, about {el / (i + 1) * (args.trials - i - 1):.0f} s left",
                  end="", file=sys.stderr, flush=True)

    with _storage_factory(args.storage) as factory:
        if args.runtime == "process":
            from ..recovery.process_master import random_process_trials

            results = random_process_trials(args.nf, args.strategy, args.trials, args.seed, packets=args.packets,
                                            batch=args.batch, queues=args.queues, checkpoint_interval_s=interval,
                                            storage=factory, on_trial=on_trial, backup_mode=args.backup)
        else:
            results = run_trials(args.nf, args.strategy, args.trials, args.seed, packets=args.packets,
                                 batch=args.batch, queues=args.queues, checkpoint_interval_s=interval,
                                 storage=factory, on_trial=on_trial)
    if not sys.stdout.isatty() and sys.stderr.isatty() and not args.quiet:
        print(file=sys.stderr)
    wall = time.monotonic() - t0
    s = summarize(results)
    console.print()
    console.print(f"{s['trials']} trials in {wall:.1f} s: {s['correct']} correct, {s['incorrect']} incorrect; "
                  f"{s['released_packets']} packets released in all")
    rows = [[name, f"{s[key]['p50']:.2f}", f"{s[key]['p99']:.2f}", f"{s[key]['max']:.2f}"]
            for name, key in (("recovery (total)", "recovery_ms"), ("  detection", "detect_ms"),
                              ("  handover", "handover_ms"),
                              ("  restore", "restore_ms"), ("  replay", "replay_ms"),
                              ("checkpoint pause", "checkpoint_pause_ms"))]
    print_table(None, [("ms", "left"), ("p50", "right"), ("p99", "right"), ("max", "right")], rows, console)
    bad = [r for r in results if not r.verdict.correct]
    if bad:
        kinds: dict[str, int] = {}
        for r in bad:
            for k in r.verdict.kinds():
                kinds[k] = kinds.get(k, 0) + 1
        console.print("incorrect trials by violation: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    if args.json is not None:
        doc = {"nf": args.nf, "strategy": args.strategy, "seed": args.seed, "queues": args.queues,
               "runtime": args.runtime, "backup": args.backup,
               "storage": args.storage, "packets_per_trial": args.packets, "batch": args.batch,
               "checkpoint_interval_ms": args.checkpoint_interval_ms, "wall_s": wall, **s,
               "results": [{**r.summary(), "violations": r.verdict.violations} for r in results]}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
        console.print(f"JSON written to {args.json}")
    if args.strategy == "replay" and bad:
        print(f"vnfkit recovery-test: error: {len(bad)} replay trial(s) recovered incorrectly", file=sys.stderr)
        return 1
    return 0
