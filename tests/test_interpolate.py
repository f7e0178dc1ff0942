"""Tests for the matrix-free decoders (``interp.*_interpolate``) and ``linalg.householder_lstsq``.

Every result is compared with an independent float64 reference (scipy's
BarycentricInterpolator, a direct Berrut formula, numpy's lstsq on the
Chebyshev design) on fresh random inputs. Tolerances follow
tests/test_interp.py: 16 eps (1 + Lambda) max(1 + Lambda, cond) times the
largest |value|, with Lambda the Lebesgue constant of the reference matrix
at the targets and cond that of the least-squares design (1 for the
interpolants).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.interpolate import BarycentricInterpolator

from jaxcoded import interp, linalg

DTYPES = (np.float32, np.float64)
METHODS = ("lagrange", "berrut", "polyfit")
DEGREE = 3


def _nodes(n, dtype, rng):
  """Jittered Chebyshev points, shuffled (the decoders must not assume sorted nodes)."""
  x = np.asarray(interp.chebyshev_points(n, kind=2, dtype=jnp.float64))
  spacing = np.min(np.diff(x)) if n > 1 else 1.0
  x = x + rng.uniform(-0.1, 0.1, n) * spacing
  return rng.permutation(x).astype(dtype)


def _mask(n, stragglers, rng):
  mask = np.ones(n, bool)
  mask[rng.choice(n, stragglers, replace=False)] = False
  return mask


def _unit(x, lo, hi):
  return (2 * x - (hi + lo)) / (hi - lo)


def _reference_matrix(method, nodes, targets, mask, degree=DEGREE):
  """(T, N) float64 matrix through the available nodes, zero columns elsewhere."""
  x, z = np.asarray(nodes, np.float64), np.asarray(targets, np.float64)
  xa = x[mask]
  if method == "lagrange" and xa.size == 1:  # scipy divides by the zero width of one node
    sub = np.ones((z.size, 1))
  elif method == "lagrange":
    sub = BarycentricInterpolator(xa, np.eye(xa.size))(z)
  elif method == "berrut":
    signs = np.empty(xa.size)
    signs[np.argsort(xa)] = (-1.0) ** np.arange(xa.size)
    hits = z[:, None] == xa[None, :]
    terms = signs / np.where(hits, 1.0, z[:, None] - xa[None, :])
    sub = terms / terms.sum(axis=1, keepdims=True)
    sub = np.where(hits.any(axis=1, keepdims=True), hits, sub)
  else:
    lo, hi = min(x.min(), z.min()), max(x.max(), z.max())
    design = np.polynomial.chebyshev.chebvander(_unit(xa, lo, hi), degree)
    sub = np.polynomial.chebyshev.chebvander(_unit(z, lo, hi), degree) @ np.linalg.pinv(design)
  full = np.zeros((z.size, x.size))
  full[:, mask] = sub
  return full, xa


def _tolerance(method, matrix, xa, nodes, targets, values, dtype, degree=DEGREE):
  lebesgue = np.max(np.sum(np.abs(matrix), axis=1))
  condition = 1.0
  if method == "polyfit":
    lo = min(np.min(nodes), np.min(targets))
    hi = max(np.max(nodes), np.max(targets))
    condition = np.linalg.cond(np.polynomial.chebyshev.chebvander(_unit(xa, lo, hi), degree))
  scale = np.max(np.abs(values))
  return 16 * np.finfo(dtype).eps * (1 + lebesgue) * max(1 + lebesgue, condition) * scale


def _interpolate(method, nodes, values, targets, mask, degree=DEGREE):
  if method == "lagrange":
    return interp.lagrange_interpolate(nodes, values, targets, mask)
  if method == "berrut":
    return interp.berrut_interpolate(nodes, values, targets, mask)
  return interp.polyfit_interpolate(nodes, values, targets, degree, mask)


def _matrix(method, nodes, targets, mask, degree=DEGREE):
  if method == "lagrange":
    return interp.lagrange_matrix(nodes, targets, mask)
  if method == "berrut":
    return interp.berrut_matrix(nodes, targets, mask)
  return interp.polyfit_matrix(nodes, targets, degree, mask)


@pytest.mark.parametrize("trailing", ((), (3, 2)))
@pytest.mark.parametrize(("n", "stragglers"), ((1, 0), (9, 2), (33, 8)))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_interpolate_matches_float64_reference(dtype, method, n, stragglers, trailing, rng):
  if method == "polyfit" and n - stragglers < DEGREE + 1:
    pytest.skip("too few nodes for the fit")
  nodes = _nodes(n, dtype, rng)
  targets = rng.uniform(-1, 1, 6).astype(dtype)
  mask = _mask(n, stragglers, rng)
  values = rng.normal(size=(n, *trailing)).astype(dtype)
  matrix, xa = _reference_matrix(method, nodes, targets, mask)
  expected = np.tensordot(matrix, values.astype(np.float64), axes=1)
  actual = _interpolate(method, nodes, values, targets, mask)
  assert actual.dtype == dtype and actual.shape == (6, *trailing)
  atol = _tolerance(method, matrix, xa, nodes, targets, values, dtype)
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("method", ("lagrange", "berrut"))
def test_barycentric_float32_at_large_n(method, rng):
  """N = 128 Chebyshev workers, 32 stragglers for Berrut, all for Lagrange: no overflow of the weights."""
  n = 128
  nodes = np.asarray(interp.chebyshev_points(n, kind=2, dtype=jnp.float64)).astype(np.float32)
  mask = _mask(n, 0 if method == "lagrange" else n // 4, rng)
  targets = np.asarray(interp.chebyshev_points(n // 2, dtype=jnp.float64)).astype(np.float32)
  values = rng.normal(size=(n, 4)).astype(np.float32)
  matrix, xa = _reference_matrix(method, nodes, targets, mask)
  expected = matrix @ values.astype(np.float64)
  actual = _interpolate(method, nodes, values, targets, mask)
  atol = _tolerance(method, matrix, xa, nodes, targets, values, np.float32)
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("method", METHODS)
def test_interpolate_equals_matrix_route(method, rng):
  """= apply_matrix(*_matrix(...), values), in float64 to rounding."""
  n = 12
  nodes = _nodes(n, np.float64, rng)
  targets = rng.uniform(-1, 1, 5)
  mask = _mask(n, 3, rng)
  values = rng.normal(size=(n, 2, 3))
  expected = interp.apply_matrix(_matrix(method, nodes, targets, mask), values)
  actual = _interpolate(method, nodes, values, targets, mask)
  np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_masked_equals_subset_and_poisoned_stragglers_change_nothing(method, rng):
  n = 11
  nodes = _nodes(n, np.float64, rng)
  targets = rng.uniform(-1, 1, 4)
  mask = _mask(n, 4, rng)
  values = rng.normal(size=(n, 3))
  subset = _interpolate(method, nodes[mask], values[mask], targets, None)
  masked = _interpolate(method, nodes, values, targets, mask)
  np.testing.assert_allclose(masked, subset, rtol=1e-10, atol=1e-12)
  for poison in (np.nan, np.inf, -np.inf):
    poisoned = np.where(mask[:, None], values, poison)
    out = jax.jit(lambda y: _interpolate(method, nodes, y, targets, mask))(poisoned)
    np.testing.assert_array_equal(out, jax.jit(
        lambda y: _interpolate(method, nodes, y, targets, mask))(values))


@pytest.mark.parametrize("method", ("lagrange", "berrut"))
def test_targets_on_available_and_unavailable_nodes(method, rng):
  n = 9
  nodes = _nodes(n, np.float64, rng)
  mask = _mask(n, 3, rng)
  hit, miss = np.flatnonzero(mask)[0], np.flatnonzero(~mask)[0]
  targets = np.array([nodes[hit], nodes[miss], 0.1234])
  values = rng.normal(size=(n, 2))
  values_poisoned = np.where(mask[:, None], values, np.nan)
  out = _interpolate(method, nodes, values_poisoned, targets, mask)
  np.testing.assert_array_equal(out[0], values[hit])  # the node's own value, exactly
  matrix, _ = _reference_matrix(method, nodes, targets, mask)
  np.testing.assert_allclose(out, matrix @ values, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_vmap_over_groups_matches_one_by_one_and_jit_does_not_retrace(method, rng):
  n, groups = 10, 6
  nodes = _nodes(n, np.float32, rng)
  targets = rng.uniform(-1, 1, 5).astype(np.float32)
  masks = np.stack([_mask(n, int(rng.integers(0, 4)), rng) for _ in range(groups)])
  values = rng.normal(size=(groups, n, 3)).astype(np.float32)
  traces = []

  def one(mask, y):
    traces.append(None)
    return _interpolate(method, nodes, y, targets, mask)

  batched = jax.jit(jax.vmap(one))
  out = batched(masks, values)
  assert len(traces) == 1
  batched(masks[::-1], values)  # new masks, same shapes: no new trace
  assert len(traces) == 1
  for g in range(groups):
    np.testing.assert_allclose(
        out[g], _interpolate(method, nodes, values[g], targets, masks[g]), rtol=2e-5, atol=2e-5
    )


@pytest.mark.parametrize("method", METHODS)
def test_check_grads(method, rng):
  """First-order fwd and rev derivatives w.r.t. nodes, values and targets, masked, float64."""
  n = 7
  nodes = _nodes(n, np.float64, rng)
  mask = _mask(n, 2, rng)
  targets = rng.uniform(-0.9, 0.9, 3)
  values = rng.normal(size=(n, 2))

  def fn(x, y, z):
    return _interpolate(method, x, y, z, mask, degree=2)

  check_grads(fn, (nodes, values, targets), order=1, modes=("fwd", "rev"), eps=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_finite_with_poisoned_stragglers_and_a_target_on_a_node(method, rng):
  n = 7
  nodes = _nodes(n, np.float64, rng)
  mask = _mask(n, 2, rng)
  targets = np.array([nodes[np.flatnonzero(mask)[0]], nodes[np.flatnonzero(~mask)[0]], 0.3])
  values = np.where(mask[:, None], rng.normal(size=(n, 2)), np.nan)

  def scalar(x, y, z):
    return jnp.sum(_interpolate(method, x, y, z, mask, degree=2) ** 2)

  grads = jax.jit(jax.grad(scalar, argnums=(0, 1, 2)))(nodes, values, targets)
  for grad in grads:
    assert np.all(np.isfinite(grad)), grad
  assert np.all(grads[1][~mask] == 0)


# ---------------------------------------------------------------------------
# apply_matrix under vmap: its custom batching rule and derivative.


@pytest.mark.parametrize("per_group", (False, True))
def test_apply_matrix_vmapped_matches_einsum_with_gradients(per_group, rng):
  groups, t, n = 3, 4, 5
  matrix = rng.normal(size=(groups, t, n) if per_group else (t, n))
  matrix[..., 1] = 0.0  # an unused column: its values are never read
  values = rng.normal(size=(groups, n, 2, 3))
  in_axes = (0 if per_group else None, 0)
  batched = jax.vmap(interp.apply_matrix, in_axes=in_axes)
  spec = "gtn,gn...->gt..." if per_group else "tn,gn...->gt..."
  np.testing.assert_allclose(batched(matrix, values), np.einsum(spec, matrix, values), rtol=1e-12)
  # Derivatives away from zero columns (at one, apply_matrix is not continuous
  # in the matrix: a zero column silences its values, as it always did).
  dense = matrix + (matrix == 0)
  check_grads(batched, (dense, values), order=2, modes=("fwd", "rev"), eps=1e-5)
  # vmap of grad, and a nested vmap (groups of groups), reach the same rule.
  grad = jax.vmap(jax.grad(lambda m, v: jnp.sum(interp.apply_matrix(m, v) ** 2), argnums=(0, 1)),
                  in_axes=in_axes)(dense, values)
  expected = jax.grad(
      lambda m, v: jnp.sum(jnp.einsum(spec, m, v) ** 2), argnums=(0, 1))(dense, values)
  if not per_group:
    grad = (grad[0].sum(0), grad[1])
  for actual, wanted in zip(grad, expected):
    np.testing.assert_allclose(actual, wanted, rtol=1e-10, atol=1e-12)
  nested = jax.vmap(batched, in_axes=(None if not per_group else 0, 0))
  stacked = np.stack([values, 2 * values])
  out = nested(np.stack([matrix, matrix]) if per_group else matrix, stacked)
  np.testing.assert_allclose(out[1], 2 * out[0], rtol=1e-12)


def test_apply_matrix_vmapped_over_matrices_only(rng):
  """Many matrices, one set of values: one GEMM; unused columns still never read."""
  matrices = rng.normal(size=(4, 3, 6))
  values = rng.normal(size=(6, 5))
  out = jax.jit(jax.vmap(interp.apply_matrix, in_axes=(0, None)))(matrices, values)
  np.testing.assert_allclose(out, matrices @ values, rtol=1e-12)
  matrices[2, :, 4] = 0.0
  values[4] = np.nan
  out = jax.jit(jax.vmap(interp.apply_matrix, in_axes=(0, None)))(matrices, values)
  assert np.all(np.isfinite(out[2])) and np.all(np.isnan(out[0]))


# ---------------------------------------------------------------------------
# householder_lstsq.


@pytest.mark.parametrize(("m", "n", "p"), ((6, 6, 1), (20, 5, 3), (64, 12, 7)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_householder_lstsq_matches_numpy(dtype, m, n, p, rng):
  a = rng.normal(size=(2, m, n)).astype(dtype)
  b = rng.normal(size=(2, m, p)).astype(dtype)
  x = linalg.householder_lstsq(a, b)
  assert x.shape == (2, n, p) and x.dtype == dtype
  for i in range(2):
    a64, b64 = a[i].astype(np.float64), b[i].astype(np.float64)
    expected = np.linalg.lstsq(a64, b64, rcond=None)[0]
    cond = np.linalg.cond(a64)
    # Backward stable: forward error ~ eps (cond + cond^2 |r| / (|a| |x|)) |x|.
    residual = np.linalg.norm(b64 - a64 @ expected) / (np.linalg.norm(a64, 2) * np.linalg.norm(expected))
    bound = 32 * np.finfo(dtype).eps * (cond + cond**2 * residual) * np.max(np.abs(expected))
    np.testing.assert_allclose(np.asarray(x[i], np.float64), expected, rtol=0, atol=bound)


def test_householder_lstsq_check_grads(rng):
  a = rng.normal(size=(8, 3))
  b = rng.normal(size=(8, 2))
  check_grads(linalg.householder_lstsq, (a, b), order=1, modes=("fwd", "rev"), eps=1e-6)


def test_householder_lstsq_rejects_bad_shapes():
  with pytest.raises(ValueError, match="householder_lstsq"):
    linalg.householder_lstsq(np.ones((3, 4)), np.ones((3, 1)))
  with pytest.raises(ValueError, match="householder_lstsq"):
    linalg.householder_lstsq(np.ones((5, 4)), np.ones((4, 1)))
