"""Property tests (hypothesis) for the interpolation matrices and the decoders.

Random well-separated nodes in random order, random availability masks,
degrees and dtypes, checked against float64 numpy references written from
the definitions (products for Lagrange, the pseudo-inverse for least squares,
Berrut's sign-alternating weights over the sorted available nodes). Float32
results are compared with the reference evaluated at the float32-rounded
inputs, so only the arithmetic's rounding is measured.

Every test is derandomized (the same examples on every run; a failure
reproduces as is, and hypothesis prints the falsifying example). Shapes
come from small fixed sets so that each jitted function compiles a few times
only; the file runs in a few seconds plus compilation.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcoded import interp, robust
from jaxcoded.schemes import BerrutCode, LagrangeCode, ParityCode

NODE_COUNTS = (3, 7)
NUM_TARGETS = 4
DTYPES = (np.float32, np.float64)
# Entry-wise tolerance relative to max(1, the largest reference entry): float32
# rounding (6e-8) amplified by the Lebesgue constant of well-separated nodes.
TOLERANCE = {np.float32: 5e-5, np.float64: 1e-12}


def _settings(max_examples):
  return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None)


@st.composite
def node_sets(draw, counts=NODE_COUNTS):
  """(N,) distinct nodes in (-1, 1), spaced at least 0.6 / (N + 1), in random order."""
  n = draw(st.sampled_from(counts))
  gaps = np.asarray(draw(st.lists(st.floats(0.3, 1.0), min_size=n + 1, max_size=n + 1)))
  positions = np.cumsum(gaps)[:-1] / gaps.sum() * 2 - 1
  return positions[np.asarray(draw(st.permutations(range(n))), int)]


@st.composite
def masks(draw, n, min_available=1):
  """(N,) bool with at least ``min_available`` True."""
  available = draw(st.integers(min_available, n))
  chosen = draw(st.permutations(range(n)))[:available]
  return np.isin(np.arange(n), chosen)


def _targets(draw, nodes):
  """NUM_TARGETS points in [-1, 1] (subnormals and -0.0 included); some exactly at nodes."""
  anywhere = st.floats(-1.0, 1.0)
  at_node = st.sampled_from(list(nodes))
  return np.asarray(draw(st.lists(st.one_of(anywhere, at_node), min_size=NUM_TARGETS, max_size=NUM_TARGETS)))


def _rounded(x, dtype):
  return np.asarray(np.asarray(x, dtype), np.float64)


def _assert_close(actual, reference, dtype):
  actual = np.asarray(actual, np.float64)
  scale = max(1.0, np.abs(reference).max())
  np.testing.assert_allclose(actual, reference, rtol=0, atol=TOLERANCE[dtype] * scale)


# ---------------------------------------------------------------------------
# References, float64 numpy, from the definitions.


def lagrange_reference(nodes, targets, mask):
  """L[t, j] = prod over available k != j of (z_t - x_k) / (x_j - x_k); 0 for unavailable j."""
  matrix = np.zeros((len(targets), len(nodes)))
  available = np.flatnonzero(mask)
  for t, z in enumerate(targets):
    for j in available:
      others = nodes[available[available != j]]
      matrix[t, j] = np.prod((z - others) / (nodes[j] - others))
  return matrix


def polyfit_reference(nodes, targets, degree, mask):
  """Vandermonde(targets) @ pinv(Vandermonde(available nodes)), scattered into the available columns."""
  matrix = np.zeros((len(targets), len(nodes)))
  design = np.vander(nodes[mask], degree + 1, increasing=True)
  matrix[:, mask] = np.vander(targets, degree + 1, increasing=True) @ np.linalg.pinv(design)
  return matrix


def berrut_reference(nodes, targets, mask):
  """w_j(z) = ((-1)^rank_j / (z - x_j)) / sum_k (...), ranks over the sorted available nodes."""
  matrix = np.zeros((len(targets), len(nodes)))
  available = np.flatnonzero(mask)
  ranks = np.argsort(np.argsort(nodes[available]))
  for t, z in enumerate(targets):
    hit = available[nodes[available] == z]
    if hit.size:
      matrix[t, hit[0]] = 1.0
      continue
    terms = (-1.0) ** ranks / (z - nodes[available])
    matrix[t, available] = terms / terms.sum()
  return matrix


# ---------------------------------------------------------------------------
# Interpolation matrices.


@_settings(40)
@given(st.data(), node_sets(), st.sampled_from(DTYPES))
def test_lagrange_matrix(data, nodes, dtype):
  mask = data.draw(masks(len(nodes)))
  targets = _targets(data.draw, nodes)
  matrix = np.asarray(interp.lagrange_matrix(nodes.astype(dtype), targets.astype(dtype), mask))
  assert matrix.dtype == dtype
  reference = lagrange_reference(_rounded(nodes, dtype), _rounded(targets, dtype), mask)
  _assert_close(matrix, reference, dtype)
  assert np.all(matrix[:, ~mask] == 0)


@_settings(40)
@given(st.data(), node_sets(), st.sampled_from(DTYPES), st.sampled_from((1, 2)))
def test_polyfit_matrix_is_the_least_squares_fit(data, nodes, dtype, degree):
  mask = data.draw(masks(len(nodes), min_available=degree + 1))
  targets = _targets(data.draw, nodes)
  matrix = np.asarray(interp.polyfit_matrix(nodes.astype(dtype), targets.astype(dtype), degree, mask))
  assert matrix.dtype == dtype
  reference = polyfit_reference(_rounded(nodes, dtype), _rounded(targets, dtype), degree, mask)
  _assert_close(matrix, reference, dtype)
  assert np.all(matrix[:, ~mask] == 0)
  if mask.sum() == degree + 1:  # interpolation: the Lagrange matrix
    _assert_close(matrix, lagrange_reference(_rounded(nodes, dtype), _rounded(targets, dtype), mask), dtype)


@_settings(40)
@given(st.data(), node_sets(), st.sampled_from(DTYPES))
def test_berrut_matrix(data, nodes, dtype):
  mask = data.draw(masks(len(nodes)))
  targets = _targets(data.draw, nodes)
  matrix = np.asarray(interp.berrut_matrix(nodes.astype(dtype), targets.astype(dtype), mask))
  assert matrix.dtype == dtype
  _assert_close(matrix, berrut_reference(_rounded(nodes, dtype), _rounded(targets, dtype), mask), dtype)
  _assert_close(matrix.sum(axis=1), np.ones(NUM_TARGETS), dtype)  # constants are reproduced
  assert np.all(matrix[:, ~mask] == 0)


@_settings(30)
@given(st.data(), st.sampled_from(DTYPES), st.sampled_from(((), (2,), (3, 2))), st.integers(0, 2**31))
def test_apply_matrix(data, dtype, trailing, seed):
  rng = np.random.default_rng(seed)
  unused = data.draw(masks(5, min_available=0))
  matrix = rng.normal(size=(3, 5)).astype(dtype)
  matrix[:, unused] = 0.0
  values = rng.normal(size=(5, *trailing)).astype(dtype)
  poisoned = values.copy()
  poisoned[unused] = data.draw(st.sampled_from((np.nan, np.inf, -np.inf)))
  result = np.asarray(interp.apply_matrix(matrix, poisoned))
  assert result.dtype == dtype and result.shape == (3, *trailing)
  reference = np.einsum("tn,n...->t...", matrix.astype(np.float64), np.where(
      unused.reshape((5,) + (1,) * len(trailing)), 0.0, values.astype(np.float64)))
  _assert_close(result, reference, dtype)


# ---------------------------------------------------------------------------
# Decoders.


def _polynomial_worker(degree):
  """f(x) = sum_{j=1}^{d} c_j (w . x)^j, one output per row of w: degree exactly d."""

  def f(params, x):
    w, c = params
    projected = w @ x
    return sum(c[j - 1] * projected**j for j in range(1, degree + 1))

  return f


LCC_CASES = ((2, 2, 1, np.float64), (3, 1, 2, np.float64), (3, 2, 1, np.float32))
LCC_TOLERANCE = {np.float64: 1e-9, np.float32: 2e-3}


@_settings(12)
@given(st.sampled_from(LCC_CASES), st.integers(0, 2**31))
def test_lcc_is_exact_on_every_recovery_subset(case, seed):
  """Every mask with exactly S stragglers (exactly R returned) decodes f(x_k) for polynomial f."""
  num_queries, degree, num_stragglers, dtype = case
  rng = np.random.default_rng(seed)
  code = LagrangeCode.create(num_queries, num_stragglers, degree, dtype=dtype)
  params = (rng.normal(size=(3, 4)).astype(dtype) / 2, rng.normal(size=degree).astype(dtype))
  queries = rng.normal(size=(num_queries, 4)).astype(dtype)
  masks_ = np.stack(
      [np.isin(np.arange(code.num_workers), s, invert=True)
       for s in itertools.combinations(range(code.num_workers), num_stragglers)]
  )
  decoded = _lcc_decode_all(code, params, queries, masks_)
  w, c = (p.astype(np.float64) for p in params)
  projected = queries.astype(np.float64) @ w.T
  expected = sum(c[j - 1] * projected**j for j in range(1, degree + 1))
  assert np.all(decoded.answered)
  np.testing.assert_allclose(
      decoded.values, np.broadcast_to(expected, decoded.values.shape),
      rtol=0, atol=LCC_TOLERANCE[dtype] * max(1.0, np.abs(expected).max()),
  )


@jax.jit
def _lcc_decode_all(code, params, queries, masks_):
  """The whole pipeline for every mask; the code is a pytree, so one compilation per case."""
  f = _polynomial_worker(code.degree)
  return jax.vmap(lambda m: code(f, params, queries, m))(masks_)


@_settings(30)
@given(st.data(), st.sampled_from((3, 5)), st.integers(0, 2**31))
def test_berrut_decode_is_the_interpolant_through_the_returned_workers(data, num_stragglers, seed):
  """Decoding through a mask equals Berrut's interpolant through the returned points only."""
  code = BerrutCode.create(3, num_stragglers, dtype=jnp.float64)
  mask = data.draw(masks(code.num_workers))
  rng = np.random.default_rng(seed)
  outputs = rng.normal(size=(code.num_workers, 2))
  poisoned = np.where(mask[:, None], outputs, np.nan)
  decoded = code.decode(jnp.asarray(poisoned), jnp.asarray(mask))
  reference = berrut_reference(
      np.asarray(code.worker_points), np.asarray(code.data_points), mask
  ) @ np.where(mask[:, None], outputs, 0.0)
  assert np.all(decoded.answered)
  np.testing.assert_allclose(decoded.values, reference, rtol=0, atol=1e-12 * max(1, np.abs(reference).max()))


