"""The `vnfkit` command.

One module per subcommand (``_demo``, ``_run``, ``_gen_trace``, ``_classify``,
``_recovery``, ``_live``), each with ``add(sub)``
registering its parser and ``run(args)`` doing the work; ``_common`` holds what they share (one-line
errors, checked numbers, progress on stderr and tables on stdout via rich). A new subcommand is a
new module and one line in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import sys

from . import _classify, _demo, _gen_trace, _live, _recovery, _run

SUBCOMMANDS = [_demo, _run, _gen_trace, _classify, _recovery, _live]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vnfkit", description="vnfkit: stateful, elastic, fault-tolerant VNFs.")
    sub = p.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add(sub)
    from ..experiments.cli import add_parser as add_experiment  # `vnfkit experiment scale ...`

    add_experiment(sub)
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
    except (ValueError, OSError, OverflowError) as exc:
        print(f"vnfkit {args.command}: error: {exc}", file=sys.stderr)
        return 1
