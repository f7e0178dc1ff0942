"""One plain training loop: Optax updates, Orbax checkpoints, JSON-lines metrics.

Two layers:

  :func:`fit`                 the generic loop. It trains any NNX model with a
                              user-supplied ``loss_fn(model, batch, rng) ->
                              (loss, metrics)``, checkpoints, resumes, logs and
                              evaluates. Base classifiers use it here; learned
                              coders (a coder around a frozen classifier, a
                              random straggler mask per step) use it too.
  :func:`train_and_evaluate`  a base classifier from a config: data, model,
                              optimizer and schedule, then :func:`fit`.

:func:`load_model` reads a trained classifier back from its workdir,
:func:`restore_module` any module trained by :func:`fit`.

The workdir after a run::

  config.json          the resolved config of the latest (re)start
  metrics.jsonl        one JSON object per logged step (train averages since
                       the previous log line, learning rate, steps/s, and the
                       eval metrics at eval steps)
  final_metrics.json   the final step's metrics and eval, once training ends
  checkpoints/<step>/  Orbax checkpoints: items "model" (``nnx.state(model)``)
                       and "optimizer" (``nnx.state(optimizer)``)

Resuming: :func:`fit` restores the latest checkpoint in the workdir, if any,
and continues from its step. Every source of randomness is a function of the
global step (the per-step key is ``jax.random.fold_in(key, step)``, the batch
iterator is asked to start at the step, the learning rate schedule counts the
optimizer's restored step), so an interrupted and resumed run computes exactly
what an uninterrupted run does. Lines of ``metrics.jsonl`` written after the
restored checkpoint are dropped on resume, so the file reads as one run.

Example:
  >>> from jaxcoded import training
  >>> from configs import digits  # run from the repository root
  >>> result = training.train_and_evaluate(digits.get_config(), "/tmp/digits")
  >>> result.final_metrics["test_accuracy"] > 0.9  # doctest: +SKIP
  True
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from absl import logging
from flax import nnx

from jaxcoded import data, models

__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "augment_crop_flip",
    "batch_stream",
    "classification_loss",
    "evaluate",
    "fit",
    "load_model",
    "make_optimizer",
    "make_schedule",
    "read_metrics",
    "train_and_evaluate",
]

Batch = Any
LossFn = Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
FINAL_METRICS_FILE = "final_metrics.json"


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; nothing of that state was saved."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """What :func:`fit` and :func:`train_and_evaluate` return.

  Attributes:
    model: the trained model (in training mode; the object passed to fit).
    step: the number of optimizer steps taken, counting those of earlier runs
      that this one resumed.
    completed: whether ``step`` reached ``num_steps`` (False after
      ``stop_after_steps``).
    final_metrics: for a completed run, the last logged train metrics and the
      final eval metrics (also in ``final_metrics.json``); else empty.
  """

  model: nnx.Module = dataclasses.field(repr=False)
  step: int
  completed: bool
  final_metrics: dict[str, float]


# ---------------------------------------------------------------------------
# Data, losses and evaluation for classifiers.


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
    images = np.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0)))
    labels = np.pad(labels, (0, pad))
    batch_loss, batch_correct = _eval_sums(eval_model, images, labels, valid)
    loss_sum += float(batch_loss)
    correct += int(batch_correct)
  return {"accuracy": correct / n, "loss": loss_sum / n}


# ---------------------------------------------------------------------------
# Optimizer.


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning rate as a function of the optimizer step.

  Config fields: ``learning_rate`` (peak), ``schedule`` ("constant" or
  "warmup_cosine": linear warmup from 0 over ``warmup_steps``, then cosine
  decay to 0 at ``num_steps``), ``warmup_steps``, ``num_steps``.
  """
  return _schedule(config.schedule, config.learning_rate, config.warmup_steps, config.num_steps)


