"""A private Redis primary + replica for a test, stopped by pid afterwards (a pytest fixture)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from vnfkit.recovery.storage.redis_servers import RedisPair


@pytest.fixture
def redis_pair() -> Iterator[RedisPair]:
    """A started :class:`RedisPair`; after the test, checks that its processes and directory are gone."""
    pair = RedisPair()
    try:
        yield pair
    finally:
        pids = list(pair.pids.values())
        pair.stop()
        for pid in pids:  # nothing left behind
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert not pair.dir.exists()
