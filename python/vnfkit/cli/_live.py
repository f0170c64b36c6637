"""`vnfkit live mazunat --inside IF --outside IF`: MazuNAT forwarding between two live interfaces."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from ._common import SubParsers, int_arg, one_line_errors, positive_float_arg

#: Recovery strategies and stable storages this command implements.
STRATEGIES = ("none", "replay")
STORAGES = ("none", "redis", "file", "memory")


def add(sub: SubParsers) -> None:
    p = sub.add_parser("live", help="run a middlebox on live network interfaces (AF_PACKET, root)",
                       description="Run a middlebox on two live interfaces over AF_PACKET sockets (root or "
                                   "CAP_NET_RAW). It forwards like a router: every frame it sends gets the "
                                   "sending interface's MAC as source and the next hop's (--inside-peer / "
                                   "--outside-peer) as destination. It does not answer ARP: the hosts on "
                                   "each side need a static neighbour entry for the interface they send to "
                                   "(vnfkit.testbed sets them). Runs until SIGINT/SIGTERM or --duration, "
                                   "then prints a JSON summary on stdout. With --strategy replay a master "
                                   "and a passive backup run as two process groups over stable storage "
                                   "(checkpoint + input/determinant logs + output commit); when the master "
                                   "dies the backup restores, replays and takes over the same interfaces.")
    p.add_argument("nf", choices=("mazunat",), help="which middlebox (MazuNAT: inside = private side)")
    p.add_argument("--inside", required=True, help="interface on the private side (internal_net)")
    p.add_argument("--outside", required=True, help="interface on the public side (public_addr)")
    p.add_argument("--inside-peer", required=True, metavar="MAC",
                   help="MAC of the next hop on the inside (the client, or the LAN's router)")
    p.add_argument("--outside-peer", required=True, metavar="MAC",
                   help="MAC of the next hop on the outside (the upstream router, or the server)")
    p.add_argument("--config", default=None, help="JSON file with MazuNAT configuration keys (public_addr, ...)")
    p.add_argument("--strategy", choices=STRATEGIES, default="none",
                   help="recovery strategy: 'none' (one process, no fault tolerance) or 'replay' "
                        "(checkpoint + replay: master and backup processes, output commit)")
    p.add_argument("--storage", choices=STORAGES, default=None,
                   help="stable storage for --strategy replay: 'redis' (a private primary + replica "
                        "started and stopped by this command, WAIT 1) or 'file' (fdatasync); 'memory' "
                        "cannot outlive the master's process and is refused here (default: redis with "
                        "replay, none without)")
    p.add_argument("--storage-dir", default=None, help="directory for --storage file (must not exist or be "
                                                       "empty; default: a temporary one, removed on exit)")
    p.add_argument("--topology", default=None, metavar="FILE",
                   help="with --strategy replay --storage redis: run the master, the backup and Redis on "
                        "hosts of their own (network namespaces) behind a tc steering switch, as the JSON "
                        "FILE describes (vnfkit.testbed.failover writes one); the backup's failure "
                        "detector reprograms the switch when it takes over")
    p.add_argument("--checkpoint-ms", type=positive_float_arg, default=50.0,
                   help="checkpoint interval with --strategy replay (default 50)")
    p.add_argument("--heartbeat-timeout-ms", type=positive_float_arg, default=500.0,
                   help="declare a master whose heartbeat is this old hung (its death is seen at once)")
    p.add_argument("--batch", type=int_arg(1, 4096), default=256, help="most frames per receive call")
    p.add_argument("--duration", type=positive_float_arg, default=None, help="stop after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no 'ready' line on stderr")
    p.set_defaults(func=run)
    one_line_errors(p, "live")


def check_combination(args: argparse.Namespace) -> str:
    """The storage the strategy uses, or ValueError naming the bad combination."""
    storage = args.storage if args.storage is not None else ("redis" if args.strategy == "replay" else "none")
    if args.strategy == "none" and storage != "none":
        raise ValueError(f"--storage {storage}: needs --strategy replay (--strategy none keeps no state to store)")
    if args.strategy == "replay" and storage == "none":
        raise ValueError("--storage none: --strategy replay needs stable storage (redis or file)")
    if storage == "memory":
        raise ValueError("--storage memory: in-process storage dies with the master's process; the live "
                         "master and backup are separate processes, use --storage redis or file")
    if args.storage_dir is not None and storage != "file":
        raise ValueError(f"--storage-dir: only with --storage file (got --storage {storage})")
    if args.topology is not None and (args.strategy != "replay" or storage != "redis"):
        raise ValueError(f"--topology: needs --strategy replay --storage redis (the storage host runs Redis), "
                         f"got --strategy {args.strategy} --storage {storage}")
    if args.inside == args.outside:
        raise ValueError(f"--inside/--outside: must be two different interfaces, got {args.inside!r} twice")
    return storage


def run_replay(args: argparse.Namespace, cfg: dict[str, Any], storage: str) -> int:
    from ..io.live import open_socket
    from ..live.supervisor import load_topology, run_failover
    from ..nfs.mazunat import MazuNAT
    from ..state import SharedState
    from ..vnf import Context

    try:  # bad configuration and missing interfaces / permissions fail here, before any process starts
        MazuNAT().setup(Context(0, 1, shared=SharedState(), logged=False), **cfg)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    topology = None
    if args.topology is not None:  # the nodes' interfaces are on their own hosts
        try:
            text = open(args.topology, encoding="utf-8").read()
        except OSError as exc:
            raise ValueError(f"--topology: cannot read {args.topology}: {exc.strerror}") from None
        topology = load_topology(text, args.inside, args.outside)
    else:
        for ifname in (args.inside, args.outside):
            open_socket(ifname, batch=1).close()
    summary = run_failover(inside=args.inside, outside=args.outside, inside_peer=args.inside_peer,
                           outside_peer=args.outside_peer, config=cfg, storage=storage, storage_dir=args.storage_dir,
                           batch=args.batch, checkpoint_ms=args.checkpoint_ms,
                           heartbeat_timeout_ms=args.heartbeat_timeout_ms, duration_s=args.duration,
                           quiet=args.quiet, label=f"vnfkit live {args.nf}", topology=topology)
    print(json.dumps({"nf": args.nf, **summary}), flush=True)
    return 0


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
    storage = check_combination(args)
    if args.strategy == "replay":
        return run_replay(args, cfg, storage)
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
