"""interp.apply_matrix: values against float64 numpy, and the optimised HLO of a batched encode.

The multiply-add forms (a matrix of at most 16 columns on values whose
trailing shape has an axis of size 1, or shared by a vmapped batch of at
least 2^20 values) and the GEMM route must give the same numbers; the HLO
tests check that a vmapped Berrut encode of (G, K, 28, 28, 1)
and (G, K, 32, 32, 3) queries moves no data around its product (no transpose
or copy of an array as large as the data), and that the GEMM route on
(28, 28, 1) images does copy its result (so the check can fail).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcoded import interp, schemes
from jaxcoded.interp import apply as apply_lib

GROUPS = 16


def _reference(matrix, values):
  """float64 numpy: sum_n matrix[..., t, n] values[..., n, ...], unused rows never read."""
  matrix = np.asarray(matrix, np.float64)
  values = np.asarray(values, np.float64)
  used = np.any(matrix != 0, axis=-2)
  values = np.where(used.reshape(used.shape + (1,) * (values.ndim - used.ndim)), values, 0.0)
  flat = values.reshape(values.shape[: matrix.ndim - 1] + (-1,))
  return (matrix @ flat).reshape(matrix.shape[:-1] + values.shape[matrix.ndim - 1 :])


def _gemm_route(matrix, values):
  """apply_matrix's GEMM route for any layout and size: flatten, one dot, reshape."""
  flat = values.reshape(values.shape[:1] + (-1,))
  return apply_lib._apply_dot(matrix, flat).reshape(matrix.shape[:1] + values.shape[1:])


@pytest.mark.parametrize("shape", [(5, 4, 1), (28, 28, 1), (3, 1, 2), (6, 6, 3), (7, 7), (9,)])
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-6), (jnp.float64, 1e-13)])
def test_matches_float64_reference(shape, dtype, tol):
  rng = np.random.default_rng(sum(shape))
  matrix = rng.normal(size=(11, 8))
  matrix[:, 2] = 0.0  # an unused column: its row holds NaN and must not be read
  values = rng.normal(size=(8, *shape))
  poisoned = values.copy()
  poisoned[2] = np.nan
  expected = _reference(matrix, values)
  out = interp.apply_matrix(jnp.asarray(matrix, dtype), jnp.asarray(poisoned, dtype))
  assert out.dtype == dtype and out.shape == (11, *shape)
  np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * np.abs(expected).max())


@pytest.mark.parametrize("shape", [(5, 4, 1), (6, 6, 3)])
def test_vmapped_shared_and_per_group_matrices(shape):
  rng = np.random.default_rng(1)
  shared = jnp.asarray(rng.normal(size=(10, 8)), jnp.float32)
  per_group = jnp.asarray(rng.normal(size=(GROUPS, 10, 8)), jnp.float32)
  per_group = per_group.at[3, :, 5].set(0.0)  # group 3 does not use row 5
  values = jnp.asarray(rng.normal(size=(GROUPS, 8, *shape)), jnp.float32)
  values = values.at[3, 5].set(jnp.inf)
  clean = values.at[3, 5].set(0.0)
  out = jax.jit(jax.vmap(lambda v: interp.apply_matrix(shared, v)))(clean)
  np.testing.assert_allclose(out, _reference(np.broadcast_to(shared, (GROUPS, 10, 8)), clean),
                             rtol=1e-5, atol=1e-5)
  out = jax.jit(jax.vmap(interp.apply_matrix))(per_group, values)
  assert np.isfinite(out).all()
  np.testing.assert_allclose(out, _reference(per_group, values), rtol=1e-5, atol=1e-5)
  # The GEMM route gives the same numbers.
  routed = jax.jit(jax.vmap(_gemm_route))(per_group, values)
  np.testing.assert_allclose(out, routed, rtol=1e-5, atol=1e-5)


