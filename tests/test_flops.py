"""load.xla_flops counts every loop by its trip count; hand counts from shapes agree.

XLA's cost analysis alone counts a while loop's body once (``count_loops=False``
keeps that figure, and the tests show it is short). Hand counts are written
from the shapes as the code computes them: a multiply-add is 2 FLOPs, an
elementwise operation (compare, select, multiply, divide) is 1 per element
(transcendentals are not FLOPs for XLA), and the loop of a routine runs its
body once per column. Sizes are chosen so that the terms written out
dominate; the tolerance is a few percent.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from flax import nnx

from jaxcoded import linalg, load, models, schemes
from jaxcoded.interp import matrices
from jaxcoded.schemes import learned

f32 = jnp.float32
Shape = jax.ShapeDtypeStruct


def _near(counted: float, hand: float, rtol: float = 0.03) -> bool:
  if abs(counted - hand) > rtol * hand:
    print(f"counted {counted:,.0f}, by hand {hand:,.0f}: {counted / hand - 1:+.1%}")
    return False
  return True


# ---------------------------------------------------------------------------
# Loops.


@pytest.mark.parametrize("trips", [1, 3, 10])
def test_fori_loop_of_matmuls_counts_each_trip(trips):
  a = Shape((20, 20), f32)
  one = load.xla_flops(lambda a: a @ a, a)
  assert one == 2 * 20**3
  looped = lambda a: jax.lax.fori_loop(0, trips, lambda i, x: x @ a, a)  # noqa: E731
  # The loop counter adds one FLOP per trip.
  assert load.xla_flops(looped, a) == pytest.approx(trips * one, abs=trips + 1)
  assert load.xla_flops(looped, a, compiled=True) == pytest.approx(trips * one, abs=trips + 1)
  # XLA alone counts the body once, whatever the trip count.
  assert load.xla_flops(looped, a, count_loops=False) == pytest.approx(one, abs=2)


def test_nested_vmapped_and_scanned_loops():
  a = Shape((20, 20), f32)
  one = 2 * 20**3
  nested = lambda a: jax.lax.fori_loop(  # noqa: E731
      0, 3, lambda i, x: jax.lax.fori_loop(0, 4, lambda j, y: y @ a, x), a)
  assert load.xla_flops(nested, a) == pytest.approx(12 * one, rel=1e-3)
  batched = jax.vmap(lambda b: jax.lax.fori_loop(0, 5, lambda i, x: x @ b, b))
  assert load.xla_flops(batched, Shape((2, 20, 20), f32)) == pytest.approx(10 * one, rel=1e-3)
  over_xs = lambda a, xs: jax.lax.scan(lambda c, x: (c @ x, None), a, xs)[0]  # noqa: E731
  assert load.xla_flops(over_xs, a, Shape((7, 20, 20), f32)) == pytest.approx(7 * one, rel=1e-3)
  in_cond = lambda p, a: jax.lax.cond(  # noqa: E731
      p, lambda a: jax.lax.fori_loop(0, 6, lambda i, x: x @ a, a), lambda a: a, a)
  assert load.xla_flops(in_cond, Shape((), jnp.bool_), a) == pytest.approx(6 * one, rel=1e-3)
  assert load.xla_flops(lambda a: jax.lax.fori_loop(0, 0, lambda i, x: x @ a, a), a) == 0


def test_uncountable_programs_raise():
  a = Shape((20, 20), f32)
  with pytest.raises(ValueError, match="trip count"):
    load.xla_flops(lambda a, n: jax.lax.fori_loop(0, n, lambda i, x: x @ a, a), a,
                   Shape((), jnp.int32))
  with pytest.raises(ValueError, match="lapack"):
    load.xla_flops(jnp.linalg.qr, a)


# ---------------------------------------------------------------------------
# The loops of jaxcoded.linalg and the Chebyshev recurrence.


def _reflect_flops(m: int, n: int, columns: int) -> int:
  """One Householder step on an (m, columns) array with n reflectors' worth of masks.

  v @ r (2 m c), the masked projection (compare + select, 2 c), the update
  r - 2 outer(v, p) (3 m c), and about 12 m for the reflector itself.
  """
  del n
  return 5 * m * columns + 2 * columns + 12 * m


def _qr_hand(m: int, n: int) -> int:
  """householder_qr: n reflections of (m, n), then n products accumulating Q (5 m n each)."""
  return n * _reflect_flops(m, n, n) + n * 5 * m * n


def _solve_hand(n: int, t: int) -> int:
  """solve_upper_triangular_right, (t, n) right-hand sides: per column a (t, n) @ (n,) product."""
  return n * (2 * t * n + 2 * t + 2 * n)


def _lstsq_hand(m: int, n: int, p: int) -> int:
  """householder_lstsq: n reflections of [a | b] (m, n + p), n back-substitution rows (2 n p)."""
  return n * _reflect_flops(m, n, n + p) + n * (2 * n * p + 2 * p + 2 * n)


def test_linalg_loops_match_hand_counts():
  assert _near(load.xla_flops(linalg.householder_qr, Shape((48, 40), f32)), _qr_hand(48, 40))
  assert _near(load.xla_flops(linalg.householder_lstsq, Shape((12, 10), f32),
                              Shape((12, 1000), f32)), _lstsq_hand(12, 10, 1000))
  assert _near(load.xla_flops(linalg.solve_upper_triangular_right, Shape((40, 40), f32),
                              Shape((100, 40), f32)), _solve_hand(40, 100))
  # XLA alone sees one column of each loop.
  once = load.xla_flops(linalg.householder_qr, Shape((48, 40), f32), count_loops=False)
  assert once < _qr_hand(48, 40) / 20


def test_chebyshev_recurrence_scan():
  # T_{k+1} = 2 x T_k - T_{k-1}: three operations per point and step, d - 1 steps.
  counted = load.xla_flops(lambda x: matrices._chebyshev_vandermonde(x, 30), Shape((2000,), f32))
  assert _near(counted, 3 * 2000 * 29)


# ---------------------------------------------------------------------------
# The base classifier.


def _same_taps(size: int, kernel: int) -> int:
  """Kernel taps inside the image summed over output positions of one axis ('SAME')."""
  half = kernel // 2
  return sum(min(i + half, size - 1) - max(i - half, 0) + 1 for i in range(size))


def _lenet5_hand(features=(6, 16), hidden=(120, 84), classes=10) -> int:
  """conv1 5x5 SAME 1 -> c1 on 28 x 28 (taps outside the image are no work),
  conv2 5x5 VALID c1 -> c2 on 14 x 14, dense 25 c2 -> h1 -> h2 -> classes: 2 per
  multiply-add; bias and ReLU per hidden output (2), 2x2 max-pools (3
  comparisons per output), the logits' bias."""
  c1, c2 = features
  h1, h2 = hidden
  macs = (_same_taps(28, 5) ** 2 * c1 + 10 * 10 * c2 * 25 * c1 + 25 * c2 * h1 + h1 * h2
          + h2 * classes)
  elementwise = (2 * (28 * 28 * c1 + 10 * 10 * c2 + h1 + h2) + classes
                 + 3 * (14 * 14 * c1 + 5 * 5 * c2))
  return 2 * macs + elementwise


