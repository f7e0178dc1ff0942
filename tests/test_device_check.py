"""bench/device_check.sh in its CPU smoke mode: the accelerator check works before a GPU does.

The script trains the digits base classifier and a learned code for a few
steps and runs the digits comparison on a few groups with ``mesh_devices`` set
to the device count (8 simulated CPU devices here, from conftest's XLA_FLAGS,
which the script inherits), then writes one Markdown table.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from configs import eval_digits

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "device_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_device_check_runs_in_smoke_mode_and_writes_one_table(tmp_path):
  out = tmp_path / "check"
  env = dict(os.environ, PYTHON=sys.executable)
  env.pop("PEAK_TFLOPS", None)
  # A hang guard only: the script bounds every phase itself and takes about a minute here.
  done = subprocess.run(["bash", str(SCRIPT), "--smoke", str(out)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
  table = (out / "device_check.md").read_text()
  assert table in done.stdout
  lines = table.splitlines()
  assert "Device check (smoke mode)" in lines[0] and "cpu" in lines[0]
  rows = [line for line in lines if line.startswith("| ") and not line.startswith("| check")]
  assert len(rows) == 3
  base, learned, comparison = (row.split(" | ") for row in rows)
  base_model = eval_digits.get_config().base.model  # the smoke comparison's own base
  assert f"base classifier ({base_model}, digits)" in base[0] and "30 steps" in base[1]
  assert float(base[3]) > 0 and float(base[4]) > 0  # steps/s, model TFLOP/s
  assert base[5] == "—"  # no peak known for a CPU: no MFU
  assert "learned code (polynomial, digits)" in learned[0] and "20 steps" in learned[1]
  assert float(learned[3]) > 0
  assert "comparison evaluation (digits, K = 4)" in comparison[0]
  devices = int(re.search(r": (\d+) x ", lines[0]).group(1))
  assert f"mesh_devices = {devices if devices > 1 else 0}" in comparison[1]
  assert "6 groups" in comparison[1]
  assert all(row.rstrip(" |").split(" | ")[-1].startswith("ok") for row in rows), rows
