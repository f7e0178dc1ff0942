"""Evaluating a coding scheme over many straggler masks (DESIGN.md section 6).

The test set is cut into groups of K queries. Worker outputs do not depend on
the mask, so every group is encoded and run through the workers once; then
each mask is decoded for all groups at once (``vmap`` over masks and groups),
with the stragglers' rows zeroed first. One compilation serves every mask.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded import stragglers, workers
from jaxcoded.schemes import base


class MaskedAccuracy(NamedTuple):
  """Per-mask metrics of one scheme, shape (M,) each (M masks).

  Attributes:
    accuracy: top-1 accuracy against the labels; unanswered queries count
      wrong, unless the scheme has a fallback answer (``has_fallback``).
    agreement: fraction of queries whose decoded argmax equals the base
      classifier's argmax on the raw query.
    answered: fraction of queries answered.
  """

  accuracy: np.ndarray
  agreement: np.ndarray
  answered: np.ndarray


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


def evaluate_masks(
    scheme: base.Scheme,
    worker_fn: base.WorkerFn,
    params: Any,
    images: ArrayLike,
    labels: ArrayLike,
    masks: ArrayLike,
) -> MaskedAccuracy:
  """Accuracy of ``scheme`` around ``worker_fn`` on a test set, for each mask.

  Args:
    scheme: a coding scheme (K queries, N workers).
    worker_fn: ``worker_fn(params, x) -> logits`` for one input.
    params: its parameters.
    images: (n, ...) test inputs; the last n mod K are dropped.
    labels: (n,) integer labels.
    masks: (M, N) boolean availability patterns; each is applied to every group.

  Returns:
    MaskedAccuracy with arrays of shape (M,).
  """
  masks = jnp.asarray(masks)
  if masks.ndim != 2 or masks.shape[1] != scheme.num_workers:
    raise ValueError(
        f"evaluate_masks: masks must have shape (M, {scheme.num_workers}), got {masks.shape}."
    )
  groups, group_labels = make_groups(images, labels, scheme.num_queries)
  return _evaluate(scheme, worker_fn, params, groups, group_labels, masks)


def _evaluate(scheme, worker_fn, params, groups, group_labels, masks):
  all_returned = jnp.ones((scheme.num_workers,), bool)
  credit_fallback = bool(getattr(scheme, "has_fallback", False))

  @jax.jit
  def run(params, groups, group_labels, masks):
    base_predictions = jnp.argmax(
        jax.vmap(jax.vmap(worker_fn, in_axes=(None, 0)), in_axes=(None, 0))(params, groups), -1
    )
    outputs = jax.vmap(
        lambda group: workers.run_workers(worker_fn, params, scheme.encode(group), all_returned)
    )(groups)

    def one_mask(mask):
      decoded = jax.vmap(lambda out: scheme.decode(workers.mask_outputs(out, mask), mask))(outputs)
      predictions = jnp.argmax(decoded.values, axis=-1)
      # A scheme with a fallback answer (uncoded's majority class) is scored
      # on its values everywhere; otherwise an unanswered query is wrong.
      scored = True if credit_fallback else decoded.answered
      correct = scored & (predictions == group_labels)
      agree = scored & (predictions == base_predictions)
      return jnp.mean(correct), jnp.mean(agree), jnp.mean(decoded.answered)

    return jax.lax.map(one_mask, masks, batch_size=16)  # vmap in chunks: bounded memory

  accuracy, agreement, answered = run(params, groups, group_labels, masks)
  return MaskedAccuracy(np.asarray(accuracy), np.asarray(agreement), np.asarray(answered))


def straggler_masks(
    key: jax.Array, num_workers: int, num_stragglers: int, max_masks: int
) -> np.ndarray:
  """Every pattern of S stragglers when there are at most ``max_masks``, else a random sample.

  Returns:
    (M, N) boolean masks, M <= max_masks.
  """
  if math.comb(num_workers, num_stragglers) <= max_masks:
    return stragglers.all_masks(num_workers, num_stragglers)
  return np.asarray(stragglers.random_masks(key, max_masks, num_workers, num_stragglers))


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
  """A Markdown table; floats are printed with three decimals."""

  def cell(value):
    return f"{value:.3f}" if isinstance(value, float) else str(value)

  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)
