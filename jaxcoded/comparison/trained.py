"""The trained parts of a comparison: the base classifier f, and each kind's own part.

Every part is trained on demand with ``jaxcoded.training.train`` (any task)
into its workdir, or reloaded when that run is finished
(``training.is_finished``); a kind's part is what its training task calls
``deployable(workdir)`` (ParM's parity model as a worker task, a learned
code itself). Parts are cached per scheme name. A run given as it is (a
workdir named on a command line) is served from its latest checkpoint,
finished or not, with ``TrainedParts.get(..., train=False)``.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import ml_collections
from flax import nnx

from jaxcoded import training
from jaxcoded.comparison import builders

__all__ = ["TrainedParts", "base_classifier"]


def base_classifier(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, log: Callable[[str], None]
) -> tuple[nnx.Module, ml_collections.ConfigDict, pathlib.Path]:
  """(model in eval mode, its config, its workdir) of the comparison's base classifier.

  ``config.base_workdir`` (default ``<workdir>/base``) is reloaded when it
  holds a finished run, else ``config.base`` is trained there.
  """
  base_workdir = pathlib.Path(config.get("base_workdir") or workdir / "base")
  if training.is_finished(base_workdir):
    log(f"base classifier: reloading {base_workdir}")
  else:
    log(f"base classifier: training {config.base.model} on {config.base.dataset} -> {base_workdir}")
  model, base_config = training.classifier.load_or_train(config.base, base_workdir)
  if base_config.dataset != config.dataset:
    raise ValueError(
        f"The base classifier in {base_workdir} was trained on {base_config.dataset}, "
        f"but this comparison is on {config.dataset}."
    )
  return model, base_config, base_workdir


class TrainedParts:
  """Trains or reloads the trained part of each configured scheme, once."""

  def __init__(
      self,
      workdir: pathlib.Path,
      num_queries: int,
      base_config: ml_collections.ConfigDict,
      base_workdir: pathlib.Path,
      log: Callable[[str], None] = print,
  ):
    self.workdir = workdir
    self.num_queries = num_queries
    self.base_config = base_config
    self.base_workdir = base_workdir
    self.log = log
    self._parts: dict[str, Any] = {}

  def workdir_of(self, name: str, entry: ml_collections.ConfigDict) -> pathlib.Path:
    """``entry.workdir``, else ``<workdir>/trained/<name>``."""
    if entry.get("workdir"):
      return pathlib.Path(entry.workdir)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return self.workdir / "trained" / safe

  def get(self, name: str, entry: ml_collections.ConfigDict, *, train: bool = True) -> Any:
    """The deployable trained part of scheme ``name`` (None for kinds without one).

    Args:
      name: the scheme's name (the cache key, and its default workdir).
      entry: its config entry (``kind``; ``config`` and ``workdir`` for the part).
      train: train (or resume) a part whose run is not finished; False loads
        the run as it is, from its latest checkpoint (FileNotFoundError where
        there is none).
    """
    kind = builders.get(entry.kind)
    if kind.trains is None:
      return None
    if name not in self._parts:
      workdir = self.workdir_of(name, entry)
      if training.is_finished(workdir):
        self.log(f"{name}: reloading its {kind.trains} part from {workdir}")
      elif not train:
        self.log(f"{name}: loading its {kind.trains} part from {workdir} as it is (unfinished)")
      else:
        self.log(f"{name}: training its {kind.trains} part -> {workdir}")
        config = self._training_config(entry, kind.trains)
        training.train(config, workdir)
      self._check_num_queries(workdir)
      self._parts[name] = training.TASKS[kind.trains].deployable(workdir)
    return self._parts[name]

  def _training_config(self, entry: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(entry.config.to_dict())
    if config.get("task", task) != task:
      raise ValueError(f"Scheme kind {entry.kind!r} trains a {task!r} part; its entry.config has "
                       f"task {config.task!r}.")
    config.task = task
    config.num_queries = self.num_queries
    config.base = ml_collections.ConfigDict(self.base_config.to_dict())
    config.base_workdir = str(self.base_workdir)
    config.progress_bar = False
    return config

  def _check_num_queries(self, workdir: pathlib.Path) -> None:
    stored = training.read_config(workdir)
    if stored.get("num_queries") != self.num_queries:
      raise ValueError(
          f"The trained part in {workdir} is for K = {stored.get('num_queries')} queries per "
          f"group, but this comparison uses K = {self.num_queries}; point its workdir elsewhere."
      )
