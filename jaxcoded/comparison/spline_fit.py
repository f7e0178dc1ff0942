"""Fitting the spline code's two smoothing parameters on held-out data (LeTCC, NeRCC).

The papers' optimal smoothings depend on constants of f that are unknown for
a trained network, so the comparison fits both values for each (K, S) on
held-out training images: a log grid, minimising the RMSE of decoded outputs
against f(x_k) over random masks of S stragglers (``fit_smoothing``), and
stores the choice with the results (``SplineCode.settings``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcoded import stragglers
from jaxcoded.schemes import base
from jaxcoded.schemes.spline import SplineCode

__all__ = ["DEFAULT_GRID", "SmoothingFit", "fit_smoothing", "fitted_code"]

# 0 (interpolation) and a log grid; for nodes on [-1, 1] with spacing h ~ 2 / N
# the smoothing starts to act around h^3 ~ 1e-3 (interp.smoothing_spline_matrix).
DEFAULT_GRID = (0.0,) + tuple(float(v) for v in 10.0 ** np.arange(-6.0, 1.5, 0.5))
class SmoothingFit(NamedTuple):
  """The result of ``fit_smoothing``; store it with the results it produced.

  Attributes:
    encoder_smoothing: the chosen lam_e.
    decoder_smoothing: the chosen lam_d.
    rmse: the chosen pair's RMSE on the held-out images.
    grid: (G,) the candidate values (for both parameters).
    rmse_grid: (G, G) RMSE of decoded outputs against f(x_k), rows lam_e,
      columns lam_d, over the held-out groups and masks.
  """

  encoder_smoothing: float
  decoder_smoothing: float
  rmse: float
  grid: np.ndarray
  rmse_grid: np.ndarray

  def create(self, num_queries: int, num_stragglers: int, **kwargs) -> SplineCode:
    """The SplineCode with the fitted smoothings (other ``create`` arguments pass through)."""
    return SplineCode.create(
        num_queries,
        num_stragglers,
        encoder_smoothing=self.encoder_smoothing,
        decoder_smoothing=self.decoder_smoothing,
        **kwargs,
    )


def fitted_code(
    fit: SmoothingFit, num_queries: int, num_stragglers: int, *, num_images: int, num_masks: int,
    **kwargs,
) -> SplineCode:
  """``fit.create(K, S)``, recording in ``chosen_by`` that (and on what) the smoothings were fitted."""
  code = fit.create(num_queries, num_stragglers, **kwargs)
  chosen_by = (("smoothing", "fitted"), ("fit_images", int(num_images)),
               ("fit_masks", int(num_masks)), ("fit_rmse", round(float(fit.rmse), 6)))
  return dataclasses.replace(code, chosen_by=chosen_by)


def _check_grid(grid: Sequence[float]) -> np.ndarray:
  values = np.asarray(grid, dtype=np.float64)
  if values.ndim != 1 or values.size < 1:
    raise ValueError(f"fit_smoothing: grid must be a non-empty 1-D sequence, got shape {values.shape}.")
  if not np.all(np.isfinite(values)) or np.any(values < 0):
    raise ValueError(f"fit_smoothing: grid values must be finite and >= 0, got {values}.")
  return values


def fit_smoothing(
    worker_fn: base.WorkerFn,
    params: Any,
    images: ArrayLike,
    num_queries: int,
    num_stragglers: int,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    num_masks: int = 16,
    key: jax.Array,
    data_points: ArrayLike | None = None,
    worker_points: ArrayLike | None = None,
    batch_size: int = 512,
) -> SmoothingFit:
  """Chooses (lam_e, lam_d) for a SplineCode by held-out RMSE on a grid.

  The images are split into floor(M / K) groups of K (a remainder is dropped).
  For every lam_e on the grid the groups are encoded and every worker output
  computed once; for every lam_d, the outputs are decoded under ``num_masks``
  random masks with exactly S stragglers (the same masks for every pair), and
  the RMSE over groups, masks, queries and output entries of the decoded
  values against f(x_k) is recorded. The pair with the smallest RMSE wins
  (ties: the first in grid order). LeTCC ties the smoothing to S; here it is
  fitted for the given S, so call this once per (K, S).

  Use images the evaluation never sees (a held-out part of the training split).

  Args:
    worker_fn: ``worker_fn(params, x)`` for one input (the base classifier).
    params: its parameters.
    images: (M, ...) held-out inputs, M >= K.
    num_queries: K.
    num_stragglers: S; N = K + S (S < N).
    grid: candidate smoothing values, finite and >= 0 (the same grid for both).
    num_masks: random masks per pair.
    key: PRNG key for the masks.
    data_points, worker_points: optional points, as in ``SplineCode.create``.
    batch_size: worker inputs per forward pass.

  Returns:
    A ``SmoothingFit`` (chosen values, their RMSE and the whole RMSE grid).

  Raises:
    ValueError: fewer than K images, or a bad grid.
  """
  grid_values = _check_grid(grid)
  images = jnp.asarray(images)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    images = images.astype(jnp.zeros(()).dtype)
  num_groups = images.shape[0] // num_queries if images.ndim else 0
  code = SplineCode.create(
      num_queries, num_stragglers, data_points=data_points, worker_points=worker_points,
      dtype=images.dtype,
  )
  if num_groups < 1:
    raise ValueError(
        f"fit_smoothing: needs at least K = {num_queries} images, got shape {images.shape}."
    )
  groups = images[: num_groups * num_queries].reshape(
      (num_groups, num_queries) + images.shape[1:]
  )
  masks = stragglers.random_masks(key, num_masks, code.num_workers, num_stragglers)
  run_workers = jax.jit(
      lambda p, x: jax.lax.map(lambda one: worker_fn(p, one), x, batch_size=batch_size)
  )
  forward = lambda x: run_workers(params, x)
  reference = forward(groups.reshape((-1,) + images.shape[1:]))
  reference = reference.reshape((num_groups, num_queries) + reference.shape[1:])
  smoothings = jnp.asarray(grid_values, dtype=code.data_points.dtype)

  # The data are arguments, not closed-over constants: XLA would otherwise
  # constant-fold transposes of all the held-out images at compile time.
  @jax.jit
  def encode_all(code, groups):
    return jnp.einsum("nk,gk...->gn...", code.encoding_matrix(), groups)

  @jax.jit
  def rmse_per_decoder(code, smoothings, masks, outputs, reference):
    def one(decoder_smoothing):
      decoding = dataclasses.replace(code, decoder_smoothing=decoder_smoothing)
      matrices = jax.vmap(decoding.decoding_matrix)(masks)  # (M, K, N)
      decoded = jnp.einsum("mkn,gn...->gmk...", matrices, outputs)
      error = decoded - reference[:, None]
      return jnp.sqrt(jnp.mean(error**2))

    return jax.lax.map(one, smoothings)

  rows = []
  for encoder_smoothing in smoothings:
    coded = encode_all(dataclasses.replace(code, encoder_smoothing=encoder_smoothing), groups)
    outputs = forward(coded.reshape((-1,) + images.shape[1:]))
    outputs = outputs.reshape((num_groups, code.num_workers) + outputs.shape[1:])
    rmse = rmse_per_decoder(code, smoothings, masks, outputs, reference)
    rows.append(np.asarray(rmse, dtype=np.float64))
  rmse_grid = np.stack(rows)
  best_e, best_d = np.unravel_index(np.argmin(rmse_grid), rmse_grid.shape)
  return SmoothingFit(
      encoder_smoothing=float(grid_values[best_e]),
      decoder_smoothing=float(grid_values[best_d]),
      rmse=float(rmse_grid[best_e, best_d]),
      grid=grid_values,
      rmse_grid=rmse_grid,
  )
