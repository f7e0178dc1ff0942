"""Deployment, the one pipeline: against a hand-written encode/vmap/decode; erasures; bad queries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcoded import data, deployment, schemes, workers
from jaxcoded.schemes import learned


def _linear(rng, features=6, classes=4):
  weights = jnp.asarray(rng.normal(size=(classes, features)))
  return (lambda w, x: w @ x.reshape(-1)), weights


def _queries(rng, shape, dtype=jnp.float64):
  """Queries in [-1, 1] (the default deployment has no range check)."""
  return jnp.asarray(rng.uniform(-1.0, 1.0, size=shape), dtype)


def _by_hand(scheme, tasks, roles, queries, mask):
  """Encode, each worker's task on its row, zero the stragglers, decode: no Deployment."""
  coded = scheme.encode(queries)
  rows = [tasks[roles[n]].run(coded[n]) for n in range(scheme.num_workers)]
  outputs = jnp.stack(rows) * jnp.asarray(mask)[:, None]
  return scheme.decode(outputs, mask)


@pytest.mark.parametrize("make", [
    lambda: schemes.Uncoded.create(3),
    lambda: schemes.Replication.create(3, 1),
    lambda: schemes.LagrangeCode.create(3, 2, degree=1),
    lambda: schemes.BerrutCode.create(3, 2),
])
def test_homogeneous_matches_the_pipeline_by_hand(rng, make):
  scheme = make()
  fn, params = _linear(rng)
  served = deployment.Deployment.homogeneous("s", scheme, fn, params)
  queries = _queries(rng, (3, 2, 3))
  mask = jnp.asarray(rng.permutation(scheme.num_workers) >= 1)  # one straggler
  got = served(queries, mask)
  want = _by_hand(scheme, served.tasks, served.roles, queries, mask)
  np.testing.assert_allclose(got.values, want.values, rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(got.answered, want.answered)
  # Scheme.__call__ is the same path.
  short = scheme(fn, params, queries, mask)
  np.testing.assert_array_equal(short.values, got.values)
  assert served.worker(0).params is params and served.num_queries == 3


def test_parity_deployment_runs_f_and_the_parity_model(rng):
  code = schemes.ParityCode.create(3)
  fn, params = _linear(rng)
  parity_fn, parity_params = _linear(rng)
  served = deployment.Deployment.parity("ParM", code, fn, params, parity_fn, parity_params)
  assert served.roles == (0, 0, 0, 1)
  queries = _queries(rng, (3, 6))
  for straggler in range(4):
    mask = jnp.arange(4) != straggler
    got = served(queries, mask)
    want = _by_hand(code, served.tasks, served.roles, queries, mask)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got.answered, want.answered)
  with pytest.raises(ValueError, match="runs two functions"):
    deployment.Deployment.of("ParM", code, deployment.WorkerTask(fn, params))


