"""End-to-end training of the learned codes with Optax (docs/design.md section 4.6).

Each step draws a batch of groups of K training images and, per group, a random
availability mask with between R and N workers returning ("masked straggler
dropout"); the loss is the cross-entropy of the decoded logits to the labels,
optionally plus distillation to the frozen base classifier's softmax.

The loop is the shared one, ``loop.fit`` (Orbax checkpoints and resume,
``config.json``, JSON-lines metrics, progress, NaN stop). The base classifier
(the learned Lagrange code's workers, the distillation teacher, and the base
accuracy) is trained by ``classifier.load_or_train`` from ``config.base``
into ``config.base_workdir`` (default ``<workdir>/base``), or simply reloaded
when that workdir already holds the finished run. At the end the code is
evaluated at S = 0 .. N - R stragglers; the returned ``TrainResult.report``
(also ``results.json``) records the accuracies with the master budget in use
and the load table.

Example (seconds):
  >>> from configs import coder_digits
  >>> result = train(coder_digits.get_config(), "/tmp/coder")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxcoded import data, deployment, distributed, models, stragglers
from jaxcoded import load as load_lib
from jaxcoded.comparison import metrics
from jaxcoded.schemes import learned, systematic
from jaxcoded.training import checkpoints, classifier, loop

__all__ = [
    "build_code",
    "deployable",
    "evaluate_code",
    "group_stream",
    "make_loss_fn",
    "load",
    "report_deployments",
    "train",
]


def group_stream(
    images: np.ndarray,
    labels: np.ndarray,
    teacher_logits: np.ndarray,
    num_queries: int,
    groups_per_batch: int,
    *,
    seed: int,
    start_step: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Endless batches of groups, starting at a global step (for resuming).

  Epoch e shuffles by ``np.random.default_rng([seed, e])``; batch s depends on
  (seed, s) only.

  Yields:
    images (B, K, H, W, C), labels (B, K), teacher logits (B, K, C).
  """
  per_batch = groups_per_batch * num_queries
  steps_per_epoch = len(labels) // per_batch
  if steps_per_epoch == 0:
    raise ValueError(f"group_stream: {len(labels)} examples cannot fill one batch of {per_batch}.")
  epoch, offset = divmod(start_step, steps_per_epoch)
  while True:
    order = np.random.default_rng([seed, epoch]).permutation(len(labels))
    for i in range(offset, steps_per_epoch):
      index = order[i * per_batch : (i + 1) * per_batch].reshape(groups_per_batch, num_queries)
      yield images[index], labels[index], teacher_logits[index]
    epoch, offset = epoch + 1, 0


# ---------------------------------------------------------------------------
# Building blocks.


def _optional_tuple(value):
  """A config's sequence as a tuple; None or an empty sequence stays None."""
  return tuple(int(v) for v in value) if value else None


def _polynomial(config, input_shape, num_classes, classifier, rngs):
  del classifier  # its workers run their own network
  return learned.PolynomialCode.create(
      config.num_queries, config.num_queries + config.num_stragglers, input_shape, num_classes,
      encoder_degree=config.encoder_degree,
      encoder_features=config.encoder_features,
      worker_features=tuple(config.worker_features),
      worker_out=config.worker_out,
      power=config.power,
      num_activations=config.num_activations,
      worker_kernel=config.get("worker_kernel", 3),
      worker_groups=config.get("worker_groups", 1),
      worker_space_to_depth=config.get("worker_space_to_depth", 1),
      worker_pools=_optional_tuple(config.get("worker_pools", None)),
      worker_activation_at=_optional_tuple(config.get("worker_activation_at", None)),
      head_hidden=config.head_hidden,
      rngs=rngs,
  )


def _lagrange(config, input_shape, num_classes, classifier, rngs):
  return learned.LearnedLagrangeCode.create(
      classifier, config.num_queries, config.num_queries + config.num_stragglers, input_shape,
      num_classes, recovery_threshold=config.recovery_threshold,
      encoder_features=config.encoder_features, rngs=rngs,
  )


