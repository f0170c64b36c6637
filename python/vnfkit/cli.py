"""The `vnfkit` command."""

from __future__ import annotations

import argparse
import os
import sys
import time


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vnfkit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _add_gen_trace(sub)
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
