"""Tests for jaxcoded.interp against independent float64 numpy/scipy references.

Tolerances. Every matrix is compared with a float64 reference built from the
*same* (dtype-rounded) nodes and targets, so only the rounding of the
algorithm is measured. The barycentric formula of the second kind (used by
``lagrange_matrix``, and by scipy's ``BarycentricInterpolator``) has a forward
error that grows like eps * Lambda^2, where Lambda is the Lebesgue constant at
the targets (the largest row sum of |M|): measured on these inputs, both
implementations stay below 5 * eps * Lambda^2. The tolerance used throughout
is therefore

    |M - M_ref| <= 16 * eps(dtype) * (1 + Lambda)^2,

which is about 1e-5 in float32 (3e-14 in float64) for Chebyshev nodes with all
of N <= 33 available (Lambda < 3), and is correspondingly looser when
stragglers leave gaps that make the interpolation ill-conditioned. The
least-squares fit (``polyfit_matrix``) also pays for the conditioning of its
design matrix: its tolerance replaces one factor (1 + Lambda) by
max(1 + Lambda, cond(design)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.interpolate import BarycentricInterpolator

from jaxcoded import interp

DTYPES = (np.float32, np.float64)
SIZES = (1, 2, 5, 9, 16, 33)
MASK_KINDS = ("none", "all", "stragglers", "single")
NUM_TARGETS = 7
MATRIX_FUNCTIONS = ("lagrange", "berrut", "polyfit")
# XLA compiles once per (function, N, T, dtype, degree); most tests reuse these
# shapes so that the file stays fast on two CPU cores.
N_MID = 16
DEGREE = 3


# ---------------------------------------------------------------------------
# Inputs.


def _eps(dtype) -> float:
  return float(np.finfo(dtype).eps)


def _random_nodes(n: int, dtype, rng: np.random.Generator) -> np.ndarray:
  """Jittered Chebyshev points of the first kind, shuffled, rounded to dtype."""
  x = np.asarray(interp.chebyshev_points(n, dtype=jnp.float64))
  spacing = np.min(np.diff(x)) if n > 1 else 1.0
  x = x + rng.uniform(-0.1, 0.1, n) * spacing
  return rng.permutation(x).astype(dtype)


def _random_targets(num: int, dtype, rng: np.random.Generator) -> np.ndarray:
  return rng.uniform(-1.0, 1.0, num).astype(dtype)


def _make_mask(kind: str, n: int, rng: np.random.Generator) -> np.ndarray | None:
  """None, all True, S = max(1, n // 4) random stragglers, or one available node."""
  if kind == "none":
    return None
  mask = np.ones(n, dtype=bool)
  if kind == "stragglers" and n > 1:
    mask[rng.choice(n, max(1, n // 4), replace=False)] = False
  elif kind == "single":
    mask[:] = False
    mask[rng.integers(n)] = True
  return mask


def _available(mask: np.ndarray | None, n: int) -> np.ndarray:
  return np.ones(n, dtype=bool) if mask is None else mask


def _far_targets(nodes: np.ndarray, num: int, rng: np.random.Generator, gap: float = 0.02):
  """Random targets in [-1, 1] at least ``gap`` away from every node."""
  targets = []
  while len(targets) < num:
    z = rng.uniform(-1.0, 1.0)
    if np.min(np.abs(z - nodes)) >= gap:
      targets.append(z)
  return np.asarray(targets, dtype=nodes.dtype)


# ---------------------------------------------------------------------------
# float64 references, written independently of the code under test.


def _embed(sub: np.ndarray, mask: np.ndarray) -> np.ndarray:
  full = np.zeros((sub.shape[0], mask.shape[0]))
  full[:, mask] = sub
  return full


def _lagrange_ref(nodes, targets, mask) -> np.ndarray:
  x = np.asarray(nodes, np.float64)
  z = np.asarray(targets, np.float64)
  mask = _available(mask, x.shape[0])
  xa = x[mask]
  if xa.shape[0] == 1:  # scipy divides by the (zero) width of a single node
    return _embed(np.ones((z.shape[0], 1)), mask)
  return _embed(BarycentricInterpolator(xa, np.eye(xa.shape[0]))(z), mask)


def _berrut_ref(nodes, targets, mask) -> np.ndarray:
  """r(z) = sum_i ((-1)^i / (z - x_i)) f_i / sum_i ((-1)^i / (z - x_i)), i over sorted available."""
  x = np.asarray(nodes, np.float64)
  z = np.asarray(targets, np.float64)
  mask = _available(mask, x.shape[0])
  xa = x[mask]
  signs = np.empty(xa.shape[0])
  signs[np.argsort(xa)] = (-1.0) ** np.arange(xa.shape[0])
  rows = np.empty((z.shape[0], xa.shape[0]))
  for t, zt in enumerate(z):
    if np.any(zt == xa):
      rows[t] = (zt == xa).astype(np.float64)
    else:
      terms = signs / (zt - xa)
      rows[t] = terms / np.sum(terms)
  return _embed(rows, mask)


def _polyfit_ref(nodes, targets, degree, mask) -> np.ndarray:
  x = np.asarray(nodes, np.float64)
  z = np.asarray(targets, np.float64)
  mask = _available(mask, x.shape[0])
  xa = x[mask]
  coeffs = np.polynomial.polynomial.polyfit(xa, np.eye(xa.shape[0]), degree)
  return _embed(np.polynomial.polynomial.polyval(z, coeffs).T, mask)


def _assert_matrix_close(actual, expected, dtype, factor: float = 16.0, condition: float = 1.0):
  """|actual - expected| <= factor * eps * (1 + Lambda) * max(1 + Lambda, condition).

  ``condition`` is the condition number of a least-squares design matrix (see
  ``_polyfit_condition``); it is 1 for the explicit interpolation formulas.
  """
  actual = np.asarray(actual, np.float64)
  assert actual.shape == expected.shape
  lebesgue = np.max(np.sum(np.abs(expected), axis=1), initial=0.0)
  atol = factor * _eps(dtype) * (1.0 + lebesgue) * max(1.0 + lebesgue, condition)
  np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


def _polyfit_condition(nodes, targets, degree: int, mask) -> float:
  """2-norm condition number of the design matrix ``polyfit_matrix`` factorises.

  A QR least-squares solve is backward stable, so its forward error grows like
  eps * cond(design) * Lambda; with degree + 1 badly placed available nodes
  (a random subset of 16 jittered Chebyshev points, say) cond can exceed
  (1 + Lambda), and the interpolation bound alone is then too tight. Measured
  on 400 random degree-8 cases, the error stays below 2 * eps * (1 + Lambda) *
  cond.
  """
  nodes = np.asarray(nodes, np.float64)
  points = np.concatenate([nodes, np.asarray(targets, np.float64)])
  centre = (points.max() + points.min()) / 2
  half_width = max((points.max() - points.min()) / 2, np.finfo(np.float64).tiny)
  available = nodes if mask is None else nodes[np.asarray(mask, bool)]
  design = np.polynomial.chebyshev.chebvander((available - centre) / half_width, degree)
  return float(np.linalg.cond(design))


def _matrix(name: str, nodes, targets, mask, degree: int = 0):
  if name == "lagrange":
    return interp.lagrange_matrix(nodes, targets, mask)
  if name == "berrut":
    return interp.berrut_matrix(nodes, targets, mask)
  return interp.polyfit_matrix(nodes, targets, degree, mask)


def _reference(name: str, nodes, targets, mask, degree: int = 0):
  if name == "lagrange":
    return _lagrange_ref(nodes, targets, mask)
  if name == "berrut":
    return _berrut_ref(nodes, targets, mask)
  return _polyfit_ref(nodes, targets, degree, mask)


# ---------------------------------------------------------------------------
# chebyshev_points.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", (1, 2))
def test_chebyshev_points_match_closed_form(kind, n, dtype):
  j = np.arange(n)
  if kind == 1:
    expected = -np.cos((2 * j + 1) * np.pi / (2 * n))
  else:
    expected = np.zeros(1) if n == 1 else -np.cos(j * np.pi / (n - 1))
  x = interp.chebyshev_points(n, kind=kind, dtype=dtype)
  assert x.shape == (n,)
  assert x.dtype == dtype
  np.testing.assert_allclose(np.asarray(x, np.float64), expected, rtol=0, atol=2 * _eps(dtype))
  assert np.all(np.diff(np.asarray(x)) > 0)
  if kind == 2 and n > 1:
    assert float(x[0]) == -1.0 and float(x[-1]) == 1.0


def test_chebyshev_points_default_dtype_is_jax_default_float():
  assert interp.chebyshev_points(4).dtype == jnp.zeros(()).dtype


@pytest.mark.parametrize("n", (0, -3, 2.0, 2.5, "3"))
def test_chebyshev_points_rejects_bad_n(n):
  with pytest.raises(ValueError, match="n >= 1"):
    interp.chebyshev_points(n)


@pytest.mark.parametrize("kind", (0, 3, "first"))
def test_chebyshev_points_rejects_bad_kind(kind):
  with pytest.raises(ValueError, match="kind"):
    interp.chebyshev_points(4, kind=kind)


# ---------------------------------------------------------------------------
# lagrange_matrix.


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_lagrange_matrix_matches_scipy(dtype, n, mask_kind, rng):
  nodes = _random_nodes(n, dtype, rng)
  targets = _random_targets(NUM_TARGETS, dtype, rng)
  mask = _make_mask(mask_kind, n, rng)
  matrix = interp.lagrange_matrix(nodes, targets, mask)
  assert matrix.dtype == dtype
  expected = _lagrange_ref(nodes, targets, mask)
  _assert_matrix_close(matrix, expected, dtype)
  # Polynomial interpolation reproduces constants.
  lebesgue = np.max(np.sum(np.abs(expected), axis=1))
  np.testing.assert_allclose(
      np.sum(np.asarray(matrix, np.float64), axis=1), 1.0,
      rtol=0, atol=16 * _eps(dtype) * (1 + lebesgue) ** 2,
  )


@pytest.mark.parametrize("name", ("lagrange", "berrut"))
@pytest.mark.parametrize("mask_kind", ("none", "stragglers"))
@pytest.mark.parametrize("n", (2, 5, N_MID))
@pytest.mark.parametrize("dtype", DTYPES)
def test_targets_at_nodes(name, dtype, n, mask_kind, rng):
  """Targets at available nodes give exact unit rows; at unavailable nodes, the interpolant."""
  nodes = _random_nodes(n, dtype, rng)
  mask = _make_mask(mask_kind, n, rng)
  available = _available(mask, n)
  hits = rng.choice(np.flatnonzero(available), 3)
  misses = np.flatnonzero(~available)[:1]
  num_random = NUM_TARGETS - hits.size - misses.size
  targets = np.concatenate([nodes[hits], nodes[misses], _random_targets(num_random, dtype, rng)])
  matrix = np.asarray(_matrix(name, nodes, targets, mask))
  np.testing.assert_array_equal(matrix[: hits.size], np.eye(n)[hits])
  _assert_matrix_close(matrix, _reference(name, nodes, targets, mask), dtype)
  if misses.size:
    assert np.all(matrix[:, misses] == 0)


# ---------------------------------------------------------------------------
# polyfit_matrix.


@pytest.mark.parametrize(("n", "degree"), ((5, DEGREE), (N_MID, 0), (N_MID, DEGREE), (N_MID, 6), (33, 6)))
@pytest.mark.parametrize("mask_kind", ("none", "stragglers"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_polyfit_matrix_matches_numpy(dtype, n, mask_kind, degree, rng):
  nodes = _random_nodes(n, dtype, rng)
  targets = _random_targets(NUM_TARGETS, dtype, rng)
  mask = _make_mask(mask_kind, n, rng)
  matrix = interp.polyfit_matrix(nodes, targets, degree, mask)
  assert matrix.dtype == dtype
  _assert_matrix_close(
      matrix, _polyfit_ref(nodes, targets, degree, mask), dtype,
      condition=_polyfit_condition(nodes, targets, degree, mask),
  )
  # A least-squares fit applied to samples of a polynomial of that degree is exact.
  coeffs = rng.normal(size=degree + 1)
  values = np.polynomial.polynomial.polyval(np.asarray(nodes, np.float64), coeffs)
  expected = np.polynomial.polynomial.polyval(np.asarray(targets, np.float64), coeffs)
  fitted = np.asarray(matrix, np.float64) @ np.where(_available(mask, n), values, 0.0)
  lebesgue = np.max(np.sum(np.abs(np.asarray(matrix, np.float64)), axis=1))
  np.testing.assert_allclose(
      fitted, expected, rtol=0,
      atol=16 * _eps(dtype) * (1 + lebesgue) ** 2 * np.max(np.abs(values)),
  )


@pytest.mark.parametrize("mask_kind", ("none", "stragglers"))
@pytest.mark.parametrize("degree", (1, 8))
@pytest.mark.parametrize("dtype", DTYPES)
def test_polyfit_equals_lagrange_with_degree_plus_one_nodes(dtype, degree, mask_kind, rng):
  if mask_kind == "none":
    n, mask = degree + 1, None
  else:
    n = {1: 5, 8: N_MID}[degree]
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, degree + 1, replace=False)] = True
  nodes = _random_nodes(n, dtype, rng)
  targets = _random_targets(NUM_TARGETS, dtype, rng)
  fit = interp.polyfit_matrix(nodes, targets, degree, mask)
  lagrange = interp.lagrange_matrix(nodes, targets, mask)
  _assert_matrix_close(
      fit, np.asarray(lagrange, np.float64), dtype,
      condition=_polyfit_condition(nodes, targets, degree, mask),
  )


# ---------------------------------------------------------------------------
# berrut_matrix.


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_berrut_matrix_matches_direct_formula(dtype, n, mask_kind, rng):
  nodes = _random_nodes(n, dtype, rng)  # shuffled: the code must sort to alternate signs
  targets = _random_targets(NUM_TARGETS, dtype, rng)
  mask = _make_mask(mask_kind, n, rng)
  matrix = interp.berrut_matrix(nodes, targets, mask)
  assert matrix.dtype == dtype
  _assert_matrix_close(matrix, _berrut_ref(nodes, targets, mask), dtype)
  np.testing.assert_allclose(
      np.sum(np.asarray(matrix, np.float64), axis=1), 1.0, rtol=0, atol=16 * n * _eps(dtype)
  )


@pytest.mark.parametrize("dtype", DTYPES)
def test_berrut_signs_follow_sorted_available_nodes(dtype, rng):
  """Unsorted, unevenly spaced nodes with gaps: only the sorted *available* order matters."""
  n = 12
  nodes = rng.permutation(np.sort(rng.uniform(-3.0, 2.0, n))).astype(dtype)
  mask = np.ones(n, dtype=bool)
  mask[rng.choice(n, 5, replace=False)] = False
  targets = rng.uniform(-3.0, 2.0, NUM_TARGETS).astype(dtype)
  matrix = interp.berrut_matrix(nodes, targets, mask)
  _assert_matrix_close(matrix, _berrut_ref(nodes, targets, mask), dtype)
  # Far to the right of every node, w_j ~ (-1)^i_j: the sign pattern is visible directly.
  far = interp.berrut_matrix(nodes, np.asarray([1e3], dtype), mask)[0]
  order = np.argsort(np.where(mask, nodes, np.inf))[: mask.sum()]
  signs = np.sign(np.asarray(far)[order])
  assert np.all(signs[1:] == -signs[:-1]), signs


# ---------------------------------------------------------------------------
# Masked equals computing on the subset.


@pytest.mark.parametrize("name", MATRIX_FUNCTIONS)
@pytest.mark.parametrize(("n", "available"), ((2, 1), (N_MID, 5), (33, N_MID)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_equals_subset(name, dtype, n, available, rng):
  nodes = _random_nodes(n, dtype, rng)
  targets = _random_targets(NUM_TARGETS, dtype, rng)
  mask = np.zeros(n, dtype=bool)
  mask[rng.choice(n, available, replace=False)] = True
  degree = min(DEGREE, available - 1)
  masked = np.asarray(_matrix(name, nodes, targets, mask, degree), np.float64)
  subset = np.asarray(_matrix(name, nodes[mask], targets, None, degree), np.float64)
  assert np.all(masked[:, ~mask] == 0)
  # Same arithmetic up to summation order (and, for polyfit, the affine map to
  # [-1, 1]). Each side is within ~5 eps Lambda^2 of the exact matrix, so their
  # difference is bounded by twice that; random masks of 33 nodes can make
  # Lambda ~ 1e6, where float32 results differ by ~13 eps Lambda^2 (seen in CI).
  _assert_matrix_close(masked[:, mask], subset, dtype)


# ---------------------------------------------------------------------------
# apply_matrix.


@pytest.mark.parametrize("trailing", ((), (3,), (4, 5, 2)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_matrix_matches_einsum(dtype, trailing, rng):
  n, t = 9, 4
  matrix = rng.normal(size=(t, n)).astype(dtype)
  values = rng.normal(size=(n,) + trailing).astype(dtype)
  out = interp.apply_matrix(matrix, values)
  assert out.shape == (t,) + trailing and out.dtype == dtype
  expected = np.einsum("tn,n...->t...", matrix.astype(np.float64), values.astype(np.float64))
  np.testing.assert_allclose(out, expected, rtol=0, atol=8 * n * _eps(dtype) * np.abs(expected).max())


@pytest.mark.parametrize("trailing", ((), (4, 5, 2)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_matrix_batched(dtype, trailing, rng):
  b, n, t = 3, 6, 2
  matrix = rng.normal(size=(b, t, n)).astype(dtype)
  values = rng.normal(size=(b, n) + trailing).astype(dtype)
  out = interp.apply_matrix(matrix, values)
  assert out.shape == (b, t) + trailing
  expected = np.einsum("btn,bn...->bt...", matrix.astype(np.float64), values.astype(np.float64))
  np.testing.assert_allclose(out, expected, rtol=0, atol=8 * n * _eps(dtype) * np.abs(expected).max())
  for i in range(b):  # the batched form is the unbatched form per batch entry
    np.testing.assert_allclose(out[i], interp.apply_matrix(matrix[i], values[i]), rtol=4 * _eps(dtype))


@pytest.mark.parametrize("poison", (np.nan, np.inf, -np.inf))
@pytest.mark.parametrize("name", MATRIX_FUNCTIONS)
def test_apply_matrix_does_not_leak_straggler_values(name, poison, rng):
  n = N_MID
  nodes = _random_nodes(n, np.float64, rng)
  targets = _random_targets(NUM_TARGETS, np.float64, rng)
  mask = _make_mask("stragglers", n, rng)
  matrix = _matrix(name, nodes, targets, mask, DEGREE)
  values = rng.normal(size=(n, 4, 3))
  clean = np.where(mask[:, None, None], values, 0.0)
  poisoned = np.where(mask[:, None, None], values, poison)
  expected = np.einsum("tn,n...->t...", np.asarray(matrix), clean)
  out = interp.apply_matrix(matrix, poisoned)
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
  # Batched over masks too: each batch entry has its own zero columns.
  masks = np.stack([mask, np.roll(mask, 1)])
  matrices = jnp.stack([_matrix(name, nodes, targets, m, DEGREE) for m in masks])
  values = np.where(masks[:, :, None], rng.normal(size=(2, n, 3)), poison)
  out = interp.apply_matrix(matrices, values)
  assert np.all(np.isfinite(out))


def test_apply_matrix_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="cannot act"):
    interp.apply_matrix(np.ones((2, 3)), np.ones((4, 5)))
  with pytest.raises(ValueError, match="cannot act"):
    interp.apply_matrix(np.ones((2, 2, 3)), np.ones((3, 3)))
  with pytest.raises(ValueError, match="cannot act"):
    interp.apply_matrix(np.ones(3), np.ones(3))


# ---------------------------------------------------------------------------
# jit, vmap and retracing.


@pytest.mark.parametrize("name", MATRIX_FUNCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_equals_eager_and_new_mask_does_not_retrace(name, dtype, rng):
  n = N_MID
  nodes = _random_nodes(n, dtype, rng)
  targets = _random_targets(NUM_TARGETS, dtype, rng)
  traces = []

  @jax.jit
  def matrix(mask):
    traces.append(None)  # runs once per trace, never per call
    return _matrix(name, nodes, targets, mask, DEGREE)

  for _ in range(3):
    mask = _make_mask("stragglers", n, rng)
    jitted, eager = matrix(mask), _matrix(name, nodes, targets, mask, DEGREE)
    assert jitted.dtype == eager.dtype == dtype
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=64 * _eps(dtype) * np.abs(eager).max())
  assert len(traces) == 1


@pytest.mark.parametrize("name", MATRIX_FUNCTIONS)
def test_vmap_over_masks_matches_one_by_one(name, rng):
  n, batch = N_MID, 5
  nodes = _random_nodes(n, np.float32, rng)
  targets = _random_targets(NUM_TARGETS, np.float32, rng)
  masks = np.stack([_make_mask("stragglers", n, rng) for _ in range(batch)])
  batched = jax.vmap(lambda m: _matrix(name, nodes, targets, m, DEGREE))(masks)
  assert batched.shape == (batch, NUM_TARGETS, n)
  for mask, matrix in zip(masks, batched):
    single = np.asarray(_matrix(name, nodes, targets, mask, DEGREE))
    # Two float32 evaluations of one formula (batched and not) differ by rounding
    # amplified by the conditioning: the file's usual Lebesgue-constant bound.
    lebesgue = np.max(np.sum(np.abs(single.astype(np.float64)), axis=1))
    np.testing.assert_allclose(
        matrix, single, rtol=0, atol=16 * _eps(np.float32) * (1 + lebesgue) ** 2
    )


# ---------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize("name", MATRIX_FUNCTIONS)
def test_check_grads_generic_points(name, rng):
  """First-order fwd and rev derivatives w.r.t. nodes and targets, masked, in float64.

  Order 1 only: order 2 costs 10-15 s per function on two CPU cores.
  """
  n = 7
  nodes = _random_nodes(n, np.float64, rng)
  mask = _make_mask("stragglers", n, rng)
  targets = _far_targets(nodes, 4, rng)

  def matrix(x, z):
    return _matrix(name, x, z, mask, degree=2)

  check_grads(matrix, (nodes, targets), order=1, modes=("fwd", "rev"), eps=1e-5)


def _grads(name, nodes, targets, mask, degree, weights):
  """Reverse-mode derivatives of a scalar projection of the matrix w.r.t. nodes and targets.

  Reverse mode is the one that turns a discarded inf into NaN (0 * inf in the
  transpose of a ``where``); forward mode selects tangents and cannot.
  """

  def scalar(x, z):
    return jnp.sum(_matrix(name, x, z, mask, degree) * weights)

  return jax.jit(jax.grad(scalar, argnums=(0, 1)))(nodes, targets)


@pytest.mark.parametrize("name", MATRIX_FUNCTIONS)
def test_gradients_finite_when_target_is_an_available_node(name, rng):
  n = 7
  nodes = _random_nodes(n, np.float64, rng)
  mask = _make_mask("stragglers", n, rng)
  hit = int(rng.choice(np.flatnonzero(mask)))
  targets = np.array([nodes[hit], 0.123])
  weights = rng.normal(size=(2, n))
  for grad in _grads(name, nodes, targets, mask, 2, weights):
    assert np.all(np.isfinite(grad)), grad


@pytest.mark.parametrize("name", MATRIX_FUNCTIONS)
def test_gradients_finite_when_target_is_an_unavailable_node(name, rng):
  n = 7
  nodes = _random_nodes(n, np.float64, rng)
  mask = _make_mask("stragglers", n, rng)
  miss = int(rng.choice(np.flatnonzero(~mask)))
  targets = np.array([nodes[miss], 0.123])
  weights = rng.normal(size=(2, n))
  for grad in _grads(name, nodes, targets, mask, 2, weights):
    assert np.all(np.isfinite(grad)), grad


# ---------------------------------------------------------------------------
# Errors.


def _call(name, nodes, targets, mask=None, degree=0):
  return _matrix(name, np.asarray(nodes), np.asarray(targets), mask, degree)


@pytest.mark.parametrize("name", MATRIX_FUNCTIONS)
def test_errors_bad_nodes(name):
  with pytest.raises(ValueError, match="distinct"):
    _call(name, [0.0, 0.5, 0.5, 1.0], [0.2])
  for bad in (np.nan, np.inf, -np.inf):
    with pytest.raises(ValueError, match="finite"):
      _call(name, [0.0, bad, 1.0], [0.2])
  with pytest.raises(ValueError, match="1-D"):
    _call(name, np.zeros((2, 2)), [0.2])
  with pytest.raises(ValueError, match="non-empty"):
    _call(name, np.zeros(0), [0.2])
  with pytest.raises(ValueError, match="targets"):
    _call(name, [0.0, 1.0], np.zeros((2, 1)))
  with pytest.raises(ValueError, match="finite"):
    _call(name, [0.0, 1.0], [np.nan])


@pytest.mark.parametrize("name", MATRIX_FUNCTIONS)
def test_errors_bad_mask(name):
  nodes, targets = [-0.5, 0.0, 0.5], [0.2]
  with pytest.raises(ValueError, match="one boolean per node"):
    _call(name, nodes, targets, np.array([True, False]))
  with pytest.raises(ValueError, match="one boolean per node"):
    _call(name, nodes, targets, np.ones((3, 1), dtype=bool))
  with pytest.raises(ValueError, match="boolean"):
    _call(name, nodes, targets, np.array([1, 0, 1]))
  with pytest.raises(ValueError, match="boolean"):
    _call(name, nodes, targets, np.array([1.0, 0.0, 1.0]))
  with pytest.raises(ValueError, match="available"):
    _call(name, nodes, targets, np.zeros(3, dtype=bool))


def test_errors_polyfit_degree():
  nodes, targets = np.array([-0.5, 0.0, 0.5, 0.9]), np.array([0.2])
  for degree in (-1, 1.0, 2.5, None):
    with pytest.raises(ValueError, match="degree"):
      interp.polyfit_matrix(nodes, targets, degree)
  with pytest.raises(ValueError, match="at least 4"):
    interp.polyfit_matrix(nodes, targets, 3, np.array([True, True, False, True]))
  with pytest.raises(ValueError, match="at least 5"):
    interp.polyfit_matrix(nodes, targets, 4)


def test_jit_with_too_few_available_nodes_gives_nan(rng):
  nodes = _random_nodes(6, np.float64, rng)
  targets = _random_targets(3, np.float64, rng)
  fit = jax.jit(lambda m: interp.polyfit_matrix(nodes, targets, 3, m))
  assert np.all(np.isnan(fit(np.array([True, False, True, False, True, False]))))
  assert np.all(np.isfinite(fit(np.array([True, True, True, False, True, False]))))
  for name in ("lagrange", "berrut"):
    none_available = jax.jit(lambda m, name=name: _matrix(name, nodes, targets, m))
    assert np.all(np.isnan(none_available(np.zeros(6, dtype=bool))))


def test_integer_inputs_give_default_float():
  matrix = interp.lagrange_matrix(np.array([0, 1, 2]), np.array([1]))
  assert matrix.dtype == jnp.zeros(()).dtype
  np.testing.assert_array_equal(matrix, [[0.0, 1.0, 0.0]])

