"""`vnfkit classify`: RSS queue of every packet of a capture, one CSV row each."""

from __future__ import annotations

import argparse
import time

import numpy as np

from ._common import Progress, SubParsers, check_io, int_arg, one_line_errors, print_table, warn

MAX_QUEUES = 1024
DEFAULT_RETA = 128


def add(sub: SubParsers) -> None:
    p = sub.add_parser("classify", help="parse a pcap and spread it over RSS queues, one CSV row per packet",
                       description="Parse every packet of a pcap/pcapng file, hash it with Toeplitz RSS and "
                                   "map it to a receive queue through the indirection table, as a multi-queue "
                                   "NIC does. Writes one CSV row per packet.")
    p.add_argument("--in", dest="inp", required=True, help="input pcap or pcapng file")
    p.add_argument("--queues", type=int_arg(1, MAX_QUEUES), required=True,
                   help=f"number of receive queues (1..{MAX_QUEUES})")
    p.add_argument("--key", default=None, help="RSS key in hex (default: the 40-byte Microsoft key)")
    p.add_argument("--symmetric", action="store_true", help="symmetric hashing (both directions, one queue)")
    p.add_argument("--reta-size", type=int_arg(1, 1 << 16), default=None,
                   help=f"indirection table size, a power of two >= --queues "
                        f"(default {DEFAULT_RETA}, or the next power of two above --queues)")
    p.add_argument("--no-ports", action="store_true", help="hash addresses only")
    p.add_argument("--csv", required=True, help="output CSV file")
    p.add_argument("--chunk", type=int_arg(1, 1 << 24), default=65536, help="packets read per chunk")
    p.add_argument("--quiet", action="store_true", help="no progress or summary")
    p.set_defaults(func=run)
    one_line_errors(p, "classify")


def reta_size_for(queues: int, reta_size: int | None, flag: str = "--reta-size") -> int:
    """The indirection table size for ``queues``: every queue must own at least one entry."""
    if reta_size is None:
        return max(DEFAULT_RETA, 1 << (queues - 1).bit_length())
    if reta_size < queues:
        raise ValueError(f"{flag}: a {reta_size}-entry table leaves queues {reta_size}..{queues - 1} without "
                         f"packets; use {flag} {1 << (queues - 1).bit_length()} or more, or fewer --queues")
    return reta_size


def parse_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text.replace(":", "").replace(" ", ""))
    except ValueError:
        raise ValueError(f"--key: not a hex string: {text!r}") from None


CSV_HEADER = ["packet_id", "ts_ns", "family", "src", "dst", "sport", "dport", "proto", "tcp_flags",
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


def run(args: argparse.Namespace) -> int:
    import csv

    from .. import _core
    from ..classify import MultiQueueClassifier
    from ..io import PcapSource

    check_io(args.chunk, args.inp, args.csv, "--csv")
    reta = reta_size_for(args.queues, args.reta_size)
    source = PcapSource(args.inp, chunk=args.chunk)
    source.check_parsable()
    clf = MultiQueueClassifier(args.queues, key=parse_key(args.key), symmetric=args.symmetric,
                               reta_size=reta, use_ports=not args.no_ports)
    per_queue = np.zeros(args.queues, dtype=np.int64)
    drops: dict[str, int] = {}
    total = 0
    t0 = time.perf_counter()
    reasons = [_core.drop_reason_name(i) for i in range(len(_core.DropReason))]
    with open(args.csv, "w", newline="") as fh, Progress("classify", source.file_size, not args.quiet) as prog:
        w = csv.writer(fh)
        w.writerow(CSV_HEADER)
        for b in source:
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
            prog.update(len(b), source.position)
    dt = time.perf_counter() - t0
    cut = source.truncation_warning()
    if cut:
        warn("classify", cut)
    if not args.quiet:
        print(f"classified {total} packets from {args.inp} into {args.queues} queues "
              f"(RETA of {reta}) in {dt:.2f} s -> {args.csv}")
        rows = [(q, int(per_queue[q]), f"{100.0 * per_queue[q] / total if total else 0.0:.1f} %")
                for q in range(args.queues)]
        print_table(None, [("queue", "right"), ("packets", "right"), ("share", "right")], rows)
        if drops:
            print("  malformed (dropped): " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
        if cut:
            print("  warnings: 1 (the last record is cut off; see stderr)")
    return 0
