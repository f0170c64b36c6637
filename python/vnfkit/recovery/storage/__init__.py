"""Stable storage for rollback recovery: one interface, three backends.

* :class:`MemoryStorage` -- in-process, the default for the demo and tests;
* :class:`FileStorage` -- segment files, group commit + fdatasync, torn tails cut on reopen;
* :class:`RedisStorage` -- a Redis primary + replica, acknowledged after ``WAIT 1``
  (:class:`RedisPair` starts a private pair).

See :mod:`vnfkit.recovery.storage.base` for the contract (offsets, sync, acknowledged offsets).
"""

from .base import (FENCED, NOT_REPLICATED, OK, TIMEOUT, UNAVAILABLE, StableStorage, StorageError, StorageUnavailable,
                   SyncResult)
from .file import FileStorage
from .memory import MemoryStorage

__all__ = ["FENCED", "NOT_REPLICATED", "OK", "TIMEOUT", "UNAVAILABLE", "FileStorage", "MemoryStorage", "RedisPair",
           "RedisStorage", "StableStorage", "StorageError", "StorageUnavailable", "SyncResult", "open_storage"]


def __getattr__(name: str) -> object:  # Redis pieces import redis-py lazily
    if name == "RedisStorage":
        from .redis import RedisStorage

        return RedisStorage
    if name == "RedisPair":
        from .redis_servers import RedisPair

        return RedisPair
    raise AttributeError(name)


def open_storage(kind: str, **kwargs: object) -> StableStorage:
    """A backend by name: "memory", "file" (``root=``) or "redis" (``unix_socket_path=`` or host/port)."""
    if kind == "memory":
        return MemoryStorage()
    if kind == "file":
        return FileStorage(**kwargs)  # type: ignore[arg-type]
    if kind == "redis":
        from .redis import RedisStorage

        return RedisStorage(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"storage: expected 'memory', 'file' or 'redis', got {kind!r}")
