"""Scoring a deployment on shared masks: the one evaluator (docs/evaluation.md).

Worker outputs do not depend on the mask, so each group is encoded and run
through the workers once (:func:`worker_outputs`); then every mask is decoded
for all groups at once (``jax.lax.map`` over masks in chunks of ``vmap``):
one compilation per deployment and mask-set shape.

Metrics per mask: top-1 accuracy against the labels; agreement with f's own
prediction (the "relative accuracy" of LeTCC and NeRCC); the RMSE of the
decoded logits against f(x_k) over the answered queries; degraded-mode
accuracy (on the queries whose home workers all straggled, ParM's metric);
the fraction answered; then mean, spread and worst over masks. Per
deployment (:func:`node_load`): master FLOPs per query and worker FLOPs per
coded input as fractions of f's, and the compute per query of section 6a.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded import adversaries, deployment, distributed, load, workers

__all__ = [
    "SchemeMetrics",
    "compute_per_query",
    "evaluate_dataset",
    "evaluate_deployment",
    "make_groups",
    "node_load",
    "worker_outputs",
]


def make_groups(
    images: ArrayLike, labels: ArrayLike, num_queries: int
) -> tuple[jax.Array, jax.Array]:
  """Cuts (n, ...) images into (G, K, ...) groups, dropping the n mod K remainder.

  Raises:
    ValueError: K not an integer >= 1, fewer than K images, or labels that
      are not one per image.
  """
  if isinstance(num_queries, bool) or not isinstance(num_queries, (int, np.integer)):
    raise ValueError(f"make_groups: K must be an integer >= 1, got {num_queries!r}.")
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  if images.ndim < 1 or labels.shape != images.shape[:1]:
    raise ValueError(
        f"make_groups: labels must have shape (n,), one per image, to match images of shape "
        f"{images.shape}; got labels of shape {labels.shape}."
    )
  if num_queries < 1 or images.shape[0] < num_queries:
    raise ValueError(
        f"make_groups: cannot form groups of K = {num_queries} from {images.shape[0]} images."
    )
  num_groups = images.shape[0] // num_queries
  used = num_groups * num_queries
  return (
      images[:used].reshape((num_groups, num_queries) + images.shape[1:]),
      labels[:used].reshape(num_groups, num_queries),
  )


def compute_per_query(
    num_queries: int, num_workers: int, worker_fraction: float, master_fraction: float
) -> float:
  """(N x worker FLOPs + master FLOPs) / (K x f's FLOPs), from the fractions of f.

  ``worker_fraction`` is a worker's FLOPs per coded input over f's,
  ``master_fraction`` the master's FLOPs *per query* over f's; the result is
  the total cost of one query relative to one uncoded evaluation of f
  (docs/design.md, "Equal resources").
  """
  return num_workers * worker_fraction / num_queries + master_fraction


@dataclasses.dataclass
class SchemeMetrics:
  """Per-mask metrics, arrays of shape (M,); ``degraded_count`` counts queries."""

  accuracy: np.ndarray
  agreement: np.ndarray
  answered: np.ndarray
  degraded_correct: np.ndarray
  degraded_count: np.ndarray
  rejected: np.ndarray | None = None
  decode_seconds_per_group: float = float("nan")
  rmse: np.ndarray | None = None

  def select(self, rows: slice) -> "SchemeMetrics":
    """The metrics of a subset of the masks."""
    pick = lambda a: None if a is None else a[rows]
    return SchemeMetrics(self.accuracy[rows], self.agreement[rows], self.answered[rows],
                         self.degraded_correct[rows], self.degraded_count[rows],
                         pick(self.rejected), self.decode_seconds_per_group, pick(self.rmse))

  def summary(self) -> dict[str, Any]:
    count = float(self.degraded_count.sum())
    per_mask = np.where(self.degraded_count > 0,
                        self.degraded_correct / np.maximum(self.degraded_count, 1), np.nan)
    worst = int(np.argmin(self.accuracy))
    out = dict(
        num_masks=int(self.accuracy.shape[0]),
        accuracy_mean=float(self.accuracy.mean()),
        accuracy_std=float(self.accuracy.std()),
        accuracy_min=float(self.accuracy.min()),
        accuracy_max=float(self.accuracy.max()),
        worst_mask_index=worst,
        agreement_mean=float(self.agreement.mean()),
        agreement_std=float(self.agreement.std()),
        answered_mean=float(self.answered.mean()),
        degraded_accuracy=(float(self.degraded_correct.sum()) / count) if count else None,
        degraded_accuracy_std=(float(np.nanstd(per_mask)) if count else None),
        degraded_queries=int(count),
        decode_us_per_group=1e6 * self.decode_seconds_per_group,
    )
    if self.rejected is not None:
      out["rejected_mean"] = float(self.rejected.mean())
    if self.rmse is not None:
      out["rmse_mean"] = float(np.nanmean(self.rmse)) if np.isfinite(self.rmse).any() else None
      out["rmse_std"] = float(np.nanstd(self.rmse)) if np.isfinite(self.rmse).any() else None
    return out


def worker_outputs(
    served: deployment.Deployment, groups: jax.Array, mesh: jax.sharding.Mesh | None = None
) -> jax.Array:
  """(G, K, ...) groups -> (G, N, ...) outputs of every worker (nobody straggles).

  Worker outputs do not depend on the mask, so a comparison computes them
  once per deployment and decodes every mask from them. With a mesh that
  spans several processes (``jaxcoded.distributed``) the workers run on the
  devices of all of them, and every process gets the whole result back as a
  plain array of its own.
  """

  @jax.jit
  def run(groups):
    return jax.lax.map(lambda g: served.outputs(g, mesh=mesh), groups)

  if mesh is not None and distributed.is_multiprocess():
    return distributed.local(run(distributed.replicate(groups, mesh)))
  return run(groups)


def evaluate_deployment(
    served: deployment.Deployment,
    groups: jax.Array,
    group_labels: jax.Array,
    base_predictions: jax.Array,
    masks: np.ndarray,
    *,
    mesh: jax.sharding.Mesh | None = None,
    adversary: str | None = None,
    num_adversaries: int = 0,
    key: jax.Array | None = None,
    outputs: jax.Array | None = None,
    base_logits: jax.Array | None = None,
) -> SchemeMetrics:
  """Metrics of one deployment for each mask, on every group.

  Args:
    served: the deployment (scheme and worker tasks).
    groups: (G, K, ...) test queries.
    group_labels: (G, K) labels.
    base_predictions: (G, K) the base classifier's argmax on each query
      ("agreement" is the relative accuracy of LeTCC/NeRCC: argmax agreement
      with f).
    masks: (M, N) availability.
    mesh: optional device mesh with a "workers" axis for the worker pass.
    adversary: None, or an adversary model of ``jaxcoded.adversaries``; then
      ``num_adversaries`` returned workers per mask and group are corrupted.
    num_adversaries: E.
    key: PRNG key of the adversaries.
    outputs: (G, N, ...) precomputed worker outputs (else computed here).
    base_logits: (G, K, C) f(x_k), for the RMSE of the decoded logits
      against f over the answered queries (None: no RMSE).

  Returns:
    SchemeMetrics with (M,) arrays.
  """
  scheme = served.scheme
  masks = jnp.asarray(masks)
  if masks.ndim != 2 or masks.shape[1] != scheme.num_workers:
    raise ValueError(
        f"evaluate_deployment({served.name!r}): masks must have shape (M, {scheme.num_workers}), "
        f"got {masks.shape}."
    )
  if outputs is None:
    outputs = worker_outputs(served, groups, mesh)
  credit_fallback = scheme.has_fallback
  home = jnp.asarray(scheme.home_workers())
  locates = scheme.locates_errors and adversary is not None
  with_rmse = base_logits is not None
  base_logits = jnp.zeros(group_labels.shape + (1,)) if base_logits is None else base_logits
  key = jax.random.key(0) if key is None else key
  # The group's queries go to the decoder only where it reads them (side information).
  reads_queries = scheme.decode_reads_queries
  side = jnp.asarray(groups) if reads_queries else jnp.zeros((outputs.shape[0],), jnp.int8)

  def run(outputs, side, masks):
    def one_mask(args):
      index, mask = args

      def one_group(g, out, queries):
        queries = queries if reads_queries else None
        if adversary is not None and num_adversaries:
          group_key = jax.random.fold_in(jax.random.fold_in(key, index), g)
          bad = adversaries.random_adversary_mask(
              group_key, scheme.num_workers, num_adversaries, available_mask=mask
          )
          out = adversaries.corrupt(
              jax.random.fold_in(group_key, 1), out, bad, adversary, available_mask=mask
          )
        out = workers.mask_outputs(out, mask)
        if locates:
          decoded, rejected = served.scheme.decode_and_locate(out, mask, queries)
          return decoded, jnp.sum(rejected)
        return served.decode(out, mask, queries), jnp.zeros((), jnp.int32)

      decoded, rejected = jax.vmap(one_group)(jnp.arange(outputs.shape[0]), outputs, side)
      predictions = jnp.argmax(decoded.values, axis=-1)
      # A scheme with a fallback answer (uncoded's majority class) is scored
      # on its values everywhere; otherwise an unanswered query is wrong.
      scored = True if credit_fallback else decoded.answered
      correct = scored & (predictions == group_labels)
      agree = scored & (predictions == base_predictions)
      degraded = ~jnp.any(home & mask[None, :], axis=1)  # (K,)
      if with_rmse:  # over the answered queries: an unanswered one has no value to compare
        error = jnp.mean((decoded.values - base_logits) ** 2, axis=-1)
        count = jnp.sum(decoded.answered)
        rmse = jnp.where(count > 0, jnp.sqrt(jnp.sum(jnp.where(decoded.answered, error, 0.0))
                                             / jnp.maximum(count, 1)), jnp.nan)
      else:
        rmse = jnp.zeros(())
      return (jnp.mean(correct), jnp.mean(agree), jnp.mean(decoded.answered),
              jnp.sum(correct & degraded[None]), jnp.sum(degraded) * outputs.shape[0],
              jnp.mean(rejected.astype(jnp.float32)), rmse)

    return jax.lax.map(one_mask, (jnp.arange(masks.shape[0]), masks), batch_size=16)

  # Compiled ahead of time, so the timed call is execution only: the decode
  # time per group is amortised over every mask and group of the batch.
  compiled = jax.jit(run).lower(outputs, side, masks).compile()
  values = jax.block_until_ready(compiled(outputs, side, masks))  # warm-up
  start = time.perf_counter()
  values = jax.block_until_ready(compiled(outputs, side, masks))
  seconds = (time.perf_counter() - start) / (masks.shape[0] * outputs.shape[0])
  acc, agree, answered, deg_correct, deg_count, rejected, rmse = (
      np.asarray(v, np.float64) for v in values
  )
  return SchemeMetrics(acc, agree, answered, deg_correct.astype(float), deg_count.astype(float),
                       rejected if locates else None, seconds, rmse if with_rmse else None)


def node_load(
    served: deployment.Deployment, query_shape: tuple[int, ...], base_flops: float
) -> dict[str, float]:
  """Master FLOPs per query and worker FLOPs per coded input, as fractions of f's FLOPs.

  Counted by XLA's cost analysis of the jitted encode + decode (master; the
  per-group cost divided by K) and of each worker task on one coded input
  (the largest over roles).
  """
  k, n = served.num_queries, served.num_workers
  queries = jax.ShapeDtypeStruct((k, *query_shape), jnp.float32)
  coded = jax.eval_shape(served.encode, queries)
  one_input = jax.ShapeDtypeStruct(coded.shape[1:], coded.dtype)
  worker_flops = max(
      load.xla_flops(lambda x, t=task: t.run(x), one_input, compiled=False)
      for task in served.tasks
  )
  output = jax.eval_shape(served.tasks[0].run, one_input)
  outputs = jax.ShapeDtypeStruct((n, *output.shape), output.dtype)
  mask = jax.ShapeDtypeStruct((n,), jnp.bool_)
  master = load.xla_flops(served.encode, queries, compiled=False) + load.xla_flops(
      lambda y, m, q: served.decode(y, m, q).values, outputs, mask, queries, compiled=False
  )
  master_fraction, worker_fraction = master / k / base_flops, worker_flops / base_flops
  return dict(master_fraction=master_fraction, worker_fraction=worker_fraction,
              compute_per_query=compute_per_query(k, n, worker_fraction, master_fraction))


def evaluate_dataset(
    served: deployment.Deployment,
    base_task: deployment.WorkerTask,
    images: ArrayLike,
    labels: ArrayLike,
    masks: ArrayLike,
    **options,
) -> SchemeMetrics:
  """:func:`evaluate_deployment` on a whole test set: groups of K, f's predictions, RMSE.

  Args:
    served: the deployment.
    base_task: the base classifier f (agreement and RMSE are against it).
    images: (n, ...) test inputs; the last n mod K are dropped.
    labels: (n,) integer labels.
    masks: (M, N) bool availability patterns, each applied to every group.
    **options: passed on to :func:`evaluate_deployment` (mesh, adversary, ...).
  """
  groups, group_labels = make_groups(images, labels, served.num_queries)
  base_logits = jax.jit(jax.vmap(jax.vmap(base_task.run)))(groups)
  return evaluate_deployment(served, groups, group_labels, base_logits.argmax(-1),
                             np.asarray(masks, bool), base_logits=base_logits, **options)
