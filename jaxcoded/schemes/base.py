"""The interface every coding scheme shares (docs/design.md section 4).

A scheme groups K queries, produces N worker inputs, and recovers K answers
from the outputs of the workers that returned (a boolean mask of length N):

  coded   = scheme.encode(queries)          # (K, ...) -> (N, ...)
  outputs = run_workers(f, params, coded, mask)   # stragglers' rows masked out
  decoded = scheme.decode(outputs, mask)    # (N, ...) -> Decoded((K, ...), (K,))

A scheme also states its sizes (K queries, N workers, recovery threshold R,
S = N - R stragglers tolerated) and its capabilities (``min_returns``,
``has_fallback``, ``locates_errors``, ``home_workers``, ``worker_tasks``);
``jaxcoded.schemes.registry`` builds schemes by name from a config. The one
pipeline that runs a scheme is ``jaxcoded.deployment.Deployment``
(docs/design.md, section "The pipeline").
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded import queries as queries_lib
from jaxcoded import validation, workers

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


def check_group_sizes(num_queries: int, num_stragglers: int) -> tuple[int, int]:
  """(K, S) as Python ints; ValueError unless K >= 1 and S >= 0 are integers.

  Python and numpy integers are accepted; bools (``K = True`` would silently
  mean K = 1) and floats are refused (``validation.check_integer``).
  """
  num_queries = validation.check_integer(
      num_queries, "K", 1,
      message=f"A group needs K >= 1 queries (an integer), got K = {num_queries!r}.",
  )
  num_stragglers = validation.check_integer(
      num_stragglers, "S", 0,
      message=f"The number of stragglers S must be >= 0 (an integer), got S = {num_stragglers!r}.",
  )
  return num_queries, num_stragglers


def k_plus_s_sizes(num_queries: int, num_stragglers: int) -> SchemeSizes:
  """ApproxIFER's sizes, shared by the model-agnostic approximate codes: N = K + S, R = K."""
  num_queries, num_stragglers = check_group_sizes(num_queries, num_stragglers)
  return SchemeSizes(num_queries, num_queries + num_stragglers, num_queries)


class WorkerTask(NamedTuple):
  """What one kind of worker computes: ``fn(params, x)`` on one coded input x.

  ``reads_queries`` marks a design-B worker (docs/learned_codes.md): it also
  reads the group's K queries from shared storage and is called as
  ``fn(params, x, queries)``, x being its evaluation point b_n.
  """

  fn: WorkerFn
  params: Any
  reads_queries: bool = False

  def run(self, x: ArrayLike, queries: ArrayLike | None = None) -> jax.Array:
    if self.reads_queries:
      return self.fn(self.params, x, queries)
    return self.fn(self.params, x)


