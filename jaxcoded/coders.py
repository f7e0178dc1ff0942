"""Flax NNX networks of the learned codes (docs/design.md section 4.6).

Three kinds of network:

  polynomial blocks  ``PolyConv``, ``PolyLinear``, ``ScaledPower``,
                     ``AvgPool``, ``Flatten`` and their composition
                     ``PolySequential``. Each block carries its polynomial
                     ``degree`` in its input (affine maps and pooling 1, a power
                     activation p); a composition multiplies them, so the
                     degree of a worker network is known by construction.
                     ``check_polynomial_degree`` confirms it numerically.
  master networks    ``CoefficientEncoder`` (K queries -> de + 1 coefficient
                     tensors), ``QueryEncoder`` (one image -> one image, for
                     the learned Lagrange code), ``DecoderHead`` (one decoded
                     value per query position -> class logits), and the
                     learned systematic code's ``ParityEncoder``,
                     ``SystematicDecoder`` and ``QuerySketch``. These may be
                     any function: their cost is the master's, and it is
                     accounted for in ``jaxcoded.load``.

A worker network must be a polynomial of its declared degree for the learned
polynomial code to have an exact recovery threshold; anything else (a ReLU,
max-pooling, a normalisation layer) is refused by ``PolySequential`` at
construction and caught by ``check_polynomial_degree`` numerically.

Example:
  >>> from flax import nnx
  >>> from jaxcoded import coders
  >>> h = coders.poly_cnn((4, 4, 8), 16, features=(8,), rngs=nnx.Rngs(0))
  >>> h.degree
  2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

__all__ = [
    "AvgPool",
    "CoefficientEncoder",
    "DecoderHead",
    "Flatten",
    "GroupedLinear",
    "PolyConv",
    "PolyLinear",
    "ParityEncoder",
    "PolySequential",
    "QueryEncoder",
    "QuerySketch",
    "ScaledPower",
    "SpaceToDepth",
    "SystematicDecoder",
    "check_polynomial_degree",
    "frozen_worker_fn",
    "group_lagrange_mixing",
    "poly_cnn",
    "poly_mlp",
    "poly_network",
    "space_to_depth",
]


# ---------------------------------------------------------------------------
# Polynomial building blocks. Each has a static integer ``degree``.


class PolyLinear(nnx.Module):
  """Affine map on the last axis: degree 1."""

  degree = 1

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
    self.linear = nnx.Linear(in_features, out_features, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear(x)


class PolyConv(nnx.Module):
  """Convolution ('SAME' padding) with bias on (..., H, W, C): degree 1.

  ``groups`` > 1 makes it a grouped convolution: channel block g of the
  output sees only channel block g of the input (blocks contiguous).
  """

  degree = 1

  def __init__(
      self, in_features: int, out_features: int, kernel: int = 3, *, groups: int = 1,
      rngs: nnx.Rngs,
  ):
    self.groups = groups
    if groups == 1:
      self.conv = nnx.Conv(in_features, out_features, (kernel, kernel), padding="SAME", rngs=rngs)
      return
    if in_features % groups or out_features % groups:
      raise ValueError(
          f"PolyConv: {in_features} -> {out_features} channels are not multiples of the "
          f"{groups} groups."
      )
    # One plain convolution per group: XLA's CPU convolution with
    # feature_group_count > 1 ran about 10x slower than G separate ones.
    self.convs = nnx.List([
        nnx.Conv(in_features // groups, out_features // groups, (kernel, kernel),
                 padding="SAME", rngs=rngs)
        for _ in range(groups)
    ])

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.groups == 1:
      return self.conv(x)
    parts = jnp.split(x, self.groups, axis=-1)
    return jnp.concatenate([conv(part) for conv, part in zip(self.convs, parts)], axis=-1)


class ScaledPower(nnx.Module):
  """x + alpha * x^p per channel, degree p.

  The linear term keeps the signal path of a linear network; alpha (learned,
  one per channel, initialised small) controls how fast the power grows, so
  the network stays numerically tame without a normalisation layer (which
  would not be polynomial).
  """

  def __init__(self, num_features: int, power: int = 2, scale: float = 0.1):
    if not isinstance(power, int) or power < 1:
      raise ValueError(f"ScaledPower: power must be an integer >= 1, got {power!r}.")
    self.degree = power
    self.alpha = nnx.Param(jnp.full((num_features,), scale, jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.alpha[...].astype(jnp.result_type(x, self.alpha[...]))
    return x + alpha * x**self.degree


class AvgPool(nnx.Module):
  """Average pooling over (H, W) with a square window and stride: degree 1."""

  degree = 1

  def __init__(self, window: int = 2):
    self.window = window

  def __call__(self, x: jax.Array) -> jax.Array:
    w = (self.window, self.window)
    return nnx.avg_pool(x, w, strides=w)


class Flatten(nnx.Module):
  """(..., H, W, C) -> (..., H * W * C): degree 1."""

  degree = 1

  def __call__(self, x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[:-3] + (-1,))


class SpaceToDepth(nnx.Module):
  """Lossless (H, W, C) -> (H / b, W / b, b * b * C) rearrangement: degree 1.

  With ``groups`` G the channels are read as G contiguous blocks and each
  block is rearranged on its own, so the output keeps G contiguous blocks
  (of b * b * C / G channels) for grouped layers after it.
  """

  degree = 1

  def __init__(self, block: int = 2, groups: int = 1):
    self.block = block
    self.groups = groups

  def __call__(self, x: jax.Array) -> jax.Array:
    *lead, height, width, channels = x.shape
    g = self.groups
    x = x.reshape(*lead, height, width, g, channels // g)
    x = jnp.moveaxis(x, -2, 0)  # (G, ..., H, W, C / G)
    x = space_to_depth(x, self.block)
    x = jnp.moveaxis(x, 0, -2)  # (..., H / b, W / b, G, b * b * C / G)
    return x.reshape(*x.shape[:-2], -1)


class GroupedLinear(nnx.Module):
  """Flatten + block-diagonal affine map: (..., H, W, G * C) -> (..., G * D): degree 1.

  Output block g (D = out_features / G values) is an affine map of channel
  block g of the input only, so G independent groups stay independent.
  """

  degree = 1

  def __init__(
      self, input_shape: tuple[int, int, int], out_features: int, groups: int, *,
      rngs: nnx.Rngs,
  ):
    height, width, channels = input_shape
    if channels % groups or out_features % groups:
      raise ValueError(
          f"GroupedLinear: {channels} channels and {out_features} outputs must be multiples "
          f"of the {groups} groups."
      )
    self.groups = groups
    fan_in = height * width * channels // groups
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), (groups, fan_in, out_features // groups)))
    self.bias = nnx.Param(jnp.zeros((out_features,)))

  def __call__(self, x: jax.Array) -> jax.Array:
    *lead, height, width, channels = x.shape
    g = self.groups
    x = x.reshape(*lead, height, width, g, channels // g)
    x = jnp.moveaxis(x, -2, -4).reshape(*lead, g, -1)  # (..., G, H * W * C / G)
    kernel = self.kernel[...].astype(jnp.result_type(x, self.kernel[...]))
    y = jnp.einsum("...gi,gio->...go", x, kernel)
    return y.reshape(*lead, -1) + self.bias[...]


class PolySequential(nnx.Module):
  """A composition of polynomial blocks; its degree is the product of theirs.

  Raises:
    ValueError: a layer that does not declare an integer ``degree`` (a ReLU,
      an ``nnx.Conv`` used directly, a normalisation layer...).
  """

  def __init__(self, *layers: nnx.Module | Callable):
    degree = 1
    for i, layer in enumerate(layers):
      layer_degree = getattr(layer, "degree", None)
      if not isinstance(layer_degree, int) or layer_degree < 1:
        raise ValueError(
            f"PolySequential: layer {i} ({type(layer).__name__}) declares no polynomial degree; "
            "worker networks may only use PolyLinear, PolyConv, ScaledPower, AvgPool, Flatten "
            "or PolySequential blocks."
        )
      degree *= layer_degree
    self.layers = nnx.List(list(layers))
    self.degree = degree

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      x = layer(x)
    return x


def poly_cnn(
    input_shape: tuple[int, int, int],
    out_features: int,
    *,
    features: Sequence[int] = (16, 32),
    kernel: int = 3,
    power: int = 2,
    num_activations: int = 1,
    groups: int = 1,
    space_to_depth: int = 1,
    pools: Sequence[int] | None = None,
    activation_at: Sequence[int] | None = None,
    rngs: nnx.Rngs,
) -> PolySequential:
  """A polynomial CNN: [conv -> (power) -> avg-pool 2] per width, flatten, linear.

  The first ``num_activations`` convolutions are followed by a ``ScaledPower``
  of the given power, so the degree is ``power ** num_activations``. A 2x2
  average pool follows each convolution while the map is at least 2x2.

  Options (the defaults give the network above):
    groups: G > 1 splits the input channels into G contiguous blocks (the
      coded input's query groups) and keeps them apart: grouped convolutions
      (``features`` are totals, multiples of G) and a block-diagonal final
      linear map (``GroupedLinear``), so output block g depends on input
      block g only.
    space_to_depth: b > 1 first rearranges (H, W, C) -> (H/b, W/b, b*b*C)
      (per group), trading resolution for channels.
    pools: the average-pool window after each convolution (1: none);
      None: 2 while the map is at least 2x2.
    activation_at: indices of the convolutions followed by the activation
      (the degree is ``power ** len(activation_at)``); None: the first
      ``num_activations``.

  Args:
    input_shape: (H, W, C) of one coded input.
    out_features: width D of the output vector.
    features: output channels of each convolution.
    kernel: square kernel size.
    power: exponent of the activation.
    num_activations: how many convolutions get an activation (<= len(features)).
    groups, space_to_depth, pools, activation_at: see above.
    rngs: initialisation keys.

  Returns:
    A ``PolySequential`` mapping (..., H, W, C) to (..., D).
  """
  if num_activations > len(features):
    raise ValueError(
        f"poly_cnn: num_activations = {num_activations} exceeds the {len(features)} convolutions."
    )
  if activation_at is None:
    activation_at = range(num_activations)
  activation_at = set(int(i) for i in activation_at)
  if not activation_at <= set(range(len(features))):
    raise ValueError(f"poly_cnn: activation_at {sorted(activation_at)} outside the convolutions.")
  if pools is not None and len(pools) != len(features):
    raise ValueError(f"poly_cnn: {len(pools)} pools for {len(features)} convolutions.")
  height, width, channels = input_shape
  layers = []
  if space_to_depth > 1:
    layers.append(SpaceToDepth(space_to_depth, groups))
    height, width = height // space_to_depth, width // space_to_depth
    channels *= space_to_depth**2
  for i, f in enumerate(features):
    layers.append(PolyConv(channels, f, kernel, groups=groups, rngs=rngs))
    if i in activation_at:
      layers.append(ScaledPower(f, power))
    window = (2 if height >= 2 and width >= 2 else 1) if pools is None else int(pools[i])
    if window > 1:
      layers.append(AvgPool(window))
      height, width = height // window, width // window
    channels = f
  if groups > 1:
    layers.append(GroupedLinear((height, width, channels), out_features, groups, rngs=rngs))
  else:
    layers += [Flatten(), PolyLinear(height * width * channels, out_features, rngs=rngs)]
  return PolySequential(*layers)


def poly_mlp(
    in_features: int,
    out_features: int,
    *,
    features: Sequence[int] = (16, 32),
    power: int = 2,
    num_activations: int = 1,
    activation_at: Sequence[int] | None = None,
    rngs: nnx.Rngs,
) -> PolySequential:
  """A polynomial MLP for coded feature vectors: [linear -> (power)] per width, then linear.

  The vector counterpart of :func:`poly_cnn` (same ``features``, ``power``,
  ``num_activations`` and ``activation_at``; degree ``power ** activations``).
  """
  if activation_at is None:
    activation_at = range(num_activations)
  activation_at = set(int(i) for i in activation_at)
  if not activation_at <= set(range(len(features))):
    raise ValueError(f"poly_mlp: activation_at {sorted(activation_at)} outside the layers.")
  layers, width = [], in_features
  for i, f in enumerate(features):
    layers.append(PolyLinear(width, f, rngs=rngs))
    if i in activation_at:
      layers.append(ScaledPower(f, power))
    width = f
  layers.append(PolyLinear(width, out_features, rngs=rngs))
  return PolySequential(*layers)


def poly_network(
    input_shape: tuple[int, ...], out_features: int, *, kernel: int = 3, groups: int = 1,
    space_to_depth: int = 1, pools: Sequence[int] | None = None, **options,
) -> PolySequential:
  """The worker network for coded inputs of ``input_shape``: ``poly_cnn`` for (H, W, C),
  ``poly_mlp`` for (D,) (where the image-only options do not apply)."""
  if len(input_shape) == 3:
    return poly_cnn(input_shape, out_features, kernel=kernel, groups=groups,
                    space_to_depth=space_to_depth, pools=pools, **options)
  if len(input_shape) == 1:
    return poly_mlp(input_shape[0], out_features, **options)
  raise ValueError(f"poly_network: coded inputs must be (H, W, C) or (D,), got {input_shape}.")


# ---------------------------------------------------------------------------
# Numerical degree check.


def _relative_fit_residual(t: np.ndarray, y: np.ndarray, degree: int) -> float:
  """Max residual of the least-squares Chebyshev fit of ``degree``, relative to y's spread."""
  coeffs = np.polynomial.chebyshev.chebfit(t, y, degree)
  residual = y - np.polynomial.chebyshev.chebval(t, coeffs).T
  scale = np.max(np.abs(y - y.mean(axis=0))) + np.finfo(np.float64).tiny
  return float(np.max(np.abs(residual)) / scale)


def check_polynomial_degree(
    fn: Callable[[jax.Array], jax.Array],
    example_input: ArrayLike,
    degree: int,
    key: jax.Array,
    *,
    num_lines: int = 3,
    strict: bool = True,
) -> float:
  """Checks numerically that ``fn`` is a polynomial of degree ``degree`` in its input.

  Along random lines x(t) = x0 + t v (t at degree + 4 Chebyshev points in
  [-1, 1], v with the scale of x0), every output coordinate of fn must be fit
  exactly by a polynomial of degree ``degree`` in t (the restriction of a
  degree-d polynomial to a line has degree <= d). With ``strict``, the fit of
  degree - 1 must also fail on some line, i.e. the degree is not lower.
  Computed in float64 when JAX's x64 mode is on (tolerance 1e-7 relative to
  the outputs' spread), otherwise in float32 (tolerance 1e-3).

  Args:
    fn: maps one input of the shape of ``example_input`` to an array.
    example_input: x0, e.g. one coded input (H, W, C).
    degree: the declared degree d >= 1.
    key: PRNG key for the directions v.
    num_lines: number of random lines.
    strict: also require the degree to be exactly d (not lower).

  Returns:
    The largest relative residual of the degree-d fits.

  Raises:
    ValueError: fn is not a polynomial of degree <= d (e.g. it has a ReLU), or,
      with ``strict``, its degree is below d.
  """
  if not isinstance(degree, int) or degree < 1:
    raise ValueError(f"check_polynomial_degree: degree must be an integer >= 1, got {degree!r}.")
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  tol = 1e-7 if dtype == jnp.float64 else 1e-3
  x0 = jnp.asarray(example_input, dtype)
  scale = jnp.maximum(jnp.std(x0), 1.0)
  num_points = degree + 4
  t = -np.cos((2 * np.arange(num_points) + 1) * np.pi / (2 * num_points))  # Chebyshev, 1st kind
  evaluate = jax.jit(jax.vmap(fn))  # one compilation for every line
  worst_exact, best_lower = 0.0, math.inf
  for line_key in jax.random.split(key, num_lines):
    v = scale * jax.random.normal(line_key, x0.shape, dtype)
    xs = x0[None] + jnp.asarray(t, dtype).reshape((-1,) + (1,) * x0.ndim) * v[None]
    ys = np.asarray(evaluate(xs), dtype=np.float64).reshape(len(t), -1)
    worst_exact = max(worst_exact, _relative_fit_residual(t, ys, degree))
    best_lower = min(best_lower, _relative_fit_residual(t, ys, degree - 1))
  if worst_exact > tol:
    raise ValueError(
        f"check_polynomial_degree: the function is not a polynomial of degree {degree} in its "
        f"input (relative residual {worst_exact:.2e} > {tol:.0e} of the best degree-{degree} fit "
        "along a random line). Worker networks of a learned polynomial code must be built "
        "from polynomial blocks only (no ReLU, max-pooling or normalisation)."
    )
  if strict and best_lower <= 100 * tol:
    raise ValueError(
        f"check_polynomial_degree: the function has degree below {degree} "
        f"(a degree-{degree - 1} fit is exact to {best_lower:.2e})."
    )
  return worst_exact


# ---------------------------------------------------------------------------
# Master networks.


def space_to_depth(x: jax.Array, block: int = 2) -> jax.Array:
  """(..., H, W, C) -> (..., H / b, W / b, b * b * C), a lossless rearrangement."""
  *lead, height, width, channels = x.shape
  if height % block or width % block:
    raise ValueError(f"space_to_depth: H = {height} and W = {width} must be multiples of {block}.")
  x = x.reshape(*lead, height // block, block, width // block, block, channels)
  x = jnp.moveaxis(x, -4, -3)
  return x.reshape(*lead, height // block, width // block, block * block * channels)


def group_lagrange_mixing(data_points: ArrayLike, degree: int) -> np.ndarray:
  """Monomial coefficients that code interleaved groups of queries without interference.

  The K data points are split into G = ceil(K / (de + 1)) interleaved groups
  (query k in group k mod G), each of at most de + 1 queries. For a channel
  serving group g, coefficient j of query m is the j-th monomial coefficient
  of the Lagrange basis polynomial of m over group g's points (zero for
  queries outside g), so e(a_k) on that channel is exactly query k's value
  for every k in g. A per-position decoder head then reads query k from its
  group's channels.

  Args:
    data_points: (K,) the a_k.
    degree: de >= 0, the encoder's degree.

  Returns:
    (G, de + 1, K) float64 array: mixing[g, j, m].
  """
  a = np.asarray(data_points, np.float64)
  num_queries = a.shape[0]
  num_groups = -(-num_queries // (degree + 1))
  mixing = np.zeros((num_groups, degree + 1, num_queries))
  for g in range(num_groups):
    members = np.arange(g, num_queries, num_groups)
    vander = np.vander(a[members], degree + 1, increasing=True)  # (|g|, de + 1)
    # Minimum-norm solution: exact Lagrange basis when |g| = de + 1.
    mixing[g][:, members] = np.linalg.pinv(vander)
  return mixing


class CoefficientEncoder(nnx.Module):
  """K queries -> de + 1 coefficient tensors c_0..c_de of e(z) = sum_j c_j z^j.

  Each query goes through a cheap per-query feature map phi: a lossless 2x2
  space-to-depth of the image, optionally concatenated with ``features``
  channels of gelu(1x1-conv) of it. The features are repeated for each of the
  G interleaved query groups and mixed across queries, channel by channel:

    c_j[..., c] = sum_m A[j, m, c] * phi(x_m)[..., c].

  A is initialised with ``group_lagrange_mixing``, so at initialisation e(a_k)
  carries query k's features undisturbed on its group's channels; training
  then shapes the code.
  """

  def __init__(
      self,
      data_points: ArrayLike,
      degree: int,
      input_shape: tuple[int, int, int],
      *,
      features: int = 0,
      rngs: nnx.Rngs,
  ):
    if not isinstance(degree, int) or degree < 0:
      raise ValueError(f"CoefficientEncoder: degree must be an integer >= 0, got {degree!r}.")
    if len(input_shape) not in (1, 3):
      raise ValueError(f"CoefficientEncoder: queries must be (H, W, C) or (D,), got {input_shape}.")
    self.degree = degree
    self.input_shape = tuple(input_shape)
    self.num_queries = int(np.shape(data_points)[0])
    # Images: a lossless 2x2 space-to-depth; feature vectors: as they are.
    self.images = len(input_shape) == 3
    channels = 4 * input_shape[-1] if self.images else input_shape[0]
    if not features:
      self.feature_conv = None
    elif self.images:
      self.feature_conv = nnx.Conv(channels, features, (1, 1), rngs=rngs)
    else:
      self.feature_conv = nnx.Linear(channels, features, rngs=rngs)
    per_query = channels + features
    mixing = group_lagrange_mixing(data_points, degree)  # (G, de + 1, K)
    self.num_groups = mixing.shape[0]
    if self.images:
      height, width, _ = input_shape
      self.coded_shape = (height // 2, width // 2, self.num_groups * per_query)
    else:
      self.coded_shape = (self.num_groups * per_query,)
    # Channel c of the coded input serves group c // per_query.
    per_channel = np.repeat(np.moveaxis(mixing, 0, -1), per_query, axis=-1)  # (de + 1, K, C')
    self.mixing = nnx.Param(jnp.asarray(per_channel, jnp.float32))

  def features(self, queries: jax.Array) -> jax.Array:
    """(..., H, W, C) -> (..., H / 2, W / 2, per-query channels); (..., D) -> (..., D [+ F])."""
    x = space_to_depth(queries) if self.images else queries
    if self.feature_conv is None:
      return x
    return jnp.concatenate([x, nnx.gelu(self.feature_conv(x))], axis=-1)

  def __call__(self, queries: ArrayLike) -> jax.Array:
    """(K, H, W, C) queries -> (de + 1, H / 2, W / 2, C') coefficient tensors ((K, D) -> (de + 1, C'))."""
    queries = jnp.asarray(queries)
    if queries.shape != (self.num_queries, *self.input_shape):
      raise ValueError(
          f"CoefficientEncoder: expected queries of shape "
          f"{(self.num_queries, *self.input_shape)}, got {queries.shape}."
      )
    phi = self.features(queries)
    phi = jnp.tile(phi, (1,) * (phi.ndim - 1) + (self.num_groups,))  # (K, H', W', C') or (K, C')
    mixing = self.mixing[...].astype(jnp.result_type(phi, self.mixing[...]))
    # (de + 1, K, C') -> (de + 1, K, 1, 1, C') for images: broadcast over the positions.
    mixing = mixing.reshape(mixing.shape[:2] + (1,) * (phi.ndim - 2) + mixing.shape[2:])
    # c_j = sum_m A[j, m] * phi_m channel by channel, as K multiply-adds: one
    # elementwise loop over the data that XLA fuses (also under vmap over
    # groups). An einsum here would be a dot batched over the channel axis,
    # the minor one, which XLA transposes in and out (tests/test_layout.py).
    coefficients = mixing[:, 0] * phi[0]
    for m in range(1, self.num_queries):
      coefficients = coefficients + mixing[:, m] * phi[m]
    return coefficients


class QueryEncoder(nnx.Module):
  """One image -> one image of the same shape: x + conv(gelu(conv(x))).

  The second convolution starts at zero, so the encoder starts as the
  identity (plain Lagrange coding) and learns a per-query correction.
  """

  def __init__(
      self, input_shape: tuple[int, int, int], *, features: int = 2, kernel: int = 3,
      rngs: nnx.Rngs,
  ):
    channels = input_shape[-1]
    self.input_shape = tuple(input_shape)
    self.conv_in = nnx.Conv(channels, features, (kernel, kernel), padding="SAME", rngs=rngs)
    self.conv_out = nnx.Conv(
        features, channels, (kernel, kernel), padding="SAME",
        kernel_init=nnx.initializers.zeros_init(), rngs=rngs,
    )

  def __call__(self, x: ArrayLike) -> jax.Array:
    """(..., H, W, C) -> (..., H, W, C)."""
    x = jnp.asarray(x)
    return x + self.conv_out(nnx.gelu(self.conv_in(x)))


class DecoderHead(nnx.Module):
  """Per-position head: decoded value of query k (D,) -> logits (C,).

  logits_k = W_2 gelu(W1_k y_k + b1_k) + b_2 with position-specific first
  layer (so the head of query k can read the channels of k's group) and a
  shared second layer; ``hidden = 0`` makes it a per-position affine map
  W_k y_k + b_k (initialised to the identity when D = C).
  """

  def __init__(
      self, num_queries: int, in_features: int, num_classes: int, *, hidden: int = 0,
      rngs: nnx.Rngs,
  ):
    self.hidden = hidden
    width = hidden or num_classes
    init = nnx.initializers.lecun_normal()
    if hidden == 0 and in_features == num_classes:
      kernel = jnp.tile(jnp.eye(num_classes)[None], (num_queries, 1, 1))
    else:
      kernel = init(rngs.params(), (num_queries, in_features, width))
    self.kernel = nnx.Param(kernel)
    self.bias = nnx.Param(jnp.zeros((num_queries, width)))
    self.out = nnx.Linear(hidden, num_classes, rngs=rngs) if hidden else None

  def __call__(self, values: jax.Array) -> jax.Array:
    """(K, D) decoded values -> (K, C) logits."""
    kernel = self.kernel[...].astype(jnp.result_type(values, self.kernel[...]))
    y = jnp.einsum("kd,kdh->kh", values, kernel) + self.bias[...]
    if self.out is None:
      return y
    return self.out(nnx.gelu(y))


class ParityEncoder(nnx.Module):
  """K queries -> P parity images p_j = sum_k w_jk * g(x_k) + c_j (per-pixel weights).

  g is the identity or, with ``features > 0``, a per-query ``QueryEncoder``
  (x + conv(gelu(conv(x)))). The weights w_jk are (H, W, C) images, so a
  parity can weight each query differently at each pixel; they start at
  (1 + 0.5 z_jk) / K with one random z_jk per (j, k), so that the parities
  start as different weighted averages of the queries.
  """

  def __init__(
      self, num_queries: int, num_parities: int, input_shape: tuple[int, int, int], *,
      features: int = 0, kernel: int = 3, rngs: nnx.Rngs,
  ):
    self.input_shape = tuple(input_shape)
    self.query_encoder = (
        QueryEncoder(input_shape, features=features, kernel=kernel, rngs=rngs) if features else None
    )
    spread = jax.random.normal(rngs.params(), (num_parities, num_queries) + (1,) * len(input_shape))
    weights = (1.0 + 0.5 * spread) / num_queries * jnp.ones((1, 1, *input_shape))
    self.weights = nnx.Param(weights)
    self.bias = nnx.Param(jnp.zeros((num_parities, *input_shape)))

  @property
  def num_parities(self) -> int:
    return int(self.weights.shape[0])

  def __call__(self, queries: ArrayLike, num_parities: int | None = None) -> jax.Array:
    """(K, H, W, C) queries -> (P, H, W, C) parity images (the first ``num_parities``)."""
    x = jnp.asarray(queries)
    if self.query_encoder is not None:
      x = self.query_encoder(x)
    p = self.num_parities if num_parities is None else num_parities
    weights = self.weights[:p].astype(jnp.result_type(x, self.weights[...]))
    return jnp.einsum("pk...,k...->p...", weights, x) + self.bias[:p]


class QuerySketch(nnx.Module):
  """(K, ...) queries -> (K, F) features the master computes for its decoder.

  Images (H, W, C) are mean-pooled over ``pool`` x ``pool`` blocks (cropped
  to a multiple of ``pool``), then every query is mapped by one linear layer
  and a GELU; other shapes are flattened and mapped. About 2 P F
  FLOPs per query for P pooled values (12.5k for a 28 x 28 image, pool 2,
  F = 32): a small part of the master's budget.
  """

  def __init__(
      self, input_shape: Sequence[int], features: int, *, pool: int = 2, rngs: nnx.Rngs
  ):
    input_shape = tuple(int(d) for d in input_shape)
    if features < 1 or pool < 1:
      raise ValueError(f"QuerySketch: features and pool must be >= 1, got {features}, {pool}.")
    self.input_shape = input_shape
    self.pool = int(pool) if len(input_shape) == 3 else 1
    self.features = int(features)
    self.linear = nnx.Linear(math.prod(self._pooled_shape()), self.features, rngs=rngs)

  def _pooled_shape(self) -> tuple[int, ...]:
    if len(self.input_shape) != 3:
      return self.input_shape
    h, w, c = self.input_shape
    return (h // self.pool, w // self.pool, c)

  def __call__(self, queries: jax.Array) -> jax.Array:
    """(K, *input_shape) -> (K, F)."""
    k = queries.shape[0]
    if len(self.input_shape) == 3 and self.pool > 1:
      h, w, c = self._pooled_shape()
      p = self.pool
      cropped = queries[:, : h * p, : w * p, :]
      queries = cropped.reshape(k, h, p, w, p, c).mean(axis=(2, 4))
    return nnx.gelu(self.linear(queries.reshape(k, -1)))


class SystematicDecoder(nnx.Module):
  """Every available worker output (N_max, C) and the mask -> (K, C) logits.

  An MLP on the flattened masked outputs (absent rows zero) and the mask;
  the systematic code uses its answer only where query k's own worker did
  not return. With ``side_features`` > 0 the decoder also reads a (K, F)
  sketch of the queries (``QuerySketch``): the MLP then sends each query a
  ``message``-wide vector, and one small head shared by every query maps
  [message_k, sketch_k] to its logits.
  """

  def __init__(
      self, num_queries: int, num_slots: int, num_classes: int, *,
      hidden: tuple[int, ...] = (256, 256), side_features: int = 0, message: int = 16,
      head_hidden: int = 64, rngs: nnx.Rngs,
  ):
    self.num_queries = num_queries
    self.num_slots = num_slots
    self.num_classes = num_classes
    self.side_features = int(side_features)
    widths = (num_slots * (num_classes + 1), *hidden)
    self.layers = nnx.List(
        [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
    )
    if self.side_features:
      self.message = int(message)
      self.out = nnx.Linear(widths[-1], num_queries * self.message, rngs=rngs)
      self.head_in = nnx.Linear(self.message + self.side_features, head_hidden, rngs=rngs)
      self.head_out = nnx.Linear(head_hidden, num_classes, rngs=rngs)
    else:
      self.out = nnx.Linear(widths[-1], num_queries * num_classes, rngs=rngs)

  def __call__(
      self, outputs: jax.Array, mask: jax.Array, sketches: jax.Array | None = None
  ) -> jax.Array:
    """(N_max, C) outputs, (N_max,) bool mask[, (K, F) sketches] -> (K, C) logits."""
    if bool(self.side_features) != (sketches is not None):
      raise ValueError(
          f"SystematicDecoder: built with side_features = {self.side_features}, called "
          f"{'without' if sketches is None else 'with'} query sketches."
      )
    present = mask.astype(outputs.dtype)
    z = jnp.concatenate([(outputs * present[:, None]).reshape(-1), present])
    for layer in self.layers:
      z = nnx.gelu(layer(z))
    if not self.side_features:
      return self.out(z).reshape(self.num_queries, self.num_classes)
    messages = self.out(z).reshape(self.num_queries, self.message)
    h = nnx.gelu(self.head_in(jnp.concatenate([messages, sketches.astype(messages.dtype)], -1)))
    return self.head_out(h)


def frozen_worker_fn(classifier: nnx.Module) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
  """(worker_fn, params): ``classifier`` on one input, its parameters frozen.

  ``worker_fn(params, x)`` maps one (H, W, C) input to its (C,) logits;
  ``jax.lax.stop_gradient`` on the parameters keeps f out of a code's training
  even when the caller differentiates through the workers.
  """
  graphdef, state = nnx.split(classifier)

  def worker_fn(params, x):
    return nnx.merge(graphdef, jax.lax.stop_gradient(params))(x[None])[0]

  return worker_fn, state
