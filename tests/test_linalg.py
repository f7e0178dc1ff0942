"""Tests for jaxcoded.linalg against numpy/scipy in float64 on fresh random inputs.

Tolerances: Householder QR is backward stable, so ``q @ r - a`` and
``q^T q - I`` are a small multiple of eps (times ||a||); the entries of r
match numpy's up to the signs of its rows, with an error of about
eps * cond(a) * ||a||. The triangular solve's forward error is about
eps * cond(r) * |x|.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.test_util import check_grads

from jaxcoded import interp, linalg, robust, schemes

DTYPES = (np.float32, np.float64)
SHAPES = ((1, 1), (5, 1), (6, 6), (16, 9), (40, 12))


def _eps(dtype) -> float:
  return float(np.finfo(dtype).eps)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_householder_qr_matches_numpy(dtype, shape, rng):
  a = rng.normal(size=shape).astype(dtype)
  q, r = linalg.householder_qr(a)
  assert q.shape == shape and r.shape == (shape[1], shape[1]) and q.dtype == dtype
  q, r = np.asarray(q, np.float64), np.asarray(r, np.float64)
  a64 = a.astype(np.float64)
  scale = np.linalg.norm(a64, 2)
  tol = 32 * max(shape) * _eps(dtype)
  np.testing.assert_allclose(q @ r, a64, rtol=0, atol=tol * scale)
  np.testing.assert_allclose(q.T @ q, np.eye(shape[1]), rtol=0, atol=tol)
  assert np.all(np.tril(r, -1) == 0)
  # R is unique up to the sign of each row (a has full column rank).
  _, r_ref = np.linalg.qr(a64, mode="reduced")
  signs = np.sign(np.diag(r)) * np.sign(np.diag(r_ref))
  np.testing.assert_allclose(
      signs[:, None] * r, r_ref, rtol=0, atol=tol * np.linalg.cond(a64) * scale
  )


@pytest.mark.parametrize("dtype", DTYPES)
def test_householder_qr_maps_over_leading_axes(dtype, rng):
  a = rng.normal(size=(3, 2, 10, 4)).astype(dtype)
  q, r = linalg.householder_qr(a)
  assert q.shape == (3, 2, 10, 4) and r.shape == (3, 2, 4, 4)
  for i in range(3):
    for j in range(2):
      qi, ri = linalg.householder_qr(a[i, j])
      np.testing.assert_allclose(q[i, j], qi, rtol=0, atol=8 * _eps(dtype))
      np.testing.assert_allclose(r[i, j], ri, rtol=0, atol=64 * _eps(dtype))


def test_householder_qr_with_zero_rows_and_a_dependent_column(rng):
  """Masked rows (zero) change nothing; a column in the span of earlier ones gives r_jj = 0."""
  a = rng.normal(size=(12, 3))
  a[[1, 4, 7, 8]] = 0.0
  q, r = (np.asarray(x) for x in linalg.householder_qr(jnp.asarray(a, jnp.float64)))
  np.testing.assert_allclose(q @ r, a, rtol=0, atol=1e-13)
  np.testing.assert_allclose(q[[1, 4, 7, 8]], 0.0, rtol=0, atol=1e-13)
  dependent = np.concatenate([a, a[:, :1] - 2 * a[:, 2:]], axis=1)
  q, r = (np.asarray(x) for x in linalg.householder_qr(jnp.asarray(dependent, jnp.float64)))
  assert abs(r[3, 3]) < 1e-13
  assert np.all(np.isfinite(q)) and np.all(np.isfinite(r))
  np.testing.assert_allclose(q @ r, dependent, rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_solve_upper_triangular_right_matches_scipy(dtype, rng):
  n, t = 9, 5
  r = np.triu(rng.normal(size=(n, n))) + 3 * np.eye(n)  # well away from singular
  b = rng.normal(size=(t, n))
  r, b = r.astype(dtype), b.astype(dtype)
  x = np.asarray(linalg.solve_upper_triangular_right(r, b), np.float64)
  # x r = b  <=>  r^T x^T = b^T, with r^T lower triangular.
  expected = scipy.linalg.solve_triangular(
      r.astype(np.float64).T, b.astype(np.float64).T, lower=True
  ).T
  tol = 16 * n * _eps(dtype) * np.linalg.cond(r.astype(np.float64))
  np.testing.assert_allclose(x, expected, rtol=0, atol=tol * np.max(np.abs(expected)))
  # Entries below the diagonal are ignored.
  noisy = r + np.tril(rng.normal(size=(n, n)), -1).astype(dtype)
  np.testing.assert_array_equal(linalg.solve_upper_triangular_right(noisy, b), x.astype(dtype))


def test_gradients_match_finite_differences(rng):
  a = jnp.asarray(rng.normal(size=(7, 3)))
  r = jnp.asarray(np.triu(rng.normal(size=(4, 4))) + 3 * np.eye(4))
  b = jnp.asarray(rng.normal(size=(2, 4)))
  with jax.enable_x64(True):
    check_grads(lambda a: linalg.householder_qr(a), (a,), order=1, modes=("fwd", "rev"))
    check_grads(
        linalg.solve_upper_triangular_right, (r, b), order=1, modes=("fwd", "rev")
    )


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError, match="M >= N"):
    linalg.householder_qr(np.ones((2, 3)))
  with pytest.raises(ValueError, match="M >= N"):
    linalg.householder_qr(np.ones((3,)))
  with pytest.raises(ValueError, match=r"r must be \(\.\.\., N, N\)"):
    linalg.solve_upper_triangular_right(np.eye(3), np.ones((2, 4)))


def _custom_calls(fn, *args) -> set[str]:
  text = jax.jit(fn).lower(*args).compile().as_text()
  return set(re.findall(r'custom_call_target="([^"]+)"', text))


def test_batched_decoders_make_no_lapack_calls():
  """The decoders that evaluation batches over masks contain no LAPACK custom call.

  A regression test for the deadlock that jaxlib's batched LAPACK kernels cause
  on a small CPU thread pool (module docstring of jaxcoded.linalg); it fails if
  a least-squares step goes back to jnp.linalg.
  """
  masks = jnp.asarray(np.random.default_rng(0).random((16, 11)) < 0.8)
  nodes, targets = interp.chebyshev_points(11), jnp.linspace(-0.5, 0.5, 8)
  values = jnp.ones((11, 10))
  fit = jax.vmap(lambda m: interp.polyfit_matrix(nodes, targets, 3, m))
  assert not _custom_calls(fit, masks)
  robust_fit = jax.vmap(
      lambda m: robust.robust_polyfit(nodes, values, targets, degree=3, num_errors=1, mask=m).values
  )
  assert not _custom_calls(robust_fit, masks)
  code = schemes.ByzantineBerrutCode.create(2, 1, num_adversaries=1)
  outputs = jnp.ones((code.num_workers, 10))
  decode = jax.vmap(lambda m: code.decode(outputs, m).values)
  assert not _custom_calls(decode, jnp.ones((16, code.num_workers), bool))
