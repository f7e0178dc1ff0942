"""jaxcoded.serving.tails against independent numpy references (loops, sorting, known laws)."""

import numpy as np
import pytest

from jaxcoded.serving import tails


def _reference_iid(samples, quantiles, num_resamples, seed):
  """One resample at a time: n indices with replacement, then np.percentile."""
  rng = np.random.default_rng(seed)
  n = len(samples)
  return np.array([
      np.percentile(samples[rng.integers(0, n, n)], quantiles) for _ in range(num_resamples)
  ])


def _reference_block(samples, quantiles, num_resamples, seed, block):
  """The circular block bootstrap written out: blocks appended one by one, wrapped with %."""
  rng = np.random.default_rng(seed)
  n = len(samples)
  num_blocks = -(-n // block)
  out = []
  for _ in range(num_resamples):
    starts = rng.integers(0, n, num_blocks)
    resample = []
    for start in starts:
      resample.extend(samples[(start + j) % n] for j in range(block))
    out.append(np.percentile(np.array(resample[:n]), quantiles))
  return np.array(out)


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_iid_bootstrap_matches_a_loop(chunk):
  samples = np.random.default_rng(0).lognormal(size=501)
  quantiles = (50.0, 99.0, 99.9)
  got = tails.bootstrap_quantiles(samples, quantiles, 40, seed=3, chunk=chunk)
  np.testing.assert_allclose(got, _reference_iid(samples, quantiles, 40, 3), rtol=0, atol=0)


@pytest.mark.parametrize("block,chunk", [(5, 3), (50, None), (64, 2)])
def test_block_bootstrap_matches_a_loop(block, chunk):
  samples = np.random.default_rng(1).exponential(size=333)  # not a multiple of the blocks
  quantiles = (50.0, 99.0)
  got = tails.bootstrap_quantiles(samples, quantiles, 25, seed=4, block=block, chunk=chunk)
  want = _reference_block(samples, quantiles, 25, 4, block)
  np.testing.assert_allclose(got, want, rtol=0, atol=0)


def test_counts_above_a_quantile():
  for n in (1000, 1999, 2000, 19_999, 20_000, 123_457):
    samples = np.random.default_rng(n).normal(size=n)
    for q in (50.0, 99.0, 99.9):
      # sorted samples: the linear-interpolation percentile lies between positions
      # floor(q (n-1)) and that + 1, so n - floor(q (n-1)) - 1 lie above it.
      position = np.floor(q / 100 * (n - 1) + 1e-9)
      above_sorted = int(n - position - 1)
      assert tails.samples_above(samples, q) == above_sorted
      assert abs(tails.expected_above(n, q) - above_sorted) <= 1
  assert tails.expected_above(20_000, 99.9) == 20
  assert tails.expected_above(19_999, 99.9) == 19
  assert tails.expected_above(2_000, 99.0) == 20


def test_tail_quantile_needs_twenty_samples_above():
  assert tails.tail_quantile(20_000) == 99.9
  assert tails.tail_quantile(19_999) == 99.0
  assert tails.tail_quantile(600) == 99.0  # the last candidate; expected_above says 6
  assert tails.tail_quantile(600, (99.9, 99.0, 95.0)) == 95.0
  assert tails.required_samples(99.9) == 20_000
  assert tails.required_samples(99.0) == 2_000
  assert tails.format_count(20_000, 99.9) == "20 of 20000 above p99.9"


def test_percentile_interval_and_ratio_match_numpy():
  rng = np.random.default_rng(5)
  a, b = rng.normal(10, 1, (1000, 3)), rng.normal(5, 1, (1000, 3))
  low, high = tails.percentile_interval(a)
  np.testing.assert_allclose(low, [np.percentile(a[:, j], 2.5) for j in range(3)])
  np.testing.assert_allclose(high, [np.percentile(a[:, j], 97.5) for j in range(3)])
  ratio = tails.ratio_replicates(tails.gap_replicates(a, 2), tails.gap_replicates(b, 2))
  np.testing.assert_allclose(ratio, [(x[2] - x[0]) / (y[2] - y[0]) for x, y in zip(a, b)])
  with pytest.raises(ValueError):
    tails.ratio_replicates(a[:10, 0], b[:11, 0])


def test_overlap_and_compare():
  assert tails.overlap((1, 2), (2, 3)) and tails.overlap((1, 5), (2, 3))
  assert not tails.overlap((1, 2), (2.5, 3))
  assert tails.compare((1, 2), (2.5, 3)) == "lower"
  assert tails.compare((4, 5), (2.5, 3)) == "higher"
  assert tails.compare((1, 2.6), (2.5, 3)) == "overlap"


def test_iid_intervals_cover_the_true_p99_about_95_percent():
  """Exponential(1): the true p99 is ln(100); 200 experiments of 4000 samples."""
  rng = np.random.default_rng(6)
  true_p99 = np.log(100.0)
  covered = 0
  for trial in range(200):
    samples = rng.exponential(size=4000)
    low, high = tails.percentile_interval(
        tails.bootstrap_quantiles(samples, (99.0,), 300, seed=trial)[:, 0])
    covered += low <= true_p99 <= high
  assert 0.88 <= covered / 200 <= 0.99, covered


def test_block_bootstrap_widens_intervals_of_correlated_samples():
  """An AR(1) series (rho = 0.95): the i.i.d. interval of its median is far too narrow."""
  rng = np.random.default_rng(7)
  noise = rng.normal(size=20_000)
  series = np.empty_like(noise)
  series[0] = noise[0]
  for t in range(1, len(noise)):
    series[t] = 0.95 * series[t - 1] + noise[t]
  width = {}
  for block in (1, 200):
    low, high = tails.percentile_interval(
        tails.bootstrap_quantiles(series, (50.0,), 400, seed=8, block=block)[:, 0])
    width[block] = high - low
  # The long-run variance of AR(1) is (1 + rho) / (1 - rho) = 39 times the marginal one's
  # contribution: standard errors about 6x wider.
  assert width[200] > 3 * width[1], width


def test_bad_input():
  with pytest.raises(ValueError):
    tails.bootstrap_quantiles(np.zeros((2, 2)), (50,), 10, seed=0)
  with pytest.raises(ValueError):
    tails.bootstrap_quantiles(np.zeros(0), (50,), 10, seed=0)
  with pytest.raises(ValueError):
    tails.bootstrap_quantiles(np.zeros(5), (50,), 0, seed=0)
  with pytest.raises(ValueError):
    tails.expected_above(10, 101.0)