def make_optimizer(
    config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The Optax transformation and its learning-rate schedule.

  Config fields: ``optimizer`` ("adamw", or "sgd" with Nesterov momentum
  ``momentum``), ``weight_decay`` (decoupled, on all parameters), and the
  schedule's fields (:func:`make_schedule`). Equal settings give the same
  (cached) objects: ``nnx.Optimizer`` keeps the transformation in its static
  structure, so this lets repeated runs in one process share the compiled
  train step.
  """
  return _optimizer(
      config.optimizer,
      config.weight_decay,
      config.momentum,
      config.schedule,
      config.learning_rate,
      config.warmup_steps,
      config.num_steps,
  )


@functools.lru_cache(maxsize=32)
def _schedule(kind: str, learning_rate: float, warmup_steps: int, num_steps: int) -> optax.Schedule:
  if kind == "constant":
    return optax.constant_schedule(learning_rate)
  if kind == "warmup_cosine":
    if not 0 <= warmup_steps < num_steps:
      raise ValueError(f"warmup_steps must be in [0, num_steps={num_steps}), got {warmup_steps}.")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=num_steps,
        end_value=0.0,
    )
  raise ValueError(f"Unknown schedule {kind!r}; use 'constant' or 'warmup_cosine'.")


@functools.lru_cache(maxsize=32)
def _optimizer(
    kind: str, weight_decay: float, momentum: float, *schedule_args
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = _schedule(*schedule_args)
  if kind == "adamw":
    tx = optax.adamw(schedule, weight_decay=weight_decay)
  elif kind == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(schedule, momentum=momentum, nesterov=True),
    )
  else:
    raise ValueError(f"Unknown optimizer {kind!r}; use 'adamw' or 'sgd'.")
  return tx, schedule


# ---------------------------------------------------------------------------
# The loop.


def _train_step(
    model: nnx.Module, optimizer: nnx.Optimizer, batch: Batch, rng: jax.Array, loss_fn: LossFn
):
  # A plain positional signature: nnx.grad cannot bind keyword-only defaults.
  def loss(model, batch, rng):
    return loss_fn(model, batch, rng)

  grad_fn = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)
  (_, metrics), grads = grad_fn(model, batch, rng)
  optimizer.update(model, grads)
  return metrics


_jit_train_step = nnx.jit(_train_step, static_argnames="loss_fn", donate_argnums=(0, 1))


def _checkpoint_args(model: nnx.Module, optimizer: nnx.Optimizer) -> ocp.args.Composite:
  return ocp.args.Composite(
      model=ocp.args.StandardSave(nnx.state(model)),
      optimizer=ocp.args.StandardSave(nnx.state(optimizer)),
  )


def _restore(
    manager: ocp.CheckpointManager, step: int, model: nnx.Module, optimizer: nnx.Optimizer
) -> None:
  """Restores a checkpoint into the (already built) model and optimizer."""
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  restored = manager.restore(
      step,
      args=ocp.args.Composite(
          model=ocp.args.StandardRestore(abstract(nnx.state(model))),
          optimizer=ocp.args.StandardRestore(abstract(nnx.state(optimizer))),
      ),
  )
  nnx.update(model, restored["model"])
  nnx.update(optimizer, restored["optimizer"])


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
  """Drops the lines of a metrics file logged after ``last_step``."""
  if not path.exists():
    return
  lines = [line for line in path.read_text().splitlines() if line]
  kept = [line for line in lines if json.loads(line)["step"] <= last_step]
  path.write_text("".join(line + "\n" for line in kept))


def _check_finite(loss: float, step: int, last_finite: tuple[int, float] | None, saved: int | None):
  if math.isfinite(loss):
    return
  before = "no finite loss before it" if last_finite is None else (
      f"last finite loss {last_finite[1]:.6g} at step {last_finite[0]}"
  )
  where = "no checkpoint was saved" if saved is None else f"the latest checkpoint is step {saved}"
  raise NonFiniteLossError(
      f"Training loss became {loss} at step {step} ({before}); stopped without saving this state, "
      f"{where}. Lower the learning rate or check the inputs and the loss."
  )


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    train_batches: Callable[[int], Iterator[Batch]],
    *,
    num_steps: int,
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
    learning_rate_fn: optax.Schedule | None = None,
    wrt: nnx.filterlib.Filter = nnx.Param,
) -> TrainResult:
  """Trains ``model`` in place for ``num_steps`` optimizer steps, resuming if it can.

  Steps count from 1: step ``s`` is the s-th optimizer update, and a
  checkpoint or metrics record at step ``s`` holds the state after it. Step
  ``s`` computes ``loss_fn(model, batch, jax.random.fold_in(key, s))`` with
  ``key = jax.random.key(config.seed)``, differentiates it with respect to
  the model's variables selected by ``wrt`` (default all ``nnx.Param`` s;
  other state, such as BatchNorm statistics, follows the forward pass) and
  applies ``tx`` through ``nnx.Optimizer``. The step is one ``nnx.jit``-compiled
  function, compiled once per ``loss_fn`` and batch shape.

  If ``workdir/checkpoints`` holds a checkpoint, its model and optimizer
  state are restored and training continues after its step ``s``, asking
  ``train_batches(s)`` for the batches from there on.

  Config fields read (besides what it writes to ``config.json``):
    seed: the per-step key's seed.
    log_every: log averaged train metrics every this many steps.
    eval_every: run ``eval_fn`` every this many steps (0: only at the end);
      eval steps are logged too.
    checkpoint_every: save every this many steps; the last step is always
      saved.
    keep_checkpoints: how many of the latest checkpoints to keep.
    progress_bar: show a tqdm bar (only when stderr is a terminal).
    stop_after_steps (optional): stop once this global step is reached, as if
      the run were interrupted there (no extra checkpoint, no final eval).
      The schedule still spans ``num_steps``. 0 or None: run to the end.

  Args:
    model: the model to train, modified in place.
    tx: the Optax transformation; its schedule must count optimizer steps.
    loss_fn: ``loss_fn(model, batch, rng) -> (loss, metrics)``: a scalar
      loss and a dict of scalar metrics to average and log. Static under jit
      (hashable; pass the same function object on each call to reuse the
      compiled step).
    train_batches: ``train_batches(num_done)`` returns an iterator of the
      batches after the first ``num_done`` ones (its i-th item, from 0, is
      the batch of step ``num_done + 1 + i``); it must give the same batches
      whatever ``num_done`` it starts from.
    num_steps: total optimizer steps of the run, resumed or not.
    workdir: where config, metrics and checkpoints go.
    config: the run's config.
    eval_fn: ``eval_fn(model) -> {name: float}``, called at eval steps and at
      the end; its results join that step's metrics record as returned (name
      them apart from the train metrics, e.g. ``test_accuracy``).
    learning_rate_fn: the schedule, to log the learning rate of each step.
    wrt: which variables to train (an NNX filter, e.g. ``nnx.All(nnx.Param,
      nnx.PathContains("encoder"))`` to leave a frozen sub-model alone); the
      rest is neither differentiated nor decayed.

  Returns:
    A :class:`TrainResult`.

  Raises:
    NonFiniteLossError: the loss became NaN or inf. No checkpoint holds that
      state; pending saves of earlier, finite states are completed.
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
  for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
    if config[name] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]}.")
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / CONFIG_FILE).write_text(config.to_json(indent=2, sort_keys=True) + "\n")
  metrics_path = workdir / METRICS_FILE

  optimizer = nnx.Optimizer(model, tx, wrt=wrt)
  manager = ocp.CheckpointManager(
      workdir / CHECKPOINT_DIR,
      options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints),
  )
  start_step = manager.latest_step() or 0
  if start_step > num_steps:
    raise ValueError(
        f"{workdir / CHECKPOINT_DIR} holds step {start_step}, beyond num_steps={num_steps}: "
        "use a fresh workdir or a larger num_steps."
    )
  if start_step:
    try:
      _restore(manager, start_step, model, optimizer)
    except Exception as error:  # Orbax and TensorStore raise bare Exceptions for damaged data.
      manager.close()
      raise ValueError(
          f"Cannot resume from {workdir / CHECKPOINT_DIR / str(start_step)}: that checkpoint is "
          f"damaged, incomplete or of another model ({type(error).__name__}: {str(error)[:300]}). "
          "A crash does not leave such a directory (Orbax writes into "
          "'<step>.orbax-checkpoint-tmp' and renames it when complete; those are ignored): "
          "move it away to resume from an "
          f"earlier step (committed steps: {list(manager.all_steps())})."
      ) from error
    logging.info("Resumed from %s at step %d.", workdir / CHECKPOINT_DIR, start_step)
  _truncate_metrics(metrics_path, start_step)

  stop_step = max(start_step, min(config.get("stop_after_steps") or num_steps, num_steps))
  key = jax.random.key(config.seed)
  eval_every = config.eval_every
  saved_step = start_step or None
  last_finite = None
  sums, count = {}, 0
  record = {}
  tick = time.perf_counter()
  show_bar = bool(config.progress_bar) and sys.stderr.isatty()
  bar = tqdm.tqdm(
      total=num_steps, initial=start_step, disable=not show_bar, desc="train", unit="step"
  )
  batches = train_batches(start_step)
  try:
    for step in range(start_step + 1, stop_step + 1):
      batch = next(batches)
      rng = jax.random.fold_in(key, step)
      metrics = _jit_train_step(model, optimizer, batch, rng, loss_fn=loss_fn)
      metrics = jax.device_get(metrics)
      _check_finite(float(metrics["loss"]), step, last_finite, saved_step)
      last_finite = (step, float(metrics["loss"]))
      for name, value in metrics.items():
        sums[name] = sums.get(name, 0.0) + float(value)
      count += 1
      bar.update()

      eval_now = eval_fn is not None and (
          step == num_steps or (eval_every and step % eval_every == 0)
      )
      if eval_now or step % config.log_every == 0 or step == num_steps:
        now = time.perf_counter()
        record = {"step": step, **{name: total / count for name, total in sums.items()}}
        if learning_rate_fn is not None:  # The optimizer counts from 0.
          record["learning_rate"] = float(learning_rate_fn(step - 1))
        record["steps_per_second"] = count / (now - tick)
        if eval_now:
          record.update(eval_fn(model))
        with metrics_path.open("a") as f:
          f.write(json.dumps(record) + "\n")
        shown = ("loss", "accuracy", "test_accuracy")
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in shown})
        logging.info("%s", " ".join(f"{k}={v:.6g}" for k, v in record.items()))
        sums, count = {}, 0
        tick = time.perf_counter()

      if step % config.checkpoint_every == 0 or step == num_steps:
        manager.save(step, args=_checkpoint_args(model, optimizer))
        saved_step = step
  finally:
    bar.close()
    manager.wait_until_finished()
    manager.close()

  completed = stop_step == num_steps
  final_metrics = {}
  if completed:
    if start_step == num_steps:  # Finished earlier: report its last record again.
      records = read_metrics(workdir) if metrics_path.exists() else []
      if records and records[-1]["step"] == num_steps:
        record = records[-1]
      else:
        record = {"step": num_steps, **(eval_fn(model) if eval_fn is not None else {})}
    final_metrics = dict(record)
    (workdir / FINAL_METRICS_FILE).write_text(json.dumps(final_metrics, indent=2) + "\n")
  return TrainResult(model=model, step=stop_step, completed=completed, final_metrics=final_metrics)


