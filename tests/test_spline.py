"""Smoothing splines (interp.smoothing_spline_matrix) and the spline code (LeTCC).

References. ``spline_reference`` is an independent construction: the
classical Reinsch solution on the *available* nodes only (knot values
g = y - lam Q (R + lam Q^T Q)^-1 Q^T y, Green & Silverman 1994, section 2.3,
solved in exact rational arithmetic), then the
natural cubic interpolating spline through (x, g) from scipy's CubicSpline,
extended linearly beyond the end knots; lam = inf is the least-squares line.
scipy's ``make_smoothing_spline`` (same ``lam``; it needs sorted x and at least
5 points) is a second reference on [min, max] of the available nodes, where
the two definitions coincide (beyond it scipy continues the end cubics).

Tolerances. The matrix is compared with the float64 reference built from the
same (dtype-rounded) inputs. Measured in float32 against float64 on N <= 16
jittered Chebyshev nodes with random stragglers and lam in [0, inf], the error
stays below 5 eps * (1 + Lambda) (Lambda the largest absolute row sum), so
the tolerance is 200 eps * (1 + Lambda): about 3e-5 in float32, 5e-14 in float64.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.interpolate import CubicSpline, make_smoothing_spline

from jaxcoded import interp, stragglers, workers
from jaxcoded.comparison import builders, spline_fit
from jaxcoded.schemes import berrut, spline

DTYPES = (np.float32, np.float64)
SMOOTHINGS = (0.0, 1e-5, 1e-3, 1e-1, 10.0, np.inf)
NUM_TARGETS = 11


# ---------------------------------------------------------------------------
# References and inputs.


def _natural_spline_eval(x, g, targets):
  """Natural cubic interpolating spline through (x, g) (g may be 2-D), linear outside."""
  if x.size == 2:  # the straight line
    slope = (g[1] - g[0]) / (x[1] - x[0])
    return g[0] + (targets[:, None] - x[0]) * slope
  cs = CubicSpline(x, g, bc_type="natural", axis=0)
  lo, hi = x[0], x[-1]
  inside = np.clip(targets, lo, hi)
  out = cs(inside)
  out = out + np.where((targets < lo)[:, None], (targets - lo)[:, None] * cs(lo, 1), 0.0)
  return out + np.where((targets > hi)[:, None], (targets - hi)[:, None] * cs(hi, 1), 0.0)


def _reinsch_exact(x, lam):
  """(m, m) map from values to the smoothing spline's knot values, in exact rationals.

  Reinsch: (R + lam Q^T Q) gamma = Q^T y, g = y - lam Q gamma. Exact arithmetic
  (``fractions``) on the float64 nodes, because this system's condition number
  grows like lam / h^3 and a float64 solve would be less accurate than the
  function under test.
  """
  m = x.size
  h = [Fraction(float(b)) - Fraction(float(a)) for a, b in zip(x[:-1], x[1:])]
  lam = Fraction(float(lam))
  q = [[Fraction(0)] * (m - 2) for _ in range(m)]
  r = [[Fraction(0)] * (m - 2) for _ in range(m - 2)]
  for j in range(m - 2):
    q[j][j], q[j + 1][j], q[j + 2][j] = 1 / h[j], -1 / h[j] - 1 / h[j + 1], 1 / h[j + 1]
    r[j][j] = (h[j] + h[j + 1]) / 3
    if j + 1 < m - 2:
      r[j][j + 1] = r[j + 1][j] = h[j + 1] / 6
  # Augmented [R + lam Q^T Q | Q^T], Gauss-Jordan elimination (SPD: no pivoting needed).
  rows = [
      [r[i][k] + lam * sum(q[l][i] * q[l][k] for l in range(m)) for k in range(m - 2)]
      + [q[c][i] for c in range(m)]
      for i in range(m - 2)
  ]
  for i in range(m - 2):
    pivot = rows[i][i]
    rows[i] = [v / pivot for v in rows[i]]
    for o in range(m - 2):
      if o != i and rows[o][i] != 0:
        factor = rows[o][i]
        rows[o] = [a - factor * b for a, b in zip(rows[o], rows[i])]
  gamma = [row[m - 2:] for row in rows]  # (m - 2, m)
  return np.array([
      [float((1 if i == c else 0) - lam * sum(q[i][j] * gamma[j][c] for j in range(m - 2)))
       for c in range(m)]
      for i in range(m)
  ])


def spline_reference(nodes, targets, lam, mask=None):
  """(T, N) float64 smoothing-spline matrix through the available nodes (see module doc)."""
  nodes = np.asarray(nodes, np.float64)
  targets = np.asarray(targets, np.float64)
  mask = np.ones(nodes.size, bool) if mask is None else np.asarray(mask)
  index = np.flatnonzero(mask)
  index = index[np.argsort(nodes[index])]
  x, m = nodes[index], index.size
  out = np.zeros((targets.size, nodes.size))
  if m == 0:
    return out
  if m == 1:
    out[:, index[0]] = 1.0
    return out
  if np.isinf(lam):
    design = np.stack([np.ones(m), x], axis=1)
    knot_values = design @ np.linalg.pinv(design)
  elif m == 2:
    knot_values = np.eye(2)
  else:
    knot_values = _reinsch_exact(x, lam)
  out[:, index] = _natural_spline_eval(x, knot_values, targets)
  return out


def _random_nodes(n, dtype, rng):
  """Jittered Chebyshev points, shuffled, rounded to dtype."""
  x = np.asarray(interp.chebyshev_points(n, dtype=jnp.float64))
  spacing = np.min(np.diff(x)) if n > 1 else 1.0
  return rng.permutation(x + rng.uniform(-0.1, 0.1, n) * spacing).astype(dtype)


def _random_mask(n, rng, min_available=2):
  mask = np.ones(n, bool)
  mask[rng.choice(n, rng.integers(0, n - min_available + 1), replace=False)] = False
  return mask


def _tolerance(dtype, reference):
  return 200 * float(np.finfo(dtype).eps) * (1 + np.max(np.abs(reference).sum(axis=1)))


def _matrix(nodes, targets, lam, mask=None):
  return np.asarray(interp.smoothing_spline_matrix(nodes, targets, lam, mask), np.float64)


# ---------------------------------------------------------------------------
# The matrix.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [3, 9])
def test_matches_reference_with_masks(rng, dtype, n):
  nodes = _random_nodes(n, dtype, rng)
  targets = rng.uniform(-1.1, 1.1, NUM_TARGETS).astype(dtype)
  for lam, mask in itertools.product(SMOOTHINGS, [None, _random_mask(n, rng), _random_mask(n, rng)]):
    got = interp.smoothing_spline_matrix(nodes, targets, dtype(lam), mask)
    assert got.dtype == dtype and got.shape == (NUM_TARGETS, n)
    expected = spline_reference(nodes, targets, lam, mask)
    np.testing.assert_allclose(got, expected, atol=_tolerance(dtype, expected), rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_scipy_make_smoothing_spline(rng, dtype):
  for _ in range(6):
    nodes = _random_nodes(9, dtype, rng)
    mask = _random_mask(9, rng, min_available=5)
    values = rng.normal(size=9)
    x = np.sort(nodes[mask]).astype(np.float64)
    targets = rng.uniform(x[0], x[-1], NUM_TARGETS).astype(dtype)
    for lam in (1e-5, 1e-3, 1e-1, 10.0):
      matrix = _matrix(nodes, targets, dtype(lam), mask)
      order = np.argsort(nodes[mask])
      expected = make_smoothing_spline(x, values[mask][order], lam=lam)(targets.astype(np.float64))
      tol = _tolerance(dtype, matrix) * (1 + np.max(np.abs(values)))
      np.testing.assert_allclose(matrix @ values, expected, atol=max(tol, 1e-10), rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_equals_subset(rng, dtype):
  nodes = _random_nodes(9, dtype, rng)
  targets = rng.uniform(-1.1, 1.1, NUM_TARGETS).astype(dtype)
  # Six of nine available in every mask: one compiled subset shape.
  masks = [rng.permutation(np.arange(9) < 6) for _ in range(3)]
  for lam, mask in itertools.product(SMOOTHINGS, masks):
    masked = _matrix(nodes, targets, dtype(lam), mask)
    subset = np.zeros_like(masked)
    subset[:, mask] = _matrix(nodes[mask], targets, dtype(lam))
    np.testing.assert_allclose(masked, subset, atol=_tolerance(dtype, subset), rtol=0)
    assert np.all(masked[:, ~mask] == 0)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_zero_smoothing_interpolates_natural_cubic_spline(rng, dtype, tol):
  nodes = _random_nodes(9, dtype, rng)
  mask = _random_mask(9, rng, min_available=3)
  # At the available nodes themselves: exactly the available values.
  at = np.concatenate([nodes[mask], rng.uniform(-1, 1, NUM_TARGETS - mask.sum()).astype(dtype)])
  at_nodes = _matrix(nodes, at, dtype(0.0), mask)[: mask.sum()]
  np.testing.assert_allclose(at_nodes[:, mask], np.eye(mask.sum()), atol=tol)
  # In between: scipy's natural cubic interpolating spline.
  x = np.sort(nodes[mask]).astype(np.float64)
  values = rng.normal(size=9)
  targets = rng.uniform(x[0], x[-1], NUM_TARGETS).astype(dtype)
  order = np.argsort(nodes[mask])
  expected = CubicSpline(x, values[mask][order], bc_type="natural")(targets.astype(np.float64))
  got = _matrix(nodes, targets, dtype(0.0), mask) @ values
  np.testing.assert_allclose(got, expected, atol=100 * tol)
  # And small smoothing tends to it.
  gaps = [
      np.max(np.abs(_matrix(nodes, targets, dtype(lam), mask) @ values - expected))
      for lam in (1e-2, 1e-4, 1e-6)
  ]
  assert gaps[0] > gaps[1] > gaps[2] or gaps[2] < 100 * tol


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_straight_lines_reproduced_for_any_smoothing(rng, dtype, tol):
  nodes = _random_nodes(9, dtype, rng)
  targets = rng.uniform(-1.5, 1.5, NUM_TARGETS).astype(dtype)
  c0, c1 = rng.normal(size=2)
  line = (c0 + c1 * nodes.astype(np.float64)).astype(dtype)
  for lam in SMOOTHINGS + (1e6,):
    for mask in (None, _random_mask(9, rng), np.eye(9, dtype=bool)[0] | np.eye(9, dtype=bool)[5]):
      got = interp.apply_matrix(interp.smoothing_spline_matrix(nodes, targets, dtype(lam), mask), line)
      np.testing.assert_allclose(got, c0 + c1 * targets.astype(np.float64), atol=tol * 10, rtol=tol)


def test_fewer_than_two_available_nodes():
  nodes = np.array([0.3, -0.5, 0.9])
  targets = np.linspace(-2, 2, NUM_TARGETS)
  one = _matrix(nodes, targets, 0.1, np.array([False, True, False]))
  np.testing.assert_array_equal(one, np.tile([0.0, 1.0, 0.0], (NUM_TARGETS, 1)))
  assert np.all(_matrix(nodes, targets, 0.0, np.zeros(3, bool)) == 0)
  np.testing.assert_array_equal(_matrix(nodes[:1], targets, 1.0), np.ones((NUM_TARGETS, 1)))
  assert np.all(_matrix(nodes[:1], targets, 1.0, np.array([False])) == 0)
  # Two nodes: the line through them, whatever the smoothing.
  np.testing.assert_allclose(
      _matrix(nodes[:2], targets, 3.0) @ np.array([1.0, 2.0]),
      1.0 + (targets - 0.3) / (-0.8), rtol=1e-12,
  )


def test_gradients():
  nodes = jnp.array([0.7, -0.9, 0.1, -0.35, 0.45, 0.95, -0.6, 0.25, -0.1])
  targets = jnp.linspace(-1.2, 1.1, NUM_TARGETS)
  mask = jnp.array([True, True, False, True, True, True, False, True, True])
  values = jnp.asarray(np.random.default_rng(0).normal(size=9))

  def f(nodes, targets, lam, values):
    return interp.smoothing_spline_matrix(nodes, targets, lam, mask) @ values

  check_grads(f, (nodes, targets, jnp.asarray(0.02), values), order=1, modes=("rev",), eps=1e-5)
  # Finite gradients where the matrix falls back (one available node).
  loss = lambda x, lam: jnp.sum(interp.smoothing_spline_matrix(x, targets, lam, mask & (jnp.arange(9) == 4)) @ values)
  grads = jax.grad(loss, argnums=(0, 1))(nodes, jnp.asarray(0.1))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_jit_equals_eager_and_one_trace_for_many_masks(rng):
  nodes = _random_nodes(9, np.float64, rng)
  targets = rng.uniform(-1, 1, NUM_TARGETS)
  traces = 0

  def matrix(lam, mask):
    nonlocal traces
    traces += 1
    return interp.smoothing_spline_matrix(nodes, targets, lam, mask)

  jitted = jax.jit(matrix)
  masks = [_random_mask(9, rng, min_available=0) for _ in range(6)]
  for mask, lam in zip(masks, (0.0, 1e-3, 0.5, 0.0, np.inf, 2.0)):
    eager = interp.smoothing_spline_matrix(nodes, targets, lam, mask)
    np.testing.assert_allclose(jitted(jnp.asarray(lam), jnp.asarray(mask)), eager, atol=1e-13)
  assert traces == 1
  # Under jit, a negative smoothing cannot raise: it yields NaN.
  assert bool(jnp.all(jnp.isnan(jitted(jnp.asarray(-1.0), jnp.asarray(masks[0])))))


@pytest.mark.parametrize(
    "args,match",
    [
        ((np.zeros((2, 2)), [0.0], 0.1, None), "nodes must be a non-empty 1-D"),
        ((np.zeros(0), [0.0], 0.1, None), "nodes must be a non-empty 1-D"),
        (([0.0, np.nan, 1.0], [0.0], 0.1, None), "nodes must be finite"),
        (([0.0, 0.5, 0.5], [0.0], 0.1, None), "distinct"),
        (([0.0, 0.5, 1.0], [[0.0]], 0.1, None), "targets must be a 1-D"),
        (([0.0, 0.5, 1.0], [np.inf], 0.1, None), "targets must be finite"),
        (([0.0, 0.5, 1.0], [0.0], -0.1, None), "smoothing must be >= 0"),
        (([0.0, 0.5, 1.0], [0.0], np.nan, None), "smoothing must be >= 0"),
        (([0.0, 0.5, 1.0], [0.0], [0.1, 0.2], None), "smoothing must be a scalar"),
        (([0.0, 0.5, 1.0], [0.0], "0.1", None), "smoothing must be a real number"),
        (([0.0, 0.5, 1.0], [0.0], 0.1, [True, False]), "mask has shape"),
        (([0.0, 0.5, 1.0], [0.0], 0.1, [1, 0, 1]), "mask must be boolean"),
    ],
)
def test_bad_input_raises(args, match):
  with pytest.raises(ValueError, match=match):
    interp.smoothing_spline_matrix(*args)


# ---------------------------------------------------------------------------
# The spline code.


def tanh_worker(params, x):
  return jnp.tanh(params @ x.reshape(-1))


def test_sizes_and_default_points():
  assert spline.SplineCode.sizes_for(8, 3) == (8, 11, 8)
  for k, s in ((1, 1), (8, 1), (8, 2), (8, 3)):
    code = spline.SplineCode.create(k, s)
    reference = berrut.BerrutCode.create(k, s)
    assert (code.num_queries, code.num_workers, code.recovery_threshold) == (k, k + s, k)
    np.testing.assert_array_equal(code.worker_points, reference.worker_points)
    np.testing.assert_array_equal(code.data_points, reference.data_points)
  assert builders.get("spline").sized and "spline" in builders.kinds()


def test_float32_code_stays_float32(rng):
  code = spline.SplineCode.create(4, 3, encoder_smoothing=1e-3, decoder_smoothing=1e-2,
                                  dtype=jnp.float32)
  coded = code.encode(rng.uniform(-1, 1, size=(4, 5)).astype(np.float32))
  decoded = code.decode(jnp.tanh(coded), np.array([True, False] + [True] * 5))
  assert coded.dtype == decoded.values.dtype == jnp.float32
  assert code.encoder_smoothing.dtype == jnp.float32


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-11)])
def test_pipeline_matches_numpy_reference(rng, dtype, tol):
  num_queries, num_stragglers = 8, 3
  lam_e, lam_d = 10.0 ** rng.uniform(-4, 0, 2)
  code = spline.SplineCode.create(
      num_queries, num_stragglers, encoder_smoothing=lam_e, decoder_smoothing=lam_d, dtype=dtype
  )
  queries = rng.uniform(-1, 1, size=(num_queries, 3, 2)).astype(dtype)
  params = (rng.normal(size=(5, 6)) / 2).astype(dtype)
  key = jax.random.key(int(rng.integers(1 << 30)))
  masks = stragglers.random_masks(key, 5, code.num_workers, num_stragglers)
  decoded = jax.jit(jax.vmap(lambda m: code(tanh_worker, params, queries, m)))(masks)
  assert decoded.values.dtype == dtype and bool(jnp.all(decoded.answered))
  a, b = np.asarray(code.data_points, np.float64), np.asarray(code.worker_points, np.float64)
  coded = spline_reference(a, b, float(code.encoder_smoothing)) @ queries.reshape(num_queries, -1)
  outputs = np.tanh(coded @ params.astype(np.float64).T)
  for mask, values in zip(np.asarray(masks), np.asarray(decoded.values)):
    expected = spline_reference(b, a, float(code.decoder_smoothing), mask) @ outputs
    np.testing.assert_allclose(values, expected, rtol=tol, atol=tol)


def mixed_worker(params, x):
  """t * tanh(W x + c) + (1 - t) * (W x + c): affine for t = 0; NaN for a zeroed (straggler) input."""
  weight, bias, t = params
  pre = weight @ x + bias
  out = t * jnp.tanh(pre) + (1 - t) * pre
  return jnp.where(jnp.all(x == 0), jnp.nan, out)


@jax.jit
def _decode_all(code, params, queries, masks):
  """Encode once, run the workers (run_workers zeroes stragglers' inputs and outputs), decode."""
  coded = code.encode(queries)

  def one(mask):
    return code.decode(workers.run_workers(mixed_worker, params, coded, mask), mask)

  return jax.vmap(one)(masks)


def _all_masks(n, min_returned):
  return np.array([m for m in itertools.product([False, True], repeat=n) if sum(m) >= min_returned])


def _code_4_3(lam_e, lam_d):
  return spline.SplineCode.create(4, 3, encoder_smoothing=lam_e, decoder_smoothing=lam_d)


def test_exact_for_affine_f_of_queries_on_a_line(rng):
  # x_k = c + d a_k: every encoder spline reproduces it (u(b_n) = c + d b_n); an
  # affine f keeps z -> f(u(z)) affine, which every decoder spline reproduces
  # from any two or more workers, whatever the smoothings.
  c, d = rng.normal(size=(2, 6))
  params = (rng.normal(size=(3, 6)), rng.normal(size=3), 0.0)
  masks = _all_masks(7, 0)  # all 128 (one compiled shape); check those with >= 2
  some = masks.sum(axis=1) >= 2
  for lam_e, lam_d in ((0.0, 0.0), (1e-3, 0.3), (5.0, np.inf)):
    code = _code_4_3(lam_e, lam_d)
    queries = c + d * np.asarray(code.data_points)[:, None]
    decoded = _decode_all(code, params, queries, jnp.asarray(masks))
    expected = queries @ params[0].T + params[1]
    np.testing.assert_allclose(decoded.values[some], np.broadcast_to(expected, (some.sum(), 4, 3)),
                               rtol=1e-10, atol=1e-10)
    assert bool(jnp.all(decoded.answered[masks.any(axis=1)]))


def test_constants_from_any_non_empty_subset_and_nothing_from_none(rng):
  code = _code_4_3(0.01, 0.1)
  params = (rng.normal(size=(3, 6)), rng.normal(size=3), 1.0)
  queries = np.repeat(rng.normal(size=(1, 6)), 4, axis=0)
  expected = np.repeat(np.tanh(params[0] @ queries[0] + params[1])[None], 4, axis=0)
  masks = _all_masks(7, 0)
  decoded = _decode_all(code, params, queries, jnp.asarray(masks))
  some = masks.any(axis=1)
  np.testing.assert_allclose(decoded.values[some], np.broadcast_to(expected, (some.sum(), 4, 3)),
                             rtol=1e-11, atol=1e-12)
  assert bool(jnp.all(decoded.answered[some])) and not bool(jnp.any(decoded.answered[~some]))
  assert bool(jnp.all(decoded.values[~some] == 0))


def test_nan_poisoned_stragglers_change_nothing(rng):
  code = _code_4_3(1e-3, 1e-2)
  mask = np.array([False, True, True, True, True, False, True])
  outputs = rng.normal(size=(7, 10))
  clean = code.decode(workers.mask_outputs(jnp.asarray(outputs), jnp.asarray(mask)), mask)
  poisoned = outputs.copy()
  poisoned[~mask] = np.inf
  poisoned[5, 0] = np.nan
  dirty = code.decode(jnp.asarray(poisoned), mask)
  np.testing.assert_array_equal(clean.values, dirty.values)
  assert bool(jnp.all(jnp.isfinite(dirty.values)))
  # Through run_workers, with workers that return NaN when they straggle.
  params = (rng.normal(size=(3, 6)), rng.normal(size=3), 1.0)
  queries = rng.uniform(-1, 1, size=(4, 6))
  masks = _all_masks(7, 0)
  ran = _decode_all(code, params, queries, jnp.asarray(masks))
  ran = ran._replace(values=ran.values[np.flatnonzero((masks == mask).all(axis=1))])
  direct = np.tanh(np.asarray(code.encode(queries)) @ params[0].T + params[1])
  expected = spline_reference(code.worker_points, code.data_points, 1e-2, mask) @ direct
  np.testing.assert_allclose(ran.values[0], expected, rtol=1e-11, atol=1e-12)


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="K >= 1"):
    spline.SplineCode.create(0, 1)
  with pytest.raises(ValueError, match="S"):
    spline.SplineCode.create(2, -1)
  with pytest.raises(ValueError, match="recovery threshold R = K"):
    spline.SplineCode.create(3, 0, worker_points=[0.1, 0.2])
  with pytest.raises(ValueError, match="encoder_smoothing must be >= 0"):
    spline.SplineCode.create(3, 1, encoder_smoothing=-1.0)
  with pytest.raises(ValueError, match="decoder_smoothing must be >= 0"):
    spline.SplineCode.create(3, 1, decoder_smoothing=float("nan"))
  with pytest.raises(ValueError, match="decoder_smoothing must be a scalar"):
    spline.SplineCode.create(3, 1, decoder_smoothing=np.array([0.1, 0.2]))
  code = spline.SplineCode.create(3, 1)
  with pytest.raises(ValueError, match="mask"):
    code.decode(jnp.zeros((4, 2)), jnp.ones(3, bool))


