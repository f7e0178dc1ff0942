"""Learned codes: exact threshold, designs A and B, deploy-time N, masking."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcoded import deployment, models, stragglers, workers
from jaxcoded.schemes import learned

# Float32 agreement of decoded logits across recovery subsets, relative to the
# largest logit: interpolating a degree-6 polynomial from 7 of 10 Chebyshev
# points amplifies float32 rounding (~6e-8) by the Lebesgue constant of the
# worst subset; measured up to 1.1e-4 of the largest logit.
FLOAT32_RTOL = 1e-3
FLOAT64_RTOL = 1e-10


def cast(module, dtype):
  state = nnx.state(module)
  nnx.update(module, jax.tree.map(lambda x: jnp.asarray(x, dtype), state))
  return module


def run(code, queries, mask, design="A", mesh=None):
  """The one pipeline around a learned code (Deployment.learned), for random test queries."""
  served = deployment.Deployment.learned("code", code, design=design, query_range=None)
  return served(queries, mask, mesh=mesh)


def small_code(num_queries=4, num_workers=6, encoder_degree=1, dtype=jnp.float64, seed=0, **kw):
  code = learned.PolynomialCode.create(
      num_queries, num_workers, (8, 8, 1), 10, encoder_degree=encoder_degree,
      worker_features=(4, 8), worker_out=12, head_hidden=8, rngs=nnx.Rngs(seed), **kw,
  )
  return cast(code, dtype)


def direct_logits(code, queries):
  """head(h(e(a_k))): what the interpolation must recover, without any worker."""
  coefficients = code.coefficients(queries)
  coded_at_data = code.evaluate_code(coefficients, code.data_points[...])
  return code.head(code.worker(coded_at_data))


def decode_masks(code, queries, masks):
  worker_fn, params = code.worker_fn()
  everyone = jnp.ones((code.num_workers,), bool)
  outputs = workers.run_workers(worker_fn, params, code.encode(queries), everyone)
  decode = jax.jit(jax.vmap(lambda m: code.decode(workers.mask_outputs(outputs, m), m).values))
  return np.asarray(decode(jnp.asarray(masks)))


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, FLOAT64_RTOL), (jnp.float32, FLOAT32_RTOL)])
def test_every_recovery_subset_decodes_the_same(rng, dtype, rtol):
  code = small_code(8, 10, 3, dtype=dtype, seed=int(rng.integers(1000)))
  assert (code.encoder_degree, code.worker_degree, code.recovery_threshold) == (3, 2, 7)
  queries = jnp.asarray(rng.normal(size=(8, 8, 8, 1)), dtype)
  expected = np.asarray(direct_logits(code, queries))
  scale = np.max(np.abs(expected))
  for num_stragglers in (3, 1):  # exactly R, and more than R returned
    masks = stragglers.all_masks(code.num_workers, num_stragglers)
    decoded = decode_masks(code, queries, masks)
    assert decoded.dtype == dtype
    np.testing.assert_allclose(decoded, np.broadcast_to(expected, decoded.shape), atol=rtol * scale)


def test_below_threshold_answers_nothing(rng):
  code = small_code()
  queries = jnp.asarray(rng.normal(size=(4, 8, 8, 1)))
  mask = jnp.asarray(stragglers.all_masks(6, 4)[5])
  decoded = run(code, queries, mask)
  assert not np.any(decoded.answered)
  np.testing.assert_array_equal(decoded.values, 0.0)


def test_straggler_outputs_never_reach_the_result(rng):
  code = small_code()
  queries = jnp.asarray(rng.normal(size=(4, 8, 8, 1)))
  mask = np.ones(6, bool)
  mask[rng.choice(6, 3, replace=False)] = False
  worker_fn, params = code.worker_fn()
  outputs = workers.run_workers(worker_fn, params, code.encode(queries), jnp.ones(6, bool))
  poisoned = jnp.where(jnp.asarray(mask)[:, None], outputs, jnp.nan)
  decoded = code.decode(poisoned, jnp.asarray(mask))
  assert np.all(np.isfinite(decoded.values)) and np.all(decoded.answered)
  np.testing.assert_allclose(decoded.values, direct_logits(code, queries), rtol=1e-9, atol=1e-12)


def test_designs_a_and_b_agree(rng):
  code = small_code()
  queries = jnp.asarray(rng.normal(size=(4, 8, 8, 1)))
  mask = jnp.asarray(stragglers.all_masks(6, 3)[int(rng.integers(20))])
  a = run(code, queries, mask, design="A")
  b = run(code, queries, mask, design="B")
  np.testing.assert_allclose(a.values, b.values, rtol=1e-12, atol=1e-14)
  np.testing.assert_array_equal(a.answered, b.answered)
  with pytest.raises(ValueError, match="design"):
    run(code, queries, mask, design="C")


def test_design_b_on_a_device_mesh_agrees_with_design_a(rng):
  code = small_code(num_workers=8)
  queries = jnp.asarray(rng.normal(size=(4, 8, 8, 1)))
  mask = jnp.asarray(stragglers.random_mask(jax.random.key(int(rng.integers(1000))), 8, 2))
  mesh = workers.make_worker_mesh(4)
  local = run(code, queries, mask, design="A").values
  sharded = run(code, queries, mask, design="B", mesh=mesh).values
  np.testing.assert_allclose(sharded, local, rtol=1e-10, atol=1e-12)


def test_new_worker_points_at_deploy_time(rng):
  code = small_code()
  queries = jnp.asarray(rng.normal(size=(4, 8, 8, 1)))
  expected = direct_logits(code, queries)
  # 9 workers at other points: same trained networks, no retraining.
  new_points = 0.97 * jnp.cos(jnp.pi * (jnp.arange(9) + 0.25) / 9)
  wider = code.with_worker_points(new_points)
  assert wider.sizes == (4, 9, 3)
  mask = np.ones(9, bool)
  mask[rng.choice(9, 6, replace=False)] = False
  np.testing.assert_allclose(run(wider, queries, jnp.asarray(mask)).values, expected, rtol=1e-9,
                             atol=1e-12)
  with pytest.raises(ValueError, match="recovery threshold"):
    code.with_worker_points(jnp.linspace(-0.9, 0.9, 2))


def test_one_compilation_serves_every_mask(rng):
  code = small_code()
  queries = jnp.asarray(rng.normal(size=(4, 8, 8, 1)))
  traces = []

  @jax.jit
  def decode(mask):
    traces.append(1)
    return run(code, queries, mask).values

  for mask in stragglers.all_masks(6, 3)[:5]:
    decode(jnp.asarray(mask))
  assert len(traces) == 1


class ReluWorker(nnx.Module):
  """Claims degree 2 but is not a polynomial."""

  degree = 2

  def __init__(self, rngs):
    self.linear = nnx.Linear(128, 12, rngs=rngs)

  def __call__(self, x):
    return self.linear(jax.nn.relu(x.reshape(x.shape[:-3] + (-1,))))


def test_construction_rejects_a_non_polynomial_worker():
  good = small_code(dtype=jnp.float32)
  with pytest.raises(ValueError, match="not a polynomial of degree 2"):
    learned.PolynomialCode(
        good.encoder, ReluWorker(nnx.Rngs(0)), good.head, good.data_points[...],
        good.worker_points[...],
    )
  with pytest.raises(ValueError, match="declare its polynomial degree"):
    learned.PolynomialCode(
        good.encoder, nnx.Linear(64, 12, rngs=nnx.Rngs(0)), good.head, good.data_points[...],
        good.worker_points[...],
    )


def test_bad_sizes_are_rejected():
  with pytest.raises(ValueError, match="recovery threshold"):
    small_code(num_workers=2)
  code = small_code()
  with pytest.raises(ValueError, match="shape"):
    run(code, jnp.zeros((3, 8, 8, 1)), jnp.ones(6, bool))
  with pytest.raises(ValueError, match="mask"):
    run(code, jnp.zeros((4, 8, 8, 1)), jnp.ones(5, bool))


def lagrange_code(rng, threshold=5):
  classifier = models.create("digits_mlp", rngs=nnx.Rngs(int(rng.integers(1000))))
  code = learned.LearnedLagrangeCode.create(
      classifier, 4, 7, (8, 8, 1), 10, recovery_threshold=threshold, rngs=nnx.Rngs(1)
  )
  return cast(code, jnp.float64)


def test_learned_lagrange_matches_a_numpy_reference(rng):
  code = lagrange_code(rng)
  assert code.sizes == (4, 7, 5)
  # A non-trivial encoder correction and head, so that both are exercised.
  code.encoder.conv_out.kernel[...] = jnp.asarray(rng.normal(size=code.encoder.conv_out.kernel.shape))
  queries = jnp.asarray(rng.normal(size=(4, 8, 8, 1)))
  mask = np.ones(7, bool)
  mask[rng.choice(7, 2, replace=False)] = False
  decoded = run(code, queries, jnp.asarray(mask))

  a, b = np.asarray(code.data_points[...]), np.asarray(code.worker_points[...])
  encoded = np.asarray(code.encoder(queries)).reshape(4, -1)
  lagrange = np.stack([[np.prod([(z - a[m]) / (a[k] - a[m]) for m in range(4) if m != k])
                        for k in range(4)] for z in b])
  coded = (lagrange @ encoded).reshape(7, 8, 8, 1)
  outputs = np.asarray(code.classifier(jnp.asarray(coded)))
  fit = np.polynomial.polynomial.polyfit(b[mask], outputs[mask], 4)
  fitted = np.polynomial.polynomial.polyval(a, fit).T
  kernel = np.asarray(code.head.kernel[...])
  expected = np.einsum("kd,kdh->kh", fitted, kernel) + np.asarray(code.head.bias[...])
  np.testing.assert_allclose(decoded.values, expected, rtol=1e-7, atol=1e-9)
  np.testing.assert_allclose(run(code, queries, jnp.asarray(mask), design="B").values, decoded.values,
                             rtol=1e-12, atol=1e-12)


def test_learned_lagrange_keeps_the_classifier_frozen(rng):
  code = lagrange_code(rng)
  trained = nnx.state(code, learned.trainable(code))
  paths = ["/".join(map(str, path)) for path, _ in nnx.to_flat_state(trained)]
  assert paths and not any("classifier" in p for p in paths)
  assert any("encoder" in p for p in paths) and any("head" in p for p in paths)
  queries = jnp.asarray(rng.normal(size=(4, 8, 8, 1)))
  grads = nnx.grad(lambda c: jnp.sum(run(c, queries, jnp.ones(7, bool)).values ** 2))(code)
  classifier_grads = jax.tree.leaves(nnx.state(grads, nnx.PathContains("classifier")))
  assert all(np.all(g == 0) for g in classifier_grads)
