"""Schemes by name: what the comparison's configs, the harness and the service build.

Each scheme module registers its class with one line,

  @registry.register("berrut", sized=True)
  class BerrutCode(base.Scheme): ...

and the class says how a config entry builds it (``Scheme.from_config``,
``Scheme.check_config``, ``Scheme.config_options``). Nothing outside
``jaxcoded/schemes/`` names a scheme class: it asks :func:`get` for a kind.

A *sized* kind is built anew for each number of stragglers S (its N depends
on S: replication, LCC, Berrut, ...); a fixed one keeps its N and is
evaluated with S of its workers straggling (uncoded, ParM, learned codes).
``trains`` names the training task of a kind's trained part
(``jaxcoded.training``): "parity" for ParM, "coder" for the learned codes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections
import numpy as np

from jaxcoded.schemes import base

__all__ = ["BuildContext", "Kind", "get", "kinds", "register"]


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
    held_out_images: (M, ...) images of the training split that the
      evaluation never sees, for kinds that fit settings on data (the spline
      code's smoothings); None when the caller has none.
    seed: the comparison's seed (for the masks of such a fit).
  """

  num_queries: int
  base_task: base.WorkerTask | None = None
  num_classes: int | None = None
  train_labels: np.ndarray | None = None
  trained: Any = None
  held_out_images: np.ndarray | None = None
  seed: int = 0


Built = tuple[base.Scheme, tuple[base.WorkerTask, ...], tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class Kind:
  """A registered scheme kind."""

  name: str
  scheme_class: type[base.Scheme]
  sized: bool
  trains: str | None = None

  def sized_for(self, entry: ml_collections.ConfigDict) -> bool:
    """Whether this entry is built anew at each S (a learned code redeployed at N = K + S)."""
    return self.sized or self.scheme_class.resized_by(entry)

  def build(
      self, entry: ml_collections.ConfigDict, num_stragglers: int, ctx: BuildContext
  ) -> Built | None:
    """(scheme, worker tasks, roles) of a config entry at S stragglers; None if it cannot be."""
    return self.scheme_class.from_config(entry, num_stragglers, ctx)

  def check(self, entry: ml_collections.ConfigDict, num_queries: int, stragglers: list[int]) -> None:
    """Raises ValueError for an entry that cannot be built (before anything is trained)."""
    if self.trains and entry.get("config") is None:
      raise ValueError(
          f"Scheme kind {self.name!r} needs entry.config (the training config of its "
          f"{self.trains} part)."
      )
    self.scheme_class.check_config(entry, num_queries, stragglers)


_KINDS: dict[str, Kind] = {}


def register(
    name: str, *, sized: bool, trains: str | None = None
) -> Callable[[type[base.Scheme]], type[base.Scheme]]:
  """Class decorator: registers a scheme class under ``name``."""

  def decorate(scheme_class: type[base.Scheme]) -> type[base.Scheme]:
    if name in _KINDS and _KINDS[name].scheme_class is not scheme_class:
      raise ValueError(f"A scheme kind named {name!r} is already registered.")
    _KINDS[name] = Kind(name, scheme_class, sized, trains)
    return scheme_class

  return decorate


def kinds() -> tuple[str, ...]:
  """Every registered kind, in registration order."""
  return tuple(_KINDS)


def get(name: str) -> Kind:
  """The registered kind ``name``; ValueError naming the known ones otherwise."""
  if name not in _KINDS:
    raise ValueError(f"Unknown scheme kind {name!r}; use one of {kinds()}.")
  return _KINDS[name]
