"""Training: one loop and three tasks (docs/training.md).

  loop         ``fit``: Optax steps, Orbax checkpoints, resume, JSON-lines
               metrics, NaN stop; ``TrainResult``; ``is_finished``.
  optimizers   the optimizer and schedule a config describes.
  checkpoints  saving and restoring a run's state; ``restore_module``.
  classifier   the base classifier f.
  parity       ParM's parity model f_P around a frozen f.
  coder        the learned codes (around a frozen f, or with their own workers).

Each task module exposes ``train(config, workdir) -> TrainResult`` and
``load(workdir)``. :func:`train` and :func:`load` pick the task from
``config.task`` (written to ``config.json`` with every run), so entry points
and the comparison never name a task's module:

  >>> from jaxcoded import training
  >>> result = training.train(config, "/tmp/run")        # doctest: +SKIP
  >>> module = training.load("/tmp/run")                   # doctest: +SKIP
"""

from __future__ import annotations

import os
from types import ModuleType

import ml_collections

from jaxcoded.training import checkpoints, classifier, coder, loop, optimizers, parity
from jaxcoded.training.checkpoints import read_config, restore_module
from jaxcoded.training.classifier import (
    augment_crop_flip,
    batch_stream,
    classification_loss,
    evaluate,
)
from jaxcoded.training.loop import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FINAL_METRICS_FILE,
    METRICS_FILE,
    NonFiniteLossError,
    TrainResult,
    fit,
    is_finished,
    read_metrics,
)
from jaxcoded.training.optimizers import make_optimizer, make_schedule

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "FINAL_METRICS_FILE",
    "METRICS_FILE",
    "NonFiniteLossError",
    "TASKS",
    "TrainResult",
    "augment_crop_flip",
    "checkpoints",
    "classifier",
    "coder",
    "loop",
    "optimizers",
    "parity",
    "batch_stream",
    "classification_loss",
    "evaluate",
    "fit",
    "is_finished",
    "load",
    "load_model",
    "make_optimizer",
    "make_schedule",
    "read_config",
    "read_metrics",
    "restore_module",
    "task_of",
    "train",
]

TASKS: dict[str, ModuleType] = {"classifier": classifier, "parity": parity, "coder": coder}

# The base classifier's loader under its historical name (most callers want f).
load_model = classifier.load


def _task_module(task: str) -> ModuleType:
  if task not in TASKS:
    raise ValueError(f"config.task must be one of {sorted(TASKS)}, got {task!r}.")
  return TASKS[task]


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> TrainResult:
  """Trains (or resumes) what ``config.task`` names ("classifier" by default)."""
  return _task_module(config.get("task", "classifier")).train(config, workdir)


def task_of(workdir: str | os.PathLike) -> str:
  """The task of the run in ``workdir``, from its ``config.json``."""
  return read_config(workdir).get("task", "classifier")


def load(workdir: str | os.PathLike):
  """What a run trained, read back from its workdir, whatever its task.

  Returns:
    (module in eval mode, the run's config): the classifier, the parity
    model or the learned code.
  """
  return _task_module(task_of(workdir)).load(workdir)
