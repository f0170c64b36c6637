"""HdrHistogram: percentiles within the promised relative error of numpy's exact ones."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnfkit.hdr import HdrHistogram


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=400),
    st.sampled_from([50.0, 90.0, 99.0, 99.9, 100.0, 0.0]),
)
def test_percentiles_match_exact_within_relative_error(values, p):
    h = HdrHistogram(highest_value=10**13, significant_digits=3)
    h.record(np.array(values, dtype=np.int64))
    exact = int(np.percentile(np.array(values), p, method="inverted_cdf"))
    got = h.percentile(p)
    assert got >= exact  # highest-equivalent value of the bucket holding the exact one
    assert got <= max(exact * (1 + 1e-3), exact + 1)
    assert h.total == len(values)
    assert h.min == min(values) and h.max == max(values)


def test_small_values_are_exact_and_merge_adds_counts():
    a, b = HdrHistogram(), HdrHistogram()
    a.record(np.arange(1000, dtype=np.int64))
    b.record(5, count=1000)
    a.merge(b)
    assert a.total == 2000
    assert a.percentile(50) == 5  # exact below 2**bits
    assert a.percentile(100) == 999


def test_overflow_counted_and_bad_input_rejected():
    h = HdrHistogram(highest_value=1000)
    h.record(np.array([1, 2, 10**6], dtype=np.int64))
    assert h.overflow == 1 and h.total == 3 and h.percentile(100) == 10**6
    with pytest.raises(ValueError, match="non-negative"):
        h.record(np.array([-1]))
    with pytest.raises(TypeError, match="integers"):
        h.record(np.array([1.5]))
    with pytest.raises(ValueError, match="significant_digits"):
        HdrHistogram(significant_digits=9)
    with pytest.raises(ValueError, match="merge"):
        h.merge(HdrHistogram(highest_value=2000))


def test_record_counts_equals_recording_each_value_that_often_and_rejects_bad_input():
    rng = np.random.default_rng(1)
    v = rng.integers(1, 10**7, 1000)
    c = rng.integers(0, 300, 1000)
    v[:3] = 5 * 10**12  # above highest_value: counted as overflows
    a, b = HdrHistogram(highest_value=10**12), HdrHistogram(highest_value=10**12)
    a.record_counts(v, c)
    for x, n in zip(v.tolist(), c.tolist()):
        if n:
            b.record(x, n)
    assert a.total == b.total == int(c.sum()) and a.overflow == b.overflow == int(c[:3].sum())
    assert (a._counts == b._counts).all() and (a.min, a.max) == (b.min, b.max)
    assert all(a.percentile(p) == b.percentile(p) for p in (0, 50, 99, 99.9, 100))
    values, counts = a.buckets()
    assert counts.sum() == a.total and (np.diff(values) >= 0).all() and values[-1] == a.max
    with pytest.raises(TypeError, match="integers"):
        a.record_counts([1.5], [1])
    with pytest.raises(ValueError, match="same length"):
        a.record_counts([1, 2], [1])
    with pytest.raises(ValueError, match="non-negative"):
        a.record_counts([1], [-1])
