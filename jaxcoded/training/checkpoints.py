"""Orbax checkpoints of a training run: save, restore, read a module back.

A run's checkpoints live in ``<workdir>/checkpoints/<step>/`` with the items
"model" (``nnx.state(model)``) and "optimizer" (``nnx.state(optimizer)``), and
``integrity.json``, the sha256 of every saved array (``jaxcoded.integrity``):
every restore is checked against it. A damaged step is never restored: the
newest intact one is, with a warning naming the damaged one (and, when
training resumes, the damaged step is moved to ``<step>.damaged`` so that it
can be saved again); with none intact, ``CheckpointCorruptedError``.

In a multi-process job (``jaxcoded.distributed``) every process takes part in
each save and restore (Orbax's multi-process support: the arrays are global),
while process 0 alone writes the checksum manifest and moves damaged steps
away; :func:`restore_module` reads a module back as plain arrays of this
process.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from jaxcoded import distributed, integrity

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "manager", "read_config", "restore_latest_train_state",
           "restore_module", "restore_train_state", "save_train_state"]

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config a training run in ``workdir`` was started with (its ``config.json``).

  Raises:
    FileNotFoundError: ``workdir`` holds no training run.
  """
  config_path = pathlib.Path(workdir) / CONFIG_FILE
  if not config_path.exists():
    raise FileNotFoundError(f"{config_path} does not exist: {workdir} is not a training workdir.")
  return ml_collections.ConfigDict(json.loads(config_path.read_text()))


