"""Tail-latency statistics with bootstrap confidence intervals (pure numpy).

What ``bench/bench_serving.py`` reports, and what anyone comparing two sets of
latencies can reuse:

* :func:`tail_quantile` picks the highest tail quantile that the sample size
  supports: p99.9 rests on at least ``min_samples`` (20) samples above it only
  from 20,000 samples on; below that, p99 (from 2,000 on);
* :func:`samples_above` counts the samples a quantile rests on;
* :func:`bootstrap_quantiles` draws bootstrap replicates of several quantiles
  at once, vectorised: an i.i.d. bootstrap (``block=1``) or a circular block
  bootstrap over samples in arrival order (``block > 1``), for latencies of
  neighbouring queries that share queues;
* :func:`percentile_interval` turns replicates into a percentile-method
  interval (the 2.5th and 97.5th percentiles of the replicates for 95%);
* :func:`ratio_replicates` and :func:`gap_replicates` give replicates of a
  ratio of two independent samples' statistics and of a gap (tail - p50);
* :func:`overlap` and :func:`compare` say whether two intervals overlap.

Quantiles are numpy's default (``np.percentile``, linear interpolation).

  >>> rng = np.random.default_rng(0)
  >>> a, b = rng.exponential(1.0, 5000), rng.exponential(2.0, 5000)
  >>> q = tail_quantile(len(a))                        # 99.0: 5000 < 20,000
  >>> ra = bootstrap_quantiles(a, (50, q), 500, seed=1)
  >>> rb = bootstrap_quantiles(b, (50, q), 500, seed=2)
  >>> compare(percentile_interval(ra[:, 1]), percentile_interval(rb[:, 1]))
  'lower'
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "MIN_TAIL_SAMPLES",
    "bootstrap_quantiles",
    "compare",
    "expected_above",
    "format_count",
    "gap_replicates",
    "overlap",
    "percentile_interval",
    "ratio_replicates",
    "required_samples",
    "samples_above",
    "tail_quantile",
]

MIN_TAIL_SAMPLES = 20  # samples above a quantile for it to be reported


def expected_above(num_samples: int, quantile: float) -> int:
  """How many of ``num_samples`` lie above the ``quantile``-th percentile: floor(n (1 - q/100)).

  Computed in integers on 1/1000ths of a percent, so that 20,000 samples give
  exactly 20 above p99.9 (floating point would give 19.99...).
  """
  milli = round(quantile * 1000)
  if not 0 <= milli <= 100_000:
    raise ValueError(f"quantile must be in [0, 100], got {quantile}.")
  return (num_samples * (100_000 - milli)) // 100_000


def samples_above(samples: np.ndarray, quantile: float) -> int:
  """The number of samples strictly above their ``quantile``-th percentile (what it rests on)."""
  samples = np.asarray(samples)
  return int(np.count_nonzero(samples > np.percentile(samples, quantile)))


def tail_quantile(
    num_samples: int,
    candidates: Sequence[float] = (99.9, 99.0),
    min_samples: int = MIN_TAIL_SAMPLES,
) -> float:
  """The highest of ``candidates`` with at least ``min_samples`` samples expected above it.

  The last candidate when none qualifies (the caller should then say so:
  :func:`expected_above` gives the count).
  """
  ordered = sorted(candidates, reverse=True)
  for q in ordered:
    if expected_above(num_samples, q) >= min_samples:
      return q
  return ordered[-1]


def bootstrap_quantiles(
    samples: np.ndarray,
    quantiles: Sequence[float],
    num_resamples: int,
    seed: int | np.random.Generator,
    *,
    block: int = 1,
    chunk: int | None = None,
) -> np.ndarray:
  """(num_resamples, len(quantiles)) bootstrap replicates of the samples' percentiles.

  Args:
    samples: (n,) values, in arrival order where ``block > 1``.
    quantiles: percentiles in [0, 100].
    num_resamples: B.
    seed: an int seed or a Generator.
    block: 1, the i.i.d. bootstrap (n draws with replacement); L > 1, the
      circular block bootstrap: ceil(n / L) blocks of L consecutive samples
      from uniform random starts, wrapping around the end (so every sample has
      the same weight), concatenated and cut to n. Neighbouring latencies are
      correlated through queues; an i.i.d. bootstrap then gives intervals that
      are too narrow.
    chunk: resamples drawn per vectorised step (default: about 4 million
      values at a time).

  The random draws do not depend on ``chunk``: resample b uses the b-th row of
  the same stream of ``rng.integers(0, n, ceil(n / L))`` draws.
  """
  samples = np.asarray(samples, np.float64)
  if samples.ndim != 1 or len(samples) == 0:
    raise ValueError(f"samples must be a non-empty 1-D array, got shape {samples.shape}.")
  if num_resamples < 1:
    raise ValueError(f"num_resamples must be >= 1, got {num_resamples}.")
  n = len(samples)
  block = max(1, min(int(block), n))
  num_blocks = -(-n // block)
  rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
  chunk = chunk or max(1, 4_000_000 // n)
  quantiles = np.asarray(quantiles, np.float64)
  out = np.empty((num_resamples, len(quantiles)))
  offsets = np.arange(block)
  for first in range(0, num_resamples, chunk):
    count = min(chunk, num_resamples - first)
    starts = rng.integers(0, n, (count, num_blocks))
    if block == 1:
      index = starts
    else:
      index = ((starts[:, :, None] + offsets) % n).reshape(count, -1)[:, :n]
    out[first:first + count] = np.percentile(samples[index], quantiles, axis=1).T
  return out


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> np.ndarray:
  """The percentile-method interval of bootstrap replicates along axis 0: (2, ...) low, high."""
  tail = 50.0 * (1.0 - level)
  return np.percentile(np.asarray(replicates, np.float64), [tail, 100.0 - tail], axis=0)


def gap_replicates(replicates: np.ndarray, tail_index: int, median_index: int = 0) -> np.ndarray:
  """Replicates of the gap (tail quantile - median) from :func:`bootstrap_quantiles`' columns."""
  return replicates[:, tail_index] - replicates[:, median_index]


