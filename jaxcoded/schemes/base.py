"""The interface every coding scheme shares (docs/design.md section 4).

A scheme groups K queries, produces N worker inputs, and recovers K answers
from the outputs of the workers that returned (a boolean mask of length N):

  coded   = scheme.encode(queries)          # (K, ...) -> (N, ...)
  outputs = run_workers(f, params, coded, mask)   # stragglers' rows masked out
  decoded = scheme.decode(outputs, mask)    # (N, ...) -> Decoded((K, ...), (K,))

A scheme also states its sizes (K queries, N workers, recovery threshold R,
S = N - R stragglers tolerated) and its capabilities (``min_returns``,
``has_fallback``, ``locates_errors``, ``home_workers``, ``worker_tasks``);
A scheme is the maths alone: building one from an experiment config is the
comparison layer's job (``jaxcoded.comparison.builders``). The one pipeline
that runs a scheme is ``jaxcoded.deployment.Deployment`` (docs/design.md,
section "The pipeline").

Queries and worker outputs may be any pytree whose leaves share the leading
axis (K for queries, N for outputs): ``encode`` and ``decode`` map over the
leaves and keep the structure, and a NaN or inf in any leaf of a worker's
output erases that worker for the group.

Example:
  >>> import jax
  >>> import jax.numpy as jnp
  >>> from jaxcoded import schemes
  >>> code = schemes.BerrutCode.create(3, 1)             # K = 3, S = 1: N = 4
  >>> coded = code.encode({"a": jnp.ones((3, 2)), "b": jnp.zeros((3,))})
  >>> jax.tree.map(jnp.shape, coded)
  {'a': (4, 2), 'b': (4,)}
  >>> decoded = code.decode(coded, jnp.array([True, False, True, True]))
  >>> decoded.answered.tolist()
  [True, True, True]
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded import deployment, validation, workers
from jaxcoded import queries as queries_lib

WorkerFn = workers.WorkerFn
WorkerTask = workers.WorkerTask
PyTree = Any


class Decoded(NamedTuple):
  """What the master recovers for one group.

  Attributes:
    values: (K, ...) decoded outputs (e.g. logits), or a pytree of them with
      the structure of the worker outputs; zeros where unanswered.
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


def _join(leaves: list[jax.Array]) -> tuple[jax.Array, Any]:
  """Leaves (N, ...) -> one (N, P) array of their common dtype, and the map back.

  The map takes (T, P) values to the leaves' structure with leading axis T,
  each leaf in its own dtype again.
  """
  dtype = jnp.result_type(*leaves)
  flat = [leaf.reshape(leaf.shape[0], -1).astype(dtype) for leaf in leaves]
  widths = [f.shape[1] for f in flat]
  cuts = np.cumsum(widths)[:-1].tolist()

  def split(values: jax.Array) -> list[jax.Array]:
    pieces = jnp.split(values, cuts, axis=1)
    return [
        piece.reshape((values.shape[0],) + leaf.shape[1:]).astype(
            leaf.dtype if jnp.issubdtype(leaf.dtype, jnp.inexact) else piece.dtype)
        for piece, leaf in zip(pieces, leaves)
    ]

  return jnp.concatenate(flat, axis=1), split