# ---------------------------------------------------------------------------
# Base classifiers.


def _build_model(config: ml_collections.ConfigDict) -> nnx.Module:
  kwargs = dict(config.get("model_kwargs") or {})
  return models.create(
      config.model, num_classes=config.num_classes, rngs=nnx.Rngs(config.seed), **kwargs
  )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> TrainResult:
  """Trains a base classifier as configured and evaluates it on the test split.

  Config fields, besides those of :func:`fit` and :func:`make_optimizer`:
    dataset: a name from ``data.DATASETS``; data_dir, data_source (optional):
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
    A :class:`TrainResult`; ``final_metrics["test_accuracy"]`` is the test
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

  model = _build_model(config)
  tx, schedule = make_optimizer(config)
  loss_fn = _augmented_loss(config.crop_padding) if config.augment else classification_loss

  def eval_fn(model):
    metrics = evaluate(model, test, batch_size=config.eval_batch_size)
    return {f"test_{name}": value for name, value in metrics.items()}

  return fit(
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
def _augmented_loss(crop_padding: int) -> LossFn:
  """classification_loss with augmentation; cached, so runs share the compiled step."""

  def loss_fn(model, batch, rng):
    return classification_loss(model, batch, rng, crop_padding=crop_padding)

  return loss_fn


def restore_module(
    workdir: str | os.PathLike,
    build: Callable[[ml_collections.ConfigDict], nnx.Module],
    step: int | None = None,
    *,
    abstract: bool = True,
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
  """Any module trained by :func:`fit`, read back from its workdir.

  The module is built from the run's ``config.json`` and its state restored
  from a checkpoint; the optimizer state is not read.

  Args:
    workdir: the training run's workdir.
    build: ``build(config) -> module`` with the same structure as the trained one.
    step: which checkpoint; default the latest.
    abstract: build under ``nnx.eval_shape`` (nothing allocated); False for
      modules whose construction computes with concrete values (the learned
      codes' evaluation points and degree check).

  Returns:
    (module in eval mode, the run's config).

  Raises:
    FileNotFoundError: no config or no checkpoint in the workdir.
    ValueError: the checkpoint does not fit the module ``build`` makes (a
      checkpoint of another scheme or shape).
  """
  workdir = pathlib.Path(workdir).absolute()
  config_path = workdir / CONFIG_FILE
  if not config_path.exists():
    raise FileNotFoundError(f"{config_path} does not exist: {workdir} is not a training workdir.")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  with ocp.CheckpointManager(workdir / CHECKPOINT_DIR) as manager:
    if step is None:
      step = manager.latest_step()
    if step is None or step not in manager.all_steps():
      which = "" if step is None else f"for step {step} "
      raise FileNotFoundError(
          f"No checkpoint {which}in {workdir / CHECKPOINT_DIR} "
          f"(steps there: {list(manager.all_steps())})."
      )
    template = nnx.eval_shape(lambda: build(config)) if abstract else build(config)
    graphdef, abstract_state = nnx.split(template)
    try:
      restored = manager.restore(
          step, args=ocp.args.Composite(model=ocp.args.StandardRestore(abstract_state))
      )
    except (ValueError, KeyError, TypeError) as error:
      raise ValueError(
          f"The checkpoint in {workdir} (step {step}) does not match the module built from its "
          f"config.json: it was written by another scheme, model or shape. ({error})"
      ) from error
  module = nnx.merge(graphdef, restored["model"])
  module.eval()
  return module, config


def load_model(
    workdir: str | os.PathLike, step: int | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
  """Loads a classifier trained by :func:`train_and_evaluate` from its workdir.

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
          "coder_training.load_code or parity_training.load_parity_model."
      )
    return _build_model(config)

  return restore_module(workdir, build, step)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, float]]:
  """The records of ``metrics.jsonl`` in a workdir, in order."""
  path = pathlib.Path(workdir) / METRICS_FILE
  return [json.loads(line) for line in path.read_text().splitlines() if line]