def test_fit_smoothing_returns_the_grid_minimum(rng):
  k, s = 4, 1
  params = rng.normal(size=(3, 5))
  images = rng.normal(size=(4 * 12 + 3, 5))
  grid = (0.0, 1e-3, 1e-1, 10.0)
  key = jax.random.key(3)
  fit = spline_fit.fit_smoothing(tanh_worker, params, images, k, s, grid=grid, num_masks=4, key=key)
  assert fit.rmse_grid.shape == (4, 4) and np.all(np.isfinite(fit.rmse_grid))
  np.testing.assert_array_equal(fit.grid, grid)
  assert fit.rmse == fit.rmse_grid.min()
  i, j = grid.index(fit.encoder_smoothing), grid.index(fit.decoder_smoothing)
  assert fit.rmse_grid[i, j] == fit.rmse
  # The RMSE recomputed from the scheme's own matrices, on the same masks.
  code = fit.create(k, s)
  masks = stragglers.random_masks(key, 4, k + s, s)
  groups = images[:48].reshape(12, k, 5)
  outputs = np.tanh(np.einsum("nk,gkd->gnd", code.encoding_matrix(), groups) @ params.T)
  decoding = np.stack([code.decoding_matrix(m) for m in masks])
  decoded = np.einsum("mkn,gnc->gmkc", decoding, outputs)
  errors = decoded - np.tanh(groups @ params.T)[:, None]
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(errors))), fit.rmse, rtol=1e-9)
  with pytest.raises(ValueError, match="grid"):
    spline_fit.fit_smoothing(tanh_worker, params, images, k, s, grid=(-1.0,), key=key)
  with pytest.raises(ValueError, match="at least K"):
    spline_fit.fit_smoothing(tanh_worker, params, images[:3], k, s, key=key)
