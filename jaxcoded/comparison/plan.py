"""What a comparison runs: its config's schemes, checked, and built at each S.

A comparison config (``configs/eval_digits.py`` documents the fields) lists
schemes by name; each entry names a registered kind
(``jaxcoded.comparison.builders``) and its options. :func:`plan_runs` turns them
into (name, deployment, S values) batches: a sized kind is a different
deployment at each S, a fixed one is evaluated at every S below its N in one
batch.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Callable

import jax
import ml_collections
import numpy as np

from jaxcoded import adversaries, deployment, distributed
from jaxcoded.comparison import builders

__all__ = [
    "Run",
    "add_scheme",
    "check_config",
    "deadline_design_stragglers",
    "plan_runs",
    "scheme_names",
]


@dataclasses.dataclass(frozen=True)
class Run:
  """One evaluation batch: a deployment and the S values it is evaluated at."""

  name: str
  served: deployment.Deployment
  stragglers: list[int]


def add_scheme(
    comparison: ml_collections.ConfigDict, name: str, kind: str, /, **options
) -> None:
  """Adds a scheme entry to ``comparison.schemes``; its ``position`` keeps the table order.

  ``options`` are the entry's fields (``config=`` for a trained part's training config).
  """
  if kind not in builders.kinds():
    raise ValueError(
        f"add_scheme({name!r}): kind must be one of {builders.kinds()}, got {kind!r}."
    )
  if "schemes" not in comparison:
    comparison.schemes = ml_collections.ConfigDict()
  if name in comparison.schemes:
    raise ValueError(f"add_scheme: a scheme named {name!r} is already in the comparison.")
  comparison.schemes[name] = ml_collections.ConfigDict(
      dict(kind=kind, position=len(comparison.schemes), **options)
  )


def scheme_names(config: ml_collections.ConfigDict) -> list[str]:
  """The configured schemes in their ``position`` order (ConfigDict sorts its keys)."""
  names = list(config.schemes)
  return sorted(names, key=lambda n: (config.schemes[n].get("position", len(names)), n))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a comparison config that cannot run (before anything trains)."""
  def is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

  if not is_int(config.num_queries) or config.num_queries < 1:
    raise ValueError(f"config.num_queries (K) must be an integer >= 1, got {config.num_queries!r}.")
  stragglers = list(config.stragglers)
  if not stragglers or any(not is_int(s) or s < 0 for s in stragglers):
    raise ValueError(f"config.stragglers must be integers >= 0, got {stragglers!r}.")
  distributed.mesh_for_config(config.get("mesh_devices"))
  held_out = config.get("held_out_images")
  if held_out is not None and (not is_int(held_out) or held_out < 1):
    raise ValueError(f"config.held_out_images must be an integer >= 1, got {held_out!r}.")
  if not config.schemes:
    raise ValueError("config.schemes is empty: nothing to compare.")
  for name, entry in config.schemes.items():
    if entry.get("kind") not in builders.kinds():
      raise ValueError(
          f"Scheme {name!r}: kind must be one of {builders.kinds()}, got {entry.get('kind')!r}."
      )
    try:
      builders.get(entry.kind).check(entry, config.num_queries, stragglers)
    except ValueError as error:
      raise ValueError(f"Scheme {name!r}: {error}") from error
    if entry.get("adversary") not in (None, *adversaries.MODELS):
      raise ValueError(
          f"Scheme {name!r}: adversary must be one of {adversaries.MODELS}, got {entry.adversary!r}."
      )


def plan_runs(
    config: ml_collections.ConfigDict,
    context: Callable[[str, ml_collections.ConfigDict], builders.BuildContext],
    query_range: tuple[float, float] | None,
) -> list[Run]:
  """The evaluation batches of a comparison, in table order.

  Args:
    config: the comparison config.
    context: ``context(name, entry)`` gives the build context of a scheme
      (with its trained part, trained or reloaded on first use).
    query_range: the valid query values of the dataset (``jaxcoded.queries``).
  """
  runs = []
  for name in scheme_names(config):
    entry = config.schemes[name]
    kind = builders.get(entry.kind)
    ctx = context(name, entry)
    if kind.sized_for(entry):
      for s in config.stragglers:
        served = _deployment(name, kind, entry, s, ctx, query_range)
        if served is not None and s < served.num_workers:
          runs.append(Run(name, served, [s]))
    else:
      served = _deployment(name, kind, entry, 0, ctx, query_range)
      stragglers = [s for s in config.stragglers if s < served.num_workers]
      if stragglers:
        runs.append(Run(name, served, stragglers))
  return runs


def _deployment(name, kind, entry, num_stragglers, ctx, query_range):
  built = kind.build(entry, num_stragglers, ctx)
  if built is None:
    return None
  scheme, tasks, roles = built
  return deployment.Deployment(name, scheme, tasks, roles, query_range=query_range)


def check_budgets(name: str, entry: ml_collections.ConfigDict, load: dict[str, float]) -> None:
  """Refuses a deployment above its entry's ``worker_budget`` or ``master_budget`` (fractions of f)."""
  for field, key, what in (("worker_budget", "worker_fraction", "worker's FLOPs per coded input"),
                           ("master_budget", "master_fraction", "master's FLOPs per query")):
    budget = entry.get(field)
    if budget is not None and load[key] > budget:
      raise ValueError(
          f"Scheme {name!r}: the {what} are {load[key]:.3f} x f's, above its {field} of "
          f"{budget:g} x f; use a smaller network or raise the budget (docs/design.md "
          "section 6a)."
      )


def deadline_design_stragglers(entry: ml_collections.ConfigDict, config) -> int:
  """The S at which a scheme meets the deadline masks (fixed-N schemes: the first S)."""
  if builders.get(entry.kind).sized_for(entry):
    return config.masks.deadline.get("design_stragglers", 1)
  return list(config.stragglers)[0]


def adversary_key(seed: int, name: str, num_workers: int, first_s: int) -> jax.Array:
  """Depends on the scheme and its masks only, so reruns and subsets agree."""
  key = jax.random.fold_in(jax.random.key(seed + 1), zlib.crc32(name.encode()) % (1 << 31))
  return jax.random.fold_in(jax.random.fold_in(key, num_workers), first_s)


def usable_mesh(mesh: jax.sharding.Mesh | None, served: deployment.Deployment):
  """The mesh, if some role's worker count divides evenly over it; else None."""
  if mesh is None:
    return None
  size = mesh.shape["workers"]
  return mesh if any(served.roles.count(r) % size == 0 for r in set(served.roles)) else None