def _systematic(config, input_shape, num_classes, classifier, rngs):
  return systematic.LearnedSystematicCode.create(
      classifier, config.num_queries, config.num_stragglers, input_shape, num_classes,
      encoder_features=config.encoder_features,
      decoder_hidden=tuple(config.get("decoder_hidden", (256, 256))),
      sketch_features=config.get("sketch_features", 0),
      sketch_pool=config.get("sketch_pool", 2),
      rngs=rngs,
  )


def _at_trained_n(code) -> list[tuple[int, nnx.Module]]:
  return [(s, code) for s in range(code.max_stragglers + 1)]


def _with_each_parity_count(code) -> list[tuple[int, nnx.Module]]:
  return [(s, code.with_num_parities(s)) for s in range(1, code.max_parities + 1)]


class LearnedKind(NamedTuple):
  """One learned code: how a training config builds it and how its report deploys it.

  Attributes:
    build: ``build(config, input_shape, num_classes, classifier, rngs)``.
    around_classifier: its workers run the frozen base classifier (which
      ``build`` then needs, and which is not trained).
    report_deployments: the code -> [(S, the code as deployed for S)].
  """

  build: Callable[..., nnx.Module]
  around_classifier: bool
  report_deployments: Callable[[nnx.Module], list[tuple[int, nnx.Module]]] = _at_trained_n


# The one table of learned codes, by ``config.scheme``: what ``train`` trains,
# ``load`` restores and the comparison deploys (kind "learned" or
# "learned_systematic", ``jaxcoded.comparison.builders``).
LEARNED_CODES = {
    "polynomial": LearnedKind(_polynomial, around_classifier=False),
    "lagrange": LearnedKind(_lagrange, around_classifier=True),
    "systematic": LearnedKind(_systematic, around_classifier=True,
                              report_deployments=_with_each_parity_count),
}


def learned_kind(config: ml_collections.ConfigDict) -> LearnedKind:
  """The table entry of ``config.scheme``; ValueError naming the known ones otherwise."""
  if config.scheme not in LEARNED_CODES:
    raise ValueError(f"Unknown scheme {config.scheme!r}; use one of {tuple(LEARNED_CODES)}.")
  return LEARNED_CODES[config.scheme]


def build_code(
    config: ml_collections.ConfigDict,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    classifier: nnx.Module | None = None,
    rngs: nnx.Rngs,
) -> nnx.Module:
  """The code a config describes (``config.scheme``, one of ``LEARNED_CODES``)."""
  kind = learned_kind(config)
  if kind.around_classifier and classifier is None:
    raise ValueError(f"build_code: the learned {config.scheme} code needs the base classifier.")
  return kind.build(config, input_shape, num_classes, classifier, rngs)


