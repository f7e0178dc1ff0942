"""Berrut coding with Byzantine workers (ApproxIFER, Soleymani et al. 2022; docs/design.md section 4.4).

Encoding is Berrut's, as in ``BerrutCode``: worker n receives
u(b_n) = sum_k E[n, k] x_k, where E (N, K) is the Berrut matrix from the data
points a_k to the worker points b_n, and runs the unchanged model f. Up to
E_adv of the returned outputs may be arbitrary (adversarial). With
N = 2K + S + 2 E_adv - 1 workers (ApproxIFER's count), the master tolerates S
stragglers and E_adv adversaries: it *locates* the adversaries and decodes
with Berrut's interpolant through the remaining, trusted, workers.

Locating (see docs/byzantine.md for the justification). Honest outputs are
close to the column space of E: for an affine f they lie in it exactly, since
the rows of E sum to one and so y_n = f(sum_k E[n, k] x_k) = sum_k E[n, k] f(x_k).
(That space is the set of rational functions p(z) / D(z), deg p <= K - 1, with
the *known* Berrut denominator D of the encoder; ApproxIFER fits a rational
function with an unknown denominator of the same degree.) The locator removes
the E_adv available workers whose removal leaves the remaining outputs most
consistent with that model: the least-squares residual of y over the kept
rows of E, all output coordinates jointly. This is the exhaustive
(maximum-likelihood) form of Berlekamp-Welch decoding: for an affine f it
locates E_adv errors exactly whenever K + 2 E_adv outputs are available, and
the extra K - 1 outputs of ApproxIFER's N absorb the non-linearity of f.

The search is fixed-shape: every one of the C(N, E_adv) candidate sets is
scored (sets with a straggler get +inf), so one compiled function serves all
straggler patterns, and ``vmap`` over masks works. ``search="greedy"``
instead removes one worker at a time, E_adv rounds of N candidates, for large
C(N, E_adv).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import interp, linalg, stragglers, validation
from jaxcoded.schemes import base, points

__all__ = ["ByzantineBerrutCode"]

SEARCHES = ("exhaustive", "greedy")
MAX_CANDIDATES = 100_000


def _residual(design: jax.Array, values: jax.Array, keep: jax.Array) -> jax.Array:
  """Sum of squared least-squares residuals of values (N, D) on design (N, K), kept rows only.

  Non-finite residuals (an adversary's inf or NaN among the kept rows) become
  +inf, so such a set is never preferred.
  """
  a = jnp.where(keep[:, None], design, 0.0)
  y = jnp.where(keep[:, None], values, 0.0)
  q, _ = linalg.householder_qr(a)  # no LAPACK call: see jaxcoded.linalg
  r = y - q @ (q.T @ y)
  ssr = jnp.sum(jnp.square(r))
  return jnp.where(jnp.isfinite(ssr), ssr, jnp.inf)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ByzantineBerrutCode(base.Scheme):
  """Berrut coding that tolerates S stragglers and E adversaries with N = 2K + S + 2E - 1.

  Attributes:
    data_points: (K,) a_k.
    worker_points: (N,) b_n.
    num_adversaries: E >= 1 (static).
    search: "exhaustive" (all C(N, E) sets) or "greedy" (static).
  """

  joint_decoding = True  # wrong outputs are located over all leaves together

  data_points: jax.Array
  worker_points: jax.Array
  num_adversaries: int = dataclasses.field(default=1, metadata=dict(static=True))
  search: str = dataclasses.field(default="exhaustive", metadata=dict(static=True))


  @staticmethod
  def sizes_for(num_queries: int, num_stragglers: int, num_adversaries: int) -> base.SchemeSizes:
    """ApproxIFER's sizes: N = 2K + S + 2E - 1, R = 2K + 2E - 1 (adversaries' outputs included)."""
    num_queries, num_stragglers = base.check_group_sizes(num_queries, num_stragglers)
    num_adversaries = validation.check_integer(
        num_adversaries, "E", 1,
        message=f"ByzantineBerrutCode needs E >= 1 adversaries, got E = {num_adversaries!r} "
        "(for E = 0 use BerrutCode, which needs only N = K + S workers).",
    )
    threshold = 2 * num_queries + 2 * num_adversaries - 1
    return base.SchemeSizes(num_queries, threshold + num_stragglers, threshold)

  @classmethod
  def create(
      cls,
      num_queries: int,
      num_stragglers: int,
      num_adversaries: int,
      *,
      data_points: ArrayLike | None = None,
      worker_points: ArrayLike | None = None,
      dtype: DTypeLike | None = None,
      search: str = "exhaustive",
  ) -> "ByzantineBerrutCode":
    """Byzantine-robust Berrut coding at default Chebyshev points.

    Args:
      num_queries: K >= 1.
      num_stragglers: S >= 0.
      num_adversaries: E >= 1.
      data_points: optional (K,) a_k.
      worker_points: optional worker points; their number sets N, which must
        be at least R = 2K + 2E - 1 (then S = N - R).
      dtype: floating dtype of the points.
      search: "exhaustive" or "greedy" (see the module docstring).
    """
    sizes = cls.sizes_for(num_queries, num_stragglers, num_adversaries)
    num_queries, num_adversaries = int(num_queries), int(num_adversaries)  # validated: static fields
    if search not in SEARCHES:
      raise ValueError(f"ByzantineBerrutCode: search must be one of {SEARCHES}, got {search!r}.")
    a, b = points.resolve_points(
        sizes, data_points, worker_points, dtype, "ByzantineBerrutCode",
        f"R = 2K + 2E - 1 (K = {num_queries}, E = {num_adversaries})",
    )
    candidates = math.comb(b.shape[0], num_adversaries)
    if search == "exhaustive" and candidates > MAX_CANDIDATES:
      raise ValueError(
          f"ByzantineBerrutCode: the exhaustive search would score C({b.shape[0]}, "
          f"{num_adversaries}) = {candidates} candidate sets (more than {MAX_CANDIDATES}); "
          'use search="greedy".'
      )
    return cls(data_points=a, worker_points=b, num_adversaries=num_adversaries, search=search)

  @property
  def sizes(self) -> base.SchemeSizes:
    num_queries = self.data_points.shape[0]
    threshold = 2 * num_queries + 2 * self.num_adversaries - 1
    return base.SchemeSizes(num_queries, self.worker_points.shape[0], threshold)

  @property
  def min_available(self) -> int:
    """K + 2E: the fewest returned outputs from which E adversaries can be located."""
    return self.num_queries + 2 * self.num_adversaries

  def encoding_matrix(self) -> jax.Array:
    """(N, K) Berrut matrix from the data points to the worker points."""
    return interp.berrut_matrix(self.data_points, self.worker_points)

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, ...) queries -> (N, ...) coded inputs u(b_n)."""
    self.check_queries(queries)
    return interp.apply_matrix(self.encoding_matrix(), queries)

  def consistency_residual(self, outputs: ArrayLike, keep: ArrayLike) -> jax.Array:
    """How far the kept outputs are from any affine-f codeword (a scalar, >= 0).

    The squared least-squares residual of the kept rows of ``outputs`` (all
    coordinates jointly) on the kept rows of the encoding matrix; +inf if it
    is not finite.

    Args:
      outputs: (N, ...) worker outputs.
      keep: (N,) bool, the rows to use; other rows are never read.
    """
    outputs, keep = jnp.asarray(outputs), jnp.asarray(keep)
    flat = outputs.reshape(outputs.shape[0], -1)
    design = self.encoding_matrix().astype(jnp.result_type(flat.dtype, self.worker_points.dtype))
    return _residual(design, flat.astype(design.dtype), keep)

  def locate_adversaries(self, outputs: ArrayLike, mask: ArrayLike) -> jax.Array:
    """The E available workers whose removal makes the rest most consistent.

    Args:
      outputs: (N, ...) worker outputs; rows of stragglers are never read.
      mask: (N,) bool, True where the worker returned.

    Returns:
      (N,) bool, True for the E located workers (a subset of ``mask``; all of
      the available workers if fewer than E returned). Meaningful when at
      least ``min_available`` = K + 2E workers returned.
    """
    self.check_mask(mask)
    outputs, mask = jnp.asarray(outputs), jnp.asarray(mask)
    flat = outputs.reshape(outputs.shape[0], -1)
    dtype = jnp.result_type(flat.dtype, self.worker_points.dtype)
    flat = jnp.where(mask[:, None], flat, 0.0).astype(dtype)
    design = self.encoding_matrix().astype(dtype)
    scores_of = jax.vmap(lambda keep: _residual(design, flat, keep))

    if self.search == "exhaustive":
      # Every set of E workers: the complements of the masks with E stragglers.
      drops = jnp.asarray(~stragglers.all_masks(self.num_workers, self.num_adversaries, MAX_CANDIDATES))
      valid = ~jnp.any(drops & ~mask[None, :], axis=1)  # only available workers are dropped
      scores = jnp.where(valid, scores_of(mask[None, :] & ~drops), jnp.inf)
      return jnp.where(jnp.any(valid), drops[jnp.argmin(scores)] & mask, mask)

    keep = mask
    drop_one = ~jnp.eye(self.num_workers, dtype=bool)
    for _ in range(self.num_adversaries):
      candidates = keep[None, :] & drop_one
      scores = jnp.where(keep, scores_of(candidates), jnp.inf)
      keep = jnp.where(jnp.any(keep), candidates[jnp.argmin(scores)], keep)
    return mask & ~keep

  def berrut_decode(self, outputs: ArrayLike, trusted: ArrayLike) -> base.Decoded:
    """Plain Berrut decoding through the ``trusted`` workers, without locating.

    This is what ``decode`` computes once the adversaries are located; with the
    true adversaries removed from the mask, it is the reference decode.
    """
    self.check_mask(trusted)
    trusted = jnp.asarray(trusted)
    any_trusted = jnp.any(trusted)
    safe = jnp.where(any_trusted, trusted, True)
    matrix = interp.berrut_matrix(self.worker_points, self.data_points, safe)
    values = interp.apply_matrix(matrix, outputs)
    values = jnp.where(any_trusted, values, jnp.zeros((), values.dtype))
    return base.Decoded(values, jnp.full((self.num_queries,), any_trusted))

  @property
  def locates_errors(self) -> bool:
    return True

  def _decode_and_locate(
      self, outputs: ArrayLike, mask: ArrayLike
  ) -> tuple[base.Decoded, jax.Array]:
    """``decode`` that also returns the (N,) bool mask of located adversaries."""
    self.check_mask(mask)
    mask = jnp.asarray(mask)
    located = self.locate_adversaries(outputs, mask)
    decoded = self.berrut_decode(outputs, mask & ~located)
    enough = jnp.sum(mask) >= self.min_available
    values = jnp.where(enough, decoded.values, jnp.zeros((), decoded.values.dtype))
    return base.Decoded(values, decoded.answered & enough), located

  def _decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """Locates E adversaries among the returned workers, then Berrut-decodes without them.

    Nothing is answered (values zero) when fewer than K + 2E workers returned:
    the adversaries could not be told apart from honest workers.

    Args:
      outputs: (N, ...) worker outputs; stragglers' rows are never read.
      mask: (N,) bool, True where the worker returned.

    Returns:
      Decoded values (K, ...) and the (K,) answered flags.
    """
    return self._decode_and_locate(outputs, mask)[0]