class Scheme(abc.ABC):
  """Base class of every code.

  Subclasses implement ``sizes``, ``encode`` and ``_decode``; the public
  :meth:`decode` checks the mask and erases non-finite rows first, so every
  decoder shares one erasure rule. The remaining methods and properties
  describe what a scheme can do, with defaults that subclasses override:
  the harness, the service and the evaluators ask them, never the class.
  """

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

  # -- capabilities ---------------------------------------------------------------

  @property
  def min_returns(self) -> int:
    """Fewest outputs before a master first tries to decode a group (the service's wait).

    R by default: below it a threshold code answers nothing and an
    approximate one (Berrut) answers worse than it promises. Schemes whose
    queries each need specific workers (uncoded, replication, ParM) return 1:
    their ``answered`` flags say exactly what a few workers recover.
    """
    return self.recovery_threshold

  @property
  def has_fallback(self) -> bool:
    """Whether unanswered queries carry a fallback answer that is scored (uncoded)."""
    return False

  @property
  def locates_errors(self) -> bool:
    """Whether :meth:`decode_and_locate` finds wrong (Byzantine) outputs."""
    return False

  def home_workers(self) -> np.ndarray:
    """(K, N) bool: the workers that would serve query k uncoded.

    Query k's own worker is worker k by default (uncoded, ParM's systematic
    workers, and positionally for the other codes); degraded-mode accuracy is
    measured on the queries whose home workers all straggled.
    """
    k, n = self.num_queries, self.num_workers
    return np.arange(n)[None, :] == np.arange(k)[:, None]

  def worker_tasks(
      self, base_task: WorkerTask | None, trained_task: WorkerTask | None = None
  ) -> tuple[tuple[WorkerTask, ...], tuple[int, ...]]:
    """(tasks, roles): the distinct worker tasks and, per worker, its task's index.

    Every worker runs the base classifier by default. ParM runs its parity
    model (``trained_task``) on the parity worker; learned codes run their
    own worker network and ignore both arguments.
    """
    if base_task is None:
      raise ValueError(f"{type(self).__name__}: its workers run the base classifier; pass it.")
    return (base_task,), (0,) * self.num_workers

  # -- building from a config entry (``jaxcoded.schemes.registry``) ---------------------

  # Fields of a config entry passed on to ``create`` by the default from_config.
  config_options: ClassVar[tuple[str, ...]] = ()

  @classmethod
  def options_of(cls, entry) -> dict[str, Any]:
    """The entry's fields that ``create`` takes (``config_options``)."""
    return {name: entry[name] for name in cls.config_options if entry.get(name) is not None}

  @classmethod
  def from_config(cls, entry, num_stragglers: int, ctx) -> tuple["Scheme", tuple, tuple]:
    """(scheme, worker tasks, roles) for a config entry at S stragglers.

    The default suits a sized, fixed code around the base classifier:
    ``create(K, S, **options)``, every worker running f. Kinds with a
    trained part or a fixed N override it.
    """
    scheme = cls.create(ctx.num_queries, num_stragglers, **cls.options_of(entry))
    return (scheme, *scheme.worker_tasks(ctx.base_task))

  def settings(self) -> dict[str, Any]:
    """The scheme's chosen parameters, stored with its results (e.g. fitted smoothings).

    Plain Python values (JSON-serialisable); the default has none.
    """
    return {}

  @classmethod
  def resized_by(cls, entry) -> bool:
    """Whether a config entry asks for a new deployment at each S (fixed-N kinds: no)."""
    del entry
    return False

  @classmethod
  def check_config(cls, entry, num_queries: int, stragglers) -> None:
    """Raises ValueError for an entry that cannot be built at the largest S."""
    if hasattr(cls, "sizes_for"):
      cls.sizes_for(num_queries, max(stragglers), **cls.options_of(entry))

  # -- the coding steps ---------------------------------------------------------------

  @abc.abstractmethod
  def encode(self, queries: ArrayLike) -> jax.Array:
    """(K, ...) queries -> (N, ...) worker inputs."""

  def decode(self, outputs: ArrayLike, mask: ArrayLike) -> Decoded:
    """(N, ...) worker outputs and (N,) availability -> K decoded outputs.

    A row holding NaN or inf is an erasure (``workers.erase_nonfinite``): that
    worker counts as a straggler for this group, so the decoder answers only
    what it can still guarantee from the rest.
    """
    outputs, mask = self._erase(outputs, mask)
    return self._decode(outputs, mask)

  def decode_and_locate(self, outputs: ArrayLike, mask: ArrayLike) -> tuple[Decoded, jax.Array]:
    """(Decoded, (N,) bool rejected): decoding that also reports the outputs it dropped.

    Non-finite rows are erased first, as in :meth:`decode` (an erasure is a
    straggler: a NaN worker may be a broken honest one, so it spends none of a
    Byzantine code's error budget), and count as rejected; schemes with
    ``locates_errors`` also find wrong finite outputs among the rest.
    """
    returned = self.check_mask(mask)
    outputs, mask = self._erase(outputs, returned)
    decoded, rejected = self._decode_and_locate(outputs, mask)
    return decoded, rejected | (returned & ~mask)  # erased rows are dropped outputs too  # erased rows are dropped outputs too

  @abc.abstractmethod
  def _decode(self, outputs: jax.Array, mask: jax.Array) -> Decoded:
    """Decodes finite outputs; rows where ``mask`` is False are zero and must not be read."""

  def _decode_and_locate(self, outputs: jax.Array, mask: jax.Array) -> tuple[Decoded, jax.Array]:
    """(Decoded, located wrong outputs) from finite outputs; the default locates nothing."""
    return self._decode(outputs, mask), jnp.zeros((self.num_workers,), bool)

  def _erase(self, outputs: ArrayLike, mask: ArrayLike) -> tuple[jax.Array, jax.Array]:
    mask = self.check_mask(mask)
    outputs = jnp.asarray(outputs)
    if outputs.shape[:1] != (self.num_workers,):
      raise ValueError(
          f"{type(self).__name__}: outputs have shape {outputs.shape}, expected "
          f"({self.num_workers}, ...): one row per worker."
      )
    return workers.erase_nonfinite(outputs, mask)

  def check_mask(self, mask: ArrayLike) -> jax.Array:
    """The mask as an (N,) bool array; ValueError for one that is not (N,) boolean.

    Bool array-likes (lists, tuples, numpy arrays) are accepted; integer or
    float masks are refused (``validation.as_mask``, the one mask check).
    """
    return validation.as_mask(mask, self.num_workers, type(self).__name__)

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
      query_range: tuple[float, float] | None = queries_lib.NORMALISED_RANGE,
  ) -> Decoded:
    """The whole pipeline for one group: ``Deployment`` of this scheme around ``worker_fn``.

    A shorthand for ``Deployment(..., scheme=self, tasks=worker_tasks(...))``
    called on (queries, mask): the same, only path (validation, encode,
    workers, erasure, decode).

    Args:
      worker_fn: ``worker_fn(params, x)`` for one coded input x (the base
        classifier for LCC and Berrut; ignored by learned codes, whose
        workers run their own network).
      params: parameters of worker_fn (replicated to every worker).
      queries: (K, ...) one group of queries.
      mask: (N,) bool, True where the worker returned in time.
      mesh: optional device mesh with a "workers" axis (shard_map); None
        runs all workers with vmap on one device.
      query_range: (low, high) every query value must lie in (default: the
        range of the images ``data.load`` returns); None for data that are
        not such images.

    Returns:
      Decoded values (K, ...) and the (K,) answered flags.
    """
    from jaxcoded import deployment  # pylint: disable=g-import-not-at-top  (deployment imports base)

    served = deployment.Deployment.of(
        type(self).__name__, self, WorkerTask(worker_fn, params), query_range=query_range
    )
    return served(queries, mask, mesh=mesh)


class TrainedCode:
  """Mixin of the kinds whose part is a trained code, deployed from a config entry.

  The entry's ``deploy_at`` is "trained" (the default: the N it was trained
  with) or "k_plus_s" (built anew at N = K + S for each S, without
  retraining). Put it before ``Scheme`` among the bases.
  """

  @classmethod
  def resized_by(cls, entry) -> bool:
    deploy_at = entry.get("deploy_at", "trained")
    if deploy_at not in ("trained", "k_plus_s"):
      raise ValueError(
          f"deploy_at must be 'trained' (the N it was trained with) or 'k_plus_s', got "
          f"{deploy_at!r}."
      )
    return deploy_at == "k_plus_s"

  @classmethod
  def check_config(cls, entry, num_queries: int, stragglers) -> None:
    del entry, num_queries, stragglers  # its training config is checked when it trains
