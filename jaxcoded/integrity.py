"""Checkpoint integrity: checksums of every saved array, verified on restore.

Orbax (0.12) stores arrays through TensorStore without a checksum of their
contents: the zarr3 driver's only crc32c covers a shard's *index*, not its
chunks, and the default zarr (v2) + zstd path has none, so one flipped bit in
a committed checkpoint reads back as a different number, silently. This
module adds what is missing, outside Orbax's format:

  at save time     the sha256 of every array of every saved item (its dtype,
                   shape and bytes, keyed by its path in the pytree), written
                   as ``<step>/integrity.json`` once Orbax has committed the
                   step (:class:`CheckedCheckpointManager` does it);
  at restore time  the same digests of the restored arrays, compared with the
                   manifest (:func:`verify`): a mismatch raises
                   :class:`CheckpointCorruptedError` naming the step directory
                   and the arrays; :meth:`CheckedCheckpointManager.restore_newest_intact`
                   falls back to the newest intact step with a warning naming
                   each damaged one, and fails clearly if none is intact.

The manifest lives inside the step directory, so Orbax's own garbage
collection (``max_to_keep``) removes it with its step. A step committed
without a manifest (written before this module existed, or a run killed
between Orbax's commit and the manifest write) restores with a warning that
it could not be verified.

:func:`read_jsonl` reads a JSON-lines log whose last line may have been cut
short by a kill during a write: the torn line is dropped with a warning.

Example:
  >>> import tempfile, numpy as np
  >>> from jaxcoded import integrity
  >>> step_dir = tempfile.mkdtemp()
  >>> state = {"w": np.arange(3.0)}
  >>> _ = integrity.write_manifest(step_dir, {"model": integrity.tree_digests(state)})
  >>> integrity.verify(step_dir, {"model": state})
  True
  >>> integrity.verify(step_dir, {"model": {"w": np.array([0.0, 1.0, 2.5])}})
  Traceback (most recent call last):
  ...
  jaxcoded.integrity.CheckpointCorruptedError: ...
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = [
    "MANIFEST_FILE",
    "CheckedCheckpointManager",
    "CheckpointCorruptedError",
    "CheckpointIntegrityWarning",
    "TornLogWarning",
    "array_digest",
    "quarantine",
    "read_jsonl",
    "read_manifest",
    "tree_digests",
    "verify",
    "write_manifest",
]

MANIFEST_FILE = "integrity.json"
QUARANTINE_SUFFIX = ".damaged"
_FORMAT = 1

PyTree = Any
Digest = dict[str, Any]


class CheckpointCorruptedError(ValueError):
  """A checkpoint whose restored arrays differ from the checksums taken when it was saved.

  Also raised for a step Orbax cannot read back at all, and for a damaged
  manifest. ``step_dir`` is the step's directory.
  """

  def __init__(
      self,
      step_dir: str | os.PathLike,
      problem: str,
      *,
      failures: list[tuple[int, BaseException]] | None = None,
      message: str | None = None,
  ):
    self.step_dir = pathlib.Path(step_dir)
    self.problem = problem
    self.failures = failures or []  # (step, error) of each step tried, for a directory
    super().__init__(message or f"Checkpoint {self.step_dir} is damaged: {problem}")


class CheckpointIntegrityWarning(UserWarning):
  """A damaged checkpoint was skipped, or a checkpoint could not be verified."""


class TornLogWarning(UserWarning):
  """The last line of a JSON-lines log was cut short (a kill during a write) and dropped."""


# ---------------------------------------------------------------------------
# Digests.


def _host_array(leaf: Any) -> np.ndarray:
  """A leaf as a host numpy array (PRNG key arrays as their raw key data)."""
  if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.ascontiguousarray(np.asarray(jax.device_get(leaf)))


def array_digest(leaf: Any) -> Digest:
  """``{"sha256", "dtype", "shape"}`` of one array; the hash covers dtype, shape and bytes."""
  array = _host_array(leaf)
  digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
  digest.update(array.tobytes())
  return {"sha256": digest.hexdigest(), "dtype": array.dtype.str, "shape": list(array.shape)}


def tree_digests(tree: PyTree) -> dict[str, Digest]:
  """The digest of every array leaf of a pytree (an ``nnx.State`` too), keyed by its path."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): array_digest(leaf) for path, leaf in leaves}


# ---------------------------------------------------------------------------
# Manifests.


