"""Training ParM's parity model with Optax (docs/design.md section 4.5).

The parity model f_P is a fresh network of the base classifier's family. It
sees the parity query P = x_1 + ... + x_K of a random group of K training
images and regresses the sum of the frozen base classifier's outputs on
them:

  loss = mean over groups and classes of (f_P(P) - sum_k f(x_k))^2.

Targets are the base classifier's *logits* by default (``config.target =
"logits"``), or its softmax probabilities (``"softmax"``). Logits are the
default because the subtraction decoder f_P(P) - sum_{k != j} f(x_k) is
linear: the decoded vector is compared by its argmax, and logits carry the
base classifier's margins unsquashed, so the regression is asked for what the
decoder needs; ParM's paper likewise regresses the sum of the model's raw
outputs. With softmax targets every output, systematic or decoded, is a
probability vector and the target's range is bounded by K; the scheme then
runs on ``softmax(f)``. Either way the base outputs are computed once for the
whole train set (the base is frozen), and a step's batch is the summed images
with their summed targets.

The loop is the shared ``loop.fit`` (checkpoints and resume,
``config.json``, ``metrics.jsonl``, progress bar, NaN stop). The base
classifier is read from ``config.base_workdir`` (default
``<workdir>/base``) when a finished run is there, else trained into it from
``config.base`` (``classifier.load_or_train``). Eval metrics, on the
test set cut into groups of K:

  test_parity_mse             the loss on test groups;
  test_degraded_accuracy      accuracy of the reconstructed output of a missing
                              query, averaged over which of the K is missing
                              (ParM's degraded-mode accuracy);
  test_degraded_agreement     how often that reconstruction's argmax equals the
                              base classifier's on the missing query;
  test_base_accuracy          the base classifier on the same queries;
  test_one_straggler_accuracy accuracy over all K queries with one straggler,
                              averaged over which of the N = K + 1 workers
                              straggles: (K base + degraded) / (K + 1).

Example:
  >>> from configs import parm_digits  # run from the repository root
  >>> result = train(parm_digits.get_config(), "/tmp/parm_digits")  # doctest: +SKIP
  >>> result.final_metrics["test_degraded_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxcoded import data, models
from jaxcoded.schemes import base, parm
from jaxcoded.training import checkpoints, classifier, loop, optimizers

__all__ = [
    "TARGETS",
    "as_worker_fn",
    "deployable",
    "base_outputs",
    "degraded_metrics",
    "load",
    "load_or_train_base",
    "parity_batches",
    "parity_loss",
    "train",
]

TARGETS = ("logits", "softmax")


def _output_transform(target: str) -> Callable[[jax.Array], jax.Array]:
  if target == "logits":
    return lambda logits: logits
  if target == "softmax":
    return jax.nn.softmax
  raise ValueError(f"Unknown parity target {target!r}; use one of {TARGETS}.")


def as_worker_fn(model: nnx.Module, target: str = "logits") -> tuple[Callable, Any]:
  """A model as a pure ``worker_fn(params, x)`` for one example, and its params.

  Args:
    model: maps (B, ...) inputs to (B, C) logits; used in eval mode.
    target: "logits", or "softmax" for probability outputs.

  Returns:
    (worker_fn, params): ``worker_fn(params, x)`` maps one (H, W, C) input to
    its (C,) output.
  """
  transform = _output_transform(target)
  fn, params = classifier.as_worker_fn(model)
  if target == "logits":
    return fn, params
  return (lambda p, x: transform(fn(p, x))), params


def deployable(workdir: str | os.PathLike) -> base.WorkerTask:
  """The trained parity model of ``workdir`` as the parity worker's task (raw outputs)."""
  model, _ = load(workdir)
  return base.WorkerTask(*as_worker_fn(model))


@functools.partial(nnx.jit, static_argnames="target")
def _forward(model: nnx.Module, images: jax.Array, target: str) -> jax.Array:
  return _output_transform(target)(model(images))


def base_outputs(
    model: nnx.Module, images: np.ndarray, *, target: str = "logits", batch_size: int = 1000
) -> np.ndarray:
  """The model's outputs on every image, in eval mode, in fixed-shape batches.

  Args:
    model: maps (B, H, W, C) images to (B, C) logits.
    images: (n, H, W, C).
    target: "logits" or "softmax".
    batch_size: examples per forward pass (the last batch is padded).

  Returns:
    (n, C) float32 outputs.
  """
  _output_transform(target)
  eval_model = nnx.view(
      model, deterministic=True, use_running_average=True, raise_if_not_found=False
  )
  n = len(images)
  batch_size = max(1, min(batch_size, n))
  chunks = []
  for start in range(0, n, batch_size):
    chunk = images[start : start + batch_size]
    padded = np.pad(chunk, ((0, batch_size - len(chunk)),) + ((0, 0),) * (chunk.ndim - 1))
    chunks.append(np.asarray(_forward(eval_model, jnp.asarray(padded), target))[: len(chunk)])
  return np.concatenate(chunks).astype(np.float32)


