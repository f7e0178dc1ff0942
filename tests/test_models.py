"""Tests for jaxcoded.models: shapes, a numpy reference, NNX plumbing, FLOPs."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from jaxcoded import data, models

_SMALL = ["digits_mlp", "digits_cnn", "lenet5"]
# A narrow ResNet-18: the same code path as the real one (projections
# included, since the stride changes), cheap on CPU.
_NARROW_RESNET = dict(widths=(8, 8, 8, 8))


def _param(p) -> np.ndarray:
  return np.asarray(p[...], dtype=np.float64)


def _images(rng, name: str, batch: int) -> np.ndarray:
  return rng.standard_normal((batch, *models.INPUT_SHAPES[name])).astype(np.float32)


@functools.cache
def _cached_model(name: str, kwargs: tuple) -> nnx.Module:
  return models.create(name, rngs=nnx.Rngs(0), **dict(kwargs))


def _model(name: str, **kwargs) -> nnx.Module:
  """A fresh copy of a model with fixed parameters.

  Every parameter shape costs an XLA compilation of its initialiser on first
  use (about a second each on a busy 2-core machine), so the tests build each
  configuration once and clone it.
  """
  return nnx.clone(_cached_model(name, tuple(sorted(kwargs.items()))))


@nnx.jit
def _forward(model, x):
  return model(x)


@nnx.jit
def _train_step(model, optimizer, x, y):
  def loss_fn(model):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


# ---------------------------------------------------------------------------
# Shapes and arguments.


@pytest.mark.parametrize("name", _SMALL)
def test_logits_shape_and_dtype(rng, name):
  # float64 input (x64 is on in the tests) is cast to float32, not promoted.
  logits = _forward(_model(name), _images(rng, name, 4).astype(np.float64))
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(logits)))


def test_resnet18_shapes_without_allocating():
  abstract = nnx.eval_shape(lambda: models.create("resnet18", rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  params = nnx.state(abstract, nnx.Param)
  # 11,173,962: the usual parameter count of the CIFAR ResNet-18 with 10 classes.
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == 11_173_962
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
  assert out.shape == (2, 10) and out.dtype == jnp.float32


def test_create_rejects_bad_arguments():
  with pytest.raises(ValueError, match="known models: mlp, digits_mlp, digits_cnn, lenet5, resnet18, sketch_mlp"):
    models.create("vgg", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_classes"):
    models.create("lenet5", num_classes=0, rngs=nnx.Rngs(0))
  model = _model("lenet5")
  with pytest.raises(ValueError, match=r"lenet5 expects inputs of shape \(B, 28, 28, 1\)"):
    model(np.zeros((2, 8, 8, 1), np.float32))


# ---------------------------------------------------------------------------
# Against a float64 numpy reference.


def _conv_ref(x, kernel, bias, pad):
  """x (B, H, W, Cin), kernel (kh, kw, Cin, Cout): cross-correlation + bias."""
  kh, kw = kernel.shape[:2]
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = np.zeros((x.shape[0], h, w, kernel.shape[3]))
  for p in range(kh):
    for q in range(kw):
      out += x[:, p : p + h, q : q + w, :] @ kernel[p, q]
  return out + bias


def _pool_ref(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _relu(x):
  return np.maximum(x, 0.0)


def test_lenet5_matches_numpy_reference(rng):
  model = _model("lenet5")
  x = _images(rng, "lenet5", 4).astype(np.float64)
  h = x
  h = _pool_ref(_relu(_conv_ref(h, _param(model.conv1.kernel), _param(model.conv1.bias), 2)))
  h = _pool_ref(_relu(_conv_ref(h, _param(model.conv2.kernel), _param(model.conv2.bias), 0)))
  h = h.reshape(4, -1)
  for layer in (model.dense1, model.dense2):
    h = _relu(h @ _param(layer.kernel) + _param(layer.bias))
  expected = h @ _param(model.dense3.kernel) + _param(model.dense3.bias)
  np.testing.assert_allclose(np.asarray(_forward(model, x)), expected, rtol=1e-4, atol=1e-4)


def test_digits_models_match_numpy_reference(rng):
  # Two hidden layers and three classes: the reference fixes the output shape (4, 3).
  mlp = models.create("digits_mlp", num_classes=3, rngs=nnx.Rngs(0), hidden=(20, 12))
  x = _images(rng, "digits_mlp", 4).astype(np.float64)
  h = x.reshape(4, -1)
  for layer in mlp.layers[:-1]:
    h = _relu(h @ _param(layer.kernel) + _param(layer.bias))
  expected = h @ _param(mlp.layers[-1].kernel) + _param(mlp.layers[-1].bias)
  np.testing.assert_allclose(np.asarray(_forward(mlp, x)), expected, rtol=1e-5, atol=1e-5)

  cnn = _model("digits_cnn")
  h = _relu(_conv_ref(x, _param(cnn.conv1.kernel), _param(cnn.conv1.bias), 1))
  h = _pool_ref(_relu(_conv_ref(h, _param(cnn.conv2.kernel), _param(cnn.conv2.bias), 1)))
  h = _relu(h.reshape(4, -1) @ _param(cnn.dense1.kernel) + _param(cnn.dense1.bias))
  expected = h @ _param(cnn.dense2.kernel) + _param(cnn.dense2.bias)
  np.testing.assert_allclose(np.asarray(_forward(cnn, x)), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# NNX plumbing: modes, optimizer, checkpoints.


def _batch_norms(model):
  return [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]


def test_resnet_train_and_eval_modes(rng):
  model = _model("resnet18", **_NARROW_RESNET)
  norms = _batch_norms(model)
  assert len(norms) == 1 + 8 * 2 + 3  # stem, two per block, three projections.
  x = _images(rng, "resnet18", 4)
  # Same first example, different batch mates.
  other = np.concatenate([x[:1], _images(rng, "resnet18", 3)])

  model.eval()
  assert all(bn.use_running_average for bn in norms)
  stats = _param(norms[0].mean)
  np.testing.assert_allclose(
      np.asarray(_forward(model, x))[0], np.asarray(_forward(model, other))[0], rtol=1e-5, atol=1e-5
  )
  np.testing.assert_array_equal(_param(norms[0].mean), stats)  # Eval does not update statistics.

  model.train()
  assert not any(bn.use_running_average for bn in norms)
  first = np.asarray(_forward(model, x))[0]
  assert not np.allclose(first, np.asarray(_forward(model, other))[0], atol=1e-3)
  assert not np.allclose(_param(norms[0].mean), stats)  # Train mode updates them.


@pytest.mark.parametrize("name, kwargs", [(n, {}) for n in _SMALL] + [("resnet18", _NARROW_RESNET)])
def test_optimizer_steps_reduce_the_loss(rng, name, kwargs):
  model = _model(name, **kwargs)
  model.train()
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  x, y = _images(rng, name, 16), rng.integers(0, 10, size=16)
  losses = [float(_train_step(model, optimizer, x, y)) for _ in range(20)]
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]


def test_state_round_trips_through_orbax_into_abstract_model(rng, tmp_path):
  model = _model("resnet18", **_NARROW_RESNET)
  for bn in _batch_norms(model):  # Batch statistics away from their initial values.
    bn.mean[...] = rng.standard_normal(bn.mean.shape).astype(np.float32)
    bn.var[...] = rng.uniform(0.5, 2.0, bn.var.shape).astype(np.float32)
  model.eval()
  x = _images(rng, "resnet18", 4)
  expected = np.asarray(_forward(model, x))

  abstract = nnx.eval_shape(lambda: models.create("resnet18", rngs=nnx.Rngs(0), **_NARROW_RESNET))
  graphdef, abstract_state = nnx.split(abstract)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", nnx.state(model))
  checkpointer.wait_until_finished()
  restored = nnx.merge(graphdef, checkpointer.restore(tmp_path / "ckpt", abstract_state))
  restored.eval()
  np.testing.assert_array_equal(np.asarray(_forward(restored, x)), expected)


def test_digits_mlp_learns_digits_in_seconds():
  train, test = data.load("digits", "train"), data.load("digits", "test")
  model = _model("digits_mlp")
  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
  for epoch in range(10):
    for x, y in data.batches(train, 64, seed=0, epoch=epoch):
      _train_step(model, optimizer, x, y)
  accuracy = np.mean(np.asarray(_forward(model, test.images)).argmax(-1) == test.labels)
  assert accuracy >= 0.93, accuracy


# ---------------------------------------------------------------------------
# FLOPs.


def _lenet5_multiply_adds(c1=6, c2=16, h1=120, h2=84, classes=10) -> int:
  # conv1 'SAME' 5x5 on 28x28: XLA skips the taps that fall in the zero
  # padding, 134 valid (output, tap) pairs per axis (28 * 5 - 2 * (2 + 1)).
  conv1 = 134 * 134 * 1 * c1
  conv2 = 10 * 10 * 25 * c1 * c2
  return conv1 + conv2 + 25 * c2 * h1 + h1 * h2 + h2 * classes


def test_flops_per_example():
  mlp = 2 * (64 * 128 + 128 * 10)
  flops = models.flops_per_example("digits_mlp")
  # Two per multiply-add, plus XLA's count of the elementwise bias and ReLU.
  assert mlp <= flops <= mlp + 2 * (128 + 10)
  lenet = 2 * _lenet5_multiply_adds()
  assert lenet <= models.flops_per_example("lenet5") <= 1.05 * lenet
  wide = 2 * _lenet5_multiply_adds(32, 64)
  # An abstract model is enough (only shapes are used): nothing is initialised.
  model = nnx.eval_shape(lambda: models.create("lenet5", rngs=nnx.Rngs(0), features=(32, 64)))
  assert wide <= models.flops_per_example(model) <= 1.05 * wide


def test_flops_per_example_leaves_the_model_mode_alone():
  model = _model("resnet18", **_NARROW_RESNET)
  model.train()
  assert models.flops_per_example(model) > 0
  assert not any(bn.use_running_average for bn in _batch_norms(model))
  with pytest.raises(ValueError, match="input_shape"):
    models.flops_per_example(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
  assert models.flops_per_example(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), (3,)) >= 12
