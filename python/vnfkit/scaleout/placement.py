"""Placement: which server and core a new instance runs on.

A cluster is a number of servers with a number of cores each; an instance occupies one core.
:meth:`Placement.place` picks a free core, preferring servers other than the ones named in
``avoid`` (the overloaded instance's server: the new instance should add capacity elsewhere), then
the server with the most free cores. It raises :class:`NoFreeCoreError` (and reserves nothing)
when no core is free.
"""

from __future__ import annotations

from .errors import NoFreeCoreError, ScaleoutError


class Placement:
    """The free cores of a set of servers: where a new instance may start (one instance per core)."""

    def __init__(self, servers: int = 4, cores_per_server: int = 2) -> None:
        for v, name in ((servers, "servers"), (cores_per_server, "cores_per_server")):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
            if v < 1:
                raise ValueError(f"{name}: must be >= 1, got {v}")
        self.servers = servers
        self.cores_per_server = cores_per_server
        self._used: dict[tuple[int, int], int] = {}

    def free_cores(self, server: int) -> list[int]:
        return [c for c in range(self.cores_per_server) if (server, c) not in self._used]

    def can_place(self, avoid: tuple[int, ...] = ()) -> bool:
        return any(self.free_cores(s) for s in range(self.servers))

    def choose(self, avoid: tuple[int, ...] = ()) -> tuple[int, int]:
        """The (server, core) :meth:`place` would take, without reserving it."""
        best: tuple[int, int, int] | None = None
        for s in range(self.servers):
            free = self.free_cores(s)
            if not free:
                continue
            rank = (0 if s not in avoid else 1, -len(free), s)
            if best is None or rank < best:
                best = rank
        if best is None:
            raise NoFreeCoreError(
                f"placement: no free core on any of {self.servers} servers x {self.cores_per_server} cores")
        s = best[2]
        return s, self.free_cores(s)[0]

    def place(self, instance_id: int, avoid: tuple[int, ...] = ()) -> tuple[int, int]:
        s, c = self.choose(avoid)
        self._used[(s, c)] = instance_id
        return s, c

    def reserve(self, instance_id: int, server: int, core: int) -> None:
        if not (0 <= server < self.servers and 0 <= core < self.cores_per_server):
            raise ScaleoutError(f"placement: no core {core} on server {server}")
        if (server, core) in self._used:
            raise NoFreeCoreError(f"placement: core {core} of server {server} is taken by instance "
                                  f"{self._used[(server, core)]}")
        self._used[(server, core)] = instance_id

    def release(self, instance_id: int) -> None:
        for k, v in list(self._used.items()):
            if v == instance_id:
                del self._used[k]

    def state(self) -> dict[tuple[int, int], int]:
        return dict(self._used)


__all__ = ["Placement"]
