"""Overload (and underload) detection from what the instances report.

Each instance reports, per interval, the packets it was offered and its queue occupancy.
:class:`OverloadDetector` keeps a sliding window per instance and flags an instance as overloaded
when its offered load over the window exceeds ``high`` x its capacity, or its queue has been above
``queue_high`` of its limit for the whole window; underloaded when the load is below ``low`` x
capacity over the window. Decisions need a full window of reports, so a freshly created instance is
never judged on a partial one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorConfig:
    window_s: float = 0.5
    high: float = 0.9
    low: float = 0.3
    queue_high: float = 0.5

    def validated(self) -> "DetectorConfig":
        for name in ("window_s", "high", "low", "queue_high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
        if not self.window_s > 0:
            raise ValueError(f"window_s: must be > 0, got {self.window_s}")
        if not 0 < self.high:
            raise ValueError(f"high: must be > 0, got {self.high}")
        if not 0 <= self.low < self.high:
            raise ValueError(f"low: must be in [0, high), got {self.low}")
        if not 0 < self.queue_high <= 1:
            raise ValueError(f"queue_high: must be in (0, 1], got {self.queue_high}")
        return self


class OverloadDetector:
    """Flags an instance as overloaded from its recent load: offered packets over a sliding window
    against its capacity, or its queue occupancy (see :class:`DetectorConfig`)."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = (config or DetectorConfig()).validated()
        self._hist: dict[int, deque[tuple[float, float, int, float]]] = {}

    def report(self, instance_id: int, now_s: float, interval_s: float, packets: int, queue_fill: float) -> None:
        """One interval's offered ``packets`` and the queue fill (0..1) at its end."""
        h = self._hist.setdefault(instance_id, deque())
        h.append((now_s, interval_s, int(packets), float(queue_fill)))
        # an entry covers (t - interval, t]: keep those that end inside (now - window, now]
        while h and h[0][0] <= now_s - self.config.window_s + 1e-9:
            h.popleft()

    def forget(self, instance_id: int) -> None:
        self._hist.pop(instance_id, None)

    def _window(self, instance_id: int) -> tuple[float, int, float] | None:
        h = self._hist.get(instance_id)
        if not h:
            return None
        # full once the reports reach back to the window's start (interval need not divide it)
        if h[0][0] - h[0][1] > h[-1][0] - self.config.window_s + 1e-9:
            return None
        span = sum(x[1] for x in h)
        return span, sum(x[2] for x in h), min(x[3] for x in h)

    def load_pps(self, instance_id: int) -> float | None:
        w = self._window(instance_id)
        return None if w is None else w[1] / w[0]

    def overloaded(self, instance_id: int, capacity_pps: float) -> bool:
        w = self._window(instance_id)
        if w is None:
            return False
        span, pkts, min_fill = w
        return pkts / span > self.config.high * capacity_pps or min_fill > self.config.queue_high

    def underloaded(self, instance_id: int, capacity_pps: float) -> bool:
        w = self._window(instance_id)
        return w is not None and w[1] / w[0] < self.config.low * capacity_pps


__all__ = ["DetectorConfig", "OverloadDetector"]
