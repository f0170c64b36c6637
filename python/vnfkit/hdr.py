"""A high-dynamic-range latency histogram (log-linear buckets), recorded a batch at a time.

Values are non-negative integers (vnfkit records nanoseconds). With ``significant_digits=3`` every
recorded value is kept to within 0.1 % of its true value over the whole range (1 ns to hours), in a
fixed ~30 KiB of counts, so recording millions of per-packet latencies costs one ``np.bincount`` per
batch and percentiles are exact to the bucket.

The bucket layout is the classic HdrHistogram one: values below ``2**b`` (``b`` sub-bucket bits) are
counted exactly; above that, each power-of-two range is split into ``2**(b-1)`` equal sub-buckets.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

__all__ = ["HdrHistogram"]


class HdrHistogram:
    """Counts of integer values in log-linear buckets, with percentiles and merging."""

    def __init__(self, highest_value: int = 3_600 * 10**9, significant_digits: int = 3) -> None:
        if not isinstance(highest_value, int) or isinstance(highest_value, bool):
            raise TypeError("highest_value must be an int")
        if highest_value < 2:
            raise ValueError(f"highest_value must be >= 2, got {highest_value}")
        if highest_value >= 2**53:
            raise ValueError("highest_value must be below 2**53 (values are binned through float64)")
        if not isinstance(significant_digits, int) or not 1 <= significant_digits <= 5:
            raise ValueError(f"significant_digits must be an int in 1..5, got {significant_digits!r}")
        self.highest_value = highest_value
        self.significant_digits = significant_digits
        self._bits = math.ceil(math.log2(2 * 10**significant_digits))
        self._half = 1 << (self._bits - 1)
        n = self._index_scalar(highest_value) + 1
        self._counts = np.zeros(n, dtype=np.int64)
        self._overflow = 0
        self._total = 0
        self._min = None  # type: int | None
        self._max = 0

    # -- bucket arithmetic ---------------------------------------------------------------------
    def _index_scalar(self, v: int) -> int:
        return int(self._indices(np.array([v], dtype=np.int64))[0])

    def _indices(self, v: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        mask = (1 << self._bits) - 1
        # bit_length(v | mask) without Python loops: frexp's exponent of a positive float is its
        # bit length (exact below 2**53).
        bl = np.frexp((v | mask).astype(np.float64))[1].astype(np.int64)
        bucket = bl - self._bits  # 0 for v < 2**bits
        sub = v >> bucket
        return (bucket + 1) * self._half + (sub - self._half)

    def _bucket_bounds(self, idx: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Lowest and highest value that land in each bucket index."""
        bucket = np.maximum(idx // self._half - 1, 0)
        sub = np.where(idx < 2 * self._half, idx, idx - bucket * self._half)
        low = (sub << bucket).astype(np.int64, copy=False)
        high = (low + (np.int64(1) << bucket) - 1).astype(np.int64, copy=False)
        return low, high

    # -- recording -------------------------------------------------------------------------------
    def record(self, values: int | Iterable[int] | npt.ArrayLike, count: int = 1) -> None:
        """Record one value or an array of values (each `count` times)."""
        v = np.asarray(values)
        if v.dtype.kind not in "iu":
            raise TypeError(f"values must be integers, got dtype {v.dtype}")
        v = v.reshape(-1).astype(np.int64, copy=False)
        if v.size == 0:
            return
        if count < 1:
            raise ValueError("count must be >= 1")
        if int(v.min()) < 0:
            raise ValueError("values must be non-negative")
        over = v > self.highest_value
        n_over = int(over.sum())
        if n_over:
            self._overflow += n_over * count
            self._max = max(self._max, int(v.max()))
            v = v[~over]
            if v.size == 0:
                self._total += n_over * count
                return
        idx = self._indices(v)
        self._counts += np.bincount(idx, minlength=self._counts.size).astype(np.int64) * count
        self._total += (v.size + n_over) * count
        lo = int(v.min())
        self._min = lo if self._min is None else min(self._min, lo)
        self._max = max(self._max, int(v.max()))

    def record_counts(self, values: npt.ArrayLike, counts: npt.ArrayLike) -> None:
        """Record each of `values` as often as the matching entry of `counts` says (many batches'
        latencies, each with its own packet count, in one call)."""
        v = np.asarray(values)
        c = np.asarray(counts)
        if v.dtype.kind not in "iu" or c.dtype.kind not in "iu":
            raise TypeError(f"values and counts must be integers, got dtypes {v.dtype} and {c.dtype}")
        v = v.reshape(-1).astype(np.int64, copy=False)
        c = c.reshape(-1).astype(np.int64, copy=False)
        if v.shape != c.shape:
            raise ValueError(f"values and counts: need the same length, got {v.size} and {c.size}")
        if v.size == 0:
            return
        if int(v.min()) < 0 or int(c.min()) < 0:
            raise ValueError("values and counts must be non-negative")
        keep = c > 0
        v, c = v[keep], c[keep]
        if v.size == 0:
            return
        over = v > self.highest_value
        if over.any():
            self._overflow += int(c[over].sum())
            self._total += int(c[over].sum())
            self._max = max(self._max, int(v.max()))
            v, c = v[~over], c[~over]
            if v.size == 0:
                return
        np.add.at(self._counts, self._indices(v), c)
        self._total += int(c.sum())
        lo = int(v.min())
        self._min = lo if self._min is None else min(self._min, lo)
        self._max = max(self._max, int(v.max()))

    def merge(self, other: HdrHistogram) -> None:
        """Add another histogram's counts (same layout required)."""
        if (other.highest_value, other.significant_digits) != (self.highest_value, self.significant_digits):
            raise ValueError("can only merge histograms with the same highest_value and significant_digits")
        self._counts += other._counts
        self._overflow += other._overflow
        self._total += other._total
        if other._min is not None:
            self._min = other._min if self._min is None else min(self._min, other._min)
        self._max = max(self._max, other._max)

    def add_counts(self, counts: npt.ArrayLike, *, total: int, overflow: int, min: int, max: int) -> None:
        """Add bucket counts recorded elsewhere in this layout (e.g. natively by the runtime's
        dispatcher): `counts` has one entry per bucket; `total` includes `overflow`; `min` is of
        the binned values, `max` of all."""
        c = np.asarray(counts)
        if c.dtype.kind not in "iu" or c.shape != self._counts.shape:
            raise ValueError(f"counts: need {self._counts.size} integer bucket counts, got shape {c.shape} dtype {c.dtype}")
        if total < 0 or overflow < 0 or overflow > total:
            raise ValueError(f"total, overflow: need 0 <= overflow <= total, got {total}, {overflow}")
        if total == 0:
            return
        self._counts += c.astype(np.int64)
        self._overflow += int(overflow)
        self._total += int(total)
        if total > overflow:
            self._min = int(min) if self._min is None else builtins.min(self._min, int(min))
        self._max = builtins.max(self._max, int(max))

    # -- queries ---------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Number of recorded values (overflows included)."""
        return self._total

    @property
    def overflow(self) -> int:
        """Values above highest_value (counted; percentiles treat them as the maximum)."""
        return self._overflow

    @property
    def min(self) -> int:
        return 0 if self._min is None else self._min

    @property
    def max(self) -> int:
        return self._max

    def percentile(self, p: float) -> int:
        """Smallest bucket value v (highest equivalent) with at least p % of values <= v."""
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {p}")
        if self._total == 0:
            return 0
        rank = max(1, math.ceil(p / 100.0 * self._total))
        cum = np.cumsum(self._counts)
        if rank > int(cum[-1]):
            return self._max  # falls among the overflows
        i = int(np.searchsorted(cum, rank))
        _, high = self._bucket_bounds(np.array([i], dtype=np.int64))
        return min(int(high[0]), self._max)

    def buckets(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(value, count) of every non-empty bucket, ascending; each value is its bucket's highest
        (capped at :attr:`max`), and the overflows count as :attr:`max`."""
        idx = np.flatnonzero(self._counts).astype(np.int64)
        _, high = self._bucket_bounds(idx)
        values = np.minimum(high, self._max).astype(np.int64)
        counts = self._counts[idx].astype(np.int64)
        if self._overflow:
            values = np.append(values, np.int64(self._max))
            counts = np.append(counts, np.int64(self._overflow))
        return values, counts

    def mean(self) -> float:
        if self._total == 0:
            return 0.0
        nz = np.nonzero(self._counts)[0]
        low, high = self._bucket_bounds(nz.astype(np.int64))
        mid = (low + high) / 2.0
        s = float((mid * self._counts[nz]).sum()) + float(self._overflow) * self._max
        return s / self._total

    def summary(self, scale: float = 1e-3) -> dict[str, float]:
        """p50/p90/p99/p99.9/max (and count), multiplied by `scale` (default: ns -> µs)."""
        return {
            "count": float(self._total),
            "p50": self.percentile(50) * scale,
            "p90": self.percentile(90) * scale,
            "p99": self.percentile(99) * scale,
            "p99.9": self.percentile(99.9) * scale,
            "max": self._max * scale,
        }