@_settings(30)
@given(st.data(), st.sampled_from((2, 4)), st.integers(0, 2**31))
def test_parm_decodes_one_missing_output_exactly_for_a_linear_model(data, num_queries, seed):
  code = ParityCode.create(num_queries)
  mask = data.draw(masks(code.num_workers, min_available=0))
  rng = np.random.default_rng(seed)
  weights = rng.normal(size=(3, 4))
  queries = rng.normal(size=(num_queries, 4))
  base_outputs = queries @ weights.T  # f linear without bias: f(sum x) = sum f(x)
  outputs = np.concatenate([base_outputs, base_outputs.sum(0, keepdims=True)])
  decoded = code.decode(jnp.asarray(np.where(mask[:, None], outputs, np.nan)), jnp.asarray(mask))
  missing = ~mask[:num_queries]
  expected_answered = mask[:num_queries] | (missing.sum() == 1 and mask[num_queries])
  np.testing.assert_array_equal(decoded.answered, expected_answered)
  expected = np.where(expected_answered[:, None], base_outputs, 0.0)
  np.testing.assert_allclose(decoded.values, expected, rtol=0, atol=1e-12 * np.abs(outputs).max())


ROBUST_CASES = ((9, 2, 1), (9, 1, 2))  # (N, degree, E)


