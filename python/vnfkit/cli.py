"""The `vnfkit` command."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np


def _add_gen_trace(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gen-trace", help="generate a synthetic pcap trace (see vnfkit.traffic)",
                       description="Generate a synthetic trace: Poisson flow arrivals, heavy-tailed flow "
                                   "sizes and durations, TCP/UDP over IPv4/IPv6, valid checksums.")
    p.add_argument("--out", required=True, help="output pcap file (its directory must exist)")
    p.add_argument("--flows", type=int, required=True, help="number of flows (>= 1)")
    p.add_argument("--packets", type=int, required=True, help="number of packets (>= flows)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same trace)")
    p.add_argument("--rate-pps", type=float, default=None, help="mean packet rate (default 1 Gbps of 64 B)")
    p.add_argument("--flow-rate", type=float, default=None, help="new flows per second (default: flows over the span)")
    p.add_argument("--ipv6-fraction", type=float, default=0.0, help="fraction of IPv6 flows")
    p.add_argument("--udp-fraction", type=float, default=0.2, help="fraction of UDP flows")
    p.add_argument("--frame-size", type=int, default=64, help="IPv4 frame size in bytes (IPv6: +20)")
    p.add_argument("--mean-duration", type=float, default=None, help="mean flow duration, seconds")
    p.add_argument("--chunk", type=int, default=65536, help="packets per generation chunk")
    p.add_argument("--nanosecond", action="store_true", help="write nanosecond-resolution pcap")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_gen_trace)

    def one_line_error(message: str) -> None:  # argparse would print the whole usage first
        p.exit(2, f"vnfkit gen-trace: error: {message} (see vnfkit gen-trace --help)\n")

    p.error = one_line_error  # type: ignore[method-assign,assignment]


def _cmd_gen_trace(args: argparse.Namespace) -> int:
    from . import traffic

    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise ValueError(f"--out: directory {out_dir} does not exist")
    if args.chunk < 1:
        raise ValueError("--chunk: must be >= 1")
    t0 = time.monotonic()
    last = [t0]
    show = not args.quiet and args.packets >= 1_000_000

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if show and (now - last[0] >= 1.0 or done == total):
            last[0] = now
            print(f"\rgen-trace: {done}/{total} packets ({100.0 * done / total:.0f}%)", end="", file=sys.stderr,
                  flush=True)

    stats = traffic.write_trace(
        args.out, args.flows, args.packets, args.seed, chunk=args.chunk, nanosecond=args.nanosecond,
        progress=progress, rate_pps=args.rate_pps, flow_rate=args.flow_rate, ipv6_fraction=args.ipv6_fraction,
        udp_fraction=args.udp_fraction, frame_size=args.frame_size, mean_duration_s=args.mean_duration)
    if show:
        print(file=sys.stderr)
    dt = time.monotonic() - t0
    print(f"wrote {stats['packets']} packets ({stats['bytes']} bytes) of {stats['flows']} flows "
          f"({stats['tcp']} TCP, {stats['udp']} UDP, {stats['ipv6']} IPv6) spanning "
          f"{stats['duration_ns'] / 1e9:.3f} s to {args.out} in {dt:.2f} s")
    return 0


def _one_line_errors(p: argparse.ArgumentParser, name: str) -> None:
    def one_line_error(message: str) -> None:  # argparse would print the whole usage first
        p.exit(2, f"vnfkit {name}: error: {message} (see vnfkit {name} --help)\n")

    p.error = one_line_error  # type: ignore[method-assign,assignment]


class _Progress:
    """A one-line progress indicator on stderr, refreshed at most once a second."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.done = 0
        self.t0 = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= 1.0:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9) / 1e6
            pct = f" ({100.0 * self.done / self.total:.0f}%)" if self.total else ""
            print(f"\r{self.label}: {self.done} packets{pct}, {rate:.2f} Mpps", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled and self.last != self.t0:
            print(file=sys.stderr)


def _parse_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        key = bytes.fromhex(text.replace(":", "").replace(" ", ""))
    except ValueError:
        raise ValueError(f"--key: not a hex string: {text!r}") from None
    return key


def _add_classify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("classify", help="parse a pcap and spread it over RSS queues, one CSV row per packet",
                       description="Parse every packet of a pcap/pcapng file, hash it with Toeplitz RSS and "
                                   "map it to a receive queue through the indirection table, as a multi-queue "
                                   "NIC does. Writes one CSV row per packet.")
    p.add_argument("--in", dest="inp", required=True, help="input pcap or pcapng file")
    p.add_argument("--queues", type=int, required=True, help="number of receive queues (1..1024)")
    p.add_argument("--key", default=None, help="RSS key in hex (default: the 40-byte Microsoft key)")
    p.add_argument("--symmetric", action="store_true", help="symmetric hashing (both directions, one queue)")
    p.add_argument("--reta-size", type=int, default=128, help="indirection table size (power of two)")
    p.add_argument("--no-ports", action="store_true", help="hash addresses only")
    p.add_argument("--csv", required=True, help="output CSV file")
    p.add_argument("--chunk", type=int, default=65536, help="packets read per chunk")
    p.add_argument("--quiet", action="store_true", help="no progress or summary")
    p.set_defaults(func=_cmd_classify)
    _one_line_errors(p, "classify")


_CSV_HEADER = ["packet_id", "ts_ns", "family", "src", "dst", "sport", "dport", "proto", "tcp_flags",
               "drop_reason", "rss_hash", "queue"]


def _addr_strings(raw: np.ndarray, family: np.ndarray) -> list[str]:
    """Text form of the 16-byte address column (IPv4 in the first 4 bytes)."""
    import ipaddress

    out: list[str] = []
    cache: dict[bytes, str] = {}
    for row, fam in zip(raw, family):
        b = row.tobytes() if fam == 6 else row[:4].tobytes()
        s = cache.get(b)
        if s is None:
            if fam == 4:
                s = str(ipaddress.IPv4Address(b))
            elif fam == 6:
                s = str(ipaddress.IPv6Address(b))
            else:
                s = ""
            cache[b] = s
        out.append(s)
    return out


def _check_io(chunk: int, inp: str, out: str, out_flag: str) -> None:
    """The checks every file-to-file command makes before it starts (one-line errors)."""
    if chunk < 1:
        raise ValueError("--chunk: must be >= 1")
    if not os.path.isfile(inp):
        raise ValueError(f"--in: {inp} does not exist or is not a file")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise ValueError(f"{out_flag}: directory {out_dir} does not exist")


def _cmd_classify(args: argparse.Namespace) -> int:
    import csv

    from . import _core
    from .classify import MultiQueueClassifier
    from .packets import iter_pcap

    _check_io(args.chunk, args.inp, args.csv, "--csv")
    clf = MultiQueueClassifier(args.queues, key=_parse_key(args.key), symmetric=args.symmetric,
                               reta_size=args.reta_size, use_ports=not args.no_ports)
    per_queue = np.zeros(args.queues, dtype=np.int64)
    drops: dict[str, int] = {}
    total = 0
    prog = _Progress("classify", None, enabled=not args.quiet)
    t0 = time.perf_counter()
    reasons = [_core.drop_reason_name(i) for i in range(len(_core.DropReason))]
    with open(args.csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(_CSV_HEADER)
        for b in iter_pcap(args.inp, chunk=args.chunk):
            b.parse()
            clf.classify(b)
            k = b.key
            fam = k["family"]
            src = _addr_strings(k["src"], fam)
            dst = _addr_strings(k["dst"], fam)
            per_queue += np.bincount(b.queue, minlength=args.queues)[: args.queues]
            for name, cnt in b.drop_counts().items():
                drops[name] = drops.get(name, 0) + cnt
            cols = zip(b.packet_id.tolist(), b.ts_ns.tolist(), fam.tolist(), src, dst, k["sport"].tolist(),
                       k["dport"].tolist(), k["proto"].tolist(), b.tcp_flags.tolist(), b.drop.tolist(),
                       b.hash.tolist(), b.queue.tolist())
            w.writerows((pid, ts, f, s, d, sp, dp, pr, tf, reasons[dr], f"0x{h:08x}", q)
                        for pid, ts, f, s, d, sp, dp, pr, tf, dr, h, q in cols)
            total += len(b)
            prog(len(b))
    prog.finish()
    dt = time.perf_counter() - t0
    if not args.quiet:
        print(f"classified {total} packets from {args.inp} into {args.queues} queues in {dt:.2f} s -> {args.csv}")
        for q in range(args.queues):
            share = 100.0 * per_queue[q] / total if total else 0.0
            print(f"  queue {q:>4}: {per_queue[q]:>10} packets ({share:5.1f} %)")
        if drops:
            print("  malformed (dropped): " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
    return 0


def _print_run_summary(res: Any, title: str) -> None:
    """The summary table of a Runner result: per queue and total, drops by reason, VNF counters."""
    print(title)
    print()
    print(f"{'queue':>6} {'packets':>10} {'forwarded':>10} {'dropped':>9} {'worker Mpps':>12} "
          f"{'p50 us':>8} {'p99 us':>8}")
    for q in res.queues:
        sq = q.summary()
        rate = sq["packets"] / sq["busy_s"] / 1e6 if sq["busy_s"] > 0 else 0.0
        print(f"{sq['queue']:>6} {sq['packets']:>10} {sq['forwarded']:>10} {sq['dropped']:>9} {rate:>12.2f} "
              f"{sq['p50_us']:>8.0f} {sq['p99_us']:>8.0f}")
    print(f"{'total':>6} {res.packets:>10} {res.forwarded:>10} {res.dropped:>9} {res.mpps:>12.2f} "
          f"{res.p50_us:>8.0f} {res.p99_us:>8.0f}   (total Mpps: end to end, wall clock)")
    drops = res.drops
    if drops:
        print()
        print("drops by reason:")
        for k, v in drops.items():
            print(f"  {k:<22} {v:>10}")
    nonzero = {k: v for k, v in sorted(res.vnf_stats.items()) if v}
    if nonzero:
        print()
        print("VNF counters (non-zero):")
        for k, v in nonzero.items():
            print(f"  {k:<22} {v:>10}")


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .nfs import names

    p = sub.add_parser("run", help="run one of the shipped middleboxes over a pcap",
                       description="Run a middlebox over a pcap/pcapng trace through a multi-queue runner "
                                   "(RSS classifier, one worker thread per queue) and write the packets it "
                                   "forwards to a pcap. Prints a summary table.")
    p.add_argument("nf", choices=names(), help="which middlebox")
    p.add_argument("--in", dest="inp", required=True, help="input pcap or pcapng file")
    p.add_argument("--out", required=True, help="output pcap of the forwarded packets (in release order per queue)")
    p.add_argument("--queues", type=int, default=1, help="receive queues / worker threads")
    p.add_argument("--config", default=None, help="JSON file with configuration keys (see the NF's DEFAULTS)")
    p.add_argument("--chunk", type=int, default=8192, help="packets per batch")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_run)
    _one_line_errors(p, "run")


def _load_config(path: str | None) -> dict[str, Any]:
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


def _cmd_run(args: argparse.Namespace) -> int:
    from . import _core
    from .nfs import load
    from .packets import iter_pcap
    from .vnf import Runner

    _check_io(args.chunk, args.inp, args.out, "--out")
    cls, _defaults = load(args.nf)
    cfg = _load_config(args.config)
    size = os.path.getsize(args.inp)
    prog = _Progress(f"run {args.nf}", None, enabled=not args.quiet)

    with _core.PcapWriter(args.out, False) as writer:
        def on_output(_q: int, out: Any) -> None:
            fwd = np.flatnonzero(out.port != 0).astype(np.uint32)
            if len(fwd):
                writer.write(out if len(fwd) == len(out) else out.select(fwd))

        try:
            runner = Runner(cls, queues=args.queues, config=cfg, logged=False)
        except TypeError as exc:  # unknown config keys etc. are configuration errors
            raise ValueError(str(exc)) from None
        with runner:
            res = runner.run(iter_pcap(args.inp, chunk=args.chunk), on_output=on_output, progress=prog)
        written = int(writer.packets_written)
    prog.finish()
    _print_run_summary(res, f"vnfkit run {args.nf}: {res.packets} packets from {args.inp} ({size} bytes) "
                            f"through {args.queues} queue(s) in {res.wall_s:.2f} s; {written} written to {args.out}")
    return 0


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="the main demo: MazuNAT on generated traffic with 2 queues",
                       description="Generate a synthetic trace, show how software RSS spreads it over the "
                                   "receive queues, then run the MazuNAT NAT/firewall over it with one worker "
                                   "thread per queue while a simulated remote host answers every translated "
                                   "packet, and print the summary table.")
    p.add_argument("--flows", type=int, default=5000, help="flows in the generated trace")
    p.add_argument("--packets", type=int, default=200_000, help="packets in the generated trace")
    p.add_argument("--queues", type=int, default=2, help="receive queues / worker threads")
    p.add_argument("--batch", type=int, default=4096, help="packets per batch")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.set_defaults(func=_cmd_demo)
    _one_line_errors(p, "demo")


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import traffic
    from .classify import MultiQueueClassifier
    from .nfs.mazunat import MazuNAT, run_with_replies
    from .vnf import Runner, iter_batches

    if args.flows < 1 or args.packets < args.flows:
        raise ValueError("--packets must be >= --flows >= 1")
    if args.batch < 1:
        raise ValueError("--batch: must be >= 1")
    t0 = time.perf_counter()
    batch = traffic.generate(flows=args.flows, packets=args.packets, seed=args.seed, ipv6_fraction=0.02)
    t_gen = time.perf_counter() - t0
    print(f"vnfkit demo: {len(batch)} packets of {args.flows} flows (TCP/UDP, 2 % IPv6, 64-byte frames), "
          f"generated in {t_gen:.2f} s")

    clf = MultiQueueClassifier(args.queues)
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
    with Runner(MazuNAT, queues=args.queues, logged=False) as runner:
        res = run_with_replies(runner, iter_batches(batch, args.batch))
    print()
    _print_run_summary(res, f"MazuNAT, {args.queues} queues, batches of {args.batch}: {res.packets} packets "
                            f"in {res.wall_s:.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vnfkit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_run(sub)
    _add_gen_trace(sub)
    _add_classify(sub)
    from .experiments.cli import add_parser as _add_experiment  # `vnfkit experiment scale ...`

    _add_experiment(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        print(f"vnfkit: unknown command {args.command}", file=sys.stderr)
        return 2
    try:
        return int(func(args))
    except BrokenPipeError:  # e.g. `vnfkit run ... | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 141
    except (ValueError, OSError) as exc:
        print(f"vnfkit {args.command}: error: {exc}", file=sys.stderr)
        return 1