def test_multiply_add_form_is_taken_only_where_it_pays():
  assert apply_lib._use_multiply_add(8, (28, 28, 1))
  assert apply_lib._use_multiply_add(16, (1, 28, 28))
  assert not apply_lib._use_multiply_add(17, (28, 28, 1))  # many columns: the GEMM
  assert not apply_lib._use_multiply_add(8, (28, 28))  # the reshape is a bitcast
  assert not apply_lib._use_multiply_add(8, (1,))
  assert not apply_lib._use_multiply_add(0, (28, 28, 1))


def test_shared_multiply_add_is_taken_only_for_large_batches():
  big = apply_lib._SHARED_MULTIPLY_ADD_MIN_ELEMENTS
  assert apply_lib._use_shared_multiply_add(12, 256 * 12 * 32 * 32 * 3)
  assert apply_lib._use_shared_multiply_add(16, big)
  assert not apply_lib._use_shared_multiply_add(12, 16 * 12 * 32 * 32 * 3)  # in cache: the dot
  assert not apply_lib._use_shared_multiply_add(17, 100 * big)  # many columns: the GEMM
  assert not apply_lib._use_shared_multiply_add(0, big)


@pytest.mark.parametrize("trailing", [(1024,), (16, 16, 4)])
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-6), (jnp.float64, 1e-13)])
@pytest.mark.parametrize("unused", [False, True])
def test_large_vmapped_batch_with_a_shared_matrix(trailing, dtype, tol, unused):
  # 128 groups of (8, 1024) values: 2^20 entries, the multiply-add route.
  rng = np.random.default_rng(3)
  matrix = rng.normal(size=(11, 8))
  values = rng.normal(size=(128, 8, *trailing))
  assert apply_lib._use_shared_multiply_add(8, values.size)
  poisoned = values.copy()
  if unused:  # an unused column: its rows hold NaN and must not be read
    matrix[:, 5] = 0.0
    poisoned[:, 5] = np.nan
  expected = _reference(np.broadcast_to(matrix, (128, 11, 8)), values)
  shared, batch = jnp.asarray(matrix, dtype), jnp.asarray(poisoned, dtype)
  out = jax.jit(jax.vmap(lambda v: interp.apply_matrix(shared, v)))(batch)
  assert out.dtype == dtype and out.shape == (128, 11, *trailing)
  np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * np.abs(expected).max())
  # The batched dot (the GEMM route) gives the same numbers.
  routed = jax.jit(jax.vmap(lambda v: _gemm_route(shared, v)))(batch)
  np.testing.assert_allclose(out, routed, rtol=tol, atol=tol * np.abs(expected).max())
  if not unused:  # the decoders' unguarded, full-precision product takes the same route
    flat = batch.reshape(128, 8, -1)
    plain = jax.jit(jax.vmap(lambda v: apply_lib._apply_unguarded(shared, v)))(flat)
    np.testing.assert_allclose(plain.reshape(out.shape), expected, rtol=tol,
                               atol=tol * np.abs(expected).max())


def test_gradients_of_the_shared_multiply_add(monkeypatch):
  monkeypatch.setattr(apply_lib, "_SHARED_MULTIPLY_ADD_MIN_ELEMENTS", 1)  # small operands
  rng = np.random.default_rng(4)
  matrix = jnp.asarray(rng.normal(size=(5, 4)), jnp.float64)
  values = jnp.asarray(rng.normal(size=(3, 4, 6)), jnp.float64)
  batched = jax.vmap(interp.apply_matrix, in_axes=(None, 0))
  np.testing.assert_allclose(batched(matrix, values),
                             _reference(np.broadcast_to(matrix, (3, 5, 4)), values), rtol=1e-13)
  check_grads(batched, (matrix, values), order=2, modes=("fwd", "rev"))


def test_gradients():
  rng = np.random.default_rng(2)
  matrix = jnp.asarray(rng.normal(size=(5, 4)), jnp.float64)  # tests run with x64 (conftest)
  values = jnp.asarray(rng.normal(size=(4, 3, 2, 1)), jnp.float64)
  check_grads(interp.apply_matrix, (matrix, values), order=2, modes=("fwd", "rev"))
  check_grads(jax.vmap(interp.apply_matrix, in_axes=(None, 0)),
              (matrix, jnp.stack([values, 2 * values])), order=1, modes=("rev",))


