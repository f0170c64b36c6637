"""``vnfkit experiment ...``: the sub-commands of the experiments (hooked into vnfkit.cli)."""

from __future__ import annotations

import argparse
from typing import Any

from ..cli._common import int_arg


def _duration(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 1.0 <= v <= 3600.0:
        raise argparse.ArgumentTypeError(f"must be between 1 and 3600 s, got {v:g}")
    return v


#: --seed: a decimal integer in 0..2**32-1 (the CLI's one integer-argument checker)
_seed = int_arg(0, (1 << 32) - 1)


def _scale(args: Any) -> int:
    from .scale import cli_main

    return cli_main(args)


def _recovery(args: Any) -> int:
    from .recovery import cli_main

    return cli_main(args)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("experiment", help="reproduce the study's experiments (figures, tables, JSON)")
    esub = p.add_subparsers(dest="experiment", required=True)
    s = esub.add_parser("scale", help="scale-out: migration avoidance vs never-migrate vs always-migrate "
                                      "(figures A.1, A.2, a markdown table)")
    s.add_argument("--mode", choices=("sim", "live"), default="sim",
                   help="sim: virtual-time simulation of the study's workload; live: real packets between "
                        "real Monitor instances in this process")
    s.add_argument("--switch", choices=("model", "ovs"), default="model",
                   help="with --mode live: model (the hardware-switch model, in process) or ovs (a real Open "
                        "vSwitch bridge, packets over veth pairs in namespaces of its own; root)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--duration", type=_duration, default=None,
                   help="simulated seconds per strategy (default 30; with --switch ovs: seconds of trace at "
                        "20 000 packets/s, default 2)")
    s.add_argument("--json", metavar="FILE", help="write the per-strategy results as JSON to FILE")
    s.add_argument("--out", metavar="DIR", help="write the PNG figures and scale_table.md into DIR")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(func=_scale)
    r = esub.add_parser("recovery", help="rollback recovery: Table 1 and figures A.3 (latency CDF), A.4 "
                                         "(throughput), A.5 (replay time), each beside the study's numbers")
    r.add_argument("--seed", type=_seed, default=0)
    r.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    r.add_argument("--out", metavar="DIR", help="write the PNG figures and recovery_*.md tables into DIR")
    r.add_argument("--small", action="store_true", help="a tiny configuration (seconds; a smoke test)")
    r.add_argument("--quiet", action="store_true", help="no progress on stderr")
    r.set_defaults(func=_recovery)


__all__ = ["add_parser"]
