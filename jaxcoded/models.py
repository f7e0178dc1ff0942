"""Base classifiers in Flax NNX, by name.

  ``digits_mlp``  (B, 8, 8, 1) -> flatten -> dense 128 -> ReLU -> classes.
  ``digits_cnn``  (B, 8, 8, 1) -> conv 16@3x3 -> conv 32@3x3 -> max-pool 2
                  -> dense 64 -> classes (ReLU after each hidden layer).
  ``lenet5``      (B, 28, 28, 1) -> conv 6@5x5 'SAME' -> max-pool 2 -> conv
                  16@5x5 'VALID' -> max-pool 2 -> dense 120 -> dense 84 ->
                  classes (ReLU after each hidden layer): LeNet-5 (LeCun et
                  al. 1998) with ReLU and max-pooling.
  ``resnet18``    (B, 32, 32, 3) -> ResNet-18 (He et al. 2016) in its CIFAR
                  form: a 3x3 stem without max-pool, four stages of two basic
                  blocks (64, 128, 256, 512 channels), BatchNorm, global
                  average pool, dense. Meant for GPU runs; it has BatchNorm,
                  so use ``model.train()`` / ``model.eval()``.

Every model maps float images (B, H, W, C) to float logits (B, num_classes);
inputs are cast to the model's dtype (float32 by default). They work with
``nnx.jit``, ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and ``nnx.state`` /
``nnx.eval_shape`` (for Orbax checkpoints).

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxcoded import models
  >>> model = models.create("digits_mlp", rngs=nnx.Rngs(0))
  >>> model(jnp.zeros((2, 8, 8, 1))).shape
  (2, 10)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike, DTypeLike

__all__ = [
    "INPUT_SHAPES",
    "MODELS",
    "DigitsCNN",
    "DigitsMLP",
    "LeNet5",
    "ResNet18",
    "create",
    "flops_per_example",
]

INPUT_SHAPES = {
    "digits_mlp": (8, 8, 1),
    "digits_cnn": (8, 8, 1),
    "lenet5": (28, 28, 1),
    "resnet18": (32, 32, 3),
}


def _check_input(
    model_name: str, x: ArrayLike, input_shape: tuple[int, ...], dtype: DTypeLike
) -> jax.Array:
  """``x`` as a (B, *input_shape) array of ``dtype``, or a ValueError saying what is wrong."""
  x_dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
  if not (jnp.issubdtype(x_dtype, jnp.floating) or jnp.issubdtype(x_dtype, jnp.integer)):
    raise ValueError(f"{model_name} expects real-valued (float) images, got dtype {x_dtype}.")
  x = jnp.asarray(x, dtype)
  expected = f"(B, {', '.join(map(str, input_shape))})"
  if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
    raise ValueError(f"{model_name} expects images of shape {expected}, got {tuple(x.shape)}.")
  if x.shape[0] == 0:
    raise ValueError(f"{model_name} got an empty batch; pass B >= 1 images of shape {expected}.")
  return x


class DigitsMLP(nnx.Module):
  """A small MLP for 8x8x1 digits: flatten -> hidden (ReLU) ... -> logits."""

  def __init__(
      self,
      num_classes: int = 10,
      *,
      hidden: Sequence[int] = (128,),
      input_shape: tuple[int, int, int] = INPUT_SHAPES["digits_mlp"],
      dtype: DTypeLike = jnp.float32,
      rngs: nnx.Rngs,
  ):
    self.input_shape = tuple(input_shape)
    self.dtype = dtype
    widths = [math.prod(input_shape), *hidden, num_classes]
    self.layers = nnx.List([
        nnx.Linear(d_in, d_out, dtype=dtype, param_dtype=dtype, rngs=rngs)
        for d_in, d_out in zip(widths[:-1], widths[1:])
    ])

  def __call__(self, x: ArrayLike) -> jax.Array:
    """(B, 8, 8, 1) images -> (B, num_classes) logits."""
    x = _check_input("digits_mlp", x, self.input_shape, self.dtype)
    x = x.reshape(x.shape[0], -1)
    for layer in self.layers[:-1]:
      x = nnx.relu(layer(x))
    return self.layers[-1](x)


class DigitsCNN(nnx.Module):
  """A small CNN for 8x8x1 digits: two 3x3 convs, a 2x2 max-pool, two dense."""

  def __init__(
      self,
      num_classes: int = 10,
      *,
      features: tuple[int, int] = (16, 32),
      hidden: int = 64,
      dtype: DTypeLike = jnp.float32,
      rngs: nnx.Rngs,
  ):
    self.dtype = dtype
    c1, c2 = features
    kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.conv1 = nnx.Conv(1, c1, (3, 3), padding="SAME", **kw)
    self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="SAME", **kw)
    self.dense1 = nnx.Linear(4 * 4 * c2, hidden, **kw)
    self.dense2 = nnx.Linear(hidden, num_classes, **kw)

  def __call__(self, x: ArrayLike) -> jax.Array:
    """(B, 8, 8, 1) images -> (B, num_classes) logits."""
    x = _check_input("digits_cnn", x, INPUT_SHAPES["digits_cnn"], self.dtype)
    x = nnx.relu(self.conv1(x))
    x = nnx.relu(self.conv2(x))
    x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    x = nnx.relu(self.dense1(x.reshape(x.shape[0], -1)))
    return self.dense2(x)


class LeNet5(nnx.Module):
  """LeNet-5 with ReLU and max-pooling, for 28x28x1 images.

  conv c1@5x5 'SAME' (28x28) -> pool (14x14) -> conv c2@5x5 'VALID' (10x10)
  -> pool (5x5) -> dense 120 -> dense 84 -> logits. ``features=(6, 16)`` is
  the classic width.
  """

  def __init__(
      self,
      num_classes: int = 10,
      *,
      features: tuple[int, int] = (6, 16),
      hidden: tuple[int, int] = (120, 84),
      dtype: DTypeLike = jnp.float32,
      rngs: nnx.Rngs,
  ):
    self.dtype = dtype
    c1, c2 = features
    h1, h2 = hidden
    kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.conv1 = nnx.Conv(1, c1, (5, 5), padding="SAME", **kw)
    self.conv2 = nnx.Conv(c1, c2, (5, 5), padding="VALID", **kw)
    self.dense1 = nnx.Linear(5 * 5 * c2, h1, **kw)
    self.dense2 = nnx.Linear(h1, h2, **kw)
    self.dense3 = nnx.Linear(h2, num_classes, **kw)

  def __call__(self, x: ArrayLike) -> jax.Array:
    """(B, 28, 28, 1) images -> (B, num_classes) logits."""
    x = _check_input("lenet5", x, INPUT_SHAPES["lenet5"], self.dtype)
    x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))
    x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.dense1(x))
    x = nnx.relu(self.dense2(x))
    return self.dense3(x)


class _BasicBlock(nnx.Module):
  """ResNet basic block: two 3x3 conv-BN layers and a (projected) shortcut."""

  def __init__(self, c_in: int, c_out: int, stride: int, *, dtype: DTypeLike, rngs: nnx.Rngs):
    conv = dict(use_bias=False, dtype=dtype, param_dtype=dtype, rngs=rngs)
    norm = dict(momentum=0.9, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.conv1 = nnx.Conv(c_in, c_out, (3, 3), strides=stride, padding=1, **conv)
    self.bn1 = nnx.BatchNorm(c_out, **norm)
    self.conv2 = nnx.Conv(c_out, c_out, (3, 3), padding=1, **conv)
    self.bn2 = nnx.BatchNorm(c_out, **norm)
    if stride != 1 or c_in != c_out:
      self.shortcut_conv = nnx.Conv(c_in, c_out, (1, 1), strides=stride, **conv)
      self.shortcut_bn = nnx.BatchNorm(c_out, **norm)
    else:
      self.shortcut_conv = self.shortcut_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x if self.shortcut_conv is None else self.shortcut_bn(self.shortcut_conv(x))
    return nnx.relu(y + shortcut)


class ResNet18(nnx.Module):
  """ResNet-18 for 32x32x3 images (the CIFAR variant: 3x3 stem, no max-pool)."""

  def __init__(
      self,
      num_classes: int = 10,
      *,
      widths: tuple[int, int, int, int] = (64, 128, 256, 512),
      dtype: DTypeLike = jnp.float32,
      rngs: nnx.Rngs,
  ):
    self.dtype = dtype
    self.stem_conv = nnx.Conv(
        3, widths[0], (3, 3), padding=1, use_bias=False, dtype=dtype, param_dtype=dtype, rngs=rngs
    )
    self.stem_bn = nnx.BatchNorm(widths[0], momentum=0.9, dtype=dtype, param_dtype=dtype, rngs=rngs)
    blocks = []
    c_in = widths[0]
    for stage, c_out in enumerate(widths):
      for i in range(2):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(_BasicBlock(c_in, c_out, stride, dtype=dtype, rngs=rngs))
        c_in = c_out
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(c_in, num_classes, dtype=dtype, param_dtype=dtype, rngs=rngs)

  def __call__(self, x: ArrayLike) -> jax.Array:
    """(B, 32, 32, 3) images -> (B, num_classes) logits."""
    x = _check_input("resnet18", x, INPUT_SHAPES["resnet18"], self.dtype)
    x = nnx.relu(self.stem_bn(self.stem_conv(x)))
    for block in self.blocks:
      x = block(x)
    return self.head(x.mean(axis=(1, 2)))


MODELS: dict[str, Callable[..., nnx.Module]] = {
    "digits_mlp": DigitsMLP,
    "digits_cnn": DigitsCNN,
    "lenet5": LeNet5,
    "resnet18": ResNet18,
}


def create(name: str, *, num_classes: int = 10, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  """Builds a named classifier.

  Args:
    name: one of ``MODELS``: "digits_mlp", "digits_cnn", "lenet5", "resnet18".
      Its input shape (H, W, C) is ``INPUT_SHAPES[name]``.
    num_classes: number of output logits, >= 1.
    rngs: parameter initialisation keys.
    **kwargs: passed to the model class (e.g. ``features=(32, 64)`` for
      lenet5, ``hidden=(256,)`` for digits_mlp, ``dtype``).

  Returns:
    The model; ``model(x)`` maps (B, H, W, C) to (B, num_classes) logits.
  """
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODELS)}.")
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
  return MODELS[name](num_classes, rngs=rngs, **kwargs)


def flops_per_example(
    model_or_name: nnx.Module | str, input_shape: tuple[int, ...] | None = None
) -> int:
  """Floating-point operations of one forward pass on one example.

  Counted by XLA's cost analysis of the compiled forward pass at batch 1
  (``jax.jit(f).lower(x).compile().cost_analysis()['flops']``): each
  multiply-add of a convolution or matmul counts 2, and elementwise work
  (bias, ReLU, pooling, BatchNorm) is included as XLA counts it. The model is
  evaluated in eval mode (BatchNorm with running averages) on a copy, so the
  given model's mode is not changed. Nothing is allocated for a model given
  by name: its shapes come from ``nnx.eval_shape``.

  Args:
    model_or_name: a model, or a name from ``MODELS`` (built with 10 classes).
    input_shape: (H, W, C) of one example; default ``INPUT_SHAPES[name]``
      (required for a model object that is not one of ours).

  Returns:
    FLOPs per example, a positive integer.
  """
  if isinstance(model_or_name, str):
    if model_or_name not in MODELS:
      raise ValueError(f"Unknown model {model_or_name!r}; known models: {', '.join(MODELS)}.")
    if input_shape is None:
      input_shape = INPUT_SHAPES[model_or_name]
    name = model_or_name
    model = nnx.eval_shape(lambda: create(name, rngs=nnx.Rngs(0)))
  else:
    model = model_or_name
    if input_shape is None:
      names = [n for n, cls in MODELS.items() if type(model) is cls]
      if not names:
        raise ValueError("flops_per_example needs input_shape for a model not built by create().")
      input_shape = INPUT_SHAPES[names[0]]
  graphdef, state = nnx.split(model)
  abstract_state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype), state)
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)

  def forward(state, x):
    copy = nnx.merge(graphdef, state)
    copy.eval()
    return copy(x)

  cost = jax.jit(forward).lower(abstract_state, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX returned one dict per device.
    cost = cost[0]
  return int(cost["flops"])