def manager(workdir: str | os.PathLike, keep: int | None = None) -> ocp.CheckpointManager:
  """The manager of ``<workdir>/checkpoints`` (keeping the latest ``keep``).

  An Orbax ``CheckpointManager`` that writes a checksum manifest with every
  step and verifies restores against it (``integrity.CheckedCheckpointManager``).
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=keep) if keep else None
  return _Manager(pathlib.Path(workdir).absolute() / CHECKPOINT_DIR, options=options)


class _Manager(integrity.CheckedCheckpointManager):
  """The checked manager, with the manifest written by process 0 only (one file, one writer)."""

  def _write_pending_manifest(self) -> None:
    if not distributed.is_main():
      self._pending_manifest = None
      return
    super()._write_pending_manifest()


def save_train_state(
    checkpoints: ocp.CheckpointManager, step: int, model: nnx.Module, optimizer: nnx.Optimizer
) -> None:
  """Saves the model and optimizer state at ``step`` (asynchronously)."""
  checkpoints.save(step, args=ocp.args.Composite(
      model=ocp.args.StandardSave(nnx.state(model)),
      optimizer=ocp.args.StandardSave(nnx.state(optimizer)),
  ))


def _train_state_args(model: nnx.Module, optimizer: nnx.Optimizer) -> ocp.args.Composite:
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  return ocp.args.Composite(
      model=ocp.args.StandardRestore(abstract(nnx.state(model))),
      optimizer=ocp.args.StandardRestore(abstract(nnx.state(optimizer))),
  )


def restore_train_state(
    checkpoints: ocp.CheckpointManager, step: int, model: nnx.Module, optimizer: nnx.Optimizer
) -> None:
  """Restores a checkpoint into the (already built) model and optimizer.

  Raises:
    integrity.CheckpointCorruptedError: the step's arrays differ from their
      checksums (Orbax's own errors for unreadable files pass through).
  """
  restored = checkpoints.restore(step, args=_train_state_args(model, optimizer))
  nnx.update(model, restored["model"])
  nnx.update(optimizer, restored["optimizer"])


def restore_latest_train_state(
    checkpoints: ocp.CheckpointManager, model: nnx.Module, optimizer: nnx.Optimizer
) -> int:
  """Restores the newest intact step into the model and optimizer; returns it (0: none saved).

  Damaged steps (arrays unlike their checksums, or files Orbax cannot read)
  newer than the one restored are named in a ``CheckpointIntegrityWarning``
  and moved to ``<step>.damaged``, so that resumed training saves them again
  (Orbax would otherwise skip a step it believes it has).

  Raises:
    integrity.CheckpointCorruptedError: steps exist but none is intact; the
      message lists each and why.
  """
  args = _train_state_args(model, optimizer)
  try:
    # Process 0 moves damaged steps away; the others see that after the barrier below.
    found = checkpoints.restore_newest_intact(
        lambda step: args, quarantine_damaged=distributed.is_main()
    )
  except integrity.CheckpointCorruptedError as error:
    raise integrity.CheckpointCorruptedError(
        error.step_dir, error.problem, failures=error.failures,
        message=f"Cannot resume from {error.step_dir}: {error.problem} A crash does not leave "
        "such steps (Orbax writes into '<step>.orbax-checkpoint-tmp' and renames it when "
        "complete; those are ignored): they are damaged, or of another model. Move them away "
        "(or use another workdir) to start afresh.",
    ) from error
  if distributed.is_multiprocess():
    distributed.barrier(f"restored {checkpoints.directory}")
    checkpoints.reload()
  if found is None:
    return 0
  step, restored = found
  nnx.update(model, restored["model"])
  nnx.update(optimizer, restored["optimizer"])
  return step


def restore_module(
    workdir: str | os.PathLike,
    build: Callable[[ml_collections.ConfigDict], nnx.Module],
    step: int | None = None,
    *,
    abstract: bool = True,
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
  """Any module trained by ``loop.fit``, read back from its workdir.

  The module is built from the run's ``config.json`` and its state restored
  from a checkpoint; the optimizer state is not read.

  Args:
    workdir: the training run's workdir.
    build: ``build(config) -> module`` with the same structure as the trained one.
    step: which checkpoint; default the latest.
    abstract: build under ``nnx.eval_shape`` (nothing allocated); False for
      modules whose construction computes with concrete values (the learned
      codes' evaluation points and degree check).

  Returns:
    (module in eval mode, the run's config).

  Raises:
    FileNotFoundError: no config or no checkpoint in the workdir.
    ValueError: the checkpoint does not fit the module ``build`` makes (a
      checkpoint of another scheme or shape).
    integrity.CheckpointCorruptedError: the step asked for is damaged, or
      (``step=None``) no step is intact; with ``step=None`` a damaged newest
      step is skipped with a ``CheckpointIntegrityWarning`` naming it.
  """
  workdir = pathlib.Path(workdir).absolute()
  config = read_config(workdir)
  with manager(workdir) as checkpoints:
    latest = checkpoints.latest_step()
    if latest is None or (step is not None and step not in checkpoints.all_steps()):
      which = "" if step is None else f"for step {step} "
      raise FileNotFoundError(
          f"No checkpoint {which}in {workdir / CHECKPOINT_DIR} "
          f"(steps there: {list(checkpoints.all_steps())})."
      )
    template = nnx.eval_shape(lambda: build(config)) if abstract else build(config)
    graphdef, abstract_state = nnx.split(template)
    if abstract and distributed.is_multiprocess():
      # Without a sharding Orbax cannot place a restored array in a multi-process job: read
      # it whole onto this process's first device (a plain array, as in one process).
      here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      abstract_state = jax.tree.map(
          lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=here)
          if isinstance(leaf, jax.ShapeDtypeStruct) else leaf, abstract_state)
    args = ocp.args.Composite(model=ocp.args.StandardRestore(abstract_state))
    mismatch = lambda error, at: ValueError(  # noqa: E731
        f"The checkpoint in {workdir} (step {at}) does not match the module built from its "
        f"config.json: it was written by another scheme, model or shape. ({error})"
    )
    try:
      if step is None:  # the newest intact step, warning about damaged newer ones
        step, restored = checkpoints.restore_newest_intact(lambda s: args)
      else:
        restored = checkpoints.restore(step, args=args)
    except integrity.CheckpointCorruptedError as error:
      # Every step failing with a structural error is another module, not damage.
      structural = (ValueError, KeyError, TypeError)
      if error.failures and all(
          isinstance(e, structural) and not isinstance(e, integrity.CheckpointCorruptedError)
          for _, e in error.failures
      ):
        raise mismatch(error.failures[0][1], error.failures[0][0]) from error
      raise
    except (ValueError, KeyError, TypeError) as error:
      raise mismatch(error, step) from error
  module = nnx.merge(graphdef, restored["model"])
  module.eval()
  return module, config
