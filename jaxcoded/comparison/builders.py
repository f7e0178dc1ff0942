"""Scheme kinds by name: how a comparison config entry builds a scheme.

A comparison config lists schemes as entries (``configs/eval_digits.py``
documents the fields); each entry names a registered *kind* and its options.
The schemes themselves (``jaxcoded.schemes``) know nothing of configs: this
module parses the entries, fits settings on held-out data (the spline code's
smoothings, ``spline_fit``) and plugs in trained parts, one builder per kind,
registered with one call:

  register("berrut", sized=True, build=_sized(schemes.BerrutCode))

A *sized* kind is built anew for each number of stragglers S (its N depends
on S: replication, LCC, Berrut, ...); a fixed one keeps its N and is
evaluated with S of its workers straggling (uncoded, ParM, learned codes).
``trains`` names the training task of a kind's trained part
(``jaxcoded.training.TASKS``): "parity" for ParM, "coder" for the learned
codes. A learned code's entry chooses where it is deployed (``deploy_at``):
"trained" (the N it was trained with), "k_plus_s" (N = K + S for each S) or
"r_plus_s" (N = R + S: fewer workers than any fixed scheme needs when R < K).

Example:
  >>> import ml_collections
  >>> from jaxcoded.comparison import builders
  >>> entry = ml_collections.ConfigDict(dict(kind="berrut"))
  >>> builders.get("berrut").check(entry, 4, [0, 1, 2])
  >>> builders.get("berrut").sized_for(entry)
  True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from jaxcoded import interp, schemes, workers
from jaxcoded.comparison import spline_fit
from jaxcoded.schemes import base

__all__ = ["DEPLOY_AT", "BuildContext", "Kind", "get", "kinds", "register"]

DEPLOY_AT = ("trained", "k_plus_s", "r_plus_s")


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """What building a scheme from a config entry may need besides the entry.

  Attributes:
    num_queries: K.
    base_task: the base classifier f as a worker task.
    num_classes: f's number of classes.
    train_labels: labels of the training split (uncoded's majority fallback).
    trained: the entry's trained part, for kinds that train one (the parity
      model as a ``WorkerTask``, or the learned code itself).
    held_out_images: (M, ...) inputs of the training split that the
      evaluation never sees, for kinds that fit settings on data (the spline
      code's smoothings); None when the caller has none.
    seed: the comparison's seed (for the masks of such a fit).
  """

  num_queries: int
  base_task: workers.WorkerTask | None = None
  num_classes: int | None = None
  train_labels: np.ndarray | None = None
  trained: Any = None
  held_out_images: np.ndarray | None = None
  seed: int = 0


Built = tuple[base.Scheme, tuple[workers.WorkerTask, ...], tuple[int, ...]]
Builder = Callable[[ml_collections.ConfigDict, int, BuildContext], "Built | None"]
Checker = Callable[[ml_collections.ConfigDict, int, Sequence[int]], None]


@dataclasses.dataclass(frozen=True)
class Kind:
  """A registered scheme kind: how its entries are checked and built."""

  name: str
  builder: Builder
  checker: Checker
  sized: bool
  trains: str | None = None

  def sized_for(self, entry: ml_collections.ConfigDict) -> bool:
    """Whether this entry is built anew at each S (a learned code redeployed at each S)."""
    return self.sized or (self.trains == "coder" and deploy_at(entry) != "trained")

  def build(
      self, entry: ml_collections.ConfigDict, num_stragglers: int, ctx: BuildContext
  ) -> Built | None:
    """(scheme, worker tasks, roles) of a config entry at S stragglers; None if it cannot be."""
    return self.builder(entry, num_stragglers, ctx)

  def check(self, entry: ml_collections.ConfigDict, num_queries: int, stragglers: Sequence[int]) -> None:
    """Raises ValueError for an entry that cannot be built (before anything is trained)."""
    if self.trains and entry.get("config") is None:
      raise ValueError(
          f"Scheme kind {self.name!r} needs entry.config (the training config of its "
          f"{self.trains} part)."
      )
    self.checker(entry, num_queries, stragglers)


_KINDS: dict[str, Kind] = {}


def register(
    name: str,
    *,
    build: Builder,
    check: Checker | None = None,
    sized: bool,
    trains: str | None = None,
) -> Kind:
  """Registers a kind under ``name`` (ValueError if the name is taken by another builder)."""
  if name in _KINDS and _KINDS[name].builder is not build:
    raise ValueError(f"A scheme kind named {name!r} is already registered.")
  kind = Kind(name, build, check or (lambda entry, k, stragglers: None), sized, trains)
  _KINDS[name] = kind
  return kind


def kinds() -> tuple[str, ...]:
  """Every registered kind, in registration order."""
  return tuple(_KINDS)


def get(name: str) -> Kind:
  """The registered kind ``name``; ValueError naming the known ones otherwise."""
  if name not in _KINDS:
    raise ValueError(f"Unknown scheme kind {name!r}; use one of {kinds()}.")
  return _KINDS[name]


def deploy_at(entry: ml_collections.ConfigDict) -> str:
  """A learned code's ``deploy_at`` (default "trained"); ValueError for an unknown value."""
  value = entry.get("deploy_at", "trained")
  if value not in DEPLOY_AT:
    raise ValueError(
        f"deploy_at must be 'trained' (the N it was trained with), 'k_plus_s' (N = K + S) or "
        f"'r_plus_s' (N = R + S), got {value!r}."
    )
  return value


# ---------------------------------------------------------------------------
# Fixed schemes around the base classifier.


def _options(entry: ml_collections.ConfigDict, names: Sequence[str]) -> dict[str, Any]:
  return {name: entry[name] for name in names if entry.get(name) is not None}


def _sized(scheme_class, options: Sequence[str] = ()) -> tuple[Builder, Checker]:
  """Builder and checker of a sized code: ``create(K, S, **options)``, every worker running f."""

  def build(entry, num_stragglers, ctx):
    scheme = scheme_class.create(ctx.num_queries, num_stragglers, **_options(entry, options))
    return (scheme, *scheme.worker_tasks(ctx.base_task))

  def check(entry, num_queries, stragglers):
    scheme_class.sizes_for(num_queries, max(stragglers), **_options(entry, options))

  return build, check


def _build_uncoded(entry, num_stragglers, ctx):
  """N = K whatever S; ``fallback: True`` answers stragglers' queries with the majority class."""
  del num_stragglers
  fallback = None
  if entry.get("fallback", False):
    fallback = schemes.majority_class_logits(ctx.train_labels, ctx.num_classes)
  scheme = schemes.Uncoded.create(ctx.num_queries, fallback=fallback)
  return (scheme, *scheme.worker_tasks(ctx.base_task))


def _build_uncoded_model_fallback(entry, num_stragglers, ctx):
  """N = K whatever S; the master answers a straggler's query with its trained classifier.

  ``ctx.trained`` is that classifier as a worker task (``entry.config`` trains
  it, e.g. configs/fashion_mnist_sketch.py): a control for codes whose master
  reads the queries, at the master's cost of running it on every query.
  """
  del entry, num_stragglers
  if ctx.trained is None:
    raise ValueError("uncoded_model_fallback needs its trained fallback classifier.")
  scheme = schemes.Uncoded.create(ctx.num_queries, fallback_model=ctx.trained)
  return (scheme, *scheme.worker_tasks(ctx.base_task))


def _build_replication(entry, num_stragglers, ctx):
  """``copies`` in the entry fixes r; else r = S + 1 copies of each query."""
  copies = entry.get("copies") or num_stragglers + 1
  scheme = schemes.Replication.create(ctx.num_queries, copies - 1)
  return (scheme, *scheme.worker_tasks(ctx.base_task))


def _check_byzantine(entry, num_queries, stragglers):
  if not entry.get("num_adversaries"):
    raise ValueError("byzantine_berrut needs num_adversaries >= 1 in its config entry.")
  schemes.ByzantineBerrutCode.sizes_for(num_queries, max(stragglers), entry.num_adversaries)


def _build_parm(entry, num_stragglers, ctx):
  """N = K + 1 whatever S; the parity worker runs the trained parity model (``ctx.trained``)."""
  del entry, num_stragglers
  scheme = schemes.ParityCode.create(ctx.num_queries)
  return (scheme, *scheme.worker_tasks(ctx.base_task, ctx.trained))


# ---------------------------------------------------------------------------
# The spline code: smoothings given, or fitted on held-out data.

_SMOOTHINGS = ("encoder_smoothing", "decoder_smoothing")
_FIT_OPTIONS = ("fit_masks", "fit_images", "fit_grid")


def _check_spline(entry, num_queries, stragglers):
  """Raises ValueError for an entry with bad sizes, smoothing values or fit options."""
  schemes.SplineCode.sizes_for(num_queries, max(stragglers))
  smoothing = entry.get("smoothing")
  given = _options(entry, _SMOOTHINGS)
  if smoothing is not None:
    if smoothing != "fit":
      raise ValueError(
          f"SplineCode: smoothing must be \"fit\" (fit both per (K, N, S) on held-out "
          f"data) or left out (give encoder_smoothing and decoder_smoothing), got {smoothing!r}."
      )
    if given:
      raise ValueError(f"SplineCode: smoothing = \"fit\" fits {' and '.join(sorted(given))}; "
                       "do not give them too.")
  elif any(entry.get(name) is not None for name in _FIT_OPTIONS):
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
  for name, value in given.items():
    interp.check_smoothing(value, "SplineCode", name)


def _build_spline(entry, num_stragglers, ctx):
  """The code of an entry at S stragglers, its smoothings given or fitted (``spline_fit``).

  ``smoothing = "fit"`` fits both for each (K, N, S) on the held-out inputs
  of the build context (``fit_masks`` random masks per grid point, default
  16; ``fit_images``: how many of them, default all; ``fit_grid``: the
  candidate values, default ``spline_fit.DEFAULT_GRID``).
  """
  if entry.get("smoothing") != "fit":
    scheme = schemes.SplineCode.create(ctx.num_queries, num_stragglers,
                                       **_options(entry, _SMOOTHINGS))
    return (scheme, *scheme.worker_tasks(ctx.base_task))
  if ctx.held_out_images is None or ctx.base_task is None:
    raise ValueError('SplineCode: smoothing = "fit" needs held-out training images and the '
                     "base classifier in the build context (the comparison provides both).")
  images = np.asarray(ctx.held_out_images)
  if entry.get("fit_images"):
    images = images[-int(entry.fit_images):]
  num_masks = int(entry.get("fit_masks") or 16)
  key = jax.random.fold_in(jax.random.key(ctx.seed), 1000 * ctx.num_queries + num_stragglers)
  grid = tuple(float(v) for v in entry.get("fit_grid") or spline_fit.DEFAULT_GRID)
  fit = spline_fit.fit_smoothing(ctx.base_task.fn, ctx.base_task.params, images, ctx.num_queries,
                                 num_stragglers, grid=grid, num_masks=num_masks, key=key)
  scheme = spline_fit.fitted_code(fit, ctx.num_queries, num_stragglers, num_images=len(images),
                                  num_masks=num_masks)
  return (scheme, *scheme.worker_tasks(ctx.base_task))


# ---------------------------------------------------------------------------
# Learned codes: the trained code itself, deployed where the entry says.


def _check_learned(entry, num_queries, stragglers):
  del num_queries, stragglers  # its training config is checked when it trains
  deploy_at(entry)


def _build_learned(entry, num_stragglers, ctx):
  """The trained code (``ctx.trained``) at its trained N, at K + S, or at R + S workers.

  None where the code cannot be deployed at that S (fewer than R workers, or
  more stragglers than a systematic code has parities).
  """
  code = ctx.trained
  if code is None or not hasattr(code, "at_workers") or code.num_queries != ctx.num_queries:
    got = "none" if code is None else (
        f"a {type(code).__name__} for K = {getattr(code, 'num_queries', '?')}")
    raise ValueError(
        f"A learned-code entry needs its trained code for K = {ctx.num_queries} queries, got {got}."
    )
  where = deploy_at(entry)
  if where == "k_plus_s":
    code = code.at_workers(ctx.num_queries + num_stragglers)
  elif where == "r_plus_s":
    code = code.at_workers(code.recovery_threshold + num_stragglers)
  if code is None:
    return None
  return (code, *code.worker_tasks())


register("uncoded", build=_build_uncoded,
         check=lambda entry, k, stragglers: schemes.Uncoded.sizes_for(k, 0), sized=False)
register("uncoded_model_fallback", build=_build_uncoded_model_fallback,
         check=lambda entry, k, stragglers: schemes.Uncoded.sizes_for(k, 0), sized=False,
         trains="classifier")
register("replication", build=_build_replication,
         check=lambda entry, k, stragglers: schemes.Replication.sizes_for(k, max(stragglers)),
         sized=True)
_build_lcc, _check_lcc = _sized(schemes.LagrangeCode, ("degree",))
register("lcc", build=_build_lcc, check=_check_lcc, sized=True)
_build_berrut, _check_berrut = _sized(schemes.BerrutCode)
register("berrut", build=_build_berrut, check=_check_berrut, sized=True)
_build_byzantine, _ = _sized(schemes.ByzantineBerrutCode, ("num_adversaries", "search"))
register("byzantine_berrut", build=_build_byzantine, check=_check_byzantine, sized=True)
register("spline", build=_build_spline, check=_check_spline, sized=True)
register("parm", build=_build_parm,
         check=lambda entry, k, stragglers: schemes.ParityCode.sizes_for(k, 1),
         sized=False, trains="parity")
register("learned", build=_build_learned, check=_check_learned, sized=False, trains="coder")
register("learned_systematic", build=_build_learned, check=_check_learned, sized=False,
         trains="coder")