def test_lenet5_hand_count():
  assert _near(models.flops_per_example("lenet5"), _lenet5_hand(), rtol=0.02)


def test_flops_per_example_honours_model_kwargs():
  options = ml_collections.ConfigDict({"features": (12, 40), "hidden": (100, 50)})
  wide = models.flops_per_example("lenet5", model_kwargs=options)
  assert _near(wide, _lenet5_hand((12, 40), (100, 50)), rtol=0.02)
  assert wide > 2 * models.flops_per_example("lenet5")
  # The configs' own options (the defaults) give the default count.
  default = ml_collections.ConfigDict({"features": (6, 16), "hidden": (120, 84)})
  assert models.flops_per_example("lenet5", model_kwargs=default) == models.flops_per_example(
      "lenet5")
  assert models.flops_per_example("lenet5", model_kwargs={"features": (6, 16)}, num_classes=3) < (
      models.flops_per_example("lenet5"))
  with pytest.raises(ValueError, match="by name"):
    models.flops_per_example(models.create("lenet5", rngs=nnx.Rngs(0)), model_kwargs=options)


# ---------------------------------------------------------------------------
# The codes, at the shapes they serve.

IMAGE = (28, 28, 1)
PIXELS = math.prod(IMAGE)


def _encode_flops(code, shape=IMAGE):
  return load.xla_flops(code.encode, Shape((code.num_queries, *shape), f32))


