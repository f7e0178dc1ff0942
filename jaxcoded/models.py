"""Base classifiers in Flax NNX, by name: one registration per model.

  ``mlp``         (B, *input_shape) -> flatten -> dense 128 -> ReLU -> classes,
                  for any input shape (``input_shape=`` in ``model_kwargs``):
                  feature vectors of an in-memory dataset, say.
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

A model is registered once, with its class and its input shape
(:func:`register_model`); ``MODELS`` and ``INPUT_SHAPES`` are views of that
registry. Every model maps float inputs ``(B, *input_shape)`` to float logits
(B, num_classes);
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
    "register_model",
]

# Views of the registry, filled by ``register_model`` only: name -> class, and
# name -> input shape (absent for models that take any shape, like "mlp").
MODELS: dict[str, Callable[..., nnx.Module]] = {}
INPUT_SHAPES: dict[str, tuple[int, ...]] = {}


def register_model(name: str, model_class: Callable[..., nnx.Module],
                   input_shape: tuple[int, ...] | None) -> None:
  """Registers a classifier class under ``name``, with the input shape it takes (None: any).

  The class is called as ``model_class(num_classes, rngs=..., **kwargs)``;
  a model with ``input_shape=None`` takes ``input_shape=`` among the kwargs.
  """
  if name in MODELS and MODELS[name] is not model_class:
    raise ValueError(f"A model named {name!r} is already registered.")
  MODELS[name] = model_class
  if input_shape is not None:
    INPUT_SHAPES[name] = tuple(int(d) for d in input_shape)


def _check_input(
    model_name: str, x: ArrayLike, input_shape: tuple[int, ...], dtype: DTypeLike
) -> jax.Array:
  """``x`` as a ``(B, *input_shape)`` array of ``dtype``, or a ValueError saying what is wrong."""
  x_dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
  if not (jnp.issubdtype(x_dtype, jnp.floating) or jnp.issubdtype(x_dtype, jnp.integer)):
    raise ValueError(f"{model_name} expects real-valued (float) inputs, got dtype {x_dtype}.")
  x = jnp.asarray(x, dtype)
  expected = f"(B, {', '.join(map(str, input_shape))})"
  if x.ndim != 1 + len(input_shape) or tuple(x.shape[1:]) != tuple(input_shape):
    raise ValueError(f"{model_name} expects inputs of shape {expected}, got {tuple(x.shape)}.")
  if x.shape[0] == 0:
    raise ValueError(f"{model_name} got an empty batch; pass B >= 1 inputs of shape {expected}.")
  return x


class DigitsMLP(nnx.Module):
  """A small MLP: flatten -> hidden (ReLU) ... -> logits (8x8x1 digits by default)."""

  def __init__(
      self,
      num_classes: int = 10,
      *,
      hidden: Sequence[int] = (128,),
      input_shape: tuple[int, ...] = (8, 8, 1),
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
    """``(B, *input_shape)`` inputs -> (B, num_classes) logits."""
    x = _check_input("mlp", x, self.input_shape, self.dtype)
    x = x.reshape(x.shape[0], -1)
    for layer in self.layers[:-1]:
      x = nnx.relu(layer(x))
    return self.layers[-1](x)


class SketchMLP(nnx.Module):
  """The master-side sketch and head of a learned systematic code, alone, as a classifier.

  ``coders.QuerySketch`` (``pool`` x ``pool`` mean-pooling, one linear map to
  ``features``, GELU) then one GELU layer of ``hidden`` and the logits: the
  control that shows what the master's side information reaches without any
  worker (docs/learned_codes.md).
  """

  def __init__(
      self,
      num_classes: int = 10,
      *,
      input_shape: tuple[int, ...] = (28, 28, 1),
      features: int = 32,
      pool: int = 2,
      hidden: int = 64,
      dtype: DTypeLike = jnp.float32,
      rngs: nnx.Rngs,
  ):
    from jaxcoded import coders  # the one sketch definition

    self.input_shape = tuple(input_shape)
    self.dtype = dtype
    self.sketch = coders.QuerySketch(self.input_shape, features, pool=pool, rngs=rngs)
    self.hidden = nnx.Linear(features, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``(B, *input_shape)`` inputs -> (B, num_classes) logits."""
    x = _check_input("sketch_mlp", x, self.input_shape, self.dtype)
    return self.out(nnx.gelu(self.hidden(self.sketch(x))))


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
    x = _check_input("digits_cnn", x, (8, 8, 1), self.dtype)
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
    x = _check_input("lenet5", x, (28, 28, 1), self.dtype)
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
    x = _check_input("resnet18", x, (32, 32, 3), self.dtype)
    x = nnx.relu(self.stem_bn(self.stem_conv(x)))
    for block in self.blocks:
      x = block(x)
    return self.head(x.mean(axis=(1, 2)))