def test_learned_deployment_designs_a_and_b_agree(rng):
  code = learned.PolynomialCode.create(
      4, 6, (8, 8, 1), 10, encoder_degree=1, worker_features=(4,), worker_out=8,
      head_hidden=0, rngs=nnx.Rngs(int(rng.integers(1 << 30))),
  )
  queries = _queries(rng, (4, 8, 8, 1), jnp.float32)
  mask = jnp.array([True, False, True, True, False, True])
  design_a = deployment.Deployment.learned("learned", code)
  design_b = deployment.Deployment.learned("learned", code, design="B")
  assert design_b.tasks[0].reads_queries and not design_a.tasks[0].reads_queries
  want = _by_hand(code, design_a.tasks, design_a.roles, queries, mask)
  np.testing.assert_allclose(design_a(queries, mask).values, want.values, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(design_b(queries, mask).values, want.values, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="unknown system design 'C'"):
    deployment.Deployment.learned("learned", code, design="C")
  with pytest.raises(ValueError, match="no worker-side encoding"):
    deployment.Deployment.of("Berrut", schemes.BerrutCode.create(4, 2), design="B")


def test_non_finite_outputs_are_erased_like_stragglers(rng):
  scheme = schemes.BerrutCode.create(3, 2)
  fn, params = _linear(rng)
  served = deployment.Deployment.homogeneous("s", scheme, fn, params)
  queries = _queries(rng, (3, 6))
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
  queries = _queries(rng, (8, 6))
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


# -- one bad query must not corrupt its group (docs/reliability.md) -------------------


def test_out_of_range_query_is_refused_and_named(rng):
  fn, params = _linear(rng)
  served = deployment.Deployment.homogeneous("Berrut", schemes.BerrutCode.create(3, 1), fn, params,
                                             query_range=data.query_spec("fashion_mnist"))
  low, high = data.value_range("fashion_mnist")
  queries = rng.uniform(low / 2, high / 2, size=(3, 6))  # well inside the dataset's range
  raw = queries.copy()
  raw[1] = rng.integers(0, 256, size=6)  # raw pixels among normalised mates
  mask = jnp.ones(4, bool)
  with pytest.raises(ValueError, match=r"query 1 has values in .* outside the expected range"):
    served(raw, mask)
  with pytest.raises(ValueError, match=r"query 1 .*outside"):
    served.scheme(fn, params, raw, mask, query_range=data.query_spec("fashion_mnist"))
  with pytest.raises(ValueError, match="float"):
    served(raw.astype(np.uint8), mask)
  nan = queries.copy()
  nan[2, 0] = np.nan
  with pytest.raises(ValueError, match="finite"):
    served(nan, mask)
  # Without a spec (the default) any real-valued data pass: integers too.
  free = deployment.Deployment.homogeneous("free", served.scheme, fn, params)
  assert np.all(free(raw, mask).answered)
  assert np.all(free(raw.astype(np.int32), mask).answered)
  assert np.all(served.scheme(fn, params, raw, mask).answered)


def test_dataset_range_is_exactly_what_load_produces():
  test = data.load("digits", "test", seed=None)
  low, high = data.value_range("digits")
  assert low <= test.images.min() and test.images.max() <= high
  assert test.images.min() - low < 0.01 and high - test.images.max() < 0.01
  assert data.value_range("digits")[1] < data.value_range("fashion_mnist")[1]
  spec = data.query_spec("digits")
  assert (spec.low, spec.high, spec.float_only) == (low, high, True)
  raw = np.arange(17, dtype=np.float32).reshape(1, 17, 1, 1)
  normalised = data.normalise("digits", raw)
  assert low <= normalised.min() and normalised.max() <= high


def test_a_raw_query_would_have_corrupted_its_mates(rng):
  """Why the check exists: one raw-pixel mate moves every decoded answer of Berrut."""
  fn, params = _linear(rng)
  # Positive weights: f's response to the raw pixels cannot cancel out, so how far the
  # mates move depends on Berrut's leakage (0.3-11% here), not on the draw of f.
  params = jnp.abs(params)
  scheme = schemes.BerrutCode.create(4, 1)
  served = deployment.Deployment.homogeneous("free", scheme, fn, params, query_range=None)
  queries = np.asarray(_queries(rng, (4, 6)))
  clean = served(queries, jnp.ones(5, bool).at[2].set(False)).values
  raw = queries.copy()
  raw[3] = 255.0
  spoiled = served(raw, jnp.ones(5, bool).at[2].set(False)).values
  moved = np.abs(np.asarray(spoiled[:3]) - np.asarray(clean[:3])).max(axis=1)
  assert np.all(moved > 1.0)  # every other query's answer is off by far more than its scale


# ---------------------------------------------------------------------------
# No image assumptions: any real-valued data by default, one verdict eagerly and under jit.


def _tanh_mlp(w, x):
  return jnp.tanh(w @ x)


def test_standard_normal_vectors_pass_by_default(rng):
  """The failing case of issue 22: f(W, x) = tanh(W x) on standard-normal vectors, K = 5, S = 2."""
  k, s, d = 5, 2, 7
  w = rng.normal(size=(3, d)).astype(np.float32)
  x = (4 * rng.normal(size=(k, d))).astype(np.float32)  # values far outside any image range
  code = schemes.BerrutCode.create(k, s)
  mask = np.ones(k + s, bool)
  mask[[1, 4]] = False
  eager = code(_tanh_mlp, w, x, mask)
  jitted = jax.jit(lambda x, m: code(_tanh_mlp, w, x, m))(x, mask)
  np.testing.assert_allclose(eager.values, jitted.values, rtol=1e-5, atol=1e-6)
  assert eager.values.shape == (k, 3) and bool(eager.answered.all())


def test_value_checks_give_one_verdict_eagerly_and_under_jit(rng):
  code = schemes.BerrutCode.create(3, 1)
  served = deployment.Deployment.homogeneous("B", code, _tanh_mlp, np.eye(2, dtype=np.float32),
                                             query_range=(-1.0, 1.0))
  bad = np.full((3, 2), 5.0, np.float32)
  mask = np.ones(4, bool)
  with pytest.raises(ValueError, match="outside the expected range"):
    served(bad, mask)
  with pytest.raises(ValueError, match="need concrete queries, but these are traced"):
    jax.jit(served)(bad, mask)
  good = np.zeros((3, 2), np.float32)
  with pytest.raises(ValueError, match="traced"):  # the same verdict for good data: refused under jit
    jax.jit(served)(good, mask)
  assert bool(served(good, mask).answered.all())


def test_integer_queries_are_accepted_by_scheme_and_deployment_alike(rng):
  code = schemes.BerrutCode.create(3, 1)
  queries = rng.integers(-5, 5, size=(3, 2)).astype(np.int32)
  mask = np.ones(4, bool)
  served = deployment.Deployment.homogeneous("B", code, lambda w, x: w @ x, np.eye(2, dtype=np.float32))
  direct = code(lambda w, x: w @ x, np.eye(2, dtype=np.float32), queries, mask)
  np.testing.assert_allclose(served(queries, mask).values, direct.values)
