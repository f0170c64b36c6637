"""What master and backup share: the node spec, frame identities, the backup's frame ring.

* :class:`NodeSpec`: everything a master or backup process needs (interfaces, next hops, VNF
  configuration, storage, heartbeat board, timing), passed as one JSON file by the supervisor.
* :func:`frame_ids`: a 16-byte identity (BLAKE2b) of every frame of a batch. Master and backup
  receive the same frames from the kernel, so the backup finds where the master's input log ends in
  its own receive order by these identities (the two sockets' timestamps differ).
* :class:`FrameRing`: the frames the backup received recently, oldest first, bounded by age.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["FrameRing", "NodeSpec", "frame_ids", "open_node_storage"]


@dataclass
class NodeSpec:
    """One node's configuration (see the module docstring); ``storage`` is ``{"kind": "redis",
    "unix_socket_path": ..., "prefix": ...}`` (or ``"host"``, ``"port"`` instead of the socket: a
    storage host) or ``{"kind": "file", "root": ...}``; ``steering``: the input handler's switch
    (:meth:`vnfkit.live.steering.TcSteering.to_dict`) that the backup reprograms when it takes
    over, empty when master and backup share the interfaces."""

    inside: str
    outside: str
    inside_peer: str
    outside_peer: str
    config: dict[str, Any]
    storage: dict[str, Any]
    board: str
    batch: int = 256
    checkpoint_ms: float = 50.0
    heartbeat_timeout_ms: float = 500.0
    ring_s: float = 0.5
    master_pid: int = 0
    steering: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> NodeSpec:
        return cls(**json.loads(text))


def open_node_storage(spec: dict[str, Any]) -> Any:
    """The stable storage a node spec names (a FileStorage reopened cuts any torn tail)."""
    kind = spec.get("kind")
    if kind == "redis":
        from ..recovery.storage.redis import RedisStorage

        if "host" in spec:
            return RedisStorage(host=spec["host"], port=int(spec["port"]), prefix=spec["prefix"], replicas=1)
        return RedisStorage(unix_socket_path=spec["unix_socket_path"], prefix=spec["prefix"], replicas=1)
    if kind == "file":
        from ..recovery.storage.file import FileStorage

        return FileStorage(spec["root"])
    raise ValueError(f"storage: expected kind 'redis' or 'file', got {kind!r}")


def frame_ids(batch: Any) -> list[bytes]:
    """A 16-byte identity of each frame of ``batch`` (its bytes' BLAKE2b digest)."""
    n = len(batch)
    if n == 0:
        return []
    offs = np.asarray(batch.offsets)
    data = np.asarray(batch.data)
    end = int(offs[n])
    raw = data[:end].tobytes()
    o = offs.tolist()
    return [hashlib.blake2b(raw[o[i]:o[i + 1]], digest_size=16).digest() for i in range(n)]


class FrameRing:
    """Received batches ``(arrival monotonic s, batch)``, oldest first; :meth:`add` drops batches
    older than ``max_age_s``."""

    def __init__(self, max_age_s: float = 2.0) -> None:
        if not max_age_s > 0:
            raise ValueError(f"max_age_s: must be a positive number of seconds, got {max_age_s!r}")
        self.max_age_s = float(max_age_s)
        self._items: deque[tuple[float, Any]] = deque()
        self.frames = 0

    def add(self, batch: Any, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        self._items.append((t, batch))
        self.frames += len(batch)
        while self._items and self._items[0][0] < t - self.max_age_s:
            self.frames -= len(self._items.popleft()[1])

    def __len__(self) -> int:
        return self.frames

    def after_last_of(self, known: set[bytes]) -> Iterable[tuple[Any, np.ndarray]]:
        """The buffered frames the master never logged: those after the newest frame that is in
        ``known``, minus any in ``known``; as ``(batch, uint32 indices)`` in arrival order (and the
        ring is emptied). With no known frame in the ring, every buffered frame not in ``known``."""
        items = list(self._items)
        ids: dict[int, list[bytes]] = {}  # computed newest first, only back to the cut
        cut_b, cut_i = -1, -1
        for bi in range(len(items) - 1, -1, -1):
            ids[bi] = frame_ids(items[bi][1])
            hit = [i for i, f in enumerate(ids[bi]) if f in known]
            if hit:
                cut_b, cut_i = bi, hit[-1]
                break
        out = []
        for bi in range(max(cut_b, 0), len(items)):
            start = cut_i + 1 if bi == cut_b else 0
            keep = [i for i in range(start, len(ids[bi])) if ids[bi][i] not in known]
            if keep:
                out.append((items[bi][1], np.asarray(keep, dtype=np.uint32)))
        self._items.clear()
        self.frames = 0
        return out