register_model("mlp", DigitsMLP, None)
register_model("digits_mlp", DigitsMLP, (8, 8, 1))
register_model("digits_cnn", DigitsCNN, (8, 8, 1))
register_model("lenet5", LeNet5, (28, 28, 1))
register_model("resnet18", ResNet18, (32, 32, 3))
register_model("sketch_mlp", SketchMLP, None)


def create(name: str, *, num_classes: int = 10, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  """Builds a named classifier.

  Args:
    name: a registered model (``MODELS``): "mlp", "digits_mlp", "digits_cnn",
      "lenet5", "resnet18". Its input shape is ``INPUT_SHAPES[name]`` (for
      "mlp", pass ``input_shape=``).
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
    model_or_name: nnx.Module | str,
    input_shape: tuple[int, ...] | None = None,
    *,
    model_kwargs=None,
    num_classes: int = 10,
) -> int:
  """Floating-point operations of one forward pass on one example.

  Counted by ``jaxcoded.load.xla_flops``: XLA's cost analysis of the forward
  pass at batch 1, every loop by its trip count. Each multiply-add of a
  convolution or matmul counts 2 (taps in a convolution's padding are no
  work), and elementwise work (bias, ReLU, pooling, BatchNorm) is included
  as XLA counts it. The model is evaluated in eval mode (BatchNorm with
  running averages) on a copy, so the given model's mode is not changed.
  Nothing is allocated for a model given by name: its shapes come from
  ``nnx.eval_shape``.

  Args:
    model_or_name: a model, or a name from ``MODELS``.
    input_shape: (H, W, C) of one example; default ``INPUT_SHAPES[name]``
      (required for a model object that is not one of ours).
    model_kwargs: for a name, the model's options as ``create`` takes them
      (a config's ``model_kwargs``, e.g. ``{"features": (32, 64)}``); None:
      the defaults.
    num_classes: for a name, the number of logits.

  Returns:
    FLOPs per example, a positive integer.

  Example:
    >>> wide = flops_per_example("lenet5", model_kwargs={"features": (12, 32)})
    >>> flops_per_example("lenet5") < wide
    True
  """
  from jaxcoded import load

  if isinstance(model_or_name, str):
    if model_or_name not in MODELS:
      raise ValueError(f"Unknown model {model_or_name!r}; known models: {', '.join(MODELS)}.")
    name = model_or_name
    options = {key: model_kwargs[key] for key in model_kwargs} if model_kwargs else {}
    if input_shape is None:
      input_shape = options.get("input_shape") or INPUT_SHAPES.get(name)
      if input_shape is None:
        raise ValueError(f"flops_per_example: model {name!r} takes any input shape; pass input_shape.")
    model = nnx.eval_shape(
        lambda: create(name, num_classes=num_classes, rngs=nnx.Rngs(0), **options))
  else:
    if model_kwargs:
      raise ValueError("flops_per_example: model_kwargs apply to a model given by name only.")
    model = model_or_name
    if input_shape is None:
      input_shape = getattr(model, "input_shape", None)
      names = [n for n, cls in MODELS.items() if type(model) is cls and n in INPUT_SHAPES]
      if input_shape is None and not names:
        raise ValueError("flops_per_example needs input_shape for a model not built by create().")
      input_shape = tuple(input_shape) if input_shape is not None else INPUT_SHAPES[names[0]]
  graphdef, state = nnx.split(model)
  abstract_state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype), state)
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)

  def forward(state, x):
    copy = nnx.merge(graphdef, state)
    copy.eval()
    return copy(x)

  return int(load.xla_flops(forward, abstract_state, x))