def ratio_replicates(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """Replicates of a ratio of statistics of two independently resampled samples.

  Pairs replicate b of one with replicate b of the other: the two bootstraps
  are independent (own seeds), so the pairs are draws of the two statistics'
  joint bootstrap distribution. Both must have the same number of replicates.
  """
  numerator, denominator = np.asarray(numerator), np.asarray(denominator)
  if numerator.shape != denominator.shape:
    raise ValueError(f"Replicates of different shapes: {numerator.shape}, {denominator.shape}.")
  with np.errstate(divide="ignore", invalid="ignore"):
    return numerator / denominator


def overlap(a: Sequence[float], b: Sequence[float]) -> bool:
  """Whether the closed intervals [a0, a1] and [b0, b1] share a point."""
  return bool(a[0] <= b[1] and b[0] <= a[1])


def compare(a: Sequence[float], b: Sequence[float]) -> str:
  """'lower' (a entirely below b), 'higher' (entirely above) or 'overlap'."""
  if a[1] < b[0]:
    return "lower"
  if a[0] > b[1]:
    return "higher"
  return "overlap"


def format_count(num_samples: int, quantile: float) -> str:
  """E.g. '20 of 20000 above p99.9', for the tables."""
  return f"{expected_above(num_samples, quantile)} of {num_samples} above p{quantile:g}"


def required_samples(quantile: float, min_samples: int = MIN_TAIL_SAMPLES) -> int:
  """The fewest samples with ``min_samples`` above the ``quantile``-th percentile."""
  milli = round(quantile * 1000)
  return math.ceil(min_samples * 100_000 / (100_000 - milli))