def load(
    workdir: str | os.PathLike, step: int | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
  """A learned code trained by :func:`train`, read back from its workdir.

  Returns:
    (the PolynomialCode or LearnedLagrangeCode in eval mode, the run's config).

  Raises:
    FileNotFoundError: not a finished or checkpointed coder workdir.
    ValueError: the workdir holds another kind of run.
  """

  def build(config):
    if config.get("task") != "coder":
      raise ValueError(
          f"{workdir} holds a {config.get('task', 'classifier')!r} run, not a learned code "
          "(config.task == 'coder')."
      )
    frozen = classifier.build_model(config.base) if learned_kind(config).around_classifier else None
    return build_code(
        config, data.dataset_spec(config.base.dataset).input_shape, config.base.num_classes,
        classifier=frozen, rngs=nnx.Rngs(0),
    )

  return checkpoints.restore_module(workdir, build, step, abstract=False)


def deployable(workdir: str | os.PathLike) -> nnx.Module:
  """The trained code of ``workdir``: a scheme whose workers run its own network."""
  return load(workdir)[0]


def evaluate_code(
    code: nnx.Module,
    dataset: data.Dataset,
    num_stragglers: int,
    *,
    num_masks: int,
    key: jax.Array,
    max_groups: int | None = None,
) -> np.ndarray:
  """Top-1 accuracy over the test groups for each of ``num_masks`` random masks with S stragglers.

  Scored by the one evaluator, ``comparison.evaluate_deployment``, on the
  code's deployment (design A).

  Returns:
    (M,) accuracies (unanswered queries count wrong).
  """

  k = code.num_queries
  num_groups = len(dataset) // k if max_groups is None else min(max_groups, len(dataset) // k)
  groups, labels = metrics.make_groups(dataset.images[: num_groups * k],
                                       dataset.labels[: num_groups * k], k)
  masks = stragglers.random_masks(key, num_masks, code.num_workers, num_stragglers)
  served = deployment.Deployment.learned("code", code)
  scores = metrics.evaluate_deployment(served, groups, labels, jnp.zeros_like(labels),
                                       np.asarray(masks))
  return scores.accuracy


# ---------------------------------------------------------------------------
# The loop.


@functools.lru_cache(maxsize=16)
def make_loss_fn(
    distill_weight: float, temperature: float, mesh: jax.sharding.Mesh | None = None,
    flip: bool = False,
):
  """``loss_fn(code, batch, rng) -> (loss, metrics)`` for ``loop.fit``.

  A random mask with between R and N available workers is drawn per group
  from ``rng``. With ``mesh`` (a "workers" axis dividing N) the workers of
  every group run under ``shard_map`` over its devices; gradients are the
  same as with ``vmap``. With ``flip`` each image is flipped left-right with
  probability 1/2, and the batch's teacher logits are (B, K, 2, C): those of
  the image and of its mirror image. Cached, so runs with the same settings
  share the compiled step.
  """

  def loss_fn(code, batch, rng):
    images, labels, teacher_logits = batch
    if flip:
      rng, flip_key = jax.random.split(rng)
      flipped = jax.random.bernoulli(flip_key, 0.5, labels.shape)
      images = jnp.where(flipped[..., None, None, None], images[..., ::-1, :], images)
      teacher_logits = jnp.where(flipped[..., None], teacher_logits[..., 1, :],
                                 teacher_logits[..., 0, :])
    masks = code.training_masks(rng, labels.shape[0])
    graphdef, state = nnx.split(code)
    def group_logits(q, m):  # the one pipeline, as served (training images are in range)
      served = deployment.Deployment.learned("training", nnx.merge(graphdef, state))
      return served(q, m, mesh=mesh).values

    logits = jax.vmap(group_logits)(images, masks)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss = cross_entropy
    if distill_weight:
      teacher = jax.nn.softmax(teacher_logits / temperature)
      distill = optax.softmax_cross_entropy(logits / temperature, teacher).mean()
      loss = loss + distill_weight * temperature**2 * distill
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, {"loss": loss, "cross_entropy": cross_entropy, "accuracy": accuracy}

  return loss_fn


def report_deployments(
    config: ml_collections.ConfigDict, code: nnx.Module
) -> list[tuple[int, nnx.Module]]:
  """(S, the code as deployed for S stragglers) for the end-of-training report.

  A learned systematic code at N = K + S for S = 1 .. P (its first S
  parities); the other codes at their trained N for S = 0 .. N - R
  (``LEARNED_CODES``).
  """
  return learned_kind(config).report_deployments(code)


def _predict_logits(model: nnx.Module, images: np.ndarray, batch_size: int = 2000) -> np.ndarray:
  forward = nnx.jit(lambda m, x: m(x))
  return np.concatenate([
      np.asarray(forward(model, jnp.asarray(images[i : i + batch_size])))
      for i in range(0, len(images), batch_size)
  ])


def _write_json(path: str, value: Any) -> None:
  with open(path, "w") as f:
    json.dump(value, f, indent=2)


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> loop.TrainResult:
  """Trains the code of ``config`` into ``workdir`` (resuming) and evaluates it.

  Returns:
    ``loop.TrainResult`` whose ``report`` (also ``<workdir>/results.json``)
    holds the base and coded accuracies by S, the master budget (design A)
    and the training time.
  """
  workdir = os.path.abspath(workdir)
  mesh = distributed.mesh_for_config(
      config.get("mesh_devices"), config.num_queries + config.num_stragglers
  )  # fail before any training; process-aware in a multi-process job
  os.makedirs(workdir, exist_ok=True)
  base_workdir = config.get("base_workdir") or os.path.join(workdir, "base")
  started = time.time()
  base_model, _ = classifier.load_or_train(config.base, base_workdir)
  base_seconds = time.time() - started

  train_ds = data.load(config.dataset, "train", seed=config.seed)
  test_ds = data.load(config.dataset, "test", seed=0)
  input_shape = train_ds.image_shape
  base_accuracy = float(np.mean(np.argmax(_predict_logits(base_model, test_ds.images), -1)
                                == test_ds.labels))
  base_flops = models.flops_per_example(config.base.model, input_shape,
                                        model_kwargs=config.base.get("model_kwargs"),
                                        num_classes=config.base.num_classes)

  code = build_code(
      config, input_shape, train_ds.num_classes, classifier=base_model,
      rngs=nnx.Rngs(config.seed + 1),
  )
  loads = [load_lib.code_load(code, design, base_flops) for design in ("A", "B")]
  load_lib.check_master_budget(loads[0], config.master_budget)
  load_lib.check_worker_budget(loads[0], config.get("worker_budget"))

  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, min(200, config.num_steps // 10 + 1), config.num_steps
  )
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))
  flip = bool(config.get("augment_flip", False))
  teacher_logits = (
      _predict_logits(base_model, train_ds.images) if config.distill_weight
      else np.zeros((len(train_ds), train_ds.num_classes), np.float32)
  )
  if flip:  # the teacher's logits of the mirror images too: (examples, 2, C)
    mirrored = (
        _predict_logits(base_model, train_ds.images[:, :, ::-1]) if config.distill_weight
        else teacher_logits
    )
    teacher_logits = np.stack([teacher_logits, mirrored], axis=1)
  batches = functools.partial(
      group_stream, train_ds.images, train_ds.labels, teacher_logits, config.num_queries,
      config.groups_per_batch, seed=config.seed,
  )
  started = time.time()
  fit = loop.fit(
      code, tx,
      make_loss_fn(float(config.distill_weight), float(config.temperature), mesh, flip),
      lambda start: batches(start_step=start),
      num_steps=config.num_steps, workdir=workdir, config=config, learning_rate_fn=schedule,
      wrt=learned.trainable(code), mesh=mesh,
  )
  train_seconds = time.time() - started

  accuracy_by_s = {}
  eval_key = jax.random.key(config.seed + 2)
  for s, deployed in report_deployments(config, code):
    accuracies = evaluate_code(
        deployed, test_ds, s, num_masks=config.eval_num_masks, key=jax.random.fold_in(eval_key, s),
        max_groups=config.get("eval_max_groups", None),
    )
    accuracy_by_s[s] = dict(mean=float(accuracies.mean()), min=float(accuracies.min()),
                            max=float(accuracies.max()))
  results = dict(
      scheme=config.scheme,
      dataset=config.dataset,
      num_queries=code.num_queries,
      num_workers=code.num_workers,
      recovery_threshold=code.recovery_threshold,
      base_model=config.base.model,
      base_accuracy=base_accuracy,
      base_seconds=base_seconds,
      train_seconds=train_seconds,
      num_steps=fit.step,
      accuracy_by_stragglers=accuracy_by_s,
      master_budget_declared=config.master_budget,
      master_fraction={l.design: l.master_fraction for l in loads},
      worker_fraction={l.design: l.worker_fraction for l in loads},
      load_table=load_lib.format_load_table(loads),
  )
  if distributed.is_main():  # one writer in a multi-process job
    _write_json(os.path.join(workdir, "results.json"), results)
  return dataclasses.replace(fit, report=results)
