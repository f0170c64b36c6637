"""Redis stable storage: a record is acknowledged once it is on the primary *and* a replica.

Each stream is a Redis hash ``<prefix>:s:<stream>`` (field = offset, value = record) plus its
acknowledged offset in the hash ``<prefix>:acked`` (only ever raised, so a stale commit executed
late cannot move it back), and the epoch in ``<prefix>:epoch``. A sync sends one Lua script
(``EVALSHA``, run atomically by the server) that checks the writer's epoch against the stored one
and, unless a newer epoch took over (then it writes nothing: :data:`~.base.FENCED`), writes every
queued record and the new acknowledged offsets; then ``WAIT 1 <timeout>``: only when a replica
confirms it are the records acknowledged. A fence is a second script (raise the epoch to a target
above every one this handle tried) followed by ``WAIT`` too. Writes are idempotent
(``HSET`` of a fixed offset), so a sync that failed -- primary killed (:data:`UNAVAILABLE`), stalled
by SIGSTOP (:data:`TIMEOUT`: the socket timeout bounds every call), replica missing
(:data:`NOT_REPLICATED`) -- is simply retried by the next one once storage returns.

A reader (the backup, possibly another process or host) uses :meth:`read`: records up to the
acknowledged offset stored with them. A read, a listing or a truncation that Redis does not answer
raises :class:`~.base.StorageUnavailable` (within the socket timeout); the caller may retry it.
"""

from __future__ import annotations

from typing import Any

from .base import (FENCED, NOT_REPLICATED, OK, TIMEOUT, UNAVAILABLE, StableStorage, StorageUnavailable, check_offset,
                   check_stream)

__all__ = ["RedisStorage"]


def _name(v: bytes | str) -> str:
    """A hash field as text (the client returns bytes: it is made without ``decode_responses``)."""
    return v.decode() if isinstance(v, bytes) else v


def _record(v: bytes | str) -> bytes:
    """A stored record; a record is raw bytes, so a text reply means a misconfigured client."""
    if not isinstance(v, bytes):
        raise TypeError(f"redis: expected a record as bytes, got {type(v).__name__} (a client with decode_responses?)")
    return v


# Commit under an epoch. KEYS: epoch key, acked hash, then one hash per stream. ARGV: the writer's
# epoch (-1: not known yet, adopt the stored one), then per stream: its name, its new acknowledged
# offset, its record count n, and n (offset, record) pairs. Returns {1, epoch} when written, or
# {0, stored epoch} when a newer epoch took over (nothing written). An acknowledged offset is only
# ever raised: a commit sent before a stall may run after a later one once the server resumes.
_COMMIT = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local e = tonumber(ARGV[1])
if e >= 0 and e < cur then return {0, cur} end
local a = 2
for i = 3, #KEYS do
  local name, acked, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local j = 0
  while j < n do
    local m = math.min(n - j, 256)
    redis.call('HSET', KEYS[i], unpack(ARGV, a, a + 2 * m - 1))
    a = a + 2 * m
    j = j + m
  end
  local old = tonumber(redis.call('HGET', KEYS[2], name) or '0')
  if acked > old then redis.call('HSET', KEYS[2], name, acked) end
