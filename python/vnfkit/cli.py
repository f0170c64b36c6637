"""The `vnfkit` command."""

from __future__ import annotations

import argparse
import os
import sys
import time

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


def _cmd_classify(args: argparse.Namespace) -> int:
    import csv

    from . import _core
    from .classify import MultiQueueClassifier
    from .packets import iter_pcap

    if args.chunk < 1:
        raise ValueError("--chunk: must be >= 1")
    if not os.path.exists(args.inp):
        raise ValueError(f"--in: {args.inp} does not exist")
    out_dir = os.path.dirname(os.path.abspath(args.csv))
    if not os.path.isdir(out_dir):
        raise ValueError(f"--csv: directory {out_dir} does not exist")
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


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="the main demo: generate traffic, spread it over queues, show the table",
                       description="Generate a synthetic trace, spread it over receive queues with software "
                                   "RSS and print a per-queue table.")
    p.add_argument("--flows", type=int, default=5000, help="flows in the generated trace")
    p.add_argument("--packets", type=int, default=200_000, help="packets in the generated trace")
    p.add_argument("--queues", type=int, default=2, help="receive queues")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.set_defaults(func=_cmd_demo)
    _one_line_errors(p, "demo")


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import traffic
    from .classify import MultiQueueClassifier

    if args.flows < 1 or args.packets < args.flows:
        raise ValueError("--packets must be >= --flows >= 1")
    t0 = time.perf_counter()
    batch = traffic.generate(flows=args.flows, packets=args.packets, seed=args.seed, ipv6_fraction=0.1)
    t_gen = time.perf_counter() - t0
    clf = MultiQueueClassifier(args.queues)
    t0 = time.perf_counter()
    malformed = batch.parse()
    parts = clf.classify(batch)
    t_cls = time.perf_counter() - t0
    print(f"vnfkit demo: {len(batch)} packets of {args.flows} flows (10 % IPv6), generated in {t_gen:.2f} s")
    print(f"parsed + RSS-classified into {args.queues} queues in {t_cls * 1e3:.1f} ms "
          f"({len(batch) / t_cls / 1e6:.1f} Mpps, one call each); malformed: {malformed}")
    print()
    print(f"{'queue':>5} {'packets':>10} {'share':>7} {'flows':>7}")
    for q, idx in enumerate(parts):
        flows = len(np.unique(batch.flow_id[idx])) if len(idx) else 0
        print(f"{q:>5} {len(idx):>10} {100.0 * len(idx) / len(batch):>6.1f}% {flows:>7}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vnfkit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_gen_trace(sub)
    _add_classify(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        print(f"vnfkit: unknown command {args.command}", file=sys.stderr)
        return 2
    try:
        return int(func(args))
    except (ValueError, OSError) as exc:
        print(f"vnfkit {args.command}: error: {exc}", file=sys.stderr)
        return 1
