"""Replication: every query with a returned replica gets exactly the base output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcoded import stragglers
from jaxcoded.schemes.replication import Replication


def tanh_worker(params, x):
  return jnp.tanh(params @ x.reshape(-1))


@pytest.mark.parametrize("num_queries,num_stragglers", [(1, 0), (1, 2), (3, 1), (4, 2)])
def test_sizes(num_queries, num_stragglers):
  code = Replication.create(num_queries, num_stragglers)
  copies = num_stragglers + 1
  assert code.copies == copies
  assert code.num_workers == copies * num_queries
  assert code.recovery_threshold == code.num_workers - copies + 1
  assert code.max_stragglers == num_stragglers
  assert code.sizes.redundancy == copies
  assert code.sizes == Replication.sizes_for(num_queries, num_stragglers)
  np.testing.assert_array_equal(code.query_of_worker(), np.arange(code.num_workers) % num_queries)


@pytest.mark.parametrize(
    "dtype,tol,num_queries,num_stragglers", [(jnp.float64, 1e-14, 4, 2), (jnp.float32, 1e-6, 3, 1)]
)
def test_exact_for_every_straggler_pattern(rng, dtype, tol, num_queries, num_stragglers):
  """All patterns of up to S + 1 stragglers: exact where any replica returned."""
  code = Replication.create(num_queries, num_stragglers)
  queries = rng.normal(size=(num_queries, 2, 3)).astype(dtype)
  params = rng.normal(size=(5, 6)).astype(dtype)
  expected = np.tanh(queries.reshape(num_queries, -1).astype(np.float64) @ params.astype(np.float64).T)
  run = jax.jit(jax.vmap(lambda m: code(tanh_worker, params, queries, m, query_range=None)))
  for s in (num_stragglers, num_stragglers + 1):
    masks = stragglers.all_masks(code.num_workers, s)
    decoded = run(jnp.asarray(masks))
    replicas_back = masks.reshape(len(masks), code.copies, num_queries).any(axis=1)
    np.testing.assert_array_equal(decoded.answered, replicas_back)
    if s == num_stragglers:
      assert replicas_back.all()  # S stragglers never cost a query
    values = np.asarray(decoded.values, np.float64)
    for answered, row in zip(replicas_back, values):
      np.testing.assert_allclose(row[answered], expected[answered], rtol=tol, atol=tol)
      assert np.all(row[~answered] == 0)


def test_takes_the_first_returned_replica(rng):
  code = Replication.create(2, 2)  # workers: copy 0 = (0, 1), copy 1 = (2, 3), copy 2 = (4, 5)
  outputs = rng.normal(size=(6, 3))
  mask = np.array([False, False, True, False, True, True])
  decoded = code.decode(jnp.asarray(outputs), jnp.asarray(mask))
  np.testing.assert_array_equal(decoded.values, outputs[[2, 5]])


def test_nan_poisoned_stragglers_change_nothing(rng):
  code = Replication.create(3, 1)
  outputs = rng.normal(size=(6, 4))
  mask = np.array([False, True, False, True, True, False])
  clean = code.decode(jnp.asarray(np.where(mask[:, None], outputs, 0.0)), jnp.asarray(mask))
  poisoned = outputs.copy()
  poisoned[~mask] = np.nan
  poisoned[0, 1] = -np.inf
  dirty = jax.jit(code.decode)(jnp.asarray(poisoned), jnp.asarray(mask))
  assert np.all(np.isfinite(dirty.values))
  np.testing.assert_array_equal(clean.values, dirty.values)
  np.testing.assert_array_equal(dirty.answered, [True, True, False])


def test_gradients_flow_only_through_the_chosen_replica(rng):
  code = Replication.create(2, 1)
  outputs = jnp.asarray(rng.normal(size=(4, 3)))
  mask = jnp.array([False, True, True, True])
  grad = jax.grad(lambda y: jnp.sum(code.decode(y, mask).values))(outputs)
  np.testing.assert_array_equal(grad, np.array([[0.0] * 3, [1.0] * 3, [1.0] * 3, [0.0] * 3]))


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="K >= 1"):
    Replication.create(0, 1)
  with pytest.raises(ValueError, match="S"):
    Replication.create(2, -1)
  with pytest.raises(ValueError, match="mask"):
    Replication.create(2, 1).decode(jnp.zeros((4, 2)), jnp.ones(3, bool))
  with pytest.raises(ValueError, match="outputs"):
    Replication.create(2, 1).decode(jnp.zeros((3, 2)), jnp.ones(4, bool))
  with pytest.raises(ValueError, match="queries"):
    Replication.create(2, 1).encode(jnp.zeros((3, 2)))