def write_manifest(
    step_dir: str | os.PathLike, items: Mapping[str, Mapping[str, Digest]], step: int | None = None
) -> pathlib.Path:
  """Writes ``<step_dir>/integrity.json`` atomically (a temporary file, then a rename).

  Args:
    step_dir: the committed step's directory.
    items: {item name: ``tree_digests(item)``}.
    step: the step, recorded for the reader.

  Returns:
    The manifest's path.
  """
  step_dir = pathlib.Path(step_dir)
  path = step_dir / MANIFEST_FILE
  text = json.dumps({"format": _FORMAT, "step": step, "items": items}, sort_keys=True)
  fd, tmp = tempfile.mkstemp(dir=step_dir, prefix=MANIFEST_FILE, suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    f.write(text + "\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return path


def read_manifest(step_dir: str | os.PathLike) -> dict[str, dict[str, Digest]] | None:
  """The manifest's {item: {path: digest}}; None if the step has none.

  Raises:
    CheckpointCorruptedError: the manifest exists but cannot be read.
  """
  path = pathlib.Path(step_dir) / MANIFEST_FILE
  if not path.exists():
    return None
  try:
    manifest = json.loads(path.read_text())
    items = manifest["items"]
    if manifest.get("format") != _FORMAT or not isinstance(items, dict):
      raise ValueError(f"unknown format {manifest.get('format')!r}")
  except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
    raise CheckpointCorruptedError(
        step_dir, f"its checksum manifest {path} is unreadable ({type(error).__name__}: {error})."
    ) from error
  return items


def verify(
    step_dir: str | os.PathLike, restored: Mapping[str, PyTree], *, missing: str = "warn"
) -> bool:
  """Checks restored items against the step's manifest.

  Args:
    step_dir: the step's directory.
    restored: {item name: the restored pytree} (any subset of the saved items).
    missing: what a step without a manifest does: "warn" (warns, returns
      False) or "raise".

  Returns:
    True if every restored array matches its checksum; False for a step
    without a manifest (after the warning).

  Raises:
    CheckpointCorruptedError: naming the step directory and the arrays that
      differ (or the item that the manifest does not know, or the missing
      manifest with ``missing="raise"``).
  """
  if missing not in ("warn", "raise"):
    raise ValueError(f"missing must be 'warn' or 'raise', got {missing!r}.")
  manifest = read_manifest(step_dir)
  if manifest is None:
    message = (
        f"Checkpoint {step_dir} has no checksum manifest ({MANIFEST_FILE}): it was written "
        "before manifests existed, or the run stopped between the commit and the manifest; "
        "its arrays could not be verified."
    )
    if missing == "raise":
      raise CheckpointCorruptedError(step_dir, message)
    warnings.warn(message, CheckpointIntegrityWarning, stacklevel=2)
    return False
  for name, tree in restored.items():
    if name not in manifest:
      raise CheckpointCorruptedError(
          step_dir, f"its manifest has no checksums for item {name!r} (items: {sorted(manifest)})."
      )
    expected, got = manifest[name], tree_digests(tree)
    if set(expected) != set(got):
      raise CheckpointCorruptedError(
          step_dir, f"item {name!r} restored arrays {sorted(set(got) - set(expected))[:5]} that "
          f"were not saved, or lacks {sorted(set(expected) - set(got))[:5]}."
      )
    bad = [path for path in expected if expected[path] != got[path]]
    if bad:
      shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
      raise CheckpointCorruptedError(
          step_dir, f"{len(bad)} of {len(expected)} arrays of item {name!r} differ from the "
          f"sha256 taken when it was saved ({shown}). Its files were changed after the commit "
          "(disk fault, a copy cut short, an edit); do not train or evaluate from it."
      )
  return True


def quarantine(step_dir: str | os.PathLike) -> pathlib.Path:
  """Renames a damaged step directory to ``<step>.damaged`` (``.damaged-2`` ...), out of Orbax's sight.

  Orbax lists only directories named by their step, so the renamed one is
  neither restored nor garbage-collected, and the step can be saved again.
  The data is kept for inspection.
  """
  step_dir = pathlib.Path(step_dir)
  target = step_dir.with_name(step_dir.name + QUARANTINE_SUFFIX)
  count = 1
  while target.exists():
    count += 1
    target = step_dir.with_name(f"{step_dir.name}{QUARANTINE_SUFFIX}-{count}")
  os.rename(step_dir, target)
  return target


# ---------------------------------------------------------------------------
# The checking manager.


def _saved_items(args: Any) -> dict[str, PyTree]:
  """{item name: pytree} of the StandardSave / PyTreeSave items of a save's args."""
  if isinstance(args, ocp.args.Composite):
    pairs = list(args.items())
  else:
    pairs = [("default", args)]
  return {name: arg.item for name, arg in pairs if hasattr(arg, "item")}


class CheckedCheckpointManager(ocp.CheckpointManager):
  """An Orbax ``CheckpointManager`` whose steps carry, and are checked against, sha256 manifests.

  ``save`` takes the digests of the arrays it is given (synchronously, while
  they are what is being saved) and writes ``<step>/integrity.json`` once
  Orbax has committed the step: at the next ``save``,
  ``wait_until_finished`` or ``close``. ``restore`` verifies what it read.
  Everything else is Orbax's.
  """

  def __init__(self, *args, **kwargs):
    self._pending_manifest: tuple[int, dict[str, dict[str, Digest]]] | None = None
    super().__init__(*args, **kwargs)

  def save(self, step: int, *args, **kwargs) -> bool:
    save_args = kwargs.get("args")
    digests = None
    if save_args is not None:
      digests = {name: tree_digests(tree) for name, tree in _saved_items(save_args).items()}
    self.wait_until_finished()  # writes the previous step's manifest
    saved = super().save(step, *args, **kwargs)
    if saved and digests:
      self._pending_manifest = (step, digests)
      if not self._is_async():
        self._write_pending_manifest()
    return saved

  def _is_async(self) -> bool:
    return bool(getattr(self._options, "enable_async_checkpointing", True))

  def _write_pending_manifest(self) -> None:
    if getattr(self, "_pending_manifest", None) is None:
      return
    step, digests = self._pending_manifest
    self._pending_manifest = None
    if self.step_dir(step).is_dir():  # committed: Orbax renamed its temporary directory
      write_manifest(self.step_dir(step), digests, step)

  def wait_until_finished(self) -> None:
    super().wait_until_finished()
    self._write_pending_manifest()

  def step_dir(self, step: int) -> pathlib.Path:
    """The directory of a committed step."""
    return pathlib.Path(self.directory) / str(step)

  def restore(self, step: int | None, *args, **kwargs) -> Any:
    """Orbax's restore, then :func:`verify` of the restored items (``CheckpointCorruptedError``)."""
    if step is None:
      step = self.latest_step()
    restored = super().restore(step, *args, **kwargs)
    items = dict(restored.items()) if isinstance(restored, Mapping) else {"default": restored}
    verify(self.step_dir(step), items)
    return restored

  def restore_newest_intact(
      self,
      args_for: Callable[[int], Any],
      *,
      quarantine_damaged: bool = False,
      describe: Callable[[int, BaseException], str] | None = None,
  ) -> tuple[int, Any] | None:
    """Restores the newest committed step that reads back and verifies.

    Args:
      args_for: ``args_for(step)`` -> the restore ``args`` (e.g. a Composite
        of ``StandardRestore`` s).
      quarantine_damaged: rename each damaged step newer than the one
        restored to ``<step>.damaged`` (:func:`quarantine`), so that training
        can save those steps again; only when an intact step was found.
      describe: optional ``describe(step, error)`` for the final error's list.

    Returns:
      (step, restored), or None if there is no committed step.

    Warns:
      CheckpointIntegrityWarning: naming each damaged step that was skipped.

    Raises:
      CheckpointCorruptedError: no step is intact; the message lists every
        step and why it was refused.
    """
    self.reload()  # the steps on disk now
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      return None
    failures: list[tuple[int, BaseException]] = []
    for step in steps:
      try:
        restored = self.restore(step, args=args_for(step))
      except Exception as error:
        # CheckpointCorruptedError, or Orbax / TensorStore failing on damaged files
        # (they raise bare Exceptions, ValueErrors and KeyErrors).
        failures.append((step, error))
        continue
      for bad_step, error in failures:
        moved = ""
        if quarantine_damaged:
          moved = f"; moved to {quarantine(self.step_dir(bad_step))}"
        warnings.warn(
            f"Skipped damaged checkpoint {self.step_dir(bad_step)} ({_short(error)}){moved}; "
            f"restored step {step} instead.",
            CheckpointIntegrityWarning,
            stacklevel=2,
        )
      if failures and quarantine_damaged:
        self.reload()
      return step, restored
    describe = describe or (lambda step, error: _short(error))
    listed = "; ".join(f"step {step}: {describe(step, error)}" for step, error in failures)
    problem = f"no committed step is intact ({listed})."
    raise CheckpointCorruptedError(
        self.directory, problem, failures=failures,
        message=f"Checkpoints in {self.directory}: {problem} Move the damaged steps away (or use "
        "another workdir) to start afresh.",
    )


def _short(error: BaseException, limit: int = 300) -> str:
  text = f"{type(error).__name__}: {error}"
  return text if len(text) <= limit else text[:limit] + " ..."


# ---------------------------------------------------------------------------
# JSON-lines logs.


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of a JSON-lines file; a torn last line is dropped with a warning.

  A kill during an append can leave the last line cut short (no newline, or
  not valid JSON); that record was never completely written, so it is
  dropped (``TornLogWarning``) and the others are returned. A bad line
  before the last cannot come from a kill and raises.

  Args:
    path: the file.

  Returns:
    The parsed records, in order (blank lines skipped).

  Raises:
    ValueError: a line other than the last is not valid JSON (naming the
      file and the line number).
  """
  path = pathlib.Path(path)
  text = path.read_text(errors="replace")
  lines = text.split("\n")
  records = []
  last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
  for number, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as error:
      if number == last:
        warnings.warn(
            f"{path}: dropped its last line {number + 1}, cut short by an interrupted write "
            f"({error.msg}): {line[:80]!r}.",
            TornLogWarning,
            stacklevel=2,
        )
        continue
      raise ValueError(
          f"{path}: line {number + 1} is not valid JSON ({error.msg}); only a torn last line "
          "can come from an interrupted write, so this file was damaged otherwise."
      ) from error
    records.append(record)
  return records