# ---------------------------------------------------------------------------
# Optimised HLO of a batched encode.


def _hlo(fn, *args) -> str:
  return jax.jit(fn).lower(*args).compile().as_text()


def _moves_of_data(hlo: str, min_elements: int) -> list[str]:
  """Transposes and copies (or fusions named for them) of arrays of >= min_elements entries."""
  found = []
  for line in hlo.splitlines():
    match = re.search(r"%([\w.\-]+) = f(?:32|64)\[([\d,]*)\]\{[\d,]*\} (\w+)\(", line)
    if not match:
      continue
    name, dims, opcode = match.groups()
    size = np.prod([int(d) for d in dims.split(",") if d])
    moves = opcode in ("copy", "transpose") or (
        opcode == "fusion" and re.search(r"copy|transpose", name))
    if moves and size >= min_elements:
      found.append(line.strip())
  return found


def _dots(hlo: str) -> list[str]:
  return [line.strip() for line in hlo.splitlines() if re.search(r" dot\(", line)]


def _loop_fusions_writing(hlo: str, dims: tuple[int, ...]) -> list[str]:
  shape = ",".join(map(str, dims))
  return [line.strip() for line in hlo.splitlines()
          if re.search(rf"= f32\[{shape}\]\{{[\d,]*\}} fusion\(.*kind=kLoop", line)]


def test_encode_of_one_channel_images_is_one_loop_and_moves_no_data():
  code = schemes.BerrutCode.create(8, 2, dtype=jnp.float32)
  queries = jnp.zeros((GROUPS, 8, 28, 28, 1), jnp.float32)
  hlo = _hlo(jax.vmap(code.encode), queries)
  assert not _moves_of_data(hlo, queries.size // 4), _moves_of_data(hlo, queries.size // 4)
  assert not _dots(hlo), _dots(hlo)
  # The coded inputs are written once, by the loop that reads the queries
  # (one in each branch of the guard's lax.cond: with and without silencing).
  writers = _loop_fusions_writing(hlo, (GROUPS, 10, 28, 28, 1))
  assert 1 <= len(writers) <= 2, writers
  entry = hlo[hlo.index("ENTRY"):]
  assert re.search(rf"ROOT .*= f32\[{GROUPS},10,28,28,1\].* (get-tuple-element|fusion)\(", entry)


def test_gemm_route_copies_one_channel_images():
  # The check above can fail: the GEMM's (G, N, 784) result is copied into
  # the (G, N, 28, 28, 1) output.
  code = schemes.BerrutCode.create(8, 2, dtype=jnp.float32)
  matrix = interp.berrut_matrix(code.data_points, code.worker_points)
  queries = jnp.zeros((GROUPS, 8, 28, 28, 1), jnp.float32)
  hlo = _hlo(jax.vmap(lambda q: _gemm_route(matrix, q)), queries)
  assert _moves_of_data(hlo, queries.size // 4)


def test_encode_of_three_channel_images_is_one_gemm_and_moves_no_data():
  code = schemes.BerrutCode.create(8, 2, dtype=jnp.float32)
  queries = jnp.zeros((GROUPS, 8, 32, 32, 3), jnp.float32)
  hlo = _hlo(jax.vmap(code.encode), queries)
  assert not _moves_of_data(hlo, queries.size // 4), _moves_of_data(hlo, queries.size // 4)
  dots = _dots(hlo)
  # One product of the data (the guard's lax.cond holds it in both branches).
  shapes = {re.search(r"= (f\d+\[[\d,]*\])", d).group(1) for d in dots}
  assert shapes == {f"f32[{GROUPS},10,3072]"} and len(dots) <= 2, dots
  assert all("lhs_batch_dims={0}" in d for d in dots)
