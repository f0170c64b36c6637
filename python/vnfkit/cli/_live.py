"""`vnfkit live mazunat --inside IF --outside IF`: MazuNAT forwarding between two live interfaces."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from ._common import SubParsers, int_arg, one_line_errors, positive_float_arg

#: Recovery strategies and stable storages this command implements today.
STRATEGIES = ("none",)
STORAGES = ("none",)


def add(sub: SubParsers) -> None:
    p = sub.add_parser("live", help="run a middlebox on live network interfaces (AF_PACKET, root)",
                       description="Run a middlebox on two live interfaces over AF_PACKET sockets (root or "
                                   "CAP_NET_RAW). It forwards like a router: every frame it sends gets the "
                                   "sending interface's MAC as source and the next hop's (--inside-peer / "
                                   "--outside-peer) as destination. It does not answer ARP: the hosts on "
                                   "each side need a static neighbour entry for the interface they send to "
                                   "(vnfkit.testbed sets them). Runs until SIGINT/SIGTERM or --duration, "
                                   "then prints a JSON summary on stdout.")
    p.add_argument("nf", choices=("mazunat",), help="which middlebox (MazuNAT: inside = private side)")
    p.add_argument("--inside", required=True, help="interface on the private side (internal_net)")
    p.add_argument("--outside", required=True, help="interface on the public side (public_addr)")
    p.add_argument("--inside-peer", required=True, metavar="MAC",
                   help="MAC of the next hop on the inside (the client, or the LAN's router)")
    p.add_argument("--outside-peer", required=True, metavar="MAC",
                   help="MAC of the next hop on the outside (the upstream router, or the server)")
    p.add_argument("--config", default=None, help="JSON file with MazuNAT configuration keys (public_addr, ...)")
    p.add_argument("--strategy", choices=STRATEGIES, default="none",
                   help="recovery strategy: only 'none' for now (no checkpoint, no replay; the "
                        "replay/checkpoint strategies are not wired to live interfaces yet)")
    p.add_argument("--storage", choices=STORAGES, default="none",
                   help="stable storage for recovery: only 'none' for now (goes with --strategy none)")
    p.add_argument("--batch", type=int_arg(1, 4096), default=256, help="most frames per receive call")
    p.add_argument("--duration", type=positive_float_arg, default=None, help="stop after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no 'ready' line on stderr")
    p.set_defaults(func=run)
    one_line_errors(p, "live")


def run(args: argparse.Namespace) -> int:
    from ..io.live import parse_mac
    from ..io.live_forward import TwoPortForwarder
    from ..nfs.mazunat import EXTERNAL, INTERNAL, MazuNAT
    from ..state import SharedState
    from ..vnf import Context, ControlState
    from ._run import load_config

    inside_peer = parse_mac(args.inside_peer, "--inside-peer")
    outside_peer = parse_mac(args.outside_peer, "--outside-peer")
    cfg = load_config(args.config)
    ctx = Context(0, 1, shared=SharedState(), control=ControlState(), logged=False)
    vnf = MazuNAT()
    try:
        vnf.setup(ctx, **cfg)
    except TypeError as exc:  # unknown config keys
        raise ValueError(str(exc)) from None
    stopping = {"flag": False}

    def on_signal(_sig: int, _frame: Any) -> None:
        stopping["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    fwd = TwoPortForwarder(vnf, ctx, inside=args.inside, outside=args.outside, inside_peer=inside_peer,
                           outside_peer=outside_peer, outside_port=EXTERNAL, inside_port=INTERNAL, batch=args.batch)
    try:
        if not args.quiet:
            print(f"vnfkit live {args.nf}: ready on inside {args.inside}, outside {args.outside} "
                  f"(public address {vnf.cfg.raw['public_addr']})", file=sys.stderr, flush=True)
        stats = fwd.run(lambda: stopping["flag"], duration_s=args.duration)
        summary = {"nf": args.nf, **stats.as_dict(), "sockets": fwd.socket_stats(),
                   "vnf": {k: int(v) for k, v in sorted(vnf.stats().items()) if v}}
    finally:
        fwd.close()
        for s, h in old.items():
            signal.signal(s, h)
    print(json.dumps(summary), flush=True)
    return 0
