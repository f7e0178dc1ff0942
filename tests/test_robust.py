"""Byzantine-robust decoding of polynomial codes (jaxcoded.robust and its use in LCC and PolynomialCode).

The claims tested, for every adversary model of ``jaxcoded.adversaries`` plus
stragglers:

* up to E wrong outputs among A >= R + 2E: the rejected outputs are exactly
  the corrupted ones and the decode equals the clean decode with the
  corrupted workers absent (a float64 numpy least-squares reference; for the
  schemes, their own plain decode with the corrupted workers masked out);
* E + 1 wrong outputs: every trial is refused (answered False, consistent
  False, values zero), never answered wrongly. Detection is guaranteed where
  E + 1 <= A - R - E; at A = R + 2E it needs the wrong outputs not to lie on
  one polynomial with the rest, which no model does (a near miss would need
  every one of the WIDTH coordinates within the tolerance at once).

Tolerances, relative to the largest reference magnitude: float64 1e-10 (a
fit of degree <= 6 through well-spread Chebyshev points loses a few digits
at most), float32 1e-4 against the float64 reference and 1e-5 against the
same float32 computation with the corrupted workers masked out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcoded import adversaries, coders, interp, robust, stragglers, workers
from jaxcoded.schemes import LagrangeCode, PolynomialCode, learned, points

# Every batch of outputs has this shape, so each adversary model compiles once.
NUM_TRIALS, NUM_WORKERS, WIDTH = 24, 10, 12
TOLERANCE = {jnp.float64: 1e-10, jnp.float32: 1e-4}


def _key(rng):
  return jax.random.key(int(rng.integers(1 << 30)))


def _masks(rng, num_stragglers, num_bad):
  """(T, N) masks and corrupted workers: per trial, S stragglers and ``num_bad`` corrupted among the rest.

  ``num_stragglers`` and ``num_bad`` are ints or (T,) arrays.
  """
  ranks = np.argsort(np.argsort(rng.random((NUM_TRIALS, NUM_WORKERS)), axis=1), axis=1)
  stragglers_ = np.broadcast_to(num_stragglers, (NUM_TRIALS,))[:, None]
  bad = np.broadcast_to(num_bad, (NUM_TRIALS,))[:, None]
  return ranks >= stragglers_, (ranks >= stragglers_) & (ranks < stragglers_ + bad)


@jax.jit
def _corrupt(keys, outputs, bad, mask):
  """Every adversary model at once (one compilation): {model: (T, N, D)}."""
  return {
      model: jax.vmap(
          lambda k, y, b, m, model=model: adversaries.corrupt(k, y, b, model, available_mask=m)
      )(keys, outputs, bad, mask)
      for model in adversaries.MODELS
  }


def _corrupt_all_models(rng, honest, mask, bad):
  """{model: (T, N, D) outputs}: the bad rows corrupted, stragglers' rows NaN, honest's dtype."""
  assert honest.shape == (NUM_TRIALS, NUM_WORKERS, WIDTH)
  keys = jax.random.split(_key(rng), NUM_TRIALS)
  outputs = jnp.asarray(honest, jnp.float64)
  result = {}
  for model, corrupted in _corrupt(keys, outputs, jnp.asarray(bad), jnp.asarray(mask)).items():
    corrupted = np.array(corrupted)
    corrupted[~mask] = np.nan  # stragglers' rows must never be read
    result[model] = corrupted.astype(honest.dtype)
  return result


def _numpy_fit(nodes, values, targets, degree, keep):
  """Float64 least-squares polynomial through the kept rows, at the targets: the reference."""
  nodes, values = np.asarray(nodes, np.float64), np.asarray(values, np.float64)
  design = np.polynomial.chebyshev.chebvander(nodes[keep], degree)
  coefficients, *_ = np.linalg.lstsq(design, values[keep], rcond=None)
  return np.polynomial.chebyshev.chebvander(np.asarray(targets, np.float64), degree) @ coefficients


def _random_polynomial_samples(rng, nodes, degree):
  """(T, N, D) samples at the nodes of T random polynomials of exactly ``degree``."""
  coefficients = rng.normal(size=(NUM_TRIALS, degree + 1, WIDTH))
  powers = np.asarray(nodes, np.float64)[:, None] ** np.arange(degree + 1)
  return np.einsum("nj,tjd->tnd", powers, coefficients)


_robust_batch = jax.jit(
    jax.vmap(robust.robust_polyfit, in_axes=(None, 0, None, None, None, 0)),
    static_argnums=(3, 4),
)


@pytest.mark.parametrize(
    "degree,num_errors,dtype,stragglers_per_trial,bad_per_trial",
    [
        # A = 7 = R + 2E (S = 3) or 8 (S = 2); 0, 1, 2 or 3 corrupted outputs.
        (2, 2, jnp.float64, (3, 2), (0, 1, 2, 3)),
        # A = 6 = R + 2E (S = 4) or 7 (S = 3); 0, 1 or 2 corrupted outputs.
        (3, 1, jnp.float32, (4, 3), (0, 1, 2)),
    ],
)
def test_robust_polyfit_corrects_up_to_e_errors_and_refuses_beyond(
    rng, degree, num_errors, dtype, stragglers_per_trial, bad_per_trial
):
  """Up to E corrupted: exactly those rejected, the clean fit returned. E + 1: refused.

  Beyond E, detection is guaranteed when E + 1 <= A - R - E; at A = R + 2E it
  holds unless the corrupted outputs conspire to lie on one polynomial, which
  none of the models does: every such trial is refused, none answered wrongly.
  """
  nodes = interp.chebyshev_points(NUM_WORKERS, kind=2, dtype=dtype)
  targets = interp.chebyshev_points(3, kind=1, dtype=dtype) * 0.9
  honest = _random_polynomial_samples(rng, nodes, degree).astype(dtype)
  num_stragglers = np.resize(stragglers_per_trial, NUM_TRIALS)
  num_bad = np.resize(bad_per_trial, NUM_TRIALS)
  mask, bad = _masks(rng, num_stragglers, num_bad)
  assert mask.sum(1).min() == robust.min_available(degree, num_errors)
  within = num_bad <= num_errors
  for model, corrupted in _corrupt_all_models(rng, honest, mask, bad).items():
    result = _robust_batch(nodes, jnp.asarray(corrupted), targets, degree, num_errors, jnp.asarray(mask))
    assert result.values.dtype == dtype
    assert np.all(result.enough)
    np.testing.assert_array_equal(result.answered, within, err_msg=model)
    np.testing.assert_array_equal(result.consistent, within, err_msg=model)
    np.testing.assert_array_equal(result.rejected[within], bad[within], err_msg=model)
    np.testing.assert_array_equal(result.values[~within], 0.0)
    for t in np.flatnonzero(within):
      expected = _numpy_fit(nodes, honest[t], targets, degree, mask[t] & ~bad[t])
      scale = np.abs(expected).max()
      np.testing.assert_allclose(
          result.values[t], expected, rtol=0, atol=TOLERANCE[dtype] * scale, err_msg=model
      )


def _one_sample(rng, nodes, degree):
  """(N, D) samples of one random polynomial of exactly ``degree``."""
  return _random_polynomial_samples(rng, nodes, degree)[0]


def test_too_few_outputs_answer_nothing(rng):
  nodes = interp.chebyshev_points(NUM_WORKERS, kind=2, dtype=jnp.float64)
  values = _one_sample(rng, nodes, 2)
  mask = np.zeros(NUM_WORKERS, bool)
  mask[rng.choice(NUM_WORKERS, 4, replace=False)] = True  # A = 4 < R + 2E = 3 + 2
  targets = jnp.asarray([-0.5, 0.25])
  result = robust.robust_polyfit(nodes, values, targets, 2, 1, jnp.asarray(mask))
  assert not result.answered and not result.enough
  np.testing.assert_array_equal(result.values, 0.0)
  mask[np.flatnonzero(~mask)[0]] = True
  result = robust.robust_polyfit(nodes, values, targets, 2, 1, jnp.asarray(mask))
  assert result.answered and result.enough


def test_non_finite_outputs_are_rejected_and_stragglers_never_read(rng):
  nodes = interp.chebyshev_points(NUM_WORKERS, kind=2, dtype=jnp.float64)
  targets = jnp.asarray([0.1, 0.5])  # the same shapes as the other small tests
  honest = _one_sample(rng, nodes, 2)
  mask = np.ones(NUM_WORKERS, bool)
  mask[[2, 7]] = False
  keep = mask & (np.arange(NUM_WORKERS) != 4)
  expected = _numpy_fit(nodes, honest, targets, 2, keep)
  for bad_value in (np.nan, np.inf, -np.inf, 1e300):
    corrupted = honest.copy()
    corrupted[~mask] = np.nan
    corrupted[4, 1] = bad_value
    result = robust.robust_polyfit(nodes, corrupted, targets, 2, 1, jnp.asarray(mask))
    assert result.answered, bad_value
    np.testing.assert_array_equal(np.flatnonzero(result.rejected), [4])
    np.testing.assert_allclose(result.values, expected, atol=1e-10 * np.abs(expected).max())


def test_no_errors_rejects_nothing_and_equals_the_plain_fit(rng):
  nodes = interp.chebyshev_points(NUM_WORKERS, kind=2, dtype=jnp.float64)
  targets = jnp.asarray([-0.5, 0.25])
  values = _one_sample(rng, nodes, 2)
  mask = jnp.asarray(rng.random(NUM_WORKERS) < 0.9).at[:7].set(True)
  for num_errors in (0, 1):
    result = robust.robust_polyfit(nodes, values, targets, 2, num_errors, mask)
    assert result.answered and not np.any(result.rejected)
    assert result.relative_residual < robust.default_rtol(jnp.float64)
    plain = interp.apply_matrix(interp.polyfit_matrix(nodes, targets, 2, mask), values)
    np.testing.assert_allclose(result.values, plain, rtol=1e-14, atol=1e-14)
  # Float32 outputs at float64 points are float32-accurate: the default
  # tolerance follows the outputs' dtype, not the promoted one.
  rounded = robust.robust_polyfit(nodes, values.astype(np.float32), targets, 2, 1, mask)
  assert rounded.answered and rounded.values.dtype == jnp.float64
  # E = 0 still checks: one wrong output among more than R is detected, not decoded.
  wrong = values.copy()
  wrong[5] += 1e-3 * np.abs(values).max()
  result = robust.robust_polyfit(nodes, wrong, targets, 2, 0)
  assert not result.answered and not result.consistent


def test_one_compilation_serves_every_mask_and_gradients_are_finite(rng):
  nodes = interp.chebyshev_points(NUM_WORKERS, kind=2, dtype=jnp.float64)
  values = jnp.asarray(_one_sample(rng, nodes, 2))
  traces = []

  @jax.jit
  def fit(values, mask):
    traces.append(None)
    return robust.robust_polyfit(nodes, values, jnp.zeros(1), 2, 1, mask).values

  for mask in stragglers.all_masks(NUM_WORKERS, 2)[:4]:
    fit(values, jnp.asarray(mask))
  assert len(traces) == 1
  # Differentiable in the values, with the located set held fixed: the
  # gradient of the sum is the plain fit's row, broadcast over the width.
  mask = jnp.asarray(stragglers.all_masks(NUM_WORKERS, 2)[3])
  grad = jax.grad(lambda v: jnp.sum(fit(v, mask)))(values)
  expected = np.asarray(interp.polyfit_matrix(nodes, jnp.zeros(1), 2, mask)[0])
  np.testing.assert_allclose(grad, np.broadcast_to(expected[:, None], grad.shape), atol=1e-12)


def test_bad_settings_are_rejected():
  nodes = interp.chebyshev_points(6)
  values = jnp.zeros((6, 2))
  with pytest.raises(ValueError, match="R \\+ 2E = 7"):
    robust.robust_polyfit(nodes, values, jnp.zeros(1), 2, 2)
  with pytest.raises(ValueError, match="integer >= 0"):
    robust.locate_errors(nodes, values, 1, -1)
  with pytest.raises(ValueError, match="rtol"):
    robust.locate_errors(nodes, values, 1, 1, rtol=0.0)
  with pytest.raises(ValueError, match="one row per node"):
    robust.locate_errors(nodes, values[:5], 1, 1)
  with pytest.raises(ValueError, match="mask"):
    robust.locate_errors(nodes, values, 1, 1, jnp.ones(6))
  with pytest.raises(ValueError, match="distinct"):
    robust.locate_errors(jnp.zeros(6), values, 1, 1)
  with pytest.raises(ValueError, match="C\\(60, 4\\)"):
    robust.check_config(60, 1, 4)


# ---------------------------------------------------------------------------
# Lagrange Coded Computing with adversaries.


def _polynomial_worker(params, x):
  """A polynomial f of degree 2 with WIDTH outputs: (W1 x)^2 / 2 + W2 x."""
  w1, w2 = params
  x = x.reshape(-1)
  return jnp.square(w1 @ x) / 2 + w2 @ x


def _lcc_params(rng):
  return jnp.asarray(rng.normal(size=(WIDTH, 6)) / 2), jnp.asarray(rng.normal(size=(WIDTH, 6)))


def test_lcc_with_adversaries_equals_the_clean_decode(rng):
  """K = 3, f of degree 2, E = 1, S = 3: N = 10, R0 = 5, R = 7; float64.

  Per trial 0, 1 or 2 corrupted outputs among A = 7 (= R) or 8 returned.
  """
  code = LagrangeCode.create(3, 3, 2, dtype=jnp.float64, num_adversaries=1)
  assert (code.interpolation_threshold, code.recovery_threshold) == (5, 7)
  assert (code.num_workers, code.max_stragglers) == (NUM_WORKERS, 3)
  plain = LagrangeCode(code.data_points, code.worker_points, degree=2)

  params = _lcc_params(rng)
  queries = jnp.asarray(rng.normal(size=(NUM_TRIALS, 3, 2, 3)))
  everyone = jnp.ones(code.num_workers, bool)
  run = jax.jit(jax.vmap(lambda q: workers.run_workers(_polynomial_worker, params, code.encode(q), everyone)))
  honest = np.asarray(run(queries))
  truth = np.asarray(jax.vmap(jax.vmap(lambda x: _polynomial_worker(params, x)))(queries))
  scale = np.abs(truth).max()
  num_bad = np.resize([0, 1, 2], NUM_TRIALS)
  mask, bad = _masks(rng, np.resize([3, 3, 3, 2, 2, 2], NUM_TRIALS), num_bad)
  within = num_bad <= 1

  locate = jax.jit(jax.vmap(code.decode_and_locate))
  clean = jax.jit(jax.vmap(plain.decode))(
      jnp.where(mask[..., None], honest, 0.0), jnp.asarray(mask & ~bad)
  )
  for model, corrupted in _corrupt_all_models(rng, honest, mask, bad).items():
    decoded, rejected = locate(jnp.asarray(corrupted), jnp.asarray(mask))
    np.testing.assert_array_equal(decoded.answered, np.broadcast_to(within[:, None], (NUM_TRIALS, 3)))
    np.testing.assert_array_equal(rejected[within], bad[within], err_msg=model)
    values = np.asarray(decoded.values)
    np.testing.assert_allclose(values[within], clean.values[within], rtol=0, atol=1e-12 * scale, err_msg=model)
    np.testing.assert_allclose(values[within], truth[within], rtol=0, atol=1e-9 * scale, err_msg=model)
    np.testing.assert_array_equal(values[~within], 0.0)

  # ``decode`` (and so the pipeline ``code(...)``) is the robust decode.
  t = int(np.flatnonzero(num_bad == 1)[0])
  decoded = code.decode(jnp.asarray(corrupted[t]), jnp.asarray(mask[t]))
  np.testing.assert_allclose(decoded.values, truth[t], atol=1e-9 * scale)


def test_lcc_pipeline_sizes_and_settings(rng):
  code = LagrangeCode.create(3, 3, 2, dtype=jnp.float64, num_adversaries=1)
  params = _lcc_params(rng)
  # Inside the normalised-image range that ``code(...)`` checks by default.
  queries = jnp.asarray(rng.uniform(-1.0, 1.0, size=(3, 6)))
  expected = jax.vmap(lambda x: _polynomial_worker(params, x))(queries)
  for mask in stragglers.all_masks(code.num_workers, 3)[::40]:
    decoded = code(_polynomial_worker, params, queries, jnp.asarray(mask))
    assert np.all(decoded.answered)
    np.testing.assert_allclose(decoded.values, expected, atol=1e-9 * np.abs(expected).max())

  assert LagrangeCode.sizes_for(3, 1, 2, 1) == (3, 8, 7)
  assert LagrangeCode.sizes_for(3, 1, 2) == (3, 6, 5)
  assert LagrangeCode.create(3, 1, 2).num_adversaries == 0
  with pytest.raises(ValueError, match="adversaries E"):
    LagrangeCode.create(3, 1, 2, num_adversaries=-1)
  with pytest.raises(ValueError, match="recovery threshold"):
    LagrangeCode.create(3, 1, 2, num_adversaries=1, worker_points=jnp.linspace(-0.9, 0.9, 6))
  with pytest.raises(ValueError, match="rtol"):
    LagrangeCode.create(3, 1, 2, num_adversaries=1, rtol=-1.0)


# ---------------------------------------------------------------------------
# The learned polynomial code with adversaries.


# Computed outside any trace: the constructor checks the points' values.
CODE_POINTS = points.default_points(8, NUM_WORKERS, dtype=jnp.float32)


def _build_polynomial_code(num_adversaries=2, rtol=None):
  """A small code: K = 8, N = 10, de = dh = 2; 4x4x1 queries, a degree-2 MLP worker."""
  data_points, worker_points = CODE_POINTS
  rngs = nnx.Rngs(0)
  encoder = coders.CoefficientEncoder(data_points, 2, (4, 4, 1), rngs=rngs)
  width = int(np.prod(encoder.coded_shape))
  worker = coders.PolySequential(
      coders.Flatten(), coders.PolyLinear(width, 16, rngs=rngs), coders.ScaledPower(16, 2),
      coders.PolyLinear(16, WIDTH, rngs=rngs),
  )
  head = coders.DecoderHead(8, WIDTH, 10, rngs=rngs)
  return PolynomialCode(
      encoder, worker, head, data_points, worker_points, check_degree=False,
      num_adversaries=num_adversaries, rtol=rtol,
  )


def _polynomial_code(seed):
  """A randomly initialised float32 code (E = 2), without compiling any initialiser.

  Built abstractly (``nnx.eval_shape``), then every parameter is drawn from
  numpy (normal, scaled by 1 / sqrt(fan-in)); the points stay the defaults.
  """
  graphdef, params, rest = nnx.split(nnx.eval_shape(_build_polynomial_code), nnx.Param, ...)
  rng = np.random.default_rng(seed)
  draw = lambda p: jnp.asarray(
      rng.normal(size=p.shape) / np.sqrt(p.shape[-2] if len(p.shape) > 1 else 4), jnp.float32
  )
  code = nnx.merge(graphdef, jax.tree.map(draw, params), rest)
  code.data_points, code.worker_points = (learned.CodePoints(p) for p in CODE_POINTS)
  return code


def test_polynomial_code_with_adversaries_equals_the_clean_decode(rng):
  """A randomly initialised float32 code: K = 8, de = dh = 2, E = 2, N = 10, R0 = 5, R = 9.

  Per trial 0 to 3 corrupted outputs among A = 9 returned (one straggler).
  Where answered, the logits equal the plain decode with the corrupted
  workers masked out to 1e-5 of the largest logit (the same float32 fit up
  to the order of operations); 3 > E corrupted outputs are refused.
  """
  code = _polynomial_code(seed=int(rng.integers(1 << 30)))
  assert (code.interpolation_threshold, code.recovery_threshold, code.max_stragglers) == (5, 9, 1)
  plain = PolynomialCode(
      code.encoder, code.worker, code.head, code.data_points[...], code.worker_points[...],
      check_degree=False,
  )
  assert plain.recovery_threshold == 5
  assert code.with_worker_points(code.worker_points[...] * 0.99).num_adversaries == 2

  queries = jnp.asarray(rng.normal(size=(NUM_TRIALS, 8, 4, 4, 1)), jnp.float32)
  worker_fn, params = code.worker_fn()
  everyone = jnp.ones(code.num_workers, bool)
  honest = np.asarray(
      jax.jit(jax.vmap(lambda q: workers.run_workers(worker_fn, params, code.encode(q), everyone)))(queries)
  )
  assert honest.dtype == np.float32
  num_bad = np.resize([0, 1, 2, 3], NUM_TRIALS)
  mask, bad = _masks(rng, 1, num_bad)
  within = num_bad <= 2
  clean = jax.jit(jax.vmap(plain.decode))(jnp.where(mask[..., None], honest, 0.0), jnp.asarray(mask & ~bad))
  scale = np.abs(np.asarray(clean.values)).max()
  locate = jax.jit(jax.vmap(code.decode_and_locate))
  for model, corrupted in _corrupt_all_models(rng, honest, mask, bad).items():
    decoded, rejected = locate(jnp.asarray(corrupted), jnp.asarray(mask))
    assert decoded.values.dtype == jnp.float32
    np.testing.assert_array_equal(decoded.answered[:, 0], within, err_msg=model)
    np.testing.assert_array_equal(rejected[within], bad[within], err_msg=model)
    values = np.asarray(decoded.values)
    np.testing.assert_allclose(values[within], clean.values[within], rtol=0, atol=1e-5 * scale, err_msg=model)
    np.testing.assert_array_equal(values[~within], 0.0)


def test_polynomial_code_rejects_impossible_adversary_counts():
  build = lambda **kw: nnx.eval_shape(lambda: _build_polynomial_code(**kw))
  with pytest.raises(ValueError, match="R = de \\* dh \\+ 1 \\+ 2E = 2 \\* 2 \\+ 1 \\+ 2 \\* 3 = 11"):
    build(num_adversaries=3)  # R0 + 2E = 11 > N = 10
  with pytest.raises(ValueError, match="adversaries E"):
    build(num_adversaries=-1)
  with pytest.raises(ValueError, match="rtol"):
    build(num_adversaries=1, rtol=float("nan"))
