"""The `vnfkit` command."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vnfkit", description=__doc__)
    p.add_subparsers(dest="command", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"vnfkit: unknown command {args.command}", file=sys.stderr)
    return 2