@_settings(30)
@given(st.data(), st.sampled_from(ROBUST_CASES), st.integers(0, 2**31))
def test_robust_decode_equals_the_fit_without_the_corrupted_outputs(data, case, seed):
  """At most E corrupted of A >= R + 2E: those rejected, the clean fit returned.

  E + 1 corrupted where E + 1 <= A - R - E: refused (the code detects it).
  """
  num_workers, degree, num_errors = case
  rng = np.random.default_rng(seed)
  nodes = np.sort(data.draw(node_sets(counts=(num_workers,))))
  needed = robust.min_available(degree, num_errors)
  mask = data.draw(masks(num_workers, min_available=needed))
  available = np.flatnonzero(mask)
  detectable = mask.sum() - (degree + 1) - num_errors  # E + 1 <= this: detection guaranteed
  max_bad = num_errors + 1 if detectable >= num_errors + 1 else num_errors
  num_bad = data.draw(st.integers(0, max_bad))
  bad = np.isin(np.arange(num_workers), rng.choice(available, num_bad, replace=False))

  honest = np.vander(nodes, degree + 1, increasing=True) @ rng.normal(size=(degree + 1, 3))
  scale = np.abs(honest[mask]).max()
  sizes = data.draw(st.lists(st.floats(1e-3, 1e3), min_size=num_workers, max_size=num_workers))
  offsets = rng.normal(size=honest.shape)
  offsets *= (np.asarray(sizes) * scale / np.abs(offsets).max(axis=1))[:, None]
  corrupted = np.where(bad[:, None], honest + offsets, honest)
  corrupted[~mask] = np.nan

  result = robust.robust_polyfit(nodes, corrupted, jnp.asarray([-0.5, 0.3]), degree, num_errors, mask)
  if num_bad > num_errors:
    assert not result.answered and not result.consistent
    return
  assert result.answered
  np.testing.assert_array_equal(result.rejected, bad)
  expected = polyfit_reference(nodes, np.asarray([-0.5, 0.3]), degree, mask & ~bad) @ np.where(
      (mask & ~bad)[:, None], honest, 0.0)
  np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-10 * scale)
