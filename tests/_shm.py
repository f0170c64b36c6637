"""Test helper: shared-memory SharedStates with unique names, and the check that none is left
behind in /dev/shm (run as a finalizer, so it also runs when the test fails).

Shared by the shared-state tests (imported as a plain module: tests/ has no __init__.py)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from vnfkit.state import SharedState

#: every segment a test of this process makes starts with this (other processes' are left alone)
PREFIX = f"vnfkit-test-{os.getpid()}-"
_seq = itertools.count()


def new_name() -> str:
    return f"{PREFIX}{next(_seq)}"


def leftovers() -> list[str]:
    return sorted(p for p in os.listdir("/dev/shm") if p.startswith(PREFIX))


class ShmStates:
    """Makes shm states for one test; `finish()` closes them and asserts /dev/shm is clean."""

    def __init__(self) -> None:
        self.made: list[SharedState] = []

    def __call__(self, size: int = 16 << 20, **kw: int) -> SharedState:
        s = SharedState.create_shm(new_name(), size, **kw)
        self.made.append(s)
        return s

    def finish(self) -> list[str]:
        for s in self.made:
            s.close()
        left = leftovers()
        for p in left:  # never leak, even when the test failed
            os.unlink(os.path.join("/dev/shm", p))
        return left


@pytest.fixture
def shm_states() -> Iterator[ShmStates]:
    f = ShmStates()
    yield f
    left = f.finish()
    assert not left, f"shared-memory segments left behind: {left}"
