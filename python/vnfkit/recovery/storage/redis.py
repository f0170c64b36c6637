"""Redis stable storage: a record is acknowledged once it is on the primary *and* a replica.

Each stream is a Redis hash ``<prefix>:s:<stream>`` (field = offset, value = record) plus its
acknowledged offset in the hash ``<prefix>:acked`` (only ever raised, by a small Lua script, so a
stale transaction executed late cannot move it back). A sync sends, in one ``MULTI``/``EXEC``
transaction, every queued record and the new acknowledged offsets, then ``WAIT 1 <timeout>``: only
when a replica confirms the transaction are the records acknowledged. Writes are idempotent
(``HSET`` of a fixed offset), so a sync that failed -- primary killed (:data:`UNAVAILABLE`), stalled
by SIGSTOP (:data:`TIMEOUT`: the socket timeout bounds every call), replica missing
(:data:`NOT_REPLICATED`) -- is simply retried by the next one once storage returns.

A reader (the backup, possibly another process or host) uses :meth:`read`: records up to the
acknowledged offset stored with them. A read, a listing or a truncation that Redis does not answer
raises :class:`~.base.StorageUnavailable` (within the socket timeout); the caller may retry it.
"""

from __future__ import annotations

from typing import Any

from .base import (NOT_REPLICATED, OK, TIMEOUT, UNAVAILABLE, StableStorage, StorageUnavailable, check_offset,
                   check_stream)

__all__ = ["RedisStorage"]


# Raise a stream's acknowledged offset, never lower it: a transaction sent before a stall may be
# executed after a later one once the server resumes, and must not move the offset back.
_RAISE_ACKED = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""


class RedisStorage(StableStorage):
    """Stable storage on a Redis primary with ``WAIT 1`` replication (see the module docstring).

    Args:
        unix_socket_path / host, port: where the primary listens.
        prefix: key prefix (several masters can share one Redis pair with different prefixes).
        replicas: replicas that must confirm each sync (``WAIT`` argument, default 1).
        socket_timeout_s: bound on every Redis call (a stalled server never hangs the caller).
    """

    kind = "redis"

    def __init__(self, *, unix_socket_path: str | None = None, host: str = "127.0.0.1", port: int = 6379,
                 prefix: str = "vnfkit", replicas: int = 1, socket_timeout_s: float = 0.5) -> None:
        import redis

        super().__init__()
        self.prefix = check_stream(prefix)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"replicas: expected a non-negative int, got {replicas!r}")
        self.replicas = replicas
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No silent retries: a failed call is reported at once; the caller's next sync retries.
        kw: dict[str, Any] = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": socket_timeout_s,
                              "retry": Retry(NoBackoff(), 0)}
        if unix_socket_path is not None:
            self._r = redis.Redis(unix_socket_path=unix_socket_path, **kw)
        else:
            self._r = redis.Redis(host=host, port=port, **kw)
        self._errors = redis.RedisError
        self._timeout_errors = (redis.TimeoutError,)
        self.socket_timeout_s = socket_timeout_s
        self._load_acked()

    def _key(self, stream: str) -> str:
        return f"{self.prefix}:s:{stream}"

    def _load_acked(self) -> None:
        try:
            acked = self._r.hgetall(f"{self.prefix}:acked")
        except self._errors:
            return  # storage down at start: nothing is known stable yet; a later sync retries
        for k, v in acked.items():
            s = k.decode()
            self._acked[s] = max(self._acked.get(s, 0), int(v))
            self._next.setdefault(s, self._acked[s])

    def _commit(self, queued: dict[str, list[tuple[int, bytes]]], timeout_s: float) -> tuple[str, str]:
        try:
            pipe = self._r.pipeline(transaction=True)
            for s, q in queued.items():
                pipe.hset(self._key(s), mapping={str(off): rec for off, rec in q})
                pipe.eval(_RAISE_ACKED, 1, f"{self.prefix}:acked", s, q[-1][0] + 1)
            pipe.execute()
            if self.replicas:
                got = int(self._r.execute_command("WAIT", self.replicas, max(1, int(timeout_s * 1000))))
                if got < self.replicas:
                    return NOT_REPLICATED, f"WAIT {self.replicas}: {got} replica(s) confirmed within {timeout_s} s"
        except self._timeout_errors as exc:
            return TIMEOUT, f"redis did not answer within {self.socket_timeout_s} s ({exc})"
        except self._errors as exc:
            return UNAVAILABLE, f"redis: {exc}"
        return OK, ""

    def _remote_acked(self, stream: str) -> int:
        v = self._r.hget(f"{self.prefix}:acked", stream)
        return int(v) if v is not None else 0

    def _unavailable(self, what: str, exc: Exception) -> StorageUnavailable:
        if isinstance(exc, self._timeout_errors):
            return StorageUnavailable(f"redis did not answer within {self.socket_timeout_s} s: {what} failed ({exc})")
        return StorageUnavailable(f"redis is unavailable: {what} failed ({exc})")

    def read(self, stream: str, start: int = 0) -> list[tuple[int, bytes]]:
        stream = check_stream(stream)
        start = check_offset(start, "start")
        try:
            end = max(self._acked.get(stream, 0), self._remote_acked(stream))
            raw = self._r.hgetall(self._key(stream))
        except self._errors as exc:
            raise self._unavailable(f"read of stream {stream!r}", exc) from exc
        recs = sorted((int(k), v) for k, v in raw.items())
        return [(o, v) for o, v in recs if start <= o < end]

    def streams(self) -> list[str]:
        try:
            return sorted(k.decode() for k in self._r.hkeys(f"{self.prefix}:acked"))
        except self._errors as exc:
            raise self._unavailable("listing the streams", exc) from exc

    def truncate(self, stream: str, before: int) -> None:
        stream = check_stream(stream)
        before = check_offset(before, "before")
        try:
            fields = [k for k in self._r.hkeys(self._key(stream)) if int(k) < before]
            if fields:
                self._r.hdel(self._key(stream), *fields)
        except self._errors as exc:
            raise self._unavailable(f"truncation of stream {stream!r}", exc) from exc

    def close(self) -> None:
        self._r.close()
        super().close()
