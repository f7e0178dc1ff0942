"""Tests for jaxcoded.stragglers: masks and latency models against numpy/scipy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxcoded import stragglers


def _key(rng: np.random.Generator) -> jax.Array:
  return jax.random.key(int(rng.integers(2**31)))


# ---------------------------------------------------------------------------
# Fixed-count masks.


@pytest.mark.parametrize("num_workers, num_stragglers", [(1, 0), (5, 2), (12, 11)])
def test_random_mask_has_exactly_s_stragglers(rng, num_workers, num_stragglers):
  mask = stragglers.random_mask(_key(rng), num_workers, num_stragglers)
  assert mask.shape == (num_workers,) and mask.dtype == jnp.bool_
  assert int((~mask).sum()) == num_stragglers

  masks = stragglers.random_masks(_key(rng), 50, num_workers, num_stragglers)
  assert masks.shape == (50, num_workers) and masks.dtype == jnp.bool_
  np.testing.assert_array_equal(np.sum(~np.asarray(masks), axis=1), num_stragglers)


def test_random_mask_jits_with_static_sizes(rng):
  jitted = jax.jit(stragglers.random_mask, static_argnums=(1, 2))
  key = _key(rng)
  np.testing.assert_array_equal(jitted(key, 7, 3), stragglers.random_mask(key, 7, 3))


def test_random_masks_are_uniform_over_patterns():
  # Fixed key: a deterministic statistical check (chi-square over all 10 patterns).
  num_workers, num_stragglers, num_draws = 5, 2, 5000
  masks = np.asarray(
      stragglers.random_masks(jax.random.key(1234), num_draws, num_workers, num_stragglers)
  )
  patterns = stragglers.all_masks(num_workers, num_stragglers)
  counts = np.array([np.all(masks == p, axis=1).sum() for p in patterns])
  assert counts.sum() == num_draws  # every draw is one of the C(5, 2) patterns
  assert np.all(counts > 0)
  assert stats.chisquare(counts).pvalue > 1e-3
  # Each worker straggles with probability S / N.
  np.testing.assert_allclose((~masks).mean(axis=0), num_stragglers / num_workers, atol=0.03)


def test_random_masks_differ_between_rows(rng):
  masks = np.asarray(stragglers.random_masks(_key(rng), 50, 5, 2))
  assert len({row.tobytes() for row in masks}) > 1


@pytest.mark.parametrize("num_workers, num_stragglers", [(1, 0), (4, 0), (5, 2), (8, 3), (10, 9)])
def test_all_masks_enumerates_every_pattern_once(num_workers, num_stragglers):
  masks = stragglers.all_masks(num_workers, num_stragglers)
  assert isinstance(masks, np.ndarray) and masks.dtype == np.bool_
  assert masks.shape == (math.comb(num_workers, num_stragglers), num_workers)
  np.testing.assert_array_equal((~masks).sum(axis=1), num_stragglers)
  assert len({row.tobytes() for row in masks}) == masks.shape[0]
  np.testing.assert_array_equal(masks, stragglers.all_masks(num_workers, num_stragglers))


def test_all_masks_order():
  np.testing.assert_array_equal(
      stragglers.all_masks(3, 1), [[False, True, True], [True, False, True], [True, True, False]]
  )


def test_all_masks_refuses_too_many():
  with pytest.raises(ValueError, match="random_masks"):
    stragglers.all_masks(40, 10)
  with pytest.raises(ValueError, match="max_masks"):
    stragglers.all_masks(6, 3, max_masks=19)
  assert stragglers.all_masks(6, 3, max_masks=20).shape == (20, 6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: stragglers.random_mask(jax.random.key(0), 4, 4),
        lambda: stragglers.random_mask(jax.random.key(0), 4, 5),
        lambda: stragglers.random_mask(jax.random.key(0), 4, -1),
        lambda: stragglers.random_mask(jax.random.key(0), 0, 0),
        lambda: stragglers.random_mask(jax.random.key(0), 4.0, 1),
        lambda: stragglers.random_masks(jax.random.key(0), 0, 4, 1),
        lambda: stragglers.random_masks(jax.random.key(0), 3, 4, 4),
        lambda: stragglers.all_masks(3, 3),
        lambda: stragglers.all_masks(3, -1),
    ],
)
def test_mask_errors(call):
  with pytest.raises(ValueError):
    call()


# ---------------------------------------------------------------------------
# Latency models.


def test_shifted_exponential_matches_scipy():
  shift, rate = 0.5, 2.0
  samples = np.asarray(
      stragglers.ShiftedExponential(shift, rate).sample(jax.random.key(7), (200_000,))
  )
  assert samples.min() >= shift
  np.testing.assert_allclose(samples.mean(), shift + 1 / rate, rtol=0.01)
  assert stats.kstest(samples, stats.expon(loc=shift, scale=1 / rate).cdf).pvalue > 1e-3


def test_pareto_matches_scipy():
  scale, alpha = 2.0, 3.5
  samples = np.asarray(stragglers.Pareto(scale, alpha).sample(jax.random.key(8), (200_000,)))
  assert samples.min() >= scale
  np.testing.assert_allclose(samples.mean(), alpha * scale / (alpha - 1), rtol=0.01)
  assert stats.kstest(samples, stats.pareto(b=alpha, scale=scale).cdf).pvalue > 1e-3


def test_per_worker_parameters_broadcast():
  shift = np.array([0.0, 1.0, 2.0, 5.0])
  rate = np.array([1.0, 4.0, 0.5, 2.0])
  model = stragglers.ShiftedExponential(shift, rate)
  samples = np.asarray(model.sample(jax.random.key(3), (50_000, 4)))
  assert samples.shape == (50_000, 4)
  assert np.all(samples >= shift)
  np.testing.assert_allclose(samples.mean(axis=0), shift + 1 / rate, rtol=0.03)
  np.testing.assert_allclose(model.mean(), shift + 1 / rate)

  scale, alpha = np.array([1.0, 3.0]), np.array([4.0, 2.5])
  pareto = stragglers.Pareto(scale, alpha)
  samples = np.asarray(pareto.sample(jax.random.key(4), (100_000, 2)))
  assert np.all(samples >= scale)
  np.testing.assert_allclose(samples.mean(axis=0), alpha * scale / (alpha - 1), rtol=0.03)
  np.testing.assert_allclose(pareto.mean(), alpha * scale / (alpha - 1))
  assert np.isinf(stragglers.Pareto(1.0, 0.8).mean())


def test_models_are_pytrees_through_jit(rng):
  model = stragglers.ShiftedExponential(1.0, jnp.array([1.0, 2.0, 3.0]))
  key = _key(rng)
  jitted = jax.jit(lambda m, k: m.sample(k, (5, 3)))(model, key)
  np.testing.assert_allclose(jitted, model.sample(key, (5, 3)), rtol=1e-6)
  assert len(jax.tree.leaves(stragglers.Pareto(1.0, 2.0))) == 2


def test_sample_dtype(rng):
  samples = stragglers.Pareto(1.0, 2.0).sample(_key(rng), (3,), dtype=jnp.float32)
  assert samples.dtype == jnp.float32


@pytest.mark.parametrize(
    "call",
    [
        lambda: stragglers.ShiftedExponential(1.0, 0.0),
        lambda: stragglers.ShiftedExponential(1.0, -2.0),
        lambda: stragglers.ShiftedExponential(-1.0, 1.0),
        lambda: stragglers.ShiftedExponential(1.0, np.array([1.0, 0.0])),
        lambda: stragglers.Pareto(0.0, 2.0),
        lambda: stragglers.Pareto(1.0, -1.0),
        lambda: stragglers.Pareto(1.0, np.inf),
        lambda: stragglers.ShiftedExponential(1.0, np.ones(3)).sample(jax.random.key(0), (5, 4)),
        lambda: stragglers.Pareto(1.0, 2.0).sample(jax.random.key(0), (5,), dtype=jnp.int32),
    ],
)
def test_model_errors(call):
  with pytest.raises(ValueError):
    call()


# ---------------------------------------------------------------------------
# Masks from latencies.


@pytest.mark.parametrize("num_workers", [1, 7, 20])
def test_fastest_mask_picks_the_r_smallest(rng, num_workers):
  latencies = rng.exponential(size=(6, num_workers))
  for num_needed in sorted({1, (num_workers + 1) // 2, num_workers}):
    mask, decode_time = stragglers.fastest_mask(latencies, num_needed)
    assert mask.shape == latencies.shape and decode_time.shape == (6,)
    expected = np.zeros(latencies.shape, dtype=bool)
    np.put_along_axis(expected, np.argsort(latencies, axis=1)[:, :num_needed], True, axis=1)
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(decode_time, np.sort(latencies, axis=1)[:, num_needed - 1])


def test_fastest_mask_breaks_ties_to_exactly_r():
  mask, decode_time = stragglers.fastest_mask(jnp.array([1.0, 1.0, 1.0, 0.5]), 2)
  np.testing.assert_array_equal(mask, [True, False, False, True])
  assert float(decode_time) == 1.0


def test_deadline_mask(rng):
  latencies = rng.exponential(size=(4, 9))
  np.testing.assert_array_equal(stragglers.deadline_mask(latencies, 0.7), latencies <= 0.7)
  deadlines = rng.uniform(size=(4, 1))
  np.testing.assert_array_equal(
      stragglers.deadline_mask(latencies, deadlines), latencies <= deadlines
  )


def test_sample_deadline_masks_semantics(rng):
  model = stragglers.ShiftedExponential(1.0, np.linspace(0.5, 3.0, 10))
  key = _key(rng)
  latencies = np.asarray(model.sample(key, (400, 10)))
  deadline, num_needed = 1.8, 6
  rth = np.sort(latencies, axis=1)[:, num_needed - 1]

  masks, times = stragglers.sample_deadline_masks(
      key, model, 400, 10, deadline=deadline, num_needed=num_needed
  )
  np.testing.assert_array_equal(masks, latencies <= deadline)
  np.testing.assert_array_equal(times, np.where(rth <= deadline, rth, np.inf))
  # Both outcomes occur at this deadline, so the test sees both branches.
  assert np.isinf(times).any() and np.isfinite(times).any()
  # A finite decode time means enough workers made the deadline.
  np.testing.assert_array_equal(np.isfinite(times), np.sum(masks, axis=1) >= num_needed)

  masks, times = stragglers.sample_deadline_masks(key, model, 400, 10, deadline=deadline)
  np.testing.assert_array_equal(masks, latencies <= deadline)
  np.testing.assert_array_equal(times, np.minimum(latencies.max(axis=1), deadline))

  masks, times = stragglers.sample_deadline_masks(key, model, 400, 10, num_needed=num_needed)
  np.testing.assert_array_equal(np.sum(masks, axis=1), num_needed)
  np.testing.assert_array_equal(times, rth)


@pytest.mark.parametrize(
    "call",
    [
        lambda: stragglers.fastest_mask(np.ones(4), 5),
        lambda: stragglers.fastest_mask(np.ones(4), 0),
        lambda: stragglers.fastest_mask(np.float64(1.0), 1),
        lambda: stragglers.fastest_mask(np.ones((3, 0)), 1),
        lambda: stragglers.deadline_mask(np.ones((3, 4)), np.ones(3)),
        lambda: stragglers.deadline_mask(np.float64(2.0), 1.0),
        lambda: stragglers.sample_deadline_masks(
            jax.random.key(0), stragglers.Pareto(), 4, 3
        ),
        lambda: stragglers.sample_deadline_masks(
            jax.random.key(0), stragglers.Pareto(), 4, 3, num_needed=4
        ),
        lambda: stragglers.sample_deadline_masks(
            jax.random.key(0), stragglers.Pareto(), 4, 3, deadline=np.ones(3)
        ),
        lambda: stragglers.sample_deadline_masks(
            jax.random.key(0), stragglers.Pareto(), 0, 3, deadline=1.0
        ),
    ],
)
def test_latency_mask_errors(call):
  with pytest.raises(ValueError):
    call()
