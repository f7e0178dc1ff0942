"""Crash recovery of training: SIGKILL a real run, resume it, get the uninterrupted result.

``training.fit`` checkpoints with Orbax, which writes each step into
``checkpoints/<step>.orbax-checkpoint-tmp`` and renames it to
``checkpoints/<step>`` once complete; only renamed (committed) steps are ever
restored. The claims tested:

* a run of ``train/train.py`` killed with SIGKILL while it writes a
  checkpoint resumes from its last committed step and ends with exactly the
  parameters, metrics (all but the wall-clock ``steps_per_second``) and final
  metrics of an uninterrupted run with the same seed (CPU execution is
  deterministic);
* uncommitted checkpoint directories (left by a kill mid-write) are ignored
  by ``training.fit`` and ``training.load_model``; a damaged directory that
  looks committed (one flipped bit included: every array is checked against
  the sha256 taken when it was saved, ``jaxcoded.integrity``) is never read
  back: the newest intact step is, with a warning naming the damaged one, or,
  with none intact, a clear error;
* a metrics line cut short by a kill is dropped with a warning.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcoded import integrity, training

ROOT = pathlib.Path(__file__).resolve().parents[1]

# 16 steps, a checkpoint every 4 (the last 2 kept), a metrics record every 4
# (checkpoint_every must be a multiple of log_every, or the first record after
# a restart averages fewer steps), augmentation so that the per-step keys
# matter too.
OVERRIDES = dict(
    num_steps=16, checkpoint_every=4, log_every=4, eval_every=8, keep_checkpoints=2, augment=True
)
TIMEOUT_S = 300


def _train_command(workdir):
  flags = [f"--config.{name}={value}" for name, value in OVERRIDES.items()]
  return [
      sys.executable, str(ROOT / "train" / "train.py"), "--config=configs/digits.py:smoke",
      f"--workdir={workdir}", *flags,
  ]


def _start(workdir):
  return subprocess.Popen(
      _train_command(workdir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )


def _finish(process):
  stdout, stderr = process.communicate(timeout=TIMEOUT_S)
  assert process.returncode == 0, stderr[-3000:]
  return stdout, stderr


def _entries(workdir):
  directory = pathlib.Path(workdir) / training.CHECKPOINT_DIR
  return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _kill_while_checkpointing(process, workdir):
  """SIGKILLs the run as soon as a checkpoint is being written after a committed one.

  Returns:
    The checkpoint directory's entries seen at the moment of the kill.
  """
  deadline = time.monotonic() + TIMEOUT_S
  while process.poll() is None and time.monotonic() < deadline:
    names = _entries(workdir)
    if any(n.isdigit() for n in names) and any(not n.isdigit() for n in names):
      process.send_signal(signal.SIGKILL)
      process.communicate(timeout=TIMEOUT_S)
      return names
    time.sleep(0.002)
  process.kill()
  raise AssertionError(f"The run ended (rc {process.returncode}) before a checkpoint could be interrupted.")


def _params(workdir):
  model, _ = training.load_model(workdir)
  return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def _without_timing(records):
  return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]


def test_sigkill_while_checkpointing_then_resume_equals_uninterrupted_run(tmp_path):
  straight_dir, crashed_dir = tmp_path / "straight", tmp_path / "crashed"
  straight = _start(straight_dir)  # runs alongside the crash and the resume
  crashed = _start(crashed_dir)
  seen = _kill_while_checkpointing(crashed, crashed_dir)
  assert crashed.returncode == -signal.SIGKILL

  # Killed mid-write: an uncommitted directory, no final metrics.
  assert any(".orbax-checkpoint-tmp" in name for name in seen), seen
  committed = [int(n) for n in _entries(crashed_dir) if n.isdigit()]
  assert committed and max(committed) < OVERRIDES["num_steps"]
  assert not (crashed_dir / training.FINAL_METRICS_FILE).exists()
  assert training.load_model(crashed_dir)[0] is not None  # the committed step reads back

  _finish(_start(crashed_dir))
  log = (crashed_dir / "jaxcoded.log").read_text()  # library INFO logs go there, not the terminal
  assert f"Resumed from {crashed_dir / training.CHECKPOINT_DIR} at step {max(committed)}." in log
  _finish(straight)

  # The stale temporary directory was replaced when that step was saved again.
  assert _entries(crashed_dir) == _entries(straight_dir) == ["12", "16"]
  jax.tree.map(np.testing.assert_array_equal, _params(crashed_dir), _params(straight_dir))
  resumed_records = training.read_metrics(crashed_dir)
  assert [r["step"] for r in resumed_records] == [4, 8, 12, 16]
  assert _without_timing(resumed_records) == _without_timing(training.read_metrics(straight_dir))
  final = [json.loads((d / training.FINAL_METRICS_FILE).read_text()) for d in (crashed_dir, straight_dir)]
  assert _without_timing(final[:1]) == _without_timing(final[1:])
  assert final[0]["test_accuracy"] > 0.2  # it learned (chance: 0.1)


# ---------------------------------------------------------------------------
# Uncommitted and damaged checkpoints, in process.


def _smoke_config(**overrides):
  spec = importlib.util.spec_from_file_location("configs_digits", ROOT / "configs" / "digits.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  # The settings of test_training's resume test: in one pytest process the
  # compiled train step is shared.
  config.update(dict(num_steps=6, checkpoint_every=2, keep_checkpoints=2, augment=True), **overrides)
  return config


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
  """A run stopped after step 4 (checkpoints 2 and 4) and the uninterrupted 6-step run."""
  workdir = tmp_path_factory.mktemp("interrupted")
  stopped = training.train(_smoke_config(stop_after_steps=4), workdir)
  assert stopped.step == 4 and _entries(workdir) == ["2", "4"]
  params_at_4 = jax.tree.map(np.asarray, nnx.state(stopped.model, nnx.Param))
  straight = training.train(_smoke_config(), tmp_path_factory.mktemp("straight"))
  return workdir, params_at_4, jax.tree.map(np.asarray, nnx.state(straight.model, nnx.Param))


def _plant_uncommitted(workdir):
  """What a kill mid-write leaves: step 6 half-written into its temporary directory."""
  checkpoints = workdir / training.CHECKPOINT_DIR
  partial = checkpoints / "6.orbax-checkpoint-tmp"
  shutil.copytree(checkpoints / "4", partial)
  for path in partial.rglob("*"):
    if path.is_file():
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  (checkpoints / "5.orbax-checkpoint-tmp").mkdir()  # a kill right after it was created


def test_uncommitted_checkpoints_are_never_read(interrupted_run, tmp_path):
  source, params_at_4, straight_params = interrupted_run
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  _plant_uncommitted(workdir)

  loaded, _ = training.load_model(workdir)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(loaded, nnx.Param), params_at_4)
  with pytest.raises(FileNotFoundError, match="steps there: \\[2, 4\\]"):
    training.load_model(workdir, step=6)

  resumed = training.train(_smoke_config(), workdir)
  assert resumed.completed and resumed.step == 6
  assert [r["step"] for r in training.read_metrics(workdir)] == [1, 2, 3, 4, 5, 6]
  jax.tree.map(np.testing.assert_array_equal, _params(workdir), straight_params)
  assert "6" in _entries(workdir)


def _flip_a_bit(step_dir, item="model"):
  """One flipped bit in the middle of the item's largest data file (a disk fault)."""
  files = [p for p in (step_dir / item).rglob("*") if p.is_file() and p.parent.name == "d"]
  data = max(files, key=lambda p: p.stat().st_size)
  raw = bytearray(data.read_bytes())
  raw[len(raw) // 2] ^= 0x04
  data.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["truncated", "item_missing", "empty", "flipped_bit"])
