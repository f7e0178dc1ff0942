"""Deployment: the same answers as each scheme's own pipeline; NaN outputs are erasures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcoded import deployment, schemes, workers
from jaxcoded.schemes import learned


def _linear(rng, features=6, classes=4):
  weights = jnp.asarray(rng.normal(size=(classes, features)))
  return (lambda w, x: w @ x.reshape(-1)), weights


@pytest.mark.parametrize("make", [
    lambda: schemes.Uncoded.create(3),
    lambda: schemes.Replication.create(3, 1),
    lambda: schemes.LagrangeCode.create(3, 2, degree=1),
    lambda: schemes.BerrutCode.create(3, 2),
])
def test_homogeneous_matches_the_scheme_pipeline(rng, make):
  scheme = make()
  fn, params = _linear(rng)
  served = deployment.Deployment.homogeneous("s", scheme, fn, params)
  queries = jnp.asarray(rng.normal(size=(3, 2, 3)))
  mask = jnp.asarray(rng.permutation(scheme.num_workers) >= 1)  # one straggler
  got = served(queries, mask)
  want = scheme(fn, params, queries, mask)
  np.testing.assert_allclose(got.values, want.values, rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(got.answered, want.answered)
  assert served.worker(0).params is params and served.num_queries == 3


def test_parity_deployment_matches_parm(rng):
  code = schemes.ParityCode.create(3)
  fn, params = _linear(rng)
  parity_fn, parity_params = _linear(rng)
  served = deployment.Deployment.parity("ParM", code, fn, params, parity_fn, parity_params)
  assert served.roles == (0, 0, 0, 1)
  queries = jnp.asarray(rng.normal(size=(3, 6)))
  for straggler in range(4):
    mask = jnp.arange(4) != straggler
    got = served(queries, mask)
    want = code(fn, params, queries, mask, parity_fn=parity_fn, parity_params=parity_params)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got.answered, want.answered)


def test_learned_deployment_matches_the_code(rng):
  code = learned.PolynomialCode.create(
      4, 6, (8, 8, 1), 10, encoder_degree=1, worker_features=(4,), worker_out=8,
      head_hidden=0, rngs=nnx.Rngs(int(rng.integers(1 << 30))),
  )
  served = deployment.Deployment.learned("learned", code)
  queries = jnp.asarray(rng.normal(size=(4, 8, 8, 1)), jnp.float32)
  mask = jnp.array([True, False, True, True, False, True])
  np.testing.assert_allclose(served(queries, mask).values, code(queries, mask).values,
                             rtol=1e-5, atol=1e-5)


def test_non_finite_outputs_are_erased_like_stragglers(rng):
  scheme = schemes.BerrutCode.create(3, 2)
  fn, params = _linear(rng)
  served = deployment.Deployment.homogeneous("s", scheme, fn, params)
  queries = jnp.asarray(rng.normal(size=(3, 6)))
  outputs = served.run_workers(served.encode(queries))
  everyone = jnp.ones((5,), bool)
  for bad in (jnp.nan, jnp.inf, -jnp.inf):
    poisoned = outputs.at[1, 2].set(bad)
    got = served.decode(poisoned, everyone)
    without = served.decode(outputs, everyone.at[1].set(False))
    np.testing.assert_allclose(got.values, without.values, rtol=1e-12)
    assert np.all(np.isfinite(got.values))
  erased, mask = workers.erase_nonfinite(outputs.at[4, 0].set(jnp.nan), everyone)
  np.testing.assert_array_equal(mask, [True, True, True, True, False])
  assert np.all(erased[4] == 0)


def test_mesh_matches_vmap_with_two_roles(rng):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices; tests/conftest.py sets them")
  code = schemes.ParityCode.create(8)  # 8 systematic workers on the mesh, 1 parity beside it
  fn, params = _linear(rng)
  served = deployment.Deployment.parity("ParM", code, fn, params, fn, params)
  queries = jnp.asarray(rng.normal(size=(8, 6)))
  mask = jnp.arange(9) != 3
  single = served(queries, mask)
  sharded = served(queries, mask, mesh=workers.make_worker_mesh(8))
  np.testing.assert_allclose(sharded.values, single.values, rtol=1e-12, atol=1e-12)


def test_bad_roles_and_workers_are_refused(rng):
  fn, params = _linear(rng)
  scheme = schemes.BerrutCode.create(2, 1)
  with pytest.raises(ValueError, match="2 roles for the N = 3 workers"):
    deployment.Deployment("x", scheme, (deployment.WorkerTask(fn, params),), (0, 0))
  with pytest.raises(ValueError, match="must index the 1 tasks"):
    deployment.Deployment("x", scheme, (deployment.WorkerTask(fn, params),), (0, 1, 0))
  served = deployment.Deployment.homogeneous("x", scheme, fn, params)
  with pytest.raises(ValueError, match="worker 3 is not in 0..2"):
    served.worker(3)
