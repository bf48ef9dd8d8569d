"""Log-linear histograms of nanosecond durations: mergeable, with a stated error.

How this works
--------------
A value is converted to float64 and its bit pattern is cut after the exponent and
the top :data:`SUB_BITS` bits of the mantissa. That splits every power of two into
``2**SUB_BITS`` equal buckets, so a bucket ``[lo, hi)`` is never wider than
``lo / 2**SUB_BITS`` and its midpoint is within :data:`RELATIVE_ERROR` (0.39 %) of
every value in it. No logarithm is computed: the bucket of a value costs a cast, a
shift and a subtraction, which matters at 10^8 values.

Buckets start at 1 ns: a value below 1 ns (that is, 0) is counted in the first bucket
and a value of :data:`MAX_NS` or more in the last one; quantile estimates are clamped
to the exact minimum and maximum of the group, so neither end drifts.

Histograms of the same layout add up (``a + b``), which is what makes them
mergeable across batches, workers or windows; a quantile is then read from the
merged counts, never averaged from per-part quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

SUB_BITS = 7
"""Mantissa bits kept: 128 buckets per power of two."""

OCTAVES = 43
"""Powers of two covered, from 1 ns up to :data:`MAX_NS` (2**43 ns, about 2.4 h)."""

BUCKETS = OCTAVES << SUB_BITS
MAX_NS = 1 << OCTAVES
RELATIVE_ERROR = 2.0 ** -(SUB_BITS + 1)
"""Bound on ``|estimate - exact| / exact`` of a quantile, for values of 1 ns or more."""

_MANTISSA_BITS = 52
_ONE = 1023 << SUB_BITS  # the bucket number of 1.0 in the cut float64 bits


def bucket_of(values_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Bucket index of each value (see the module docstring for the clamping)."""
    bits = values_ns.astype(np.float64).view(np.int64)
    index = (bits >> (_MANTISSA_BITS - SUB_BITS)) - _ONE
    np.clip(index, 0, BUCKETS - 1, out=index)
    return index


def bucket_bounds() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Lower (inclusive) and upper (exclusive) bound of every bucket, in ns."""
    index = np.arange(BUCKETS + 1, dtype=np.int64)
    octave = index >> SUB_BITS
    step = index & ((1 << SUB_BITS) - 1)
    edges = np.ldexp(1.0 + step / (1 << SUB_BITS), octave)
    return edges[:-1], edges[1:]


_LOWER, _UPPER = bucket_bounds()
_MIDDLE = (_LOWER + _UPPER) / 2


def add_counts(
    counts: npt.NDArray[np.int64],
    groups: npt.NDArray[np.int64],
    values_ns: npt.NDArray[np.int64],
) -> None:
    """Add ``values_ns`` into ``counts`` (shape ``(groups, BUCKETS)``), each value in
    the row of its group."""
    flat = groups * BUCKETS + bucket_of(values_ns)
    counts += np.bincount(flat, minlength=counts.size).reshape(counts.shape)


def grow(counts: npt.NDArray[np.int64], groups: int) -> npt.NDArray[np.int64]:
    """``counts`` with rows added (zeros) up to ``groups`` rows."""
    if counts.shape[0] >= groups:
        return counts
    extra = np.zeros((groups - counts.shape[0], BUCKETS), dtype=np.int64)
    return np.vstack([counts, extra])


def quantiles(
    counts: npt.NDArray[np.int64],
    qs: Sequence[float],
    minimum_ns: npt.NDArray[np.float64],
    maximum_ns: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Quantile estimates in ns, shape ``(groups, len(qs))``; NaN for empty groups.

    The estimate follows the same rule as pandas' default (linear interpolation
    between the two order statistics around ``q * (n - 1)``), with each order
    statistic read as the midpoint of its bucket, clamped to the group's exact
    minimum and maximum.
    """
    out = np.full((counts.shape[0], len(qs)), np.nan)
    for row in range(counts.shape[0]):
        cumulative = np.cumsum(counts[row])
        n = int(cumulative[-1]) if cumulative.size else 0
        if n == 0:
            continue
        position = np.asarray(qs, dtype=np.float64) * (n - 1)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, n - 1)
        fraction = position - below
        low = _MIDDLE[np.searchsorted(cumulative, below, side="right")]
        high = _MIDDLE[np.searchsorted(cumulative, above, side="right")]
        estimate = low * (1 - fraction) + high * fraction
        out[row] = np.clip(estimate, minimum_ns[row], maximum_ns[row])
    return out
