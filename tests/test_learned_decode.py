"""learned_decode: the (K, N) matrix decode against a float64 numpy fit and the lstsq decode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcoded import interp, load
from jaxcoded.schemes import learned, learned_decode


def _lstsq_decode(outputs, mask, worker_points, data_points, threshold):
  """The decode the learned codes used before: Householder least squares on the outputs."""
  mask = jnp.asarray(mask)
  enough = jnp.sum(mask) >= threshold
  safe_mask = jnp.where(enough, mask, True)
  values = interp.polyfit_interpolate(worker_points, outputs, data_points, threshold - 1, safe_mask)
  return jnp.where(enough, values, jnp.zeros((), values.dtype)), enough


def _numpy_fit(outputs, mask, worker_points, data_points, threshold):
  """float64: least-squares polynomial of degree R - 1 through the available rows, at a_k."""
  x = np.asarray(worker_points, np.float64)[mask]
  y = np.asarray(outputs, np.float64)[mask]
  lo = min(x.min(), np.min(data_points))
  hi = max(x.max(), np.max(data_points))
  unit = lambda z: (2 * np.asarray(z, np.float64) - (hi + lo)) / (hi - lo)  # noqa: E731
  design = np.polynomial.chebyshev.chebvander(unit(x), threshold - 1)
  coefficients = np.linalg.lstsq(design, y, rcond=None)[0]
  return np.polynomial.chebyshev.chebvander(unit(data_points), threshold - 1) @ coefficients


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 2e-4), (jnp.float64, 1e-10)])
@pytest.mark.parametrize("k,n,threshold", [(4, 6, 3), (12, 15, 11)])
def test_matches_float64_numpy_fit(dtype, rtol, k, n, threshold):
  rng = np.random.default_rng(k + n)
  a = np.cos((2 * np.arange(k) + 1) * np.pi / (2 * k))
  b = np.cos(np.arange(n) * np.pi / (n - 1))
  outputs = rng.normal(size=(n, 64))
  for absent in ((), (1,), tuple(range(n - threshold))):
    mask = np.ones(n, bool)
    mask[list(absent)] = False
    poisoned = outputs.copy()
    poisoned[~mask] = np.nan  # absent rows are never read
    args = (jnp.asarray(poisoned, dtype), jnp.asarray(mask), jnp.asarray(b, dtype),
            jnp.asarray(a, dtype), threshold)
    values, enough = learned_decode.masked_matrix_decode(*args)
    expected = _numpy_fit(outputs, mask, b, a, threshold)
    scale = np.abs(expected).max()
    assert bool(enough) and values.dtype == dtype
    # Extrapolating to a_k beyond the available b_n amplifies the inputs'
    # rounding (values up to 1e5 here when the four largest b_n are absent):
    # no worse than twice the lstsq decode's error on the same inputs.
    lstsq = _lstsq_decode(jnp.asarray(outputs, dtype), *args[1:])[0]
    tol = max(rtol, 2 * np.abs(np.asarray(lstsq) - expected).max() / scale)
    np.testing.assert_allclose(values, expected, rtol=0, atol=tol * scale)


def test_too_few_returned_answers_nothing():
  b = jnp.linspace(-1.0, 1.0, 6)
  mask = jnp.array([True, True, False, False, False, True])
  values, enough = learned_decode.masked_matrix_decode(
      jnp.ones((6, 5)), mask, b, jnp.array([-0.5, 0.5]), 4)
  assert not bool(enough) and np.all(np.asarray(values) == 0)


def test_equals_the_lstsq_decode_and_costs_less():
  code = learned.PolynomialCode.create(
      12, 15, (8, 8, 1), 10, encoder_degree=5, worker_features=(4,), worker_out=64,
      head_hidden=8, rngs=nnx.Rngs(0),
  )
  assert code.interpolation_threshold == 11
  b, a = code.worker_points[...], code.data_points[...]
  rng = np.random.default_rng(0)
  outputs = jnp.asarray(rng.normal(size=(15, 64)), jnp.float32)
  masks = jnp.asarray([np.arange(15) != 3, np.arange(15) < 11, np.ones(15, bool)])
  old = jax.vmap(lambda m: _lstsq_decode(outputs, m, b, a, 11)[0])(masks)
  new = jax.vmap(lambda m: learned_decode.masked_matrix_decode(outputs, m, b, a, 11)[0])(masks)
  np.testing.assert_allclose(new, old, rtol=1e-3, atol=1e-3 * np.abs(old).max())
  shapes = (jax.ShapeDtypeStruct((15, 64), jnp.float32), jax.ShapeDtypeStruct((15,), jnp.bool_))
  lstsq = load.xla_flops(lambda y, m: _lstsq_decode(y, m, b, a, 11)[0], *shapes)
  matrix = load.xla_flops(
      lambda y, m: learned_decode.masked_matrix_decode(y, m, b, a, 11)[0], *shapes)
  assert matrix < 0.6 * lstsq
