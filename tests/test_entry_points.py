"""The entry points run as the docs say (in a subprocess, from the repository root)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT):
  result = subprocess.run(
      [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_train_parity_smoke_from_another_directory(tmp_path):
  # A config variant that imports its default, dispatched on config.task.
  out = run(
      str(ROOT / "train" / "train.py"),
      f"--config={ROOT / 'configs' / 'parm_digits.py'}:smoke",
      f"--workdir={tmp_path / 'parm'}",
      cwd=tmp_path,
  )
  assert "test_degraded_accuracy=" in out
  assert (tmp_path / "parm" / "final_metrics.json").exists()
  assert (tmp_path / "parm" / "base" / "final_metrics.json").exists()


def test_quickstart_writes_results(tmp_path):
  out = run(
      "eval/quickstart.py", f"--workdir={tmp_path}", "--config=configs/digits.py:smoke",
      "--max_stragglers=1", "--max_masks=3",
  )
  assert "| Berrut | 1 |" in out
  results = json.loads((tmp_path / "results.json").read_text())
  schemes_seen = {(r["scheme"], r["S"]) for r in results["results"]}
  assert ("uncoded", 0) in schemes_seen and ("LCC (d=1)", 1) in schemes_seen
  uncoded = next(r for r in results["results"] if (r["scheme"], r["S"]) == ("uncoded", 0))
  assert abs(uncoded["accuracy_mean"] - results["base_accuracy"]) < 1e-9