def test_a_damaged_committed_checkpoint_is_skipped_with_a_warning(
    interrupted_run, tmp_path, damage
):
  """A step directory that looks committed but is damaged (not what a kill leaves: disk
  faults, a copy cut short) is never read back: ``fit`` resumes from the newest intact step,
  warns naming the damaged one, moves it to ``<step>.damaged`` and ends as if uninterrupted."""
  source, _, straight_params = interrupted_run
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  checkpoints = workdir / training.CHECKPOINT_DIR
  if damage == "flipped_bit":  # step 4 itself: resume from 2
    damaged, intact = checkpoints / "4", 2
    _flip_a_bit(damaged)
  else:  # a damaged copy of step 4 named 5: resume from 4
    damaged, intact = checkpoints / "5", 4
    shutil.copytree(checkpoints / "4", damaged)
    if damage == "truncated":
      for path in damaged.rglob("*"):
        if path.is_file() and path.stat().st_size > 1000:
          path.write_bytes(path.read_bytes()[:100])
    elif damage == "item_missing":
      shutil.rmtree(damaged / "model")
    else:
      shutil.rmtree(damaged)
      damaged.mkdir()

  with pytest.warns(integrity.CheckpointIntegrityWarning,
                    match=rf"Skipped damaged checkpoint {re.escape(str(damaged))} .*moved to "
                          rf"{re.escape(str(damaged))}\.damaged; restored step {intact} instead"):
    resumed = training.train(_smoke_config(), workdir)
  assert resumed.completed and resumed.step == 6
  assert [r["step"] for r in training.read_metrics(workdir)] == [1, 2, 3, 4, 5, 6]
  jax.tree.map(np.testing.assert_array_equal, _params(workdir), straight_params)
  assert f"{damaged.name}.damaged" in _entries(workdir)


def test_no_intact_checkpoint_fails_clearly(interrupted_run, tmp_path):
  source, _, _ = interrupted_run
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  checkpoints = workdir / training.CHECKPOINT_DIR
  _flip_a_bit(checkpoints / "2")
  _flip_a_bit(checkpoints / "4")
  with pytest.raises(integrity.CheckpointCorruptedError,
                     match=rf"Cannot resume from {re.escape(str(checkpoints))}: no committed step "
                           r"is intact \(step 4: CheckpointCorruptedError.*; step 2: "):
    training.train(_smoke_config(), workdir)
  with pytest.raises(integrity.CheckpointCorruptedError, match="no committed step is intact"):
    training.load_model(workdir)
  with pytest.raises(integrity.CheckpointCorruptedError, match=rf"{re.escape(str(checkpoints))}/2"):
    training.load_model(workdir, step=2)
  assert _entries(workdir) == ["2", "4"]  # nothing moved when nothing could be restored
  assert not (workdir / training.FINAL_METRICS_FILE).exists()


def test_a_torn_metrics_line_is_dropped_on_resume(interrupted_run, tmp_path):
  """A SIGKILL during a metrics write can leave its last line cut short."""
  source, _, straight_params = interrupted_run
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  metrics = workdir / training.METRICS_FILE
  metrics.write_text(metrics.read_text() + '{"step": 5, "loss": 0.1')
  with pytest.warns(integrity.TornLogWarning, match="dropped its last line"):
    resumed = training.train(_smoke_config(), workdir)
  assert resumed.completed
  assert [r["step"] for r in training.read_metrics(workdir)] == [1, 2, 3, 4, 5, 6]
  jax.tree.map(np.testing.assert_array_equal, _params(workdir), straight_params)
