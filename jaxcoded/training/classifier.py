"""The base classifier task: data, loss, evaluation, training and loading.

``train(config, workdir)`` trains a classifier of ``jaxcoded.models`` on a
dataset of ``jaxcoded.data`` with the shared loop (``loop.fit``) and
evaluates it on the test split; ``load(workdir)`` reads it back;
``load_or_train(config, workdir)`` is what the other tasks and the comparison
use to get their frozen base classifier.

Example:
  >>> from jaxcoded.training import classifier
  >>> from configs import digits  # run from the repository root
  >>> result = classifier.train(digits.get_config(), "/tmp/digits")  # doctest: +SKIP
  >>> result.final_metrics["test_accuracy"] > 0.9  # doctest: +SKIP
  True
"""

from __future__ import annotations

import functools
import itertools
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxcoded import data, models
from jaxcoded.schemes import base
from jaxcoded.training import checkpoints, loop, optimizers

__all__ = [
    "as_worker_fn",
    "augment_crop_flip",
    "batch_stream",
    "build_model",
    "classification_loss",
    "deployable",
    "evaluate",
    "load",
    "load_or_train",
    "train",
]

def batch_stream(
    dataset: data.Dataset, batch_size: int, *, seed: int, start_step: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Endless shuffled minibatches, starting at a given global step.

  Epoch ``e`` is ``data.batches(dataset, batch_size, seed=seed, epoch=e)``
  (remainder dropped), so batch number ``s`` is a function of (seed, s) only:
  starting at ``start_step`` yields exactly what an iterator started at 0
  yields from its ``start_step``-th batch on.

  Args:
    dataset: the examples.
    batch_size: examples per batch.
    seed: shuffling seed.
    start_step: index of the first batch to yield, >= 0.

  Yields:
    (images, labels): (batch_size, H, W, C) float32 and (batch_size,) int32.
  """
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  steps_per_epoch = len(dataset) // batch_size
  if steps_per_epoch == 0:
    raise ValueError(
        f"batch_size {batch_size} is larger than the {len(dataset)} examples of "
        f"{dataset.name}/{dataset.split}."
    )
  epoch, offset = divmod(start_step, steps_per_epoch)
  for e in itertools.count(epoch):
    epoch_batches = data.batches(dataset, batch_size, seed=seed, epoch=e)
    yield from itertools.islice(epoch_batches, offset if e == epoch else 0, None)


@functools.partial(jax.jit, static_argnames="padding")
def augment_crop_flip(images: jax.Array, rng: jax.Array, *, padding: int = 4) -> jax.Array:
  """Random translation (zero-pad and crop) and horizontal flip, per image.

  The standard CIFAR augmentation (He et al. 2016): pad each side by
  ``padding`` pixels of zeros (the normalised mean), crop a random window of
  the original size, and flip left-right with probability 1/2.

  Args:
    images: (B, H, W, C).
    rng: a PRNG key.
    padding: pixels of padding per side, >= 0.

  Returns:
    (B, H, W, C) augmented images.
  """
  b, h, w, c = images.shape
  crop_key, flip_key = jax.random.split(rng)
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  corners = jax.random.randint(crop_key, (b, 2), 0, 2 * padding + 1)

  def crop(image, corner):
    return jax.lax.dynamic_slice(image, (corner[0], corner[1], 0), (h, w, c))

  cropped = jax.vmap(crop)(padded, corners)
  flip = jax.random.bernoulli(flip_key, 0.5, (b, 1, 1, 1))
  return jnp.where(flip, cropped[:, :, ::-1, :], cropped)


def classification_loss(
    model: nnx.Module,
    batch: tuple[jax.Array, jax.Array],
    rng: jax.Array,
    *,
    crop_padding: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean softmax cross-entropy of a classifier on one batch.

  Args:
    model: maps (B, H, W, C) images to (B, num_classes) logits.
    batch: (images (B, H, W, C), labels (B,) int).
    rng: key for the augmentation (unused without it).
    crop_padding: if not None, first augment the images with
      :func:`augment_crop_flip` at this padding.

  Returns:
    (loss, {"loss": loss, "accuracy": fraction of correct top-1}), scalars.
  """
  images, labels = batch
  if crop_padding is not None:
    images = augment_crop_flip(images, rng, padding=crop_padding)
  logits = model(images)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  accuracy = (jnp.argmax(logits, axis=-1) == labels).mean()
  return loss, {"loss": loss, "accuracy": accuracy}


@nnx.jit
def _eval_sums(model: nnx.Module, images: jax.Array, labels: jax.Array, valid: jax.Array):
  logits = model(images)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = jnp.argmax(logits, axis=-1) == labels
  return jnp.sum(jnp.where(valid, losses, 0.0)), jnp.sum(correct & valid)


def evaluate(
    model: nnx.Module, dataset: data.Dataset, *, batch_size: int = 1000
) -> dict[str, float]:
  """Top-1 accuracy and mean cross-entropy of a classifier on a whole dataset.

  The model runs in eval mode (``nnx.view`` with ``deterministic=True,
  use_running_average=True``; the given model is not changed). Every batch
  has the same shape: the last one is padded and the padding masked out, so
  one compiled function serves the whole dataset.

  Args:
    model: maps (B, H, W, C) images to (B, num_classes) logits.
    dataset: the examples.
    batch_size: examples per forward pass.

  Returns:
    {"accuracy": ..., "loss": ...} as Python floats.
  """
  n = len(dataset)
  if n == 0:
    raise ValueError(f"Cannot evaluate on the empty dataset {dataset.name}/{dataset.split}.")
  batch_size = min(batch_size, n)
  eval_model = nnx.view(
      model, deterministic=True, use_running_average=True, raise_if_not_found=False
  )
  loss_sum, correct = 0.0, 0
  for start in range(0, n, batch_size):
    images = dataset.images[start : start + batch_size]
    labels = dataset.labels[start : start + batch_size]
    valid = np.arange(batch_size) < len(labels)
    pad = batch_size - len(labels)
    images = np.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
    labels = np.pad(labels, (0, pad))
    batch_loss, batch_correct = _eval_sums(eval_model, images, labels, valid)
    loss_sum += float(batch_loss)
    correct += int(batch_correct)
  return {"accuracy": correct / n, "loss": loss_sum / n}


# ---------------------------------------------------------------------------


def build_model(config: ml_collections.ConfigDict) -> nnx.Module:
  kwargs = dict(config.get("model_kwargs") or {})
  return models.create(
      config.model, num_classes=config.num_classes, rngs=nnx.Rngs(config.seed), **kwargs
  )


def train(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> loop.TrainResult:
  """Trains a base classifier as configured and evaluates it on the test split.

  Config fields, besides those of ``loop.fit`` and ``optimizers.make_optimizer``:
    dataset: a registered dataset (``data.datasets()``); data_dir, data_source (optional):
      passed to ``data.load``.
    model: a name from ``models.MODELS``; model_kwargs (optional): passed to
      ``models.create``; num_classes: must match the dataset.
    batch_size, eval_batch_size: examples per train step and per eval pass.
    augment: random crops and flips (:func:`augment_crop_flip`) in training,
      with ``crop_padding`` pixels of padding.

  Eval metrics (``test_accuracy``, ``test_loss``) go to ``metrics.jsonl`` at
  eval steps and to ``final_metrics.json`` at the end.

  Args:
    config: the run's config (see ``configs/``).
    workdir: output directory; a run there is resumed.

  Returns:
    A ``loop.TrainResult``; ``final_metrics["test_accuracy"]`` is the test
    accuracy of the final model.
  """
  load = dict(data_dir=config.get("data_dir"), source=config.get("data_source") or "auto")
  train = data.load(config.dataset, "train", seed=config.seed, **load)
  test = data.load(config.dataset, "test", seed=None, **load)
  if train.num_classes != config.num_classes:
    raise ValueError(
        f"config.num_classes={config.num_classes} but {config.dataset} has "
        f"{train.num_classes} classes."
    )
  expected_shape = models.INPUT_SHAPES.get(config.model)
  if expected_shape is not None and tuple(expected_shape) != train.image_shape:
    raise ValueError(
        f"Model {config.model} expects images of shape {tuple(expected_shape)}, but "
        f"{config.dataset} images are {train.image_shape}."
    )

  model = build_model(config)
  tx, schedule = optimizers.make_optimizer(config)
  loss_fn = _augmented_loss(config.crop_padding) if config.augment else classification_loss

  def eval_fn(model):
    metrics = evaluate(model, test, batch_size=config.eval_batch_size)
    return {f"test_{name}": value for name, value in metrics.items()}

  return loop.fit(
      model,
      tx,
      loss_fn,
      lambda start: batch_stream(train, config.batch_size, seed=config.seed, start_step=start),
      num_steps=config.num_steps,
      workdir=workdir,
      config=config,
      eval_fn=eval_fn,
      learning_rate_fn=schedule,
  )


@functools.lru_cache(maxsize=8)
def _augmented_loss(crop_padding: int) -> loop.LossFn:
  """classification_loss with augmentation; cached, so runs share the compiled step."""

  def loss_fn(model, batch, rng):
    return classification_loss(model, batch, rng, crop_padding=crop_padding)

  return loss_fn


def load(
    workdir: str | os.PathLike, step: int | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
  """Loads a classifier trained by :func:`train` from its workdir.

  Args:
    workdir: the training run's workdir.
    step: which checkpoint; default the latest.

  Returns:
    (model in eval mode, the run's config).

  Raises:
    FileNotFoundError: no config or no checkpoint in the workdir.
  """
  def build(config):
    task = config.get("task", "classifier")
    if task != "classifier":
      raise ValueError(
          f"{workdir} holds a {task!r} run, not a classifier: use "
          "jaxcoded.training.load(workdir), which reads any task."
      )
    return build_model(config)

  return checkpoints.restore_module(workdir, build, step)


def as_worker_fn(model: nnx.Module) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
  """A classifier as a pure ``worker_fn(params, x)`` for one example, and its params.

  The model runs in eval mode; ``worker_fn`` maps one (H, W, C) input to its
  (C,) logits.
  """
  eval_model = nnx.view(
      model, deterministic=True, use_running_average=True, raise_if_not_found=False
  )
  graphdef, state = nnx.split(eval_model)

  def worker_fn(params, x):
    return nnx.merge(graphdef, params)(x[None])[0]

  return worker_fn, state


def deployable(workdir: str | os.PathLike) -> base.WorkerTask:
  """The classifier of ``workdir`` as a worker task."""
  model, _ = load(workdir)
  return base.WorkerTask(*as_worker_fn(model))


def load_or_train(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
  """A frozen base classifier in eval mode, with the config it was trained with.

  Reloaded from ``workdir`` when a finished run is there; otherwise trained
  (or resumed) there from ``config``.
  """
  workdir = pathlib.Path(workdir)
  if loop.is_finished(workdir):
    model, trained_config = load(workdir)
  else:
    model, trained_config = train(config, workdir).model, config
  model.eval()
  return model, trained_config
