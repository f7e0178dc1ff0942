"""Uncoded serving (docs/design.md section 4.1): the baseline without redundancy.

Each of the N = K workers answers one query (worker n serves query n). A
straggler's query goes unanswered: nothing else carries its information. Every
one of the K outputs is needed to answer the whole group, so R = K = N and no
straggler is tolerated (S = 0); with stragglers the scheme still answers the
queries whose workers returned, which gives an accuracy of about
base * (1 - S / K).

Unanswered queries are treated in one of two ways, chosen at ``create``:

- no fallback (default): their values are zeros and ``answered`` is False,
  so an evaluation counts them wrong;
- a fallback vector (e.g. ``majority_class_logits``: one-hot logits on the
  prior's majority class): their values are that vector. ``answered`` stays
  False (the workers did not answer them); an evaluation that credits the
  fallback scores ``values`` for every query when ``scheme.has_fallback``;
- a fallback model ``fn(params, x)`` that the master runs on a straggler's
  query itself (a classifier much cheaper than f, inside the master's
  budget): the master holds the queries, so the decoder reads them
  (``decode_reads_queries``); ``answered`` as for a fallback vector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxcoded.schemes import base

__all__ = ["Uncoded", "majority_class_logits"]


def majority_class_logits(
    labels: ArrayLike, num_classes: int, dtype: DTypeLike | None = None
) -> jax.Array:
  """One-hot logits on the most frequent label: a fallback whose argmax is the prior's mode.

  Ties go to the smallest class index.

  Args:
    labels: integer labels of any shape (e.g. the training labels), values in
      [0, num_classes).
    num_classes: C >= 1.
    dtype: floating dtype of the result (default: JAX's default float).

  Returns:
    (C,) array, 1 at the majority class and 0 elsewhere.
  """
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"majority_class_logits: num_classes must be an integer >= 1, got {num_classes!r}.")
  labels = np.asarray(labels).reshape(-1)
  if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError("majority_class_logits: needs a non-empty array of integer labels.")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
        f"majority_class_logits: labels must lie in [0, {num_classes}), "
        f"got range [{labels.min()}, {labels.max()}]."
    )
  majority = int(np.argmax(np.bincount(labels, minlength=num_classes)))
  dtype = dtype if dtype is not None else jnp.zeros(()).dtype
  return jax.nn.one_hot(majority, num_classes, dtype=dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Uncoded(base.Scheme):
  """N = K workers, one query each; stragglers' queries unanswered.

  Attributes:
    fallback: None, or the value (shape of one worker output, e.g. (C,)
      logits) given to unanswered queries.
    group_size: K (static).
    fallback_params: parameters of ``fallback_fn`` (None without one).
    fallback_fn: None, or ``fn(params, x)`` run by the master on an
      unanswered query x (static).
  """

  fallback: jax.Array | None
  group_size: int = dataclasses.field(metadata=dict(static=True))
  fallback_params: Any = None
  fallback_fn: Callable[[Any, Any], Any] | None = dataclasses.field(
      default=None, metadata=dict(static=True))

  @staticmethod
  def sizes_for(num_queries: int, num_stragglers: int = 0) -> base.SchemeSizes:
    """N = R = K; the scheme tolerates no straggler (S must be 0)."""
    base.check_group_sizes(num_queries, num_stragglers)
    if num_stragglers:
      raise ValueError(
          f"Uncoded has N = K workers and tolerates no straggler, got S = {num_stragglers} "
          f"(a straggler's query goes unanswered); use Replication with r = S + 1 = "
          f"{num_stragglers + 1} copies to tolerate S stragglers."
      )
    return base.SchemeSizes(num_queries, num_queries, num_queries)

  @classmethod
  def create(
      cls, num_queries: int, *, fallback: ArrayLike | None = None,
      fallback_model: tuple[Callable[[Any, Any], Any], Any] | None = None,
  ) -> "Uncoded":
    """Uncoded serving of K queries.

    Args:
      num_queries: K >= 1 (also N).
      fallback: optional value for unanswered queries, with the shape of one
        worker output (e.g. ``majority_class_logits(train_labels, C)``), or a
        pytree of such values for pytree outputs.
      fallback_model: optional ``(fn, params)`` (a ``workers.WorkerTask``
        fits): the master answers an unanswered query x with ``fn(params, x)``,
        which must have the shape of one worker output. Not with ``fallback``.
    """
    cls.sizes_for(num_queries)
    if fallback_model is not None:
      if fallback is not None:
        raise ValueError("Uncoded: give a fallback value or a fallback model, not both.")
      fn, params = fallback_model[0], fallback_model[1]
      if not callable(fn):
        raise ValueError(f"Uncoded: fallback_model must be (fn, params), got fn = {fn!r}.")
      return cls(fallback=None, group_size=num_queries, fallback_params=params, fallback_fn=fn)
    if fallback is not None:
      fallback = jax.tree.map(jnp.asarray, fallback)
      for leaf in jax.tree.leaves(fallback):
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
          raise ValueError(f"Uncoded: the fallback must be a float array (e.g. logits), got {leaf.dtype}.")
        if not bool(jnp.all(jnp.isfinite(leaf))):
          raise ValueError("Uncoded: the fallback must be finite.")
    return cls(fallback=fallback, group_size=num_queries)

  @property
  def sizes(self) -> base.SchemeSizes:
    return base.SchemeSizes(self.group_size, self.group_size, self.group_size)

  @property
  def has_fallback(self) -> bool:
    """True when unanswered queries get a fallback (value or model) instead of zeros."""
    return self.fallback is not None or self.fallback_fn is not None

  @property
  def decode_reads_queries(self) -> bool:
    """True with a fallback model: the master runs it on the stragglers' queries."""
    return self.fallback_fn is not None

  def _decode_with_queries(self, outputs, mask: jax.Array, queries) -> base.Decoded:
    """Worker n's output where it returned, else the fallback model on query n (leaf by leaf)."""
    guesses = jax.vmap(lambda x: self.fallback_fn(self.fallback_params, x))(queries)
    out_leaves, treedef = jax.tree.flatten(outputs)
    guess_leaves = jax.tree.leaves(guesses)
    shapes = [leaf.shape[1:] for leaf in out_leaves]
    if len(guess_leaves) != len(out_leaves) or [g.shape[1:] for g in guess_leaves] != shapes:
      raise ValueError(
          f"Uncoded: the fallback model gives outputs of shapes {[g.shape[1:] for g in guess_leaves]}, "
          f"the workers {shapes}."
      )
    values = []
    for leaf, guess in zip(out_leaves, guess_leaves):
      row_mask = mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))
      values.append(jnp.where(row_mask, leaf, guess.astype(leaf.dtype)))
    return base.Decoded(treedef.unflatten(values), mask)

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, ...) queries -> the same (N = K, ...) array: worker n gets query n."""
    self.check_queries(queries)
    return jnp.asarray(queries)

  @property
  def min_returns(self) -> int:
    return 1  # each query needs its own worker: answer as soon as it is there

  def _decode_tree(self, outputs, mask: jax.Array) -> base.Decoded:
    """Leaf by leaf, each with its own leaf of the fallback (a pytree of the outputs' structure)."""
    leaves, treedef = jax.tree.flatten(outputs)
    if self.fallback is None:
      fallbacks = [None] * len(leaves)
    else:
      fallbacks = jax.tree.leaves(self.fallback)
      if len(fallbacks) != len(leaves):
        raise ValueError(
            f"Uncoded: the fallback has {len(fallbacks)} leaves, but the worker outputs have "
            f"{len(leaves)}; give one fallback value per output leaf."
        )
    values = [_fill(leaf, mask, fallback) for leaf, fallback in zip(leaves, fallbacks)]
    return base.Decoded(treedef.unflatten(values), mask)

  def _decode(self, outputs: jax.Array, mask: jax.Array) -> base.Decoded:
    """Worker n's output answers query n if worker n returned.

    Args:
      outputs: (N, ...) worker outputs; rows of stragglers are never read.
      mask: (N,) bool, True where the worker returned.

    Returns:
      Decoded values (K, ...): the outputs of returned workers, the fallback
      (or zeros) elsewhere; ``answered`` equals ``mask``.
    """
    return base.Decoded(_fill(outputs, mask, self.fallback), mask)


def _fill(outputs: jax.Array, mask: jax.Array, fallback: jax.Array | None) -> jax.Array:
  """Returned rows as they are; the others the fallback (or zeros)."""
  if fallback is None:
    missing = jnp.zeros((), outputs.dtype)
  else:
    if fallback.shape != outputs.shape[1:]:
      raise ValueError(
          f"Uncoded: the fallback has shape {fallback.shape}, but one worker output "
          f"has shape {outputs.shape[1:]}."
      )
    missing = fallback.astype(outputs.dtype)
  row_mask = mask.reshape(mask.shape + (1,) * (outputs.ndim - 1))
  return jnp.where(row_mask, outputs, missing)
