"""VNF instances as the controller sees them: an id, a server and core, a capacity, and the
FlowTable that holds its per-flow state (which is what "the flows active at an instance" means).

:class:`SimInstance` is the simulation's instance: a FlowTable whose records hold the simulator's
flow index (so the simulator can check, packet by packet, that a packet meets its flow's state), and
a fluid queue: every slot it is offered some packets and serves ``capacity_pps x slot`` of them;
what exceeds ``queue_limit`` is dropped. Its queueing delay is backlog / capacity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..tables import FlowTable

#: Per-flow record of a simulated instance: the simulator's flow index and a packet counter.
SIM_STATE_DTYPE = np.dtype([("flow", "<u4"), ("packets", "<u4")])


class SimInstance:
    """A VNF instance of the simulation: a place (server, core), a capacity in packets per second, a
    bounded queue (a fluid model of its backlog), and its own FlowTable holding its flows' state."""

    def __init__(self, instance_id: int, server: int, core: int, *, capacity_pps: float = 1.0e6,
                 queue_limit: int = 4096, flow_capacity: int = 1 << 16) -> None:
        if not capacity_pps > 0:
            raise ValueError(f"capacity_pps: must be > 0, got {capacity_pps}")
        if isinstance(queue_limit, bool) or not isinstance(queue_limit, int) or queue_limit < 1:
            raise ValueError(f"queue_limit: must be an int >= 1, got {queue_limit!r}")
        self.id = int(instance_id)
        self.server = int(server)
        self.core = int(core)
        self.capacity_pps = float(capacity_pps)
        self.queue_limit = int(queue_limit)
        self._flows = FlowTable(flow_capacity, SIM_STATE_DTYPE)
        self.backlog = 0.0
        self.dropped = 0
        self.offered = 0

    @property
    def flow_table(self) -> FlowTable:
        return self._flows

    def receive(self, keys: npt.NDArray[Any], flow_ids: npt.NDArray[np.uint32], flow_index: npt.NDArray[np.uint32],
                ts_ns: int, packets: npt.NDArray[Any] | None = None) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.bool_]]:
        """Look up / create the state of every row's flow (``packets``: packets per row, default
        1); returns ``(slots, is_new)``."""
        slots, is_new = self._flows.lookup_or_insert(keys, flow_ids, ts_ns)
        vals = self._flows.values
        if is_new.any():
            vals["flow"][slots[is_new]] = flow_index[is_new]
        ok = slots != 0xFFFFFFFF
        if packets is None:  # one row per packet: a flow may repeat
            np.add.at(vals["packets"], slots[ok], 1)
        else:  # one row per flow
            vals["packets"][slots[ok]] += packets[ok].astype(np.uint32)
        self.offered += len(keys) if packets is None else int(packets.sum())
        return slots, is_new

    def serve(self, arrivals: int, dt_s: float) -> float:
        """Advance the fluid queue by one slot; returns the queueing delay (s) at its end."""
        q = self.backlog + arrivals - self.capacity_pps * dt_s
        if q > self.queue_limit:
            self.dropped += int(q - self.queue_limit)
            q = float(self.queue_limit)
        self.backlog = max(0.0, q)
        return self.backlog / self.capacity_pps

    @property
    def queue_fill(self) -> float:
        return self.backlog / self.queue_limit

    def __repr__(self) -> str:
        return f"SimInstance(id={self.id}, server={self.server}, core={self.core}, flows={len(self._flows)})"


__all__ = ["SIM_STATE_DTYPE", "SimInstance"]
