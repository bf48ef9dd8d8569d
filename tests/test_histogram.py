"""Log-linear histograms: bucket bounds, the stated error, merging."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import histogram
from analysis.histogram import BUCKETS, MAX_NS, RELATIVE_ERROR


def test_every_value_lies_inside_its_bucket() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            np.arange(1, 2_000, dtype=np.int64),
            rng.integers(1, MAX_NS, 100_000),
            (2 ** np.arange(0, 43, dtype=np.int64)),
            (2 ** np.arange(1, 43, dtype=np.int64)) - 1,
        ]
    )
    lower, upper = histogram.bucket_bounds()
    index = histogram.bucket_of(values)
    assert (lower[index] <= values).all()
    assert (values < upper[index]).all()
    assert ((upper - lower) / lower <= 2 * RELATIVE_ERROR + 1e-15).all()


def test_values_outside_the_range_go_to_the_end_buckets() -> None:
    index = histogram.bucket_of(np.array([0, -5, MAX_NS, 2**62], dtype=np.int64))
    assert list(index) == [0, 0, BUCKETS - 1, BUCKETS - 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_are_within_the_stated_error_of_pandas_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = (3e6 * np.exp(rng.standard_normal(5_000) * (1 + seed))).astype(np.int64)
    counts = np.zeros((1, BUCKETS), dtype=np.int64)
    histogram.add_counts(counts, np.zeros(values.size, np.int64), values)
    qs = (0.001, 0.25, 0.5, 0.9, 0.99, 0.999)
    estimate = histogram.quantiles(
        counts, qs, np.array([values.min()], float), np.array([values.max()], float)
    )[0]
    exact = np.quantile(values, qs)  # numpy's default is pandas' linear rule
    np.testing.assert_allclose(estimate, exact, rtol=RELATIVE_ERROR)


def test_merged_histograms_give_the_quantiles_of_all_the_values() -> None:
    rng = np.random.default_rng(4)
    first = rng.integers(1_000, 10**6, 3_000)
    second = rng.integers(10**5, 10**8, 2_000)
    counts = np.zeros((2, BUCKETS), dtype=np.int64)
    histogram.add_counts(
        counts, np.repeat([0, 1], [3_000, 2_000]), np.r_[first, second]
    )
    merged = counts.sum(axis=0, keepdims=True)
    both = np.r_[first, second]
    estimate = histogram.quantiles(
        merged,
        (0.5, 0.99),
        np.array([both.min()], float),
        np.array([both.max()], float),
    )[0]
    np.testing.assert_allclose(
        estimate, np.quantile(both, (0.5, 0.99)), rtol=RELATIVE_ERROR
    )


def test_an_empty_group_has_nan_quantiles_and_grow_adds_empty_rows() -> None:
    counts = histogram.grow(np.zeros((1, BUCKETS), dtype=np.int64), 3)
    assert counts.shape == (3, BUCKETS)
    assert not counts.any()
    out = histogram.quantiles(counts, (0.5,), np.zeros(3), np.zeros(3))
    assert np.isnan(out).all()
