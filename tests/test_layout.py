"""Coding matrices compile to one GEMM with no transposes of the data (docs/design.md section 3).

Each test inspects the optimised HLO of a batched encode or decode: exactly
one ``dot`` that reads the data, and no ``transpose`` of an operand as large
as the data. ``previous_apply`` (the einsum formulation replaced by
``interp.apply_matrix``'s GEMM layout) is checked to fail the same test, so
the test can fail.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcoded import interp, schemes
from jaxcoded.interp import apply as interp_apply
from jaxcoded.schemes import learned
from tests.test_interp_apply import _moves_of_data

GROUPS = 32


def previous_apply(matrix, values):
  """The formulation before the GEMM layout: a vmapped einsum along the leading axis."""
  return jnp.einsum("tn,n...->t...", matrix, values)


def _hlo(fn, *args) -> str:
  return jax.jit(fn).lower(*args).compile().as_text()


def _data_transposes(hlo: str, min_elements: int) -> list[str]:
  """Transposes (and transposing copies) of arrays with at least ``min_elements`` entries."""
  found = []
  for line in hlo.splitlines():
    match = re.search(r"= f(?:32|64)\[([\d,]*)\]\{[\d,]*\} (transpose)\(", line)
    if match and np.prod([int(d) for d in match.group(1).split(",") if d]) >= min_elements:
      found.append(line.strip())
  return found


def _dots(hlo: str) -> list[str]:
  return [line.strip() for line in hlo.splitlines() if re.search(r" dot\(", line)]


def _check_gemm_layout(hlo: str, data_elements: int) -> None:
  assert not _data_transposes(hlo, data_elements // 4), _data_transposes(hlo, data_elements // 4)
  dots = _dots(hlo)
  # One product of the data (a lax.cond may hold it in both of its branches,
  # with and without silencing unused rows): all dots have the same shape.
  shapes = {re.search(r"= (f\d+\[[\d,]*\])", d).group(1) for d in dots}
  assert len(shapes) == 1 and len(dots) <= 2, dots


# (H, W, 1) images encode without a GEMM (tests/test_interp_apply.py checks that form).
@pytest.mark.parametrize("shape", [(28, 28), (6, 6, 3)])
def test_encode_is_one_gemm_without_transposes(shape):
  code = schemes.BerrutCode.create(8, 3, dtype=jnp.float32)
  queries = jnp.zeros((GROUPS, 8, *shape), jnp.float32)
  _check_gemm_layout(_hlo(jax.vmap(code.encode), queries), queries.size)


def _encode_hlo(groups: int, k: int, shape: tuple[int, ...], gemm_route: bool = False) -> str:
  code = schemes.BerrutCode.create(k, k // 4, dtype=jnp.float32)
  queries = jax.ShapeDtypeStruct((groups, k, *shape), jnp.float32)  # lowered, never allocated
  if gemm_route:  # apply_matrix's batched dot at every size
    matrix = interp.berrut_matrix(code.data_points, code.worker_points)
    encode = lambda q: interp_apply._apply_dot(matrix, q.reshape(k, -1)).reshape((-1, *shape))
  else:
    encode = code.encode
  return _hlo(jax.vmap(encode), queries)


# The bench's sizes (bench/bench_interp.py, K = 8 and 12, G = 256): at least
# 2^20 query entries through a matrix of at most 16 columns are encoded as
# multiply-adds in one loop fusion, which XLA runs on every core (its batched
# dot runs on one): no dot, no transpose or copy of the data, and the coded
# queries written once, by the loop (in each branch of the guard's lax.cond).
@pytest.mark.parametrize("k,shape", [(12, (32, 32, 3)), (12, (784,)), (8, (28, 28)),
                                     (8, (32, 32, 3))])
def test_large_encode_is_one_loop_without_transposes(k, shape):
  groups, n, size = 256, {8: 10, 12: 15}[k], int(np.prod(shape))
  hlo = _encode_hlo(groups, k, shape)
  elements = groups * k * size
  assert not _data_transposes(hlo, elements // 4), _data_transposes(hlo, elements // 4)
  assert not _moves_of_data(hlo, elements // 4), _moves_of_data(hlo, elements // 4)
  assert not _dots(hlo), _dots(hlo)
  writers = [l for l in hlo.splitlines()
             if re.search(rf"= f32\[{groups},{n},{size}\]\{{[\d,]*\}} fusion\(.*kind=kLoop", l)]
  assert 1 <= len(writers) <= 2, writers
  entry = hlo[hlo.index("ENTRY"):]
  assert re.search(rf"ROOT .*= f32\[{groups},{n},{','.join(map(str, shape))}\]\S* "
                   r"(bitcast|get-tuple-element)\(", entry), entry[-400:]


def test_gemm_route_of_a_large_encode_is_a_batched_dot():
  # The check above can fail: the GEMM route at the same size is a dot.
  hlo = _encode_hlo(256, 12, (32, 32, 3), gemm_route=True)
  _check_gemm_layout(hlo, 256 * 12 * 3072)
  assert _dots(hlo)


# Below 2^20 entries (G = 16 in the bench) the batched dot is as fast as the
# GEMM or faster, and stays.
@pytest.mark.parametrize("k,shape", [(12, (32, 32, 3)), (12, (784,))])
def test_small_encode_stays_one_batched_gemm(k, shape):
  hlo = _encode_hlo(16, k, shape)
  _check_gemm_layout(hlo, 16 * k * int(np.prod(shape)))
  assert _dots(hlo) and all("lhs_batch_dims={0}" in d for d in _dots(hlo))


def test_previous_formulation_fails_the_layout_check():
  code = schemes.BerrutCode.create(8, 3, dtype=jnp.float32)
  matrix = interp.berrut_matrix(code.data_points, code.worker_points)
  queries = jnp.zeros((GROUPS, 8, 6, 6, 3), jnp.float32)
  hlo = _hlo(jax.vmap(lambda q: previous_apply(matrix, q)), queries)
  with pytest.raises(AssertionError):
    _check_gemm_layout(hlo, queries.size)


def test_decode_with_a_matrix_per_group_is_one_batched_gemm():
  matrices = jnp.ones((GROUPS, 4, 11), jnp.float32)
  values = jnp.zeros((GROUPS, 11, 5, 7), jnp.float32)
  hlo = _hlo(jax.vmap(interp.apply_matrix), matrices, values)
  _check_gemm_layout(hlo, values.size)
  assert all("lhs_batch_dims={0}" in d for d in _dots(hlo))


def _per_group_matrix_math(hlo: str, shape: str) -> list[str]:
  """Arithmetic producing an array of ``shape`` (broadcasts of a shared matrix are fine)."""
  ops = ("divide(", "subtract(", "multiply(", "select(", "and(", "convert(", "compare(")
  return [l.strip() for l in hlo.splitlines() if "=" in l and f"[{shape}]" in l.split("=", 1)[1][:40]
          and any(op in l for op in ops)]


@pytest.mark.parametrize("previous", [False, True])
def test_berrut_decode_builds_no_matrix_per_group(previous):
  code = schemes.BerrutCode.create(8, 3, dtype=jnp.float32)
  outputs = jnp.zeros((GROUPS, code.num_workers, 10), jnp.float32)
  masks = jnp.ones((GROUPS, code.num_workers), bool).at[:, 2].set(False)
  if previous:  # the matrix of each group's mask, then the product: fails the check
    decode = lambda y, m: interp.apply_matrix(code.decoding_matrix(m), y)
  else:
    decode = lambda y, m: code.decode(y, m).values
  hlo = _hlo(jax.vmap(decode), outputs, masks)
  assert not _data_transposes(hlo, outputs.size // 4)
  # No (G, K, N) array is computed: the decoder's matrices are shared by the groups.
  found = _per_group_matrix_math(hlo, f"{GROUPS},8,11")
  assert bool(found) == previous, found


def test_learned_encoder_is_one_loop_and_one_gemm():
  code = learned.PolynomialCode.create(
      4, 6, (8, 8, 1), 10, encoder_degree=1, worker_features=(4,), worker_out=8,
      rngs=nnx.Rngs(0),
  )
  queries = jnp.zeros((GROUPS, 4, 8, 8, 1), jnp.float32)
  hlo = _hlo(jax.vmap(code.encode), queries)
  coded = GROUPS * code.num_workers * int(np.prod(code.encoder.coded_shape))
  # The encoder's feature map is a 2x2 space-to-depth of each query: that
  # rearrangement (a transpose of the (H/2, 2, W/2, 2, C) view, fused into the
  # coefficients' loop) is the encoder's own, not the coding's; take it out.
  space_to_depth = re.compile(r"transpose\(.*dimensions=\{0,1,2,4,3,5,6\}")
  hlo = "\n".join(l for l in hlo.splitlines() if not space_to_depth.search(l))
  _check_gemm_layout(hlo, coded)


def test_previous_learned_encoder_fails_the_layout_check():
  code = learned.PolynomialCode.create(
      4, 6, (8, 8, 1), 10, encoder_degree=1, worker_features=(4,), worker_out=8,
      rngs=nnx.Rngs(0),
  )
  encoder = code.encoder

  def previous(queries):
    phi = jnp.tile(encoder.features(queries), (1, 1, 1, encoder.num_groups))
    coefficients = jnp.einsum("jmc,mhwc->jhwc", encoder.mixing[...], phi)
    at = code.worker_points[...]
    power = at[:, None] ** jnp.arange(encoder.degree + 1, dtype=at.dtype)[None, :]
    return jnp.einsum("tj,j...->t...", power, coefficients)

  queries = jnp.zeros((GROUPS, 4, 8, 8, 1), jnp.float32)
  hlo = _hlo(jax.vmap(previous), queries)
  coded = GROUPS * code.num_workers * int(np.prod(code.encoder.coded_shape))
  space_to_depth = re.compile(r"transpose\(.*dimensions=\{0,1,2,4,3,5,6\}")
  hlo = "\n".join(l for l in hlo.splitlines() if not space_to_depth.search(l))
  with pytest.raises(AssertionError):
    _check_gemm_layout(hlo, coded)