def parity_batches(
    images: np.ndarray,
    outputs: np.ndarray,
    num_queries: int,
    groups_per_batch: int,
    *,
    seed: int,
    start_step: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Endless batches of parity queries and targets from random groups of K examples.

  Epoch e shuffles the examples by ``np.random.default_rng([seed, e])`` and
  cuts them into groups of K (remainder dropped), so batch s depends on
  (seed, s) only and a resumed run sees the same batches.

  Args:
    images: (n, H, W, C) training images.
    outputs: (n, C) base outputs on them.
    num_queries: K.
    groups_per_batch: B groups per batch.
    seed: shuffling seed.
    start_step: index of the first batch to yield.

  Yields:
    (parity_queries (B, H, W, C), targets (B, C)): sums over each group.
  """
  per_batch = groups_per_batch * num_queries
  steps_per_epoch = len(images) // per_batch
  if steps_per_epoch == 0:
    raise ValueError(
        f"parity_batches: {len(images)} examples cannot fill one batch of "
        f"{groups_per_batch} groups of K = {num_queries}."
    )
  epoch, offset = divmod(start_step, steps_per_epoch)
  while True:
    order = np.random.default_rng([seed, epoch]).permutation(len(images))
    for i in range(offset, steps_per_epoch):
      index = order[i * per_batch : (i + 1) * per_batch].reshape(groups_per_batch, num_queries)
      yield images[index].sum(axis=1), outputs[index].sum(axis=1)
    epoch, offset = epoch + 1, 0


def parity_loss(
    model: nnx.Module, batch: tuple[jax.Array, jax.Array], rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean squared error of the parity model's output to the summed base outputs.

  Args:
    model: the parity model, (B, H, W, C) -> (B, C).
    batch: (parity queries (B, H, W, C), targets (B, C)).
    rng: unused (no augmentation).

  Returns:
    (loss, {"loss": loss}).
  """
  del rng
  parity_queries, targets = batch
  loss = jnp.mean(jnp.square(model(parity_queries) - targets))
  return loss, {"loss": loss}


def degraded_metrics(
    outputs: ArrayLike, parity_outputs: ArrayLike, labels: ArrayLike
) -> dict[str, float]:
  """ParM's metrics from the base outputs and parity outputs of G groups.

  For every group and every query j, the reconstruction f_P(P) -
  sum_{k != j} f(x_k) is the decoded output when j alone straggles; it is
  computed here in float64 for all j at once.

  Args:
    outputs: (G, K, C) base outputs f(x_k).
    parity_outputs: (G, C) parity outputs f_P(P).
    labels: (G, K) true labels.

  Returns:
    {"parity_mse", "degraded_accuracy", "degraded_agreement", "base_accuracy",
    "one_straggler_accuracy"} (see the module docstring), Python floats.
  """
  outputs = np.asarray(outputs, np.float64)
  parity_outputs = np.asarray(parity_outputs, np.float64)
  labels = np.asarray(labels)
  if outputs.ndim != 3 or parity_outputs.shape != (outputs.shape[0], outputs.shape[2]):
    raise ValueError(
        f"degraded_metrics: outputs must be (G, K, C) and parity outputs (G, C), got "
        f"{outputs.shape} and {parity_outputs.shape}."
    )
  if labels.shape != outputs.shape[:2]:
    raise ValueError(f"degraded_metrics: labels must be {outputs.shape[:2]}, got {labels.shape}.")
  num_queries = outputs.shape[1]
  total = outputs.sum(axis=1)
  reconstructed = parity_outputs[:, None, :] - (total[:, None, :] - outputs)
  base_predictions = outputs.argmax(-1)
  degraded_predictions = reconstructed.argmax(-1)
  base_accuracy = float(np.mean(base_predictions == labels))
  degraded_accuracy = float(np.mean(degraded_predictions == labels))
  return {
      "parity_mse": float(np.mean(np.square(parity_outputs - total))),
      "degraded_accuracy": degraded_accuracy,
      "degraded_agreement": float(np.mean(degraded_predictions == base_predictions)),
      "base_accuracy": base_accuracy,
      "one_straggler_accuracy": (num_queries * base_accuracy + degraded_accuracy)
      / (num_queries + 1),
  }


def load_or_train_base(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> nnx.Module:
  """The frozen base classifier, in eval mode.

  Read from ``config.base_workdir`` (``""``: ``<workdir>/base``) when a
  finished run is there (``final_metrics.json``); otherwise trained (or
  resumed) there from ``config.base`` (``classifier.load_or_train``).
  """
  base_workdir = pathlib.Path(config.get("base_workdir") or pathlib.Path(workdir) / "base")
  model, base_config = classifier.load_or_train(config.base, base_workdir)
  if base_config.dataset != config.dataset or base_config.num_classes != config.num_classes:
    raise ValueError(
        f"The base classifier in {base_workdir} was trained on {base_config.dataset} "
        f"({base_config.num_classes} classes), but this parity config is for {config.dataset} "
        f"({config.num_classes} classes)."
    )
  model.eval()
  return model


def load(
    workdir: str | os.PathLike, step: int | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
  """A parity model trained by :func:`train`, with its run's config.

  Raises:
    FileNotFoundError: not a checkpointed parity workdir.
    ValueError: the workdir holds another kind of run.
  """

  def build(config):
    if config.get("task") != "parity":
      raise ValueError(
          f"{workdir} holds a {config.get('task', 'classifier')!r} run, not a parity model "
          "(config.task == 'parity')."
      )
    kwargs = dict(config.get("model_kwargs") or {})
    return models.create(config.model, num_classes=config.num_classes, rngs=nnx.Rngs(0), **kwargs)

  return checkpoints.restore_module(workdir, build, step)


def _check_config(config: ml_collections.ConfigDict) -> None:
  if config.get("task", "parity") != "parity":
    raise ValueError(f"parity.train needs config.task == 'parity', got {config.task!r}.")
  parm.ParityCode.sizes_for(config.num_queries, config.num_parities)
  _output_transform(config.target)
  if config.groups_per_batch < 1:
    raise ValueError(f"config.groups_per_batch must be >= 1, got {config.groups_per_batch}.")


def train(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> loop.TrainResult:
  """Trains ParM's parity model for the frozen base classifier (resuming in ``workdir``).

  Config fields (see ``configs/parm_digits.py``):
    task: "parity".
    dataset, num_classes, data_dir, data_source: the data (``data.load``).
    base, base_workdir: the base classifier's config and workdir (see
      :func:`load_or_train_base`).
    num_queries, num_parities: K and r (r must be 1).
    target: "logits" or "softmax", the outputs the parity model regresses.
    model, model_kwargs: the parity model (``models.create``), normally the
      base classifier's architecture.
    groups_per_batch: groups (parity queries) per step.
    eval_batch_size: parity queries per eval forward pass.
    the optimizer and schedule fields of ``optimizers.make_optimizer``, and
    the loop fields of ``loop.fit``.

  Args:
    config: the run's config.
    workdir: output directory (config.json, metrics.jsonl, checkpoints).

  Returns:
    ``loop.TrainResult``; ``final_metrics`` holds the eval metrics of the
    module docstring with the prefix ``test_``.
  """
  _check_config(config)
  workdir = pathlib.Path(workdir).absolute()
  base_model = load_or_train_base(config, workdir)
  load = dict(data_dir=config.get("data_dir"), source=config.get("data_source") or "auto")
  train = data.load(config.dataset, "train", seed=config.seed, **load)
  test = data.load(config.dataset, "test", seed=None, **load)
  k = config.num_queries
  eval_batch = config.eval_batch_size

  train_outputs = base_outputs(
      base_model, train.images, target=config.target, batch_size=eval_batch
  )
  num_groups = len(test) // k
  if num_groups == 0:
    raise ValueError(f"The {len(test)} test examples cannot form one group of K = {k}.")
  test_images = test.images[: num_groups * k].reshape(num_groups, k, *test.image_shape)
  test_labels = test.labels[: num_groups * k].reshape(num_groups, k)
  test_outputs = base_outputs(
      base_model, test.images[: num_groups * k], target=config.target, batch_size=eval_batch
  ).reshape(num_groups, k, -1)
  test_parity_queries = test_images.sum(axis=1)

  def eval_fn(model):  # The parity model's raw output is its estimate of the summed target.
    parity_outputs = base_outputs(
        model, test_parity_queries, target="logits", batch_size=eval_batch
    )
    metrics = degraded_metrics(test_outputs, parity_outputs, test_labels)
    return {f"test_{name}": value for name, value in metrics.items()}

  kwargs = dict(config.get("model_kwargs") or {})
  parity_model = models.create(
      config.model, num_classes=config.num_classes, rngs=nnx.Rngs(config.seed + 1), **kwargs
  )
  tx, schedule = optimizers.make_optimizer(config)
  return loop.fit(
      parity_model,
      tx,
      parity_loss,
      lambda start: parity_batches(
          train.images, train_outputs, k, config.groups_per_batch, seed=config.seed,
          start_step=start,
      ),
      num_steps=config.num_steps,
      workdir=workdir,
      config=config,
      eval_fn=eval_fn,
      learning_rate_fn=schedule,
  )