def _decode_flops(code, width):
  n = code.num_workers
  return load.xla_flops(lambda y, m: code.decode(y, m).values, Shape((n, width), f32),
                        Shape((n,), jnp.bool_))


def _apply_hand(n: int, k: int, p: int, multiply_add: bool) -> int:
  """(n, k) matrix on (k, p) values: k products, k - 1 sums and k selects per output column
  (the multiply-add form); or the GEMM (2 n k p) and, in the dearer branch of its guard,
  the select that silences unused rows (k p)."""
  return (2 * k - 1) * n * p + k * p if multiply_add else 2 * n * k * p + k * p


def _erasure_hand(n: int, p: int) -> int:
  """Scheme.decode's finiteness test of the (n, p) outputs: about 3 per entry."""
  return 3 * n * p


@pytest.mark.parametrize("code_class", [schemes.BerrutCode, schemes.LagrangeCode])
def test_fixed_code_encode(code_class):
  code = code_class.create(8, 2, dtype=f32)
  n, k = code.num_workers, code.num_queries
  assert _near(_encode_flops(code), _apply_hand(n, k, PIXELS, multiply_add=True))
  assert _near(_encode_flops(code, (PIXELS,)), _apply_hand(n, k, PIXELS, multiply_add=False))


def test_berrut_decode():
  # Outputs silenced and weighted (2 N p), one GEMM of the (K, N) Cauchy
  # matrix with [w y | w] (2 K N (p + 1)); XLA counts a conditional as its
  # dearer branch, the one for targets on a node: a second GEMM of the same
  # shape and 2 K p selects and quotients; masks of the result (2 K p); the
  # erasure test.
  code = schemes.BerrutCode.create(8, 2, dtype=f32)
  n, k, p = code.num_workers, code.num_queries, 1000
  hand = 2 * 2 * k * n * (p + 1) + 2 * n * p + 4 * k * p + _erasure_hand(n, p)
  assert _near(_decode_flops(code, p), hand)


def test_lcc_decode():
  # Degree-(K - 1) fit through N outputs: householder_lstsq of the (N, K)
  # Chebyshev design with p right-hand sides, then (K, K) @ (K, p), masks.
  code = schemes.LagrangeCode.create(8, 2, dtype=f32)
  n, k, p = code.num_workers, code.num_queries, 1000
  hand = _lstsq_hand(n, k, p) + 2 * k * k * p + n * p + 2 * k * p + _erasure_hand(n, p)
  counted = _decode_flops(code, p)
  assert _near(counted, hand)
  assert load.xla_flops(
      lambda y, m: code.decode(y, m).values, Shape((n, p), f32), Shape((n,), jnp.bool_),
      count_loops=False) < hand / 2  # XLA alone: one column of each loop


def _spline_loops_hand(nodes: int, targets: int) -> int:
  """The loops of smoothing_spline_matrix: QR of the (M, M) bordered system, M = 2 nodes - 2,
  and back substitution with ``targets`` right-hand sides; then Q times the result."""
  size = 2 * nodes - 2
  return _qr_hand(size, size) + _solve_hand(size, targets) + 2 * size * size * targets


def test_spline_encode_and_decode():
  code = schemes.SplineCode.create(8, 2, encoder_smoothing=1e-3, decoder_smoothing=1e-3,
                                   dtype=f32)
  n, k, p = code.num_workers, code.num_queries, 1000
  encode, decode = _encode_flops(code), _decode_flops(code, p)
  # The loops: every iteration after the first is what XLA alone leaves out;
  # their count is the loops' hand count times (M - 1) / M (three loops of M
  # iterations each, the Q product outside them).
  once_encode = load.xla_flops(code.encode, Shape((k, *IMAGE), f32), count_loops=False)
  once_decode = load.xla_flops(lambda y, m: code.decode(y, m).values, Shape((n, p), f32),
                               Shape((n,), jnp.bool_), count_loops=False)
  for counted, once, nodes, targets in ((encode, once_encode, k, n), (decode, once_decode, n, k)):
    size = 2 * nodes - 2
    loops = _qr_hand(size, size) + _solve_hand(size, targets)
    assert _near(counted - once, loops * (size - 1) / size, rtol=0.05)
  # In all: the loops, Q times the solution, the product with the data; the
  # assembly and equilibration of the bordered system (O(M^2) elementwise
  # work, not written out here) make up the rest: within 15%.
  assert _near(encode, _spline_loops_hand(k, n) + _apply_hand(n, k, PIXELS, True), rtol=0.15)
  assert _near(decode, _spline_loops_hand(n, k) + 2 * k * n * p + n * p + _erasure_hand(n, p),
               rtol=0.15)


