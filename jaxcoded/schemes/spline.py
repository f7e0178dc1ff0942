"""Smoothing-spline codes (LeTCC, Moradi, Tahmasebi & Maddah-Ali, NeurIPS 2024;
NeRCC, Moradi & Maddah-Ali 2024; docs/design.md section 4.7), stragglers only.

Encode with a cubic smoothing spline fitted to the K (data point, query)
pairs and evaluated at the N worker points; every worker runs the unchanged
model f; decode with a cubic smoothing spline fitted to the available (worker
point, output) pairs and evaluated at the data points. Both are linear maps
along the worker axis (``interp.smoothing_spline_matrix``), so the scheme is a
pair of matrices like Berrut coding (schemes/berrut.py), with two knobs: the
encoder's and the decoder's smoothing parameters.

What the papers prescribe: LeTCC bounds the decoded mean squared error by the
decoder's generalisation error plus the encoder's training error, shows that
both optimal maps in the second-order Sobolev space are smoothing splines,
and takes the smoothing parameters as functions of the number of stragglers
S (and N), which gives an error decaying like S^3 N^-3 without computation
noise; NeRCC couples the two regressions through the same two regularisation
weights and tunes them jointly. Their constants depend on f (its Sobolev
norm), which is unknown for a trained network, so this project *fits* both
values for each (K, S) on held-out data with ``fit_smoothing`` (a log grid,
minimising the RMSE of decoded outputs against f(x_k) over random masks of S
stragglers) and stores them with the results.

N = K + S as in ApproxIFER, nominal R = K, but decoding works from any
non-empty subset of workers: one returned worker gives the constant through
its output, none gives zeros and ``answered = False``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxcoded import interp, stragglers
from jaxcoded.schemes import base, points, registry

__all__ = ["DEFAULT_GRID", "SmoothingFit", "SplineCode", "fit_smoothing", "fitted_code"]

# 0 (interpolation) and a log grid; for nodes on [-1, 1] with spacing h ~ 2 / N
# the smoothing starts to act around h^3 ~ 1e-3 (interp.smoothing_spline_matrix).
DEFAULT_GRID = (0.0,) + tuple(float(v) for v in 10.0 ** np.arange(-6.0, 1.5, 0.5))


@registry.register("spline", sized=True)
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SplineCode(base.Scheme):
  """Smoothing-spline coding (LeTCC) with N = K + S workers.

  Attributes:
    data_points: (K,) a_k.
    worker_points: (N,) b_n.
    encoder_smoothing: scalar lam_e >= 0 of the encoder spline (through the
      queries at a_k, evaluated at b_n); 0 interpolates the queries.
    decoder_smoothing: scalar lam_d >= 0 of the decoder spline (through the
      available outputs at b_n, evaluated at a_k).

    chosen_by: how the smoothings were chosen, as (key, value) pairs
      (static, not a leaf): empty when given; ``fitted_code`` records the fit
      (held-out images, masks, RMSE). Reported by ``settings()``.

  Both smoothings are pytree leaves: one compiled pipeline serves every value,
  and they can be vmapped over or differentiated.

  A config entry (kind "spline") either gives ``encoder_smoothing`` and
  ``decoder_smoothing`` or sets ``smoothing = "fit"``: then both are fitted
  for each (K, N, S) with ``fit_smoothing`` on the held-out training images
  of the build context (``fit_masks`` random masks per grid point, default 16;
  ``fit_images``: how many of them, default all; ``fit_grid``: the candidate
  values, default ``DEFAULT_GRID``), and stored with the results.
  """

  data_points: jax.Array
  worker_points: jax.Array
  encoder_smoothing: jax.Array
  decoder_smoothing: jax.Array
  chosen_by: tuple[tuple[str, Any], ...] = dataclasses.field(
      default=(), metadata=dict(static=True)
  )

  # A config entry of kind "spline" may set these (``registry``).
  config_options = ("encoder_smoothing", "decoder_smoothing")

  @staticmethod
  def sizes_for(num_queries: int, num_stragglers: int) -> base.SchemeSizes:
    """ApproxIFER's sizes: N = K + S, R = K (it decodes from fewer, approximately)."""
    return base.k_plus_s_sizes(num_queries, num_stragglers)

  @classmethod
  def create(
      cls,
      num_queries: int,
      num_stragglers: int,
      *,
      encoder_smoothing: ArrayLike = 0.0,
      decoder_smoothing: ArrayLike = 0.0,
      data_points: ArrayLike | None = None,
      worker_points: ArrayLike | None = None,
      dtype: DTypeLike | None = None,
  ) -> "SplineCode":
    """A spline code at the default Chebyshev points (those of BerrutCode).

    Args:
      num_queries: K >= 1.
      num_stragglers: S >= 0; N = K + S.
      encoder_smoothing: lam_e >= 0 (``fit_smoothing`` chooses it from data).
      decoder_smoothing: lam_d >= 0.
      data_points: optional (K,) a_k.
      worker_points: optional worker points; their number sets N (>= K).
      dtype: floating dtype of the points and smoothings.

    Raises:
      ValueError: bad sizes, points or smoothing values.
    """
    sizes = cls.sizes_for(num_queries, num_stragglers)
    a, b = points.resolve_points(sizes, data_points, worker_points, dtype, "SplineCode", "R = K")
    interp.check_smoothing(encoder_smoothing, "SplineCode", "encoder_smoothing")
    interp.check_smoothing(decoder_smoothing, "SplineCode", "decoder_smoothing")
    return cls(
        data_points=a,
        worker_points=b,
        encoder_smoothing=jnp.asarray(encoder_smoothing, dtype=a.dtype),
        decoder_smoothing=jnp.asarray(decoder_smoothing, dtype=a.dtype),
    )

  @classmethod
  def check_config(cls, entry, num_queries: int, stragglers) -> None:
    """Raises ValueError for an entry with bad sizes, smoothing values or fit options."""
    cls.sizes_for(num_queries, max(stragglers))
    smoothing = entry.get("smoothing")
    if smoothing is not None:
      if smoothing != "fit":
        raise ValueError(
            f"SplineCode: smoothing must be \"fit\" (fit both per (K, N, S) on held-out "
            f"data) or left out (give encoder_smoothing and decoder_smoothing), got {smoothing!r}."
        )
      given = sorted(cls.options_of(entry))
      if given:
        raise ValueError(f"SplineCode: smoothing = \"fit\" fits {' and '.join(given)}; "
                         "do not give them too.")
    elif any(entry.get(name) is not None for name in ("fit_masks", "fit_images", "fit_grid")):
      raise ValueError('SplineCode: fit_masks / fit_images / fit_grid need smoothing = "fit".')
    grid = entry.get("fit_grid")
    if grid is not None:
      if isinstance(grid, (str, bytes)) or not hasattr(grid, "__len__") or len(grid) < 1:
        raise ValueError(f"SplineCode: fit_grid must be a non-empty sequence of values, got {grid!r}.")
      for value in grid:
        interp.check_smoothing(value, "SplineCode", "fit_grid value")
    for name in ("fit_masks", "fit_images"):
      value = entry.get(name)
      if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
                                or value < 1):
        raise ValueError(f"SplineCode: {name} must be an integer >= 1, got {value!r}.")
    for name, value in cls.options_of(entry).items():
      interp.check_smoothing(value, "SplineCode", name)

  @classmethod
  def from_config(cls, entry, num_stragglers: int, ctx):
    """The code of a config entry at S stragglers, its smoothings given or fitted (see class)."""
    if entry.get("smoothing") != "fit":
      return super().from_config(entry, num_stragglers, ctx)
    if ctx.held_out_images is None or ctx.base_task is None:
      raise ValueError('SplineCode: smoothing = "fit" needs held-out training images and the '
                       "base classifier in the build context (the comparison provides both).")
    images = np.asarray(ctx.held_out_images)
    if entry.get("fit_images"):
      images = images[-int(entry.fit_images):]
    num_masks = int(entry.get("fit_masks") or 16)
    key = jax.random.fold_in(jax.random.key(ctx.seed), 1000 * ctx.num_queries + num_stragglers)
    grid = tuple(float(v) for v in entry.get("fit_grid") or DEFAULT_GRID)
    fit = fit_smoothing(ctx.base_task.fn, ctx.base_task.params, images, ctx.num_queries,
                        num_stragglers, grid=grid, num_masks=num_masks, key=key)
    scheme = fitted_code(fit, ctx.num_queries, num_stragglers, num_images=len(images),
                         num_masks=num_masks)
    return (scheme, *scheme.worker_tasks(ctx.base_task))

  def settings(self) -> dict[str, Any]:
    """The two smoothings (and, when fitted, how): stored with the results."""
    chosen = dict(encoder_smoothing=float(self.encoder_smoothing),
                  decoder_smoothing=float(self.decoder_smoothing))
    chosen.update(dict(self.chosen_by) or dict(smoothing="given"))
    return chosen

  @property
  def sizes(self) -> base.SchemeSizes:
    num_queries = self.data_points.shape[0]
    return base.SchemeSizes(num_queries, self.worker_points.shape[0], num_queries)

  def encoding_matrix(self) -> jax.Array:
    """(N, K) smoothing spline through (a_k, x_k), at b_n."""
    return interp.smoothing_spline_matrix(
        self.data_points, self.worker_points, self.encoder_smoothing
    )

  def encode(self, queries: ArrayLike) -> jax.Array:
    """(K, ...) queries -> (N, ...) coded inputs u(b_n)."""
    self.check_queries(queries)
    return interp.apply_matrix(self.encoding_matrix(), queries)

  def decoding_matrix(self, mask: ArrayLike) -> jax.Array:
    """(K, N) smoothing spline through the available workers, at a_k (zero columns elsewhere)."""
    return interp.smoothing_spline_matrix(
        self.worker_points, self.data_points, self.decoder_smoothing, mask
    )

  def _decode(self, outputs: jax.Array, mask: jax.Array) -> base.Decoded:
    """Approximate f(x_k) from any non-empty set of returned workers (non-finite rows erased)."""
    # No worker returned: the matrix is zero and apply_matrix never reads a row.
    values = interp.apply_matrix(self.decoding_matrix(mask), outputs)
    return base.Decoded(values, jnp.full((self.num_queries,), jnp.any(mask)))


# ---------------------------------------------------------------------------
# Fitting the two smoothing parameters on held-out data.


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
