"""Test helper: is a process still alive (a zombie, killed but not yet reaped, counts as gone)?

Shared by the tests that check their daemons and workers are stopped (imported as a plain module:
tests/ has no __init__.py)."""

from __future__ import annotations


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # the state follows "(comm)"
    except FileNotFoundError:
        return False
