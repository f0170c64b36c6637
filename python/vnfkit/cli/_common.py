"""What every `vnfkit` subcommand shares: one-line argument errors, checked numbers, refusing to
overwrite an input, progress on stderr and tables on stdout (both drawn by rich)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from ..io import same_file

SubParsers = argparse._SubParsersAction  # the type of `parser.add_subparsers()`


def one_line_errors(p: argparse.ArgumentParser, name: str) -> None:
    """Make argparse errors one line (it would print the whole usage first)."""

    def one_line_error(message: str) -> None:
        p.exit(2, f"vnfkit {name}: error: {message} (see vnfkit {name} --help)\n")

    p.error = one_line_error  # type: ignore[method-assign,assignment]


def int_arg(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a decimal integer in lo..hi (so a huge number is a one-line error)."""

    def parse(text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r}") from None
        if not lo <= v <= hi:
            shown = text if len(text) <= 24 else text[:20] + "..."
            raise argparse.ArgumentTypeError(f"{shown} is out of range {lo}..{hi}")
        return v

    parse.__name__ = "integer"
    return parse


def positive_float_arg(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text[:24]} must be a finite number > 0")
    return v


positive_float_arg.__name__ = "number"


def refuse_overwriting_input(inp: str, out: str, in_flag: str, out_flag: str) -> None:
    """Refuse (ValueError) an output that is the input file, also through a symlink or a hard link."""
    if same_file(inp, out):
        raise ValueError(f"{out_flag}: {out} is the {in_flag} file; writing it would destroy the input "
                         f"before it is read (choose another {out_flag})")


def check_io(chunk: int, inp: str, out: str, out_flag: str) -> None:
    """The checks every file-to-file command makes before it opens anything for writing."""
    if chunk < 1:
        raise ValueError("--chunk: must be >= 1")
    if not os.path.isfile(inp):
        raise ValueError(f"--in: {inp} does not exist or is not a file")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise ValueError(f"{out_flag}: directory {out_dir} does not exist")
    if os.path.isdir(out):
        raise ValueError(f"{out_flag}: {out} is a directory")
    refuse_overwriting_input(inp, out, "--in", out_flag)


def stdout_console() -> Any:
    from rich.console import Console

    # Not a terminal (a pipe, a file, a test): wide enough that no table row wraps.
    return Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 200)


def print_table(title: str | None, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]],
                console: Any = None) -> None:
    """A plain (borderless) table on stdout: columns are (header, "left" | "right")."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, title_justify="left", pad_edge=False)
    for header, justify in columns:
        t.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        t.add_row(*(str(x) for x in row))
    (console or stdout_console()).print(t)


class Progress:
    """Progress of one command on stderr, drawn by rich.

    With a known ``total`` (bytes of the input file, or packets to generate) it shows a bar, the
    percentage and the time remaining; without one, a packet count, the rate and the elapsed time.
    Use it as a context manager: leaving it (also by an exception) ends the progress line, so an
    error message printed afterwards starts on a line of its own.
    """

    def __init__(self, label: str, total: int | None, enabled: bool = True) -> None:
        self.label, self.total, self.enabled = label, total or None, enabled
        self.packets = 0
        self._t0 = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (BarColumn, Progress as RichProgress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        cols: list[Any] = [TextColumn("{task.description}")]
        if self.total:
            cols += [BarColumn(), TaskProgressColumn(), TimeRemainingColumn()]
        cols += [TextColumn("{task.fields[packets]} packets, {task.fields[mpps]:.2f} Mpps"), TimeElapsedColumn()]
        self._bar = RichProgress(*cols, console=Console(stderr=True), refresh_per_second=4)
        self._task = self._bar.add_task(self.label, total=self.total, packets=0, mpps=0.0)
        self._bar.start()
        return self

    def update(self, packets: int, completed: int | None = None) -> None:
        """``packets`` more were handled; ``completed`` is the progress towards ``total`` so far."""
        self.packets += packets
        if self._bar is None:
            return
        mpps = self.packets / max(time.monotonic() - self._t0, 1e-9) / 1e6
        self._bar.update(self._task, completed=self.packets if completed is None else completed,
                         packets=self.packets, mpps=mpps)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            if exc is None and self.total:
                self._bar.update(self._task, completed=self.total)
            if exc is not None:  # leave only the error message: no half-finished bar above it
                self._bar.live.transient = True
            self._bar.stop()
            self._bar = None


def warn(command: str, message: str) -> None:
    print(f"vnfkit {command}: warning: {message}", file=sys.stderr)
