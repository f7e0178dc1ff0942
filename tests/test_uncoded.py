"""Uncoded serving: exactly the base classifier's output for every returned query."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcoded import stragglers
from jaxcoded.schemes.uncoded import Uncoded, majority_class_logits


def tanh_worker(params, x):
  return jnp.tanh(params @ x.reshape(-1))


@pytest.mark.parametrize(
    "dtype,tol,num_queries,num_stragglers",
    [(jnp.float64, 1e-14, 1, 0), (jnp.float64, 1e-14, 8, 7), (jnp.float32, 1e-6, 5, 2)],
)
def test_returned_queries_get_the_base_output(rng, dtype, tol, num_queries, num_stragglers):
  code = Uncoded.create(num_queries)
  assert (code.num_workers, code.recovery_threshold, code.max_stragglers) == (num_queries, num_queries, 0)
  assert code.sizes.redundancy == 1.0
  queries = rng.normal(size=(num_queries, 3, 2)).astype(dtype)
  params = rng.normal(size=(4, 6)).astype(dtype)
  key = jax.random.key(int(rng.integers(1 << 30)))
  masks = stragglers.random_masks(key, 5, num_queries, num_stragglers)

  decoded = jax.jit(jax.vmap(lambda m: code(tanh_worker, params, queries, m, query_range=None)))(masks)
  expected = np.tanh(queries.reshape(num_queries, -1).astype(np.float64) @ params.astype(np.float64).T)
  masks = np.asarray(masks)
  np.testing.assert_array_equal(decoded.answered, masks)
  values = np.asarray(decoded.values, np.float64)
  for mask, row in zip(masks, values):
    np.testing.assert_allclose(row[mask], expected[mask], rtol=tol, atol=tol)
    assert np.all(row[~mask] == 0)


def test_fallback_fills_unanswered_queries(rng):
  labels = np.array([2, 1, 2, 0, 2, 1])
  fallback = majority_class_logits(labels, 4)
  np.testing.assert_array_equal(fallback, [0, 0, 1, 0])
  code = Uncoded.create(5, fallback=fallback)
  assert code.has_fallback and not Uncoded.create(5).has_fallback
  outputs = rng.normal(size=(5, 4))
  mask = np.array([True, False, True, False, True])
  decoded = code.decode(jnp.asarray(outputs), jnp.asarray(mask))
  np.testing.assert_array_equal(decoded.answered, mask)
  np.testing.assert_array_equal(decoded.values[mask], outputs[mask])
  np.testing.assert_array_equal(decoded.values[~mask], np.tile([0.0, 0, 1, 0], (2, 1)))
  assert np.all(np.argmax(decoded.values[~mask], axis=1) == 2)


def test_majority_ties_go_to_the_smallest_class():
  np.testing.assert_array_equal(majority_class_logits(np.array([3, 1, 3, 1]), 5), [0, 1, 0, 0, 0])


@pytest.mark.parametrize("fallback", [None, np.array([0.5, -1.0, 2.0])])
def test_nan_poisoned_stragglers_change_nothing(rng, fallback):
  code = Uncoded.create(6, fallback=fallback)
  outputs = rng.normal(size=(6, 3))
  mask = np.array([True, False, True, True, False, True])
  clean = code.decode(jnp.asarray(np.where(mask[:, None], outputs, 0.0)), jnp.asarray(mask))
  poisoned = outputs.copy()
  poisoned[~mask] = np.nan
  poisoned[1, 0] = np.inf
  dirty = jax.jit(code.decode)(jnp.asarray(poisoned), jnp.asarray(mask))
  assert np.all(np.isfinite(dirty.values))
  np.testing.assert_array_equal(clean.values, dirty.values)


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="K >= 1"):
    Uncoded.create(0)
  with pytest.raises(ValueError, match="tolerates no straggler"):
    Uncoded.sizes_for(4, 1)
  with pytest.raises(ValueError, match="float"):
    Uncoded.create(3, fallback=np.array([0, 1]))
  with pytest.raises(ValueError, match="finite"):
    Uncoded.create(3, fallback=np.array([0.0, np.nan]))
  with pytest.raises(ValueError, match="shape"):
    Uncoded.create(3, fallback=np.zeros(4)).decode(jnp.zeros((3, 5)), jnp.ones(3, bool))
  with pytest.raises(ValueError, match="mask"):
    Uncoded.create(3).decode(jnp.zeros((3, 5)), jnp.ones(4, bool))
  with pytest.raises(ValueError, match="labels"):
    majority_class_logits(np.array([0, 5]), 3)


def test_a_fallback_model_answers_the_stragglers_queries_at_the_master(rng):
  k = 5
  worker_params = rng.normal(size=(4, 6))
  fallback_params = rng.normal(size=(4, 6))
  code = Uncoded.create(k, fallback_model=(tanh_worker, jnp.asarray(fallback_params)))
  assert code.decode_reads_queries and code.has_fallback
  queries = rng.normal(size=(k, 3, 2))
  flat = queries.reshape(k, -1)
  for mask in (np.ones(k, bool), np.zeros(k, bool), rng.random(k) < 0.5):
    decoded = jax.jit(lambda q, m: code(tanh_worker, worker_params, q, m))(queries, mask)
    expected = np.where(mask[:, None], np.tanh(flat @ worker_params.T), np.tanh(flat @ fallback_params.T))
    np.testing.assert_allclose(decoded.values, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(decoded.answered, mask)  # the workers answered only these
  outputs = np.tanh(flat @ worker_params.T)
  with pytest.raises(ValueError, match="reads the group's queries"):
    code.decode(outputs, np.ones(k, bool))
  with pytest.raises(ValueError, match="not both"):
    Uncoded.create(k, fallback=jnp.zeros(4), fallback_model=(tanh_worker, fallback_params))
  wrong = Uncoded.create(k, fallback_model=(lambda p, x: jnp.zeros(3), None))
  with pytest.raises(ValueError, match="fallback model gives outputs of shapes"):
    wrong.decode(outputs, np.ones(k, bool), queries)
