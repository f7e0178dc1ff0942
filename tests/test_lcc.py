"""Lagrange Coded Computing: exact for polynomial workers from any R of N."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcoded import schemes, stragglers


def polynomial_worker(degree):
  """f(x) = sum_j (A x)^j / j!: a polynomial of exactly `degree` in x."""

  def f(params, x):
    projected = params @ x.reshape(-1)
    return sum(projected**j / float(np.prod(np.arange(1, j + 1))) for j in range(1, degree + 1))

  return f


def f_reference(a, x, degree):
  projected = a @ x.reshape(-1)
  return sum(projected**j / float(np.prod(np.arange(1, j + 1))) for j in range(1, degree + 1))


@pytest.mark.parametrize("num_queries,num_stragglers,degree", [(1, 1, 2), (3, 2, 2), (4, 1, 1), (2, 3, 3)])
def test_exact_from_every_recovery_subset(rng, num_queries, num_stragglers, degree):
  code = schemes.LagrangeCode.create(num_queries, num_stragglers, degree, dtype=jnp.float64)
  assert code.recovery_threshold == (num_queries - 1) * degree + 1
  assert code.num_workers == code.recovery_threshold + num_stragglers
  queries = rng.normal(size=(num_queries, 2, 3))
  a = rng.normal(size=(4, 6)) / 3
  f = polynomial_worker(degree)
  expected = np.stack([f_reference(a, x, degree) for x in queries])

  masks = stragglers.all_masks(code.num_workers, num_stragglers)
  decode_all = jax.jit(jax.vmap(lambda mask: code(f, jnp.asarray(a), jnp.asarray(queries), mask, query_range=None)))
  decoded = decode_all(jnp.asarray(masks))
  assert decoded.values.shape == (len(masks), num_queries, 4)
  assert bool(jnp.all(decoded.answered))
  scale = np.abs(expected).max()
  np.testing.assert_allclose(decoded.values, np.broadcast_to(expected, decoded.values.shape),
                             atol=1e-9 * scale, rtol=1e-9)


def test_more_than_threshold_gives_same_answer(rng):
  code = schemes.LagrangeCode.create(3, 3, 2, dtype=jnp.float64)
  queries = jnp.asarray(rng.normal(size=(3, 5)))
  a = jnp.asarray(rng.normal(size=(2, 5)))
  f = polynomial_worker(2)
  expected = np.stack([f_reference(np.asarray(a), np.asarray(x), 2) for x in queries])
  for num_stragglers in range(0, 4):
    for mask in stragglers.all_masks(code.num_workers, num_stragglers):
      decoded = code(f, a, queries, jnp.asarray(mask), query_range=None)
      np.testing.assert_allclose(decoded.values, expected, rtol=1e-9, atol=1e-10)


def test_below_threshold_answers_nothing(rng):
  code = schemes.LagrangeCode.create(3, 1, 1, dtype=jnp.float64)
  mask = np.array([True, False, False, True])
  decoded = code.decode(jnp.asarray(rng.normal(size=(4, 2))), jnp.asarray(mask))
  assert not bool(jnp.any(decoded.answered))
  assert bool(jnp.all(decoded.values == 0))


def test_nan_poisoned_stragglers_change_nothing(rng):
  code = schemes.LagrangeCode.create(4, 2, 1, dtype=jnp.float64)
  outputs = rng.normal(size=(code.num_workers, 3))
  mask = np.ones(code.num_workers, bool)
  mask[[0, 4]] = False
  clean = code.decode(jnp.asarray(np.where(mask[:, None], outputs, 0.0)), jnp.asarray(mask))
  poisoned = outputs.copy()
  poisoned[~mask] = np.nan
  dirty = code.decode(jnp.asarray(poisoned), jnp.asarray(mask))
  assert np.all(np.isfinite(dirty.values))
  np.testing.assert_array_equal(clean.values, dirty.values)


def test_float32_decoding_is_accurate(rng):
  code = schemes.LagrangeCode.create(8, 2, 1, dtype=jnp.float32)
  queries = rng.normal(size=(8, 10)).astype(np.float32)
  a = rng.normal(size=(3, 10)).astype(np.float32)
  mask = np.ones(code.num_workers, bool)
  mask[[1, 7]] = False
  decoded = code(polynomial_worker(1), jnp.asarray(a), jnp.asarray(queries), jnp.asarray(mask),
                 query_range=None)
  assert decoded.values.dtype == jnp.float32
  expected = queries.astype(np.float64) @ a.T.astype(np.float64)
  np.testing.assert_allclose(decoded.values, expected, rtol=1e-4, atol=1e-4)


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="K >= 1"):
    schemes.LagrangeCode.create(0, 1)
  with pytest.raises(ValueError, match="S"):
    schemes.LagrangeCode.create(3, -1)
  with pytest.raises(ValueError, match="degree"):
    schemes.LagrangeCode.create(3, 1, degree=0)
  with pytest.raises(ValueError, match="recovery threshold"):
    schemes.LagrangeCode.create(3, 0, 2, worker_points=np.linspace(0.1, 0.9, 4))
  with pytest.raises(ValueError, match="differ"):
    schemes.LagrangeCode.create(2, 1, data_points=[0.0, 0.5], worker_points=[0.0, 0.2, 0.3])
  code = schemes.LagrangeCode.create(3, 1)
  with pytest.raises(ValueError, match="mask"):
    code.decode(jnp.zeros((code.num_workers, 2)), jnp.ones(code.num_workers + 1, bool))
  with pytest.raises(ValueError, match="K = 3"):
    code.encode(jnp.zeros((4, 2)))
