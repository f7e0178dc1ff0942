"""The interface every coding scheme shares (DESIGN.md section 4).

A scheme groups K queries, produces N worker inputs, and recovers K answers
from the outputs of the workers that returned (a boolean mask of length N):

  coded   = scheme.encode(queries)          # (K, ...) -> (N, ...)
  outputs = run_workers(f, params, coded, mask)   # stragglers' rows zeroed
  decoded = scheme.decode(outputs, mask)    # (N, ...) -> Decoded((K, ...), (K,))

A scheme also states its sizes: K queries, N workers, recovery threshold R
(outputs the master needs) and S = N - R stragglers tolerated.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded import workers

WorkerFn = Callable[[Any, jax.Array], jax.Array]


class Decoded(NamedTuple):
  """What the master recovers for one group.

  Attributes:
    values: (K, ...) decoded outputs (e.g. logits); zeros where unanswered.
    answered: (K,) bool, False for queries the scheme could not answer
      (an uncoded query whose worker straggled, for instance).
  """

  values: jax.Array
  answered: jax.Array


class SchemeSizes(NamedTuple):
  """K, N, R and S of a scheme, with its redundancy N / K."""

  num_queries: int
  num_workers: int
  recovery_threshold: int

  @property
  def max_stragglers(self) -> int:
    return self.num_workers - self.recovery_threshold

  @property
  def redundancy(self) -> float:
    return self.num_workers / self.num_queries


def check_group_sizes(num_queries: int, num_stragglers: int) -> None:
  """Raises ValueError unless K >= 1 and S >= 0 are integers."""
  # bool is an int subclass: K = True would silently mean K = 1.
  if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
    raise ValueError(f"A group needs K >= 1 queries (an integer), got K = {num_queries!r}.")
  if isinstance(num_stragglers, bool) or not isinstance(num_stragglers, int) or num_stragglers < 0:
    raise ValueError(
        f"The number of stragglers S must be >= 0 (an integer), got S = {num_stragglers!r}."
    )


class Scheme(abc.ABC):
  """Base class: subclasses implement ``sizes``, ``encode`` and ``decode``."""

  @property
  @abc.abstractmethod
  def sizes(self) -> SchemeSizes:
    """K, N and R of this scheme."""

  @property
  def num_queries(self) -> int:
    return self.sizes.num_queries

  @property
  def num_workers(self) -> int:
    return self.sizes.num_workers

  @property
  def recovery_threshold(self) -> int:
    return self.sizes.recovery_threshold

  @property
  def max_stragglers(self) -> int:
    return self.sizes.max_stragglers

  @abc.abstractmethod
  def encode(self, queries: ArrayLike) -> jax.Array:
    """(K, ...) queries -> (N, ...) worker inputs."""

  @abc.abstractmethod
  def decode(self, outputs: ArrayLike, mask: ArrayLike) -> Decoded:
    """(N, ...) worker outputs and (N,) availability -> K decoded outputs."""

  def check_mask(self, mask: ArrayLike) -> None:
    """Raises ValueError for a mask that is not (N,) boolean."""
    shape = jnp.shape(mask)
    if shape != (self.num_workers,):
      raise ValueError(
          f"{type(self).__name__}: mask has shape {shape}, expected ({self.num_workers},) "
          "(one boolean per worker)."
      )
    if jnp.result_type(mask) != jnp.bool_:
      raise ValueError(f"{type(self).__name__}: mask must be boolean, got {jnp.result_type(mask)}.")

  def check_queries(self, queries: ArrayLike) -> None:
    """Raises ValueError for queries that are not K numbers along the leading axis.

    Static checks only (shape and dtype), so ``encode`` stays jittable and
    cheap; ``Deployment.__call__`` also refuses NaN, inf and non-float images
    (``validation.check_images``).
    """
    shape = jnp.shape(queries)
    if not shape or shape[0] != self.num_queries:
      raise ValueError(
          f"{type(self).__name__}: expected a group of K = {self.num_queries} queries along "
          f"the leading axis, got shape {shape}."
      )
    dtype = queries.dtype if hasattr(queries, "dtype") else np.asarray(queries).dtype
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
      raise ValueError(
          f"{type(self).__name__}: queries must be real numbers (a float array, e.g. "
          f"float32, normalised as data.load returns images), got dtype {dtype}."
      )

  def __call__(
      self,
      worker_fn: WorkerFn,
      params: Any,
      queries: ArrayLike,
      mask: ArrayLike,
      *,
      mesh: jax.sharding.Mesh | None = None,
  ) -> Decoded:
    """Runs the whole coded pipeline for one group: encode, workers, decode.

    Args:
      worker_fn: ``worker_fn(params, x)`` for one coded input x (the base
        classifier for LCC and Berrut).
      params: parameters of worker_fn (replicated to every worker).
      queries: (K, ...) one group of queries.
      mask: (N,) bool, True where the worker returned in time.
      mesh: optional device mesh with a "workers" axis (shard_map); None
        runs all workers with vmap on one device.

    Returns:
      Decoded values (K, ...) and the (K,) answered flags.
    """
    self.check_queries(queries)
    self.check_mask(mask)
    coded = self.encode(queries)
    outputs = workers.run_workers(worker_fn, params, coded, mask, mesh=mesh)
    return self.decode(outputs, mask)
