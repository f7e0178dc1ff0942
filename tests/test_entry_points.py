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


def test_quickstart_then_evaluate_reuses_trained_parts(tmp_path):
  out = run(
      "eval/quickstart.py", f"--workdir={tmp_path}", "--config=configs/eval_digits.py:smoke",
      "--config.stragglers=(0,1)", "--noprogress",
  )
  assert "| Berrut | 1 | 5 | 4 |" in out
  first = json.loads((tmp_path / "results.json").read_text())
  schemes_seen = {(r["scheme"], r["S"]) for r in first["results"]}
  assert ("uncoded", 0) in schemes_seen and ("LCC (d=1)", 1) in schemes_seen
  assert ("ParM", 1) in schemes_seen and ("learned (R=3)", 1) in schemes_seen
  assert (tmp_path / "accuracy_vs_stragglers.png").exists()
  fitted = [r["settings"] for r in first["results"] if r["scheme"] == "spline (LeTCC)"]
  assert fitted and all(f["smoothing"] == "fitted" and f["fit_images"] > 0 for f in fitted)
  assert "Chosen settings" in out

  parity_done = tmp_path / "trained" / "ParM" / "final_metrics.json"
  mtime = parity_done.stat().st_mtime
  run("eval/evaluate.py", f"--workdir={tmp_path}", "--config=configs/eval_digits.py:smoke",
      "--config.stragglers=(1,)", "--noprogress")
  second = json.loads((tmp_path / "results.json").read_text())
  assert parity_done.stat().st_mtime == mtime  # reloaded, not retrained
  at_one = lambda res: {r["scheme"]: r["accuracy_mean"] for r in res["results"] if r["S"] == 1}
  assert at_one(second) == at_one(first)  # same trained parts, same masks: same numbers


def test_tables_prints_a_results_files_compact_table(tmp_path):
  out = run("eval/tables.py", "docs/results/digits_quickstart.json", "--stragglers=1")
  assert out.startswith("Base classifier digits_cnn")
  rows = [line for line in out.splitlines() if line.startswith("| ") and "| 1 |" in line]
  assert rows and all(line.split(" | ")[1] == "1" for line in rows)
  missing = subprocess.run([sys.executable, "eval/tables.py", str(tmp_path / "none.json")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert missing.returncode != 0 and "no such results file" in missing.stderr