@pytest.fixture(scope="module")
def learned_code():
  return learned.PolynomialCode.create(
      4, 6, (8, 8, 1), 10, encoder_degree=1, worker_features=(8,), worker_out=64,
      head_hidden=256, rngs=nnx.Rngs(0),
  )


def test_learned_encode(learned_code):
  code = learned_code
  k, n = code.num_queries, code.num_workers
  coefficients = jax.eval_shape(code.coefficients, Shape((k, 8, 8, 1), f32))
  j, size = coefficients.shape[0], math.prod(coefficients.shape[1:])
  # Mixing: K products and K - 1 sums per coefficient entry; then the (N, J)
  # power basis on the (J, size) coefficients as one GEMM (and its guard).
  hand = (2 * k - 1) * j * size + _apply_hand(n, j, size, multiply_add=False)
  assert _near(load.xla_flops(code.encode, Shape((k, 8, 8, 1), f32)), hand)


def _poly_cnn_hand(network, shape) -> int:
  """A coders.poly_cnn on one (H, W, C) input, layer by layer from the parameters' shapes.

  3x3 'SAME' convolutions (taps inside the map; each group's kernel) and
  their bias; x + a x^2 (3 per entry); 2x2 average pools (3 sums and a
  division per output); the final (grouped) linear layer and its bias.
  """
  from jaxcoded import coders  # pylint: disable=g-import-not-at-top
  height, width, channels = shape
  total = 0
  for layer in network.layers:
    if isinstance(layer, coders.PolyConv):
      convs = [layer.conv] if layer.groups == 1 else list(layer.convs)
      kh, kw, cin, cout = convs[0].kernel.shape
      taps = _same_taps(height, kh) * _same_taps(width, kw)
      channels = cout * len(convs)
      total += len(convs) * 2 * taps * cin * cout + height * width * channels
    elif isinstance(layer, coders.ScaledPower):
      total += 3 * height * width * channels
    elif isinstance(layer, coders.AvgPool):
      height, width = height // layer.window, width // layer.window
      total += 4 * height * width * channels
    elif isinstance(layer, coders.PolyLinear):
      fan_in, out = layer.linear.kernel.shape
      total += 2 * fan_in * out + out
    elif isinstance(layer, coders.GroupedLinear):
      groups, fan_in, out = layer.kernel.shape
      total += 2 * groups * fan_in * out + groups * out
    else:
      assert isinstance(layer, coders.Flatten), type(layer)
  return total


def test_learned_worker(learned_code):
  worker_fn, params = learned_code.worker_fn()
  shape = tuple(learned_code.encoder.coded_shape)
  counted = load.xla_flops(lambda x: worker_fn(params, x), Shape(shape, f32))
  assert _near(counted, _poly_cnn_hand(learned_code.worker, shape))


def test_learned_decode(learned_code):
  code = learned_code
  n, k, r = code.num_workers, code.num_queries, code.interpolation_threshold
  d, hidden, classes = 64, 256, 10
  # Degree-(R - 1) fit of the (N, D) outputs (householder_lstsq) evaluated at
  # the K data points, masks; the head: (K, D) x (K, D, H) per query, bias,
  # GELU (about 8 operations per entry), (K, H) @ (H, C) and bias.
  fit = _lstsq_hand(n, r, d) + 2 * k * r * d + n * d + 2 * k * d
  head = 2 * k * d * hidden + k * hidden + 8 * k * hidden + 2 * k * hidden * classes + k * classes
  counted = _decode_flops(code, d)
  assert _near(counted, fit + head, rtol=0.05)
