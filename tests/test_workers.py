"""Tests for jaxcoded.workers: vmap and shard_map over the worker axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcoded import workers

IN_DIM, HIDDEN, OUT_DIM = 5, 7, 3


def mlp_worker(params, x):
  """One worker: a small MLP on one coded input of shape (IN_DIM,)."""
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  return hidden @ params["w2"]


def numpy_reference(params, coded_inputs, mask):
  """A Python loop over workers in float64 numpy, straggler rows zero."""
  outputs = np.zeros((coded_inputs.shape[0], OUT_DIM))
  for n, x in enumerate(coded_inputs):
    if mask[n]:
      outputs[n] = np.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]
  return outputs


def random_params(rng):
  return {
      "w1": rng.normal(size=(IN_DIM, HIDDEN)),
      "b1": rng.normal(size=(HIDDEN,)),
      "w2": rng.normal(size=(HIDDEN, OUT_DIM)),
  }


def random_mask(rng, num_workers, num_stragglers):
  mask = np.ones(num_workers, dtype=bool)
  mask[rng.choice(num_workers, num_stragglers, replace=False)] = False
  return mask


def masked_loss(run, params, coded_inputs, mask, weights):
  """A scalar loss computed outside run_workers from the masked outputs."""
  return jnp.sum(weights * run(params, coded_inputs, mask) ** 2)


def _auto_mesh():
  return workers.make_worker_mesh()


def _explicit_mesh():
  return jax.make_mesh((8,), ("workers",))  # Explicit axes by default.


def _two_axis_mesh():
  return jax.make_mesh((2, 4), ("data", "workers"))


MESHES = {"auto": _auto_mesh, "explicit": _explicit_mesh, "two_axes": _two_axis_mesh}


def test_eight_simulated_devices():
  assert jax.device_count() == 8


# ---------------------------------------------------------------------------
# The vmap path.


@pytest.mark.parametrize("num_workers, num_stragglers", [(1, 0), (6, 2), (11, 5)])
def test_vmap_equals_numpy_loop(rng, num_workers, num_stragglers):
  params = random_params(rng)
  coded_inputs = rng.normal(size=(num_workers, IN_DIM))
  mask = random_mask(rng, num_workers, num_stragglers)
  outputs = workers.run_workers(mlp_worker, params, coded_inputs, mask)
  assert outputs.shape == (num_workers, OUT_DIM) and outputs.dtype == jnp.float64
  expected = numpy_reference(params, coded_inputs, mask)
  np.testing.assert_allclose(outputs, expected, rtol=1e-12, atol=1e-12)
  jitted = jax.jit(lambda p, x, m: workers.run_workers(mlp_worker, p, x, m))
  np.testing.assert_allclose(jitted(params, coded_inputs, mask), outputs, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32(rng):
  params = jax.tree.map(lambda a: a.astype(np.float32), random_params(rng))
  coded_inputs = rng.normal(size=(4, IN_DIM)).astype(np.float32)
  mask = np.array([True, False, True, True])
  outputs = workers.run_workers(mlp_worker, params, coded_inputs, mask)
  assert outputs.dtype == jnp.float32
  expected = numpy_reference(params, coded_inputs, mask)
  np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("replace_straggler_inputs", [True, False])
def test_nan_poisoned_stragglers_never_leak(rng, replace_straggler_inputs):
  params = random_params(rng)
  coded_inputs = rng.normal(size=(8, IN_DIM))
  mask = random_mask(rng, 8, 3)
  poisoned = coded_inputs.copy()
  poisoned[~mask] = np.nan
  poisoned[np.flatnonzero(~mask)[0]] = np.inf
  outputs = workers.run_workers(
      mlp_worker, params, poisoned, mask, replace_straggler_inputs=replace_straggler_inputs
  )
  assert np.all(np.isfinite(outputs))
  np.testing.assert_array_equal(np.asarray(outputs)[~mask], 0.0)
  expected = numpy_reference(params, coded_inputs, mask)
  np.testing.assert_allclose(outputs, expected, rtol=1e-12, atol=1e-12)


def test_nan_worker_outputs_never_leak(rng):
  def normalise(params, x):
    return params * x / jnp.linalg.norm(x)  # NaN for a zero input.

  coded_inputs = rng.normal(size=(6, IN_DIM))
  mask = np.array([True, False, True, True, False, True])
  coded_inputs[~mask] = 0.0
  raw = jax.vmap(normalise, in_axes=(None, 0))(2.0, coded_inputs)
  assert np.all(np.isnan(np.asarray(raw)[~mask]))  # The poison is really there.
  outputs = np.asarray(workers.run_workers(normalise, 2.0, coded_inputs, mask))
  np.testing.assert_array_equal(outputs[~mask], 0.0)
  np.testing.assert_allclose(outputs[mask], np.asarray(raw)[mask])


def test_gradients_ignore_poisoned_straggler_inputs(rng):
  params = random_params(rng)
  coded_inputs = rng.normal(size=(8, IN_DIM))
  mask = random_mask(rng, 8, 3)
  weights = rng.normal(size=(8, OUT_DIM))
  poisoned = coded_inputs.copy()
  poisoned[~mask] = np.nan
  grad = jax.jit(
      jax.grad(
          lambda p, x: masked_loss(
              lambda *a: workers.run_workers(mlp_worker, *a), p, x, mask, weights
          ),
          argnums=(0, 1),
      )
  )
  clean_params, clean_inputs = grad(params, coded_inputs)
  poisoned_params, poisoned_inputs = grad(params, poisoned)
  for leaf in jax.tree.leaves(poisoned_params):
    assert np.all(np.isfinite(leaf))
  jax.tree.map(np.testing.assert_allclose, poisoned_params, clean_params)
  np.testing.assert_array_equal(np.asarray(poisoned_inputs)[~mask], 0.0)
  np.testing.assert_allclose(poisoned_inputs, clean_inputs)


def test_vmap_gradients_match_finite_differences(rng):
  params = random_params(rng)
  coded_inputs = rng.normal(size=(6, IN_DIM))
  mask = random_mask(rng, 6, 2)
  weights = rng.normal(size=(6, OUT_DIM))
  run = lambda *a: workers.run_workers(mlp_worker, *a)
  check_grads(
      lambda p, x: masked_loss(run, p, x, mask, weights),
      (params, coded_inputs),
      order=1,
      modes=("rev",),
  )


def test_pytree_inputs_and_outputs(rng):
  def worker(params, x):
    return {"sum": params * (x["a"].sum() + x["b"]), "a": x["a"]}

  coded_inputs = {"a": rng.normal(size=(8, 3)), "b": rng.normal(size=(8,))}
  mask = random_mask(rng, 8, 2)
  for mesh in (None, _auto_mesh()):
    outputs = workers.run_workers(worker, 3.0, coded_inputs, mask, mesh=mesh)
    expected_sum = np.where(mask, 3.0 * (coded_inputs["a"].sum(axis=1) + coded_inputs["b"]), 0.0)
    np.testing.assert_allclose(outputs["sum"], expected_sum, rtol=1e-12)
    np.testing.assert_array_equal(outputs["a"], np.where(mask[:, None], coded_inputs["a"], 0.0))


# ---------------------------------------------------------------------------
# The shard_map path.


@pytest.mark.parametrize("mesh_kind", list(MESHES))
def test_shard_map_equals_vmap_forward_and_gradients(rng, mesh_kind):
  mesh = MESHES[mesh_kind]()
  num_workers = 16  # Two workers per device on the 8-device axes.
  params = random_params(rng)
  coded_inputs = rng.normal(size=(num_workers, IN_DIM))
  mask = random_mask(rng, num_workers, 5)
  weights = rng.normal(size=(num_workers, OUT_DIM))

  def run_vmap(p, x, m):
    return workers.run_workers(mlp_worker, p, x, m)

  def run_sharded(p, x, m):
    return workers.run_workers(mlp_worker, p, x, m, mesh=mesh)

  expected = numpy_reference(params, coded_inputs, mask)
  np.testing.assert_allclose(
      run_sharded(params, coded_inputs, mask), expected, rtol=1e-12, atol=1e-12
  )
  sharded_outputs = jax.jit(run_sharded)(params, coded_inputs, mask)
  np.testing.assert_allclose(sharded_outputs, expected, rtol=1e-12, atol=1e-12)

  grad_vmap = jax.jit(
      jax.grad(lambda p, x: masked_loss(run_vmap, p, x, mask, weights), argnums=(0, 1))
  )
  grad_sharded = jax.jit(
      jax.grad(lambda p, x: masked_loss(run_sharded, p, x, mask, weights), argnums=(0, 1))
  )
  (vmap_params, vmap_inputs) = grad_vmap(params, coded_inputs)
  (sharded_params, sharded_inputs) = grad_sharded(params, coded_inputs)
  # A per-device (unsummed) parameter gradient would differ by far more than this.
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12),
      sharded_params,
      vmap_params,
  )
  np.testing.assert_allclose(sharded_inputs, vmap_inputs, rtol=1e-10, atol=1e-12)
  np.testing.assert_array_equal(np.asarray(sharded_inputs)[~mask], 0.0)


def test_shard_map_with_no_params(rng):
  coded_inputs = rng.normal(size=(8, 4))
  mask = random_mask(rng, 8, 3)
  outputs = workers.run_workers(
      lambda _, x: jnp.sin(x), None, coded_inputs, mask, mesh=_auto_mesh()
  )
  np.testing.assert_allclose(outputs, np.where(mask[:, None], np.sin(coded_inputs), 0.0))


def test_shard_map_on_a_subset_of_devices(rng):
  mesh = workers.make_worker_mesh(4)
  assert mesh.shape == {"workers": 4}
  params = random_params(rng)
  coded_inputs = rng.normal(size=(12, IN_DIM))
  mask = random_mask(rng, 12, 4)
  np.testing.assert_allclose(
      workers.run_workers(mlp_worker, params, coded_inputs, mask, mesh=mesh),
      numpy_reference(params, coded_inputs, mask),
      rtol=1e-12,
      atol=1e-12,
  )


def test_workers_not_a_multiple_of_devices(rng):
  coded_inputs = rng.normal(size=(12, IN_DIM))
  mask = np.ones(12, dtype=bool)
  with pytest.raises(ValueError, match=r"N = 12.*8 devices"):
    workers.run_workers(mlp_worker, random_params(rng), coded_inputs, mask, mesh=_auto_mesh())


def test_mesh_without_the_worker_axis(rng):
  mesh = workers.make_worker_mesh(axis_name="devices")
  params, coded_inputs, mask = random_params(rng), np.ones((8, IN_DIM)), np.ones(8, bool)
  with pytest.raises(ValueError, match="no axis 'workers'"):
    workers.run_workers(mlp_worker, params, coded_inputs, mask, mesh=mesh)
  outputs = workers.run_workers(
      mlp_worker, params, coded_inputs, mask, mesh=mesh, axis_name="devices"
  )
  assert outputs.shape == (8, OUT_DIM)


# ---------------------------------------------------------------------------
# One compilation for every straggler pattern.


@pytest.mark.parametrize("use_mesh", [False, True])
def test_new_mask_does_not_retrace(rng, use_mesh):
  mesh = _auto_mesh() if use_mesh else None
  traces = 0

  def counting_worker(params, x):
    nonlocal traces
    traces += 1
    return mlp_worker(params, x)

  run = jax.jit(lambda p, x, m: workers.run_workers(counting_worker, p, x, m, mesh=mesh))
  params = random_params(rng)
  coded_inputs = rng.normal(size=(16, IN_DIM))
  for num_stragglers in (0, 3, 7, 3):
    mask = random_mask(rng, 16, num_stragglers)
    np.testing.assert_allclose(
        run(params, coded_inputs, mask), numpy_reference(params, coded_inputs, mask),
        rtol=1e-12, atol=1e-12,
    )
  assert traces == 1


# ---------------------------------------------------------------------------
# Errors and helpers.


@pytest.mark.parametrize(
    "coded_inputs, mask",
    [
        (np.ones((4, IN_DIM)), np.ones(5, dtype=bool)),
        (np.ones((4, IN_DIM)), np.ones((4, 1), dtype=bool)),
        (np.ones((4, IN_DIM)), np.ones(4)),
        (np.float64(1.0), np.ones(1, dtype=bool)),
        ({"a": np.ones((4, 2)), "b": np.ones((3, 2))}, np.ones(4, dtype=bool)),
        ({}, np.ones(4, dtype=bool)),
    ],
)
def test_bad_inputs(rng, coded_inputs, mask):
  with pytest.raises(ValueError):
    workers.run_workers(mlp_worker, random_params(rng), coded_inputs, mask)


def test_mask_outputs(rng):
  outputs = rng.normal(size=(5, 2, 3))
  outputs[1] = np.nan
  mask = np.array([True, False, True, False, True])
  masked = np.asarray(workers.mask_outputs(outputs, mask))
  np.testing.assert_array_equal(masked[~mask], 0.0)
  np.testing.assert_array_equal(masked[mask], outputs[mask])
  with pytest.raises(ValueError, match="leading axis of length 5"):
    workers.mask_outputs(np.ones((4, 2)), mask)


@pytest.mark.parametrize("num_devices", [0, 9, 2.0])
def test_make_worker_mesh_errors(num_devices):
  with pytest.raises(ValueError, match="num_devices"):
    workers.make_worker_mesh(num_devices)


def test_make_worker_mesh_is_auto():
  mesh = workers.make_worker_mesh()
  assert mesh.shape == {"workers": 8}
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
