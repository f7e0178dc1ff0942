"""Issue #13, item 4: checkpoint damage is detected, never trained on; torn metrics logs are read.

Real Orbax checkpoints of an NNX model and its Optax state are written to
temporary directories, then damaged the way a disk fault or a cut copy does
(one flipped bit, one flipped byte, a truncated manifest) and read back.
"""

from __future__ import annotations

import json
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from jaxcoded import integrity


def _model_and_optimizer(seed=0):
  model = nnx.Linear(64, 64, rngs=nnx.Rngs(seed))  # a 16 KiB kernel: mostly raw bytes on disk
  return model, nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)


def _train_step(model, optimizer, seed):
  """One Adam update, so that the optimizer state holds incompressible numbers too."""
  x = jax.random.normal(jax.random.key(seed), (8, 64))
  grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
  optimizer.update(model, grads)


def _save_args(model, optimizer):
  return ocp.args.Composite(
      model=ocp.args.StandardSave(nnx.state(model)),
      optimizer=ocp.args.StandardSave(nnx.state(optimizer)),
  )


def _restore_args(model, optimizer, items=("model", "optimizer")):
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)  # noqa: E731
  trees = {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
  return ocp.args.Composite(**{name: ocp.args.StandardRestore(abstract(trees[name]))
                               for name in items})


def _states(model, optimizer):
  return {"model": jax.tree.map(np.asarray, nnx.state(model)),
          "optimizer": jax.tree.map(np.asarray, nnx.state(optimizer))}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """Checkpoints at steps 1, 2, 3 of a model whose kernel changes between steps."""
  root = tmp_path_factory.mktemp("saved") / "checkpoints"
  model, optimizer = _model_and_optimizer()
  states = {}
  with integrity.CheckedCheckpointManager(root) as manager:
    for step in (1, 2, 3):
      _train_step(model, optimizer, step)
      manager.save(step, args=_save_args(model, optimizer))
      states[step] = _states(model, optimizer)
  return root, states


def _copy(saved, tmp_path):
  root, states = saved
  target = tmp_path / "checkpoints"
  shutil.copytree(root, target)
  return target, states


def _data_files(step_dir, item):
  """The item's TensorStore (OCDBT) data files, largest first."""
  files = [p for p in (step_dir / item / "ocdbt.process_0" / "d").iterdir() if p.is_file()]
  return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def _flip(path, offset, bits=0x01):
  raw = bytearray(path.read_bytes())
  raw[offset] ^= bits
  path.write_bytes(bytes(raw))


def _assert_equal_states(restored, expected):
  for name, tree in expected.items():
    jax.tree.map(np.testing.assert_array_equal,
                 jax.tree.map(np.asarray, restored[name]), tree)


def test_every_committed_step_has_a_manifest_and_verifies(saved):
  root, states = saved
  for step in (1, 2, 3):
    manifest = json.loads((root / str(step) / integrity.MANIFEST_FILE).read_text())
    assert manifest["step"] == step and set(manifest["items"]) == {"model", "optimizer"}
    assert "['kernel'].value" in manifest["items"]["model"]
  model, optimizer = _model_and_optimizer()
  with integrity.CheckedCheckpointManager(root) as manager:
    restored = manager.restore(3, args=_restore_args(model, optimizer))
  _assert_equal_states(restored, states[3])


def test_garbage_collection_removes_manifests_with_their_steps(tmp_path):
  model, optimizer = _model_and_optimizer()
  options = ocp.CheckpointManagerOptions(max_to_keep=2)
  with integrity.CheckedCheckpointManager(tmp_path, options=options) as manager:
    for step in (1, 2, 3):
      manager.save(step, args=_save_args(model, optimizer))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3"]
  assert all((tmp_path / s / integrity.MANIFEST_FILE).exists() for s in ("2", "3"))


def test_synchronous_saves_write_their_manifest_at_once(tmp_path):
  model, optimizer = _model_and_optimizer()
  options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  manager = integrity.CheckedCheckpointManager(tmp_path, options=options)
  manager.save(1, args=_save_args(model, optimizer))
  assert (tmp_path / "1" / integrity.MANIFEST_FILE).exists()  # before any wait or close
  manager.close()


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_one_flipped_bit_in_the_model_data_is_detected(saved, tmp_path, fraction):
  root, states = _copy(saved, tmp_path)
  data = _data_files(root / "3", "model")[0]
  _flip(data, int(fraction * data.stat().st_size))
  model, optimizer = _model_and_optimizer()
  with ocp.CheckpointManager(root) as plain:  # what Orbax alone does: reads it back silently
    silently = plain.restore(3, args=_restore_args(model, optimizer))
  assert not np.array_equal(silently["model"]["kernel"][...], states[3]["model"]["kernel"][...])
  with integrity.CheckedCheckpointManager(root) as manager:
    with pytest.raises(integrity.CheckpointCorruptedError,
                       match=rf"Checkpoint {root / '3'} is damaged: 1 of 2 arrays of item 'model' "
                             r"differ .*\['kernel'\]\.value"):
      manager.restore(3, args=_restore_args(model, optimizer))


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_one_flipped_byte_in_the_optimizer_state_is_detected(saved, tmp_path, fraction):
  root, _ = _copy(saved, tmp_path)
  data = _data_files(root / "3", "optimizer")[0]  # Adam's moments of the kernel
  _flip(data, int(fraction * data.stat().st_size), bits=0xFF)
  model, optimizer = _model_and_optimizer()
  with integrity.CheckedCheckpointManager(root) as manager:
    with pytest.raises(integrity.CheckpointCorruptedError,
                       match=rf"Checkpoint {root / '3'} is damaged: 1 of \d+ arrays of item "
                             r"'optimizer' differ"):
      manager.restore(3, args=_restore_args(model, optimizer))


def test_the_newest_intact_step_is_restored_with_a_warning_naming_the_damaged_one(saved, tmp_path):
  root, states = _copy(saved, tmp_path)
  data = _data_files(root / "3", "model")[0]
  _flip(data, data.stat().st_size // 2)
  shutil.rmtree(root / "2" / "optimizer")  # damaged another way: Orbax cannot read it
  model, optimizer = _model_and_optimizer()
  with integrity.CheckedCheckpointManager(root) as manager:
    with pytest.warns(integrity.CheckpointIntegrityWarning) as record:
      step, restored = manager.restore_newest_intact(lambda s: _restore_args(model, optimizer))
    assert step == 1
    assert manager.all_steps() == [1, 2, 3]  # read-only: nothing moved
  _assert_equal_states(restored, states[1])
  messages = [str(w.message) for w in record]
  assert any(f"Skipped damaged checkpoint {root / '3'} (CheckpointCorruptedError" in m
             for m in messages)
  assert any(f"Skipped damaged checkpoint {root / '2'}" in m for m in messages)
  assert all("restored step 1 instead" in m for m in messages)


def test_quarantine_lets_training_save_the_damaged_step_again(saved, tmp_path):
  root, states = _copy(saved, tmp_path)
  data = _data_files(root / "3", "model")[0]
  _flip(data, data.stat().st_size // 3)
  model, optimizer = _model_and_optimizer()
  with integrity.CheckedCheckpointManager(root) as manager:
    with pytest.warns(integrity.CheckpointIntegrityWarning, match=r"moved to .*3\.damaged"):
      step, _ = manager.restore_newest_intact(
          lambda s: _restore_args(model, optimizer), quarantine_damaged=True)
    assert step == 2 and manager.all_steps() == [1, 2]
    assert manager.save(3, args=_save_args(model, optimizer))
  assert (root / "3.damaged").is_dir() and (root / "3" / integrity.MANIFEST_FILE).exists()
  with integrity.CheckedCheckpointManager(root) as manager:
    manager.restore(3, args=_restore_args(model, optimizer))  # the new step 3 verifies


def test_no_intact_step_fails_clearly(saved, tmp_path):
  root, _ = _copy(saved, tmp_path)
  for step in ("1", "2", "3"):
    data = _data_files(root / step, "model")[0]
    _flip(data, data.stat().st_size // 2)
  model, optimizer = _model_and_optimizer()
  with integrity.CheckedCheckpointManager(root) as manager:
    with pytest.raises(integrity.CheckpointCorruptedError,
                       match=rf"Checkpoints in {root}: no committed step is intact \(step 3: "
                             r".*; step 2: .*; step 1: "):
      manager.restore_newest_intact(lambda s: _restore_args(model, optimizer),
                                    quarantine_damaged=True)
    assert manager.all_steps() == [1, 2, 3]  # nothing moved when nothing could be restored


def test_a_partial_restore_verifies_its_items_only(saved, tmp_path):
  root, states = _copy(saved, tmp_path)
  files = _data_files(root / "3", "optimizer")
  _flip(files[0], files[0].stat().st_size // 2, bits=0xFF)
  model, optimizer = _model_and_optimizer()
  with integrity.CheckedCheckpointManager(root) as manager:
    restored = manager.restore(3, args=_restore_args(model, optimizer, items=("model",)))
  _assert_equal_states(restored, {"model": states[3]["model"]})


def test_a_step_without_manifest_restores_with_a_warning(saved, tmp_path):
  root, states = _copy(saved, tmp_path)
  (root / "3" / integrity.MANIFEST_FILE).unlink()
  model, optimizer = _model_and_optimizer()
  with integrity.CheckedCheckpointManager(root) as manager:
    with pytest.warns(integrity.CheckpointIntegrityWarning, match="could not be verified"):
      restored = manager.restore(3, args=_restore_args(model, optimizer))
  _assert_equal_states(restored, states[3])
  with pytest.raises(integrity.CheckpointCorruptedError, match="no checksum manifest"):
    integrity.verify(root / "3", restored, missing="raise")


def test_a_damaged_manifest_is_a_damaged_checkpoint(saved, tmp_path):
  root, _ = _copy(saved, tmp_path)
  manifest = root / "3" / integrity.MANIFEST_FILE
  manifest.write_text(manifest.read_text()[:50])
  model, optimizer = _model_and_optimizer()
  with integrity.CheckedCheckpointManager(root) as manager:
    with pytest.raises(integrity.CheckpointCorruptedError, match=r"checksum manifest .* unreadable"):
      manager.restore(3, args=_restore_args(model, optimizer))


def test_digests_cover_dtype_shape_and_every_bit():
  a = np.arange(6, dtype=np.float32)
  flipped = a.copy()
  flipped.view(np.uint32)[3] ^= 1
  digest = integrity.array_digest
  assert digest(a) == digest(a.copy())
  assert digest(a) != digest(flipped)
  assert digest(a) != digest(a.reshape(2, 3))
  assert digest(a) != digest(a.view(np.int32))
  key = jax.random.key(0)
  assert integrity.array_digest(key) == integrity.array_digest(jax.random.key(0))


# ---------------------------------------------------------------------------
# JSON-lines logs.


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
  with pytest.warns(integrity.TornLogWarning, match=rf"{path}: dropped its last line 3"):
    records = integrity.read_jsonl(path)
  assert records == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]


def test_complete_logs_read_without_warnings(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n\n{"step": 2}')  # no final newline, a blank line
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert integrity.read_jsonl(path) == [{"step": 1}, {"step": 2}]
  path.write_text("")
  assert integrity.read_jsonl(path) == []


def test_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
  with pytest.raises(ValueError, match=rf"{path}: line 2 is not valid JSON"):
    integrity.read_jsonl(path)


def test_read_jsonl_on_real_bytes_cut_anywhere(tmp_path):
  path = tmp_path / "metrics.jsonl"
  full = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 5))
  for cut in range(len(full)):
    path.write_text(full[:cut])
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", integrity.TornLogWarning)
      records = integrity.read_jsonl(path)
    complete = full[:cut].count("\n")  # the lines written in full ...
    complete += full[cut:cut + 1] == "\n" and not full[:cut].endswith("\n")  # ... or but for "\n"
    assert [r["step"] for r in records] == list(range(1, complete + 1))