end
return {1, cur}
"""

# Raise the epoch to ARGV[1] unless it is already there or above: {1, new} or {0, stored}. A fence
# sent before a stall and executed late carries a lower target than any later one: it does nothing.
_FENCE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = tonumber(ARGV[1])
if t > cur then redis.call('SET', KEYS[1], t) return {1, t} end
return {0, cur}
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
        self._commit_script = self._r.register_script(_COMMIT)
        self._fence_script = self._r.register_script(_FENCE)
        self._fence_tried = 0  # the highest epoch this handle asked a fence for
        self._load_acked()

    def _key(self, stream: str) -> str:
        return f"{self.prefix}:s:{stream}"

    def _load_acked(self) -> None:
        try:
            acked = self._r.hgetall(f"{self.prefix}:acked")
            epoch = self._r.get(f"{self.prefix}:epoch")
        except self._errors:
            return  # storage down at start: nothing is known stable yet; a later sync retries
        self._epoch = int(epoch) if epoch is not None else 0
        for k, v in acked.items():
            s = _name(k)
            self._acked[s] = max(self._acked.get(s, 0), int(v))
            self._next.setdefault(s, self._acked[s])

    def _commit(self, queued: dict[str, list[tuple[int, bytes]]], timeout_s: float) -> tuple[str, str]:
        keys: list[str] = [f"{self.prefix}:epoch", f"{self.prefix}:acked"]
        args: list[Any] = [self._epoch if self._epoch is not None else -1]
        for s, q in queued.items():
            keys.append(self._key(s))
            args += [s, q[-1][0] + 1, len(q)]
            args += [x for off_rec in q for x in off_rec]
        try:
            done, epoch = self._commit_script(keys=keys, args=args)
            if not done:
                return FENCED, f"redis: storage epoch is {int(epoch)}, this writer's is {self._epoch}"
            if self._epoch is None:
                self._epoch = int(epoch)
            if self.replicas:
                got = int(self._r.execute_command("WAIT", self.replicas, max(1, int(timeout_s * 1000))))
                if got < self.replicas:
                    return NOT_REPLICATED, f"WAIT {self.replicas}: {got} replica(s) confirmed within {timeout_s} s"
        except self._timeout_errors as exc:
            return TIMEOUT, f"redis did not answer within {self.socket_timeout_s} s ({exc})"
        except self._errors as exc:
            return UNAVAILABLE, f"redis: {exc}"
        return OK, ""

    def _fence(self, timeout_s: float) -> int:
        try:
            for _ in range(64):
                self._fence_tried = max(self._fence_tried, self._epoch or 0) + 1
                done, epoch = self._fence_script(keys=[f"{self.prefix}:epoch"], args=[self._fence_tried])
                if done:
                    break
                self._fence_tried = max(self._fence_tried, int(epoch))  # someone is above: go past it
            else:
                raise StorageUnavailable("redis: the epoch kept moving; the fence did not take")
            if self.replicas:  # WAIT within the socket timeout, so that a slow replica is told as such
                wait_s = min(timeout_s, self.socket_timeout_s / 2)
                got = int(self._r.execute_command("WAIT", self.replicas, max(1, int(wait_s * 1000))))
                if got < self.replicas:
                    raise StorageUnavailable(f"redis: the fence (epoch {self._fence_tried}) was not confirmed "
                                             f"by {self.replicas} replica(s) within {wait_s} s")
            acked = self._r.hgetall(f"{self.prefix}:acked")  # what other writers made stable before it
        except self._errors as exc:
            raise self._unavailable("fence", exc) from exc
        for k, v in acked.items():
            s = _name(k)
            self._acked[s] = max(self._acked.get(s, 0), int(v))
            self._next[s] = max(self._next.get(s, 0), self._acked[s])
        return self._fence_tried

    def _remote_acked(self, stream: str) -> int:
        v = self._r.hget(f"{self.prefix}:acked", stream)
        return int(v) if v is not None else 0

    def _unavailable(self, what: str, exc: Exception) -> StorageUnavailable:
        if isinstance(exc, self._timeout_errors):
            return StorageUnavailable(f"redis did not answer within {self.socket_timeout_s} s: {what} failed ({exc})", TIMEOUT)
        return StorageUnavailable(f"redis is unavailable: {what} failed ({exc})")

    def read(self, stream: str, start: int = 0) -> list[tuple[int, bytes]]:
        stream = check_stream(stream)
        start = check_offset(start, "start")
        try:
            end = max(self._acked.get(stream, 0), self._remote_acked(stream))
            if start >= end:
                return []
            # the offsets held (names only), then just the records asked for
            want = sorted(o for o in (int(k) for k in self._r.hkeys(self._key(stream))) if start <= o < end)
            vals = self._r.hmget(self._key(stream), want) if want else []
        except self._errors as exc:
            raise self._unavailable(f"read of stream {stream!r}", exc) from exc
        return [(o, _record(v)) for o, v in zip(want, vals) if v is not None]

    def streams(self) -> list[str]:
        try:
            return sorted(_name(k) for k in self._r.hkeys(f"{self.prefix}:acked"))
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