class Scheme(abc.ABC):
  """Base class of every code: sizes, encode, decode (and locate, where a code locates errors).

  Subclasses implement ``sizes``, ``_encode`` and ``_decode`` for ONE array
  (leading axis K, respectively N). The public :meth:`encode` and
  :meth:`decode` take pytrees: they check the shapes and the mask, erase
  non-finite outputs, and map the array methods over the leaves, so every
  scheme shares one erasure rule and one pytree rule. A scheme whose decoding
  reads all outputs together (error location) sets ``joint_decoding``: its
  leaves are decoded as one (N, P) array of their common dtype. A scheme
  whose master decoder also reads the group's queries (side information the
  master holds anyway) sets ``decode_reads_queries`` and implements
  ``_decode_with_queries``; :meth:`decode` then needs ``queries``.

  The remaining methods and properties describe what a scheme can do, with
  defaults that subclasses override: the harness, the service and the
  evaluators ask them, never the class.
  """

  # Decode all leaves of a pytree as one array (codes that locate wrong outputs).
  joint_decoding = False
  decode_reads_queries = False

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

  def settings(self) -> dict[str, Any]:
    """The scheme's chosen parameters, stored with its results (e.g. fitted smoothings).

    Plain Python values (JSON-serialisable); the default has none.
    """
    return {}

  # -- the coding steps ---------------------------------------------------------------

  def encode(self, queries: PyTree) -> PyTree:
    """(K, ...) queries -> (N, ...) worker inputs, leaf by leaf for a pytree.

    Args:
      queries: an array with leading axis K, or a pytree of such arrays.

    Returns:
      The same structure with leading axis N.
    """
    self.check_queries(queries)
    return jax.tree.map(lambda leaf: self._encode(jnp.asarray(leaf)), queries)

  @abc.abstractmethod
  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, ...) one array of queries -> (N, ...) worker inputs."""

  def decode(self, outputs: PyTree, mask: ArrayLike, queries: PyTree | None = None) -> Decoded:
    """(N, ...) worker outputs and (N,) availability -> K decoded outputs.

    A worker whose output holds NaN or inf in any leaf is an erasure
    (``workers.erase_nonfinite``): it counts as a straggler for this group, so
    the decoder answers only what it can still guarantee from the rest.

    Args:
      outputs: an array with leading axis N, or a pytree of such arrays.
      mask: (N,) bool, True where the worker returned.
      queries: the group's (K, ...) queries, for a scheme whose decoder reads
        them (``decode_reads_queries``); ignored by the others.

    Returns:
      Decoded(values with the structure of ``outputs`` and leading axis K,
      (K,) answered flags).

    Raises:
      ValueError: for a scheme with ``decode_reads_queries``, no ``queries``.
    """
    outputs, mask = self._erase(outputs, mask)
    if self.decode_reads_queries:
      return self._decode_with_queries(outputs, mask, self._side_queries(queries))
    return self._decode_tree(outputs, mask)

  def decode_and_locate(
      self, outputs: PyTree, mask: ArrayLike, queries: PyTree | None = None
  ) -> tuple[Decoded, jax.Array]:
    """(Decoded, (N,) bool rejected): decoding that also reports the outputs it dropped.

    Non-finite rows are erased first, as in :meth:`decode` (an erasure is a
    straggler: a NaN worker may be a broken honest one, so it spends none of a
    Byzantine code's error budget), and count as rejected; schemes with
    ``locates_errors`` also find wrong finite outputs among the rest (over
    all leaves of a pytree together). ``queries`` as in :meth:`decode`.
    """
    returned = self.check_mask(mask)
    outputs, mask = self._erase(outputs, returned)
    if self.decode_reads_queries:
      decoded = self._decode_with_queries(outputs, mask, self._side_queries(queries))
      return decoded, returned & ~mask
    leaves, treedef = jax.tree.flatten(outputs)
    if len(leaves) == 1:
      decoded, rejected = self._decode_and_locate(leaves[0], mask)
      values = [decoded.values]
    else:
      joined, split = _join(leaves)
      decoded, rejected = self._decode_and_locate(joined, mask)
      values = split(decoded.values)
    decoded = Decoded(treedef.unflatten(values), decoded.answered)
    return decoded, rejected | (returned & ~mask)  # erased rows are dropped outputs too

  def _side_queries(self, queries: PyTree | None) -> PyTree:
    if queries is None:
      raise ValueError(
          f"{type(self).__name__}: its decoder reads the group's queries (decode_reads_queries); "
          "pass them: decode(outputs, mask, queries)."
      )
    self.check_queries(queries)
    return queries

  def _decode_with_queries(self, outputs: PyTree, mask: jax.Array, queries: PyTree) -> Decoded:
    """Decodes finite outputs with the group's queries as side information."""
    raise NotImplementedError(
        f"{type(self).__name__} sets decode_reads_queries but has no _decode_with_queries."
    )

  def _decode_tree(self, outputs: PyTree, mask: jax.Array) -> Decoded:
    """Decodes a pytree of finite outputs: leaf by leaf, or joined (``joint_decoding``)."""
    leaves, treedef = jax.tree.flatten(outputs)
    if len(leaves) == 1:
      decoded = self._decode(leaves[0], mask)
      return Decoded(treedef.unflatten([decoded.values]), decoded.answered)
    if self.joint_decoding:
      joined, split = _join(leaves)
      decoded = self._decode(joined, mask)
      return Decoded(treedef.unflatten(split(decoded.values)), decoded.answered)
    per_leaf = [self._decode(leaf, mask) for leaf in leaves]
    answered = per_leaf[0].answered
    for decoded in per_leaf[1:]:
      answered = answered & decoded.answered
    return Decoded(treedef.unflatten([d.values for d in per_leaf]), answered)

  @abc.abstractmethod
  def _decode(self, outputs: jax.Array, mask: jax.Array) -> Decoded:
    """Decodes one (N, ...) array of finite outputs; rows where ``mask`` is False are zero."""

  def _decode_and_locate(self, outputs: jax.Array, mask: jax.Array) -> tuple[Decoded, jax.Array]:
    """(Decoded, located wrong outputs) from one array of finite outputs; default: none located."""
    return self._decode(outputs, mask), jnp.zeros((self.num_workers,), bool)

  def _erase(self, outputs: PyTree, mask: ArrayLike) -> tuple[PyTree, jax.Array]:
    mask = self.check_mask(mask)
    outputs = jax.tree.map(jnp.asarray, outputs)
    for leaf in jax.tree.leaves(outputs):
      if leaf.shape[:1] != (self.num_workers,):
        raise ValueError(
            f"{type(self).__name__}: outputs have shape {leaf.shape}, expected "
            f"({self.num_workers}, ...): one row per worker."
        )
    if not jax.tree.leaves(outputs):
      raise ValueError(f"{type(self).__name__}: got no outputs (an empty pytree).")
    return workers.erase_nonfinite(outputs, mask)

  def check_mask(self, mask: ArrayLike) -> jax.Array:
    """The mask as an (N,) bool array; ValueError for one that is not (N,) boolean.

    Bool array-likes (lists, tuples, numpy arrays) are accepted; integer or
    float masks are refused (``validation.as_mask``, the one mask check).
    """
    return validation.as_mask(mask, self.num_workers, type(self).__name__)

  def check_queries(self, queries: PyTree) -> None:
    """Raises ValueError for queries that are not K real numbers along the leading axis.

    Static checks only (shapes and dtypes of every leaf), the same eagerly and
    under ``jit``; value checks (finite, in range) are the deployment's, with
    a ``queries.QuerySpec``.
    """
    name = f"{type(self).__name__}"
    leaves = jax.tree.leaves(queries)
    for leaf in leaves:
      shape = jnp.shape(leaf)
      if not shape or shape[0] != self.num_queries:
        raise ValueError(
            f"{name}: expected a group of K = {self.num_queries} queries along the leading axis, "
            f"got shape {shape}."
        )
    queries_lib.check(queries, (self.num_queries, ...), None, name)

  def __call__(
      self,
      worker_fn: WorkerFn,
      params: Any,
      queries: PyTree,
      mask: ArrayLike,
      *,
      mesh: jax.sharding.Mesh | None = None,
      query_range: queries_lib.QuerySpec | tuple[float, float] | None = None,
  ) -> Decoded:
    """The whole pipeline for one group: ``Deployment`` of this scheme around ``worker_fn``.

    A shorthand for ``Deployment(..., scheme=self, tasks=worker_tasks(...))``
    called on (queries, mask): the same, only path (checks, encode, workers,
    erasure, decode).

    Args:
      worker_fn: ``worker_fn(params, x)`` for one coded input x (the base
        classifier for LCC and Berrut; ignored by learned codes, whose
        workers run their own network). x and the output may be pytrees.
      params: parameters of worker_fn (replicated to every worker).
      queries: (K, ...) one group of queries, or a pytree of such arrays.
      mask: (N,) bool, True where the worker returned in time.
      mesh: optional device mesh with a "workers" axis (shard_map); None
        runs all workers with vmap on one device.
      query_range: None (default: static checks only, any real-valued data),
        or the value checks of the data (a ``queries.QuerySpec`` such as
        ``data.query_spec("digits")``, or a (low, high) pair). Value checks
        need concrete queries: under ``jit`` a spec raises ValueError.

    Returns:
      Decoded values (K, ...) (the structure of the worker outputs) and the
      (K,) answered flags.
    """
    served = deployment.Deployment.of(
        type(self).__name__, self, WorkerTask(worker_fn, params), query_range=query_range
    )
    return served(queries, mask, mesh=mesh)
