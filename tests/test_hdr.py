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
