"""`vnfkit gen-trace`: a synthetic trace straight into a pcap file."""

from __future__ import annotations

import argparse
import os
import shutil
import time

from ._common import Progress, SubParsers, int_arg, one_line_errors, positive_float_arg

#: The largest trace gen-trace writes (about 80 GB of 64-byte frames).
MAX_PACKETS = 1 << 30


def add(sub: SubParsers) -> None:
    p = sub.add_parser("gen-trace", help="generate a synthetic pcap trace (see vnfkit.traffic)",
                       description="Generate a synthetic trace: Poisson flow arrivals, heavy-tailed flow "
                                   "sizes and durations, TCP/UDP over IPv4/IPv6, valid checksums.")
    p.add_argument("--out", required=True, help="output pcap file (its directory must exist)")
    p.add_argument("--flows", type=int_arg(1, MAX_PACKETS), required=True, help="number of flows (>= 1)")
    p.add_argument("--packets", type=int_arg(1, MAX_PACKETS), required=True,
                   help=f"number of packets (>= flows, at most {MAX_PACKETS} and what fits on the disk)")
    p.add_argument("--seed", type=int_arg(0, 2**63 - 1), default=0, help="random seed (same seed, same trace)")
    p.add_argument("--rate-pps", type=positive_float_arg, default=None,
                   help="mean packet rate, > 0 (default 1 Gbps of 64 B)")
    p.add_argument("--flow-rate", type=positive_float_arg, default=None,
                   help="new flows per second, > 0 (default: flows over the span)")
    p.add_argument("--ipv6-fraction", type=float, default=0.0, help="fraction of IPv6 flows")
    p.add_argument("--udp-fraction", type=float, default=0.2, help="fraction of UDP flows")
    p.add_argument("--frame-size", type=int_arg(1, 65535), default=64, help="IPv4 frame size in bytes (IPv6: +20)")
    p.add_argument("--mean-duration", type=positive_float_arg, default=None, help="mean flow duration, seconds")
    p.add_argument("--chunk", type=int_arg(1, 1 << 24), default=65536, help="packets per generation chunk")
    p.add_argument("--nanosecond", action="store_true", help="write nanosecond-resolution pcap")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
    one_line_errors(p, "gen-trace")


def expected_bytes(packets: int, frame_size: int, ipv6_fraction: float) -> int:
    """Upper bound of the pcap's size: file header, record headers, frames (IPv6 ones 20 bytes longer)."""
    return 24 + packets * (16 + frame_size + (20 if ipv6_fraction > 0 else 0))


def run(args: argparse.Namespace) -> int:
    from .. import traffic

    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise ValueError(f"--out: directory {out_dir} does not exist")
    if os.path.isdir(args.out):
        raise ValueError(f"--out: {args.out} is a directory")
    need = expected_bytes(args.packets, args.frame_size, args.ipv6_fraction)
    free = shutil.disk_usage(out_dir).free
    if need > free:
        raise ValueError(f"--packets: {args.packets} packets need about {need / 1e9:.1f} GB but {out_dir} "
                         f"has {free / 1e9:.1f} GB free")
    t0 = time.monotonic()
    with Progress("gen-trace", args.packets, enabled=not args.quiet and args.packets >= 1_000_000) as prog:
        stats = traffic.write_trace(
            args.out, args.flows, args.packets, args.seed, chunk=args.chunk, nanosecond=args.nanosecond,
            progress=lambda done, _total: prog.update(done - prog.packets), rate_pps=args.rate_pps,
            flow_rate=args.flow_rate, ipv6_fraction=args.ipv6_fraction, udp_fraction=args.udp_fraction,
            frame_size=args.frame_size, mean_duration_s=args.mean_duration)
    dt = time.monotonic() - t0
    print(f"wrote {stats['packets']} packets ({stats['bytes']} bytes) of {stats['flows']} flows "
          f"({stats['tcp']} TCP, {stats['udp']} UDP, {stats['ipv6']} IPv6) spanning "
          f"{stats['duration_ns'] / 1e9:.3f} s to {args.out} in {dt:.2f} s")
    return 0
