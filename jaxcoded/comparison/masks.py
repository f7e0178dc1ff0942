"""Straggler masks shared by every scheme of a comparison (docs/design.md, "Protocol").

Masks depend only on (N, S) and the seed, so schemes with the same N see the
very same arrays; ``fingerprint`` proves it in ``results.json``.
"""

from __future__ import annotations

import hashlib
import math

import jax
import numpy as np

from jaxcoded import stragglers

__all__ = ["MaskBank", "fingerprint"]


class MaskBank:
  """Straggler masks that depend only on (N, S) and the seed, cached.

  Every scheme with N workers evaluated at S stragglers gets the same array:
  all C(N, S) masks when there are at most ``exhaustive_limit``, else
  ``num_random`` uniform random ones.
  """

  def __init__(self, seed: int, num_random: int, exhaustive_limit: int):
    if num_random < 1 or exhaustive_limit < 1:
      raise ValueError(
          f"MaskBank: num_random and exhaustive_limit must be >= 1, got {num_random} and "
          f"{exhaustive_limit}."
      )
    self.key = jax.random.key(seed)
    self.num_random = num_random
    self.exhaustive_limit = exhaustive_limit
    self._cache: dict[tuple[int, int], np.ndarray] = {}

  def masks(self, num_workers: int, num_stragglers: int) -> np.ndarray:
    """(M, N) boolean masks with exactly S False entries each."""
    if not 0 <= num_stragglers <= num_workers:
      raise ValueError(f"MaskBank: S = {num_stragglers} stragglers among N = {num_workers}.")
    key = (num_workers, num_stragglers)
    if key not in self._cache:
      if math.comb(num_workers, num_stragglers) <= self.exhaustive_limit:
        masks = stragglers.all_masks(num_workers, num_stragglers)
      else:
        sub = jax.random.fold_in(jax.random.fold_in(self.key, num_workers), num_stragglers)
        masks = stragglers.random_masks(sub, self.num_random, num_workers, num_stragglers)
      self._cache[key] = np.asarray(masks, bool)
    return self._cache[key]

  def deadline_masks(
      self, num_workers: int, num_masks: int, model: stragglers.LatencyModel, deadline: float
  ) -> np.ndarray:
    """(M, N) masks of the workers whose latency under ``model`` beats the deadline."""
    key = jax.random.fold_in(jax.random.fold_in(self.key, 10_000 + num_workers), 1)
    masks, _ = stragglers.sample_deadline_masks(key, model, num_masks, num_workers,
                                                deadline=deadline)
    return np.asarray(masks, bool)

  def arrays(self) -> dict[str, np.ndarray]:
    """Every mask set handed out, keyed "N{N}_S{S}" (for ``masks.npz``)."""
    return {f"N{n}_S{s}": m for (n, s), m in sorted(self._cache.items())}


def fingerprint(masks: np.ndarray) -> str:
  """A short hash of a mask array: equal fingerprints mean identical masks."""
  masks = np.ascontiguousarray(np.asarray(masks, bool))
  return hashlib.sha1(masks.tobytes() + str(masks.shape).encode()).hexdigest()[:16]
