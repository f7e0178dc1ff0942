"""ParM: systematic outputs pass through; the subtraction decoder is exact for an exact parity."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcoded import deployment, workers
from jaxcoded.schemes.parm import ParityCode


def parm_outputs(code, base_fn, base_params, parity_fn, parity_params, queries, mask=None,
                 mesh=None):
  served = deployment.Deployment.parity("ParM", code, base_fn, base_params, parity_fn,
                                        parity_params, query_range=None)
  return served.outputs(queries, mask, mesh=mesh)


def tanh_worker(params, x):
  return jnp.tanh(params @ x.reshape(-1))


def affine_worker(params, x):
  weights, bias = params
  return weights @ x.reshape(-1) + bias


def single_straggler_masks(num_workers):
  return np.array([[n != s for n in range(num_workers)] for s in range(num_workers)])


@pytest.mark.parametrize("num_queries", [1, 4, 12])
def test_sizes(num_queries):
  code = ParityCode.create(num_queries)
  assert (code.num_queries, code.num_workers, code.recovery_threshold) == (
      num_queries, num_queries + 1, num_queries)
  assert code.max_stragglers == 1
  assert code.sizes.redundancy == (num_queries + 1) / num_queries
  assert ParityCode.sizes_for(num_queries, 1) == code.sizes


@pytest.mark.parametrize(
    "num_queries,num_stragglers,match",
    [(0, 1, "K >= 1"), (4, 0, "S = 1"), (4, 2, "r = 1"), (2.5, 1, "K >= 1"), (4, -1, "S must")],
)
def test_impossible_sizes_are_rejected(num_queries, num_stragglers, match):
  with pytest.raises(ValueError, match=match):
    ParityCode.sizes_for(num_queries, num_stragglers)


@pytest.mark.parametrize("num_parities,match", [(0, "r >= 1"), (2, "r = 1"), (1.0, "r >= 1")])
def test_create_rejects_other_parity_counts(num_parities, match):
  with pytest.raises(ValueError, match=match):
    ParityCode.create(4, num_parities)


def test_encode_appends_the_sum(rng):
  queries = rng.normal(size=(5, 3, 2))
  coded = ParityCode.create(5).encode(queries)
  assert coded.shape == (6, 3, 2)
  np.testing.assert_array_equal(coded[:5], queries)
  np.testing.assert_allclose(coded[5], queries.sum(axis=0), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_no_straggler_gives_the_base_outputs(rng, dtype):
  code = ParityCode.create(6)
  queries = jnp.asarray(rng.normal(size=(6, 4, 2)), dtype)
  params = jnp.asarray(rng.normal(size=(5, 8)), dtype)
  parity_params = jnp.asarray(rng.normal(size=(5, 8)), dtype)  # A poor parity model.
  everyone = jnp.ones((7,), bool)
  decoded = jax.jit(lambda q, m: code(tanh_worker, params, q, m,
                                     parity_fn=tanh_worker, parity_params=parity_params))(
      queries, everyone)
  expected = jax.vmap(tanh_worker, in_axes=(None, 0))(params, queries)
  np.testing.assert_array_equal(decoded.values, expected)  # Passed through bit for bit.
  assert decoded.values.dtype == dtype
  assert np.all(decoded.answered)


@pytest.mark.parametrize("num_queries", [1, 3, 8])
def test_subtraction_decoder_is_exact_for_an_exact_parity_model(rng, num_queries):
  # For affine f(x) = W x + b, f_P(p) = W p + K b is exactly sum_k f(x_k).
  code = ParityCode.create(num_queries)
  queries = rng.normal(size=(num_queries, 3, 3))
  weights, bias = rng.normal(size=(4, 9)), rng.normal(size=(4,))
  params = (jnp.asarray(weights), jnp.asarray(bias))
  parity_params = (jnp.asarray(weights), jnp.asarray(num_queries * bias))
  expected = queries.reshape(num_queries, -1) @ weights.T + bias  # numpy float64 reference.
  masks = single_straggler_masks(num_queries + 1)

  decode = jax.jit(jax.vmap(
      lambda m: code(affine_worker, params, jnp.asarray(queries), m,
                     parity_fn=affine_worker, parity_params=parity_params)))
  decoded = decode(jnp.asarray(masks))
  assert decoded.values.dtype == jnp.float64
  assert np.all(decoded.answered)
  for values in np.asarray(decoded.values):
    np.testing.assert_allclose(values, expected, rtol=1e-11, atol=1e-11)


def test_recovered_output_is_parity_minus_the_others(rng):
  code = ParityCode.create(4)
  outputs = rng.normal(size=(5, 3))
  for missing in range(4):
    mask = np.arange(5) != missing
    values = np.asarray(code.decode(jnp.asarray(outputs), jnp.asarray(mask)).values)
    others = [k for k in range(4) if k != missing]
    np.testing.assert_allclose(
        values[missing], outputs[4] - outputs[others].sum(0), rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(values[others], outputs[others])


@pytest.mark.parametrize("num_queries", [3, 5])
def test_nan_poisoned_stragglers_never_leak(rng, num_queries):
  code = ParityCode.create(num_queries)
  n = num_queries + 1
  outputs = rng.normal(size=(n, 4))
  masks = np.array([
      np.isin(np.arange(n), missing, invert=True)
      for num_missing in (1, 2, 3)
      for missing in itertools.combinations(range(n), num_missing)
  ])
  poisoned = np.where(masks[:, :, None], outputs, np.nan)
  decode = jax.jit(jax.vmap(code.decode))
  decoded = decode(jnp.asarray(poisoned), jnp.asarray(masks))
  zeroed = jax.vmap(workers.mask_outputs, in_axes=(None, 0))(outputs, masks)
  clean = decode(zeroed, jnp.asarray(masks))
  assert np.all(np.isfinite(decoded.values))
  np.testing.assert_array_equal(decoded.values, clean.values)
  np.testing.assert_array_equal(decoded.answered, clean.answered)
  # One systematic straggler with the parity back: answered; otherwise only the returned.
  single = (masks.sum(1) == n - 1) & masks[:, -1]
  np.testing.assert_array_equal(decoded.answered, masks[:, :-1] | single[:, None])


def test_two_stragglers_leave_the_systematic_ones_unanswered(rng):
  # Two of two systematic workers, or one systematic worker and the parity:
  # r = 1 recovers neither, and the returned outputs still pass through.
  code = ParityCode.create(5)
  outputs = rng.normal(size=(6, 3))
  for missing in itertools.combinations(range(6), 2):
    mask = np.ones(6, bool)
    mask[list(missing)] = False
    decoded = code.decode(jnp.asarray(outputs), jnp.asarray(mask))
    values = np.asarray(decoded.values)
    np.testing.assert_array_equal(decoded.answered, mask[:5])
    assert np.all(values[~mask[:5]] == 0)
    np.testing.assert_array_equal(values[mask[:5]], outputs[:5][mask[:5]])


def test_parity_straggler_alone_leaves_the_base_outputs(rng):
  code = ParityCode.create(3)
  outputs = jnp.asarray(rng.normal(size=(4, 2)))
  decoded = code.decode(outputs, jnp.array([True, True, True, False]))
  np.testing.assert_array_equal(decoded.values, outputs[:3])
  assert np.all(decoded.answered)


def test_one_compilation_serves_every_mask(rng):
  code = ParityCode.create(4)
  traces = []

  @jax.jit
  def decode(outputs, mask):
    traces.append(None)
    return code.decode(outputs, mask)

  outputs = jnp.asarray(rng.normal(size=(5, 3)))
  for mask in single_straggler_masks(5):
    decode(outputs, jnp.asarray(mask))
  assert len(traces) == 1


def test_parm_outputs_runs_each_function_on_its_workers(rng):
  code = ParityCode.create(4)
  queries = jnp.asarray(rng.normal(size=(4, 6)))
  base_params = jnp.asarray(rng.normal(size=(3, 6)))
  parity_params = jnp.asarray(rng.normal(size=(3, 6)))
  mask = jnp.array([True, False, True, True, True])
  outputs = np.asarray(parm_outputs(
      code, tanh_worker, base_params, affine_worker, (parity_params, 0.0), queries, mask))
  expected_base = np.tanh(np.asarray(queries) @ np.asarray(base_params).T)
  np.testing.assert_allclose(outputs[[0, 2, 3]], expected_base[[0, 2, 3]], rtol=1e-12)
  assert np.all(outputs[1] == 0)
  np.testing.assert_allclose(outputs[4], np.asarray(parity_params) @ np.asarray(queries).sum(0),
                             rtol=1e-12)


def test_mesh_shards_the_systematic_workers(rng):
  code = ParityCode.create(8)
  mesh = workers.make_worker_mesh(4)
  queries = jnp.asarray(rng.normal(size=(8, 5)))
  params = jnp.asarray(rng.normal(size=(3, 5)))
  mask = jnp.asarray(np.arange(9) != 2)
  on_mesh = code(affine_worker, (params, 0.0), queries, mask, mesh=mesh,
                 parity_fn=affine_worker, parity_params=(params, 0.0), query_range=None)
  local = code(affine_worker, (params, 0.0), queries, mask,
               parity_fn=affine_worker, parity_params=(params, 0.0), query_range=None)
  np.testing.assert_allclose(on_mesh.values, local.values, rtol=1e-12, atol=1e-12)
  # K = 6 systematic workers do not divide over 4 devices: they run on one device, same answer.
  six = ParityCode.create(6)
  np.testing.assert_allclose(
      parm_outputs(six, affine_worker, (params, 0.0), affine_worker, (params, 0.0), queries[:6],
                   mesh=mesh),
      parm_outputs(six, affine_worker, (params, 0.0), affine_worker, (params, 0.0), queries[:6]),
      rtol=1e-12, atol=1e-12)


def test_bad_calls_are_rejected(rng):
  code = ParityCode.create(3)
  queries = jnp.asarray(rng.normal(size=(3, 2)))
  with pytest.raises(ValueError, match="runs two functions"):
    code(tanh_worker, jnp.ones((2, 2)), queries, jnp.ones((4,), bool), query_range=None)
  with pytest.raises(ValueError, match="mask has shape"):
    code.decode(jnp.zeros((4, 2)), jnp.ones((3,), bool))
  with pytest.raises(ValueError, match="outputs have shape"):
    code.decode(jnp.zeros((3, 2)), jnp.ones((4,), bool))
  with pytest.raises(ValueError, match="K = 3"):
    code.encode(jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="same shape"):
    parm_outputs(code, tanh_worker, jnp.ones((2, 2)), tanh_worker, jnp.ones((5, 2)), queries)
