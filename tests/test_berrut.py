"""Berrut coding (stragglers only) against a direct float64 numpy pipeline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcoded import schemes, stragglers


def berrut_reference(nodes, targets):
  """Direct float64 Berrut matrix; signs alternate over the nodes in sorted order."""
  nodes, targets = np.asarray(nodes, np.float64), np.asarray(targets, np.float64)
  signs = np.empty(len(nodes))
  signs[np.argsort(nodes)] = (-1.0) ** np.arange(len(nodes))
  matrix = np.zeros((len(targets), len(nodes)))
  for t, z in enumerate(targets):
    hit = np.flatnonzero(z == nodes)
    if hit.size:
      matrix[t, hit[0]] = 1.0
    else:
      terms = signs / (z - nodes)
      matrix[t] = terms / terms.sum()
  return matrix


def tanh_worker(params, x):
  return jnp.tanh(params @ x.reshape(-1))


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-12), (jnp.float32, 2e-5)])
@pytest.mark.parametrize("num_queries,num_stragglers", [(1, 1), (4, 2), (8, 3), (12, 1)])
def test_pipeline_matches_numpy_reference(rng, dtype, tol, num_queries, num_stragglers):
  code = schemes.BerrutCode.create(num_queries, num_stragglers, dtype=dtype)
  assert (code.num_workers, code.recovery_threshold) == (num_queries + num_stragglers, num_queries)
  queries = rng.normal(size=(num_queries, 3, 2)).astype(dtype)
  params = (rng.normal(size=(5, 6)) / 2).astype(dtype)
  masks = stragglers.random_masks(jax.random.key(int(rng.integers(1 << 30))), 6, code.num_workers, num_stragglers)

  decoded = jax.jit(jax.vmap(lambda m: code(tanh_worker, params, queries, m, query_range=None)))(masks)
  assert decoded.values.dtype == dtype
  a, b = np.asarray(code.data_points, np.float64), np.asarray(code.worker_points, np.float64)
  coded = berrut_reference(a, b) @ queries.reshape(num_queries, -1).astype(np.float64)
  outputs = np.tanh(coded @ params.astype(np.float64).T)
  for mask, values in zip(np.asarray(masks), np.asarray(decoded.values)):
    expected = berrut_reference(b[mask], a) @ outputs[mask]
    np.testing.assert_allclose(values, expected, rtol=tol, atol=tol)


def test_reproduces_constants_from_any_subset(rng):
  code = schemes.BerrutCode.create(5, 3, dtype=jnp.float64)
  constant = rng.normal(size=(1, 7))
  queries = jnp.asarray(np.repeat(constant, 5, axis=0))
  for s in range(code.num_workers):
    for mask in stragglers.all_masks(code.num_workers, s):
      decoded = code(lambda p, x: x * 2.0, None, queries, jnp.asarray(mask), query_range=None)
      np.testing.assert_allclose(decoded.values, 2 * np.repeat(constant, 5, axis=0), rtol=1e-12)


def test_decodes_beyond_threshold_and_not_from_nothing(rng):
  code = schemes.BerrutCode.create(4, 1, dtype=jnp.float64)
  outputs = jnp.asarray(rng.normal(size=(code.num_workers, 3)))
  one = np.zeros(code.num_workers, bool)
  one[2] = True
  decoded = code.decode(outputs, jnp.asarray(one))
  assert bool(jnp.all(decoded.answered))
  np.testing.assert_allclose(decoded.values, np.repeat(outputs[2:3], 4, axis=0))
  none = code.decode(outputs, jnp.zeros(code.num_workers, bool))
  assert not bool(jnp.any(none.answered))
  assert bool(jnp.all(none.values == 0))


def test_nan_poisoned_stragglers_change_nothing(rng):
  code = schemes.BerrutCode.create(6, 2, dtype=jnp.float32)
  outputs = rng.normal(size=(code.num_workers, 10)).astype(np.float32)
  mask = np.ones(code.num_workers, bool)
  mask[[3, 5]] = False
  clean = code.decode(jnp.asarray(np.where(mask[:, None], outputs, 0)), jnp.asarray(mask))
  poisoned = outputs.copy()
  poisoned[~mask] = np.inf
  poisoned[3, 0] = np.nan
  dirty = code.decode(jnp.asarray(poisoned), jnp.asarray(mask))
  np.testing.assert_array_equal(clean.values, dirty.values)


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="K >= 1"):
    schemes.BerrutCode.create(0, 1)
  with pytest.raises(ValueError, match="S"):
    schemes.BerrutCode.create(2, -1)
  with pytest.raises(ValueError, match="recovery threshold R = K"):
    schemes.BerrutCode.create(3, 0, worker_points=[0.1, 0.2])
  with pytest.raises(ValueError, match="distinct"):
    schemes.BerrutCode.create(2, 1, worker_points=[0.1, 0.1, 0.3])
