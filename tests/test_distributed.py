"""Multi-process JAX (jaxcoded.distributed): two processes on 127.0.0.1 against one process.

The end-to-end tests launch the real entry points: ``train/train.py`` and
``eval/evaluate.py`` with ``--distributed``, two processes of 4 simulated CPU
devices each (gloo collectives), against a single process of 8 devices. They
check that the results agree to float tolerance, that a job whose processes
were killed resumes from its last committed checkpoint, and that no file is
written by two processes (every process runs under an audit hook that records
each file it opens for writing or renames into place).

They are slow: each launch starts JAX, compiles and trains in fresh processes
(docs/scaling.md gives the measured times). Every wait has a deadline, and
every process a test starts is killed at its end.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from jaxcoded import distributed

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH_DEADLINE_S = 420  # one launch (all its processes); a loaded 2-core machine is slow
POLL_S = 0.1

# Runs an entry point under an audit hook that appends every path under $JAXCODED_AUDIT_ROOT
# opened for writing (or renamed into place) to $JAXCODED_AUDIT_LOG, at once (a killed process
# leaves what it wrote so far).
_AUDIT = r'''
import os, runpy, sys
_root = os.environ["JAXCODED_AUDIT_ROOT"]
_fd = os.open(os.environ["JAXCODED_AUDIT_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

def _hook(event, args):
  if event == "open":
    path, flags = args[0], args[2]
    written = bool(flags & _WRITE) if isinstance(flags, int) else False
  elif event in ("os.rename", "os.replace"):
    path, written = args[1], True
  else:
    return
  if written and isinstance(path, (str, bytes, os.PathLike)):
    path = os.path.abspath(os.fsdecode(path))
    if path.startswith(_root):
      os.write(_fd, (path + "\n").encode())

sys.addaudithook(_hook)
sys.argv = sys.argv[1:]
sys.path.insert(0, os.getcwd())
runpy.run_path(sys.argv[0], run_name="__main__")
'''


# ---------------------------------------------------------------------------
# One process: the helpers.


def test_global_mesh_in_one_process_is_the_worker_mesh():
  from jaxcoded import workers

  mesh = distributed.global_mesh(4)
  assert mesh.shape == {"workers": 4}
  assert list(mesh.devices.flat) == jax.devices()[:4]
  assert mesh == workers.make_worker_mesh(4)


def test_mesh_for_config_checks_like_the_worker_mesh():
  assert distributed.mesh_for_config(0) is None
  assert distributed.mesh_for_config(1, num_workers=6) is None
  assert distributed.mesh_for_config(8, num_workers=16).shape == {"workers": 8}
  with pytest.raises(ValueError, match="must divide the N = 6"):
    distributed.mesh_for_config(4, num_workers=6)
  with pytest.raises(ValueError, match="only 8 devices"):
    distributed.mesh_for_config(16)
  with pytest.raises(ValueError, match="integer >= 0"):
    distributed.mesh_for_config(-1)


def test_global_batch_and_local_round_trip_in_one_process():
  mesh = distributed.global_mesh(8)
  batch = {"x": np.arange(16 * 3.0).reshape(16, 3), "y": np.arange(16)}
  assert distributed.process_rows(16, mesh) == slice(0, 16)
  placed = distributed.global_batch(batch, mesh, 16)
  assert placed["x"].sharding.spec == jax.sharding.PartitionSpec("workers")
  np.testing.assert_array_equal(np.asarray(placed["x"]), batch["x"])
  odd = distributed.global_batch({"x": np.ones((6, 2))}, mesh, 6)  # 6 rows over 8 devices
  assert odd["x"].sharding.is_fully_replicated
  replicated = distributed.replicate({"w": np.arange(5.0)}, mesh)
  assert replicated["w"].sharding.is_fully_replicated
  mine = distributed.local(replicated)["w"]
  assert len(mine.devices()) == 1
  np.testing.assert_array_equal(np.asarray(mine), np.arange(5.0))


def test_initialize_names_what_is_missing(monkeypatch):
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  with pytest.raises(ValueError, match="missing: number of processes, process id"):
    distributed.initialize("127.0.0.1:1234")
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
  with pytest.raises(ValueError, match="missing: process id"):
    distributed.initialize("127.0.0.1:1234")
  monkeypatch.setenv(distributed.ENV_PROCESS_ID, "2")
  with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
    distributed.initialize("127.0.0.1:1234")
  assert not called
  # The README's three variables alone start a job (jax reads only the first itself).
  monkeypatch.setenv(distributed.ENV_COORDINATOR, "127.0.0.1:1234")
  monkeypatch.setenv(distributed.ENV_PROCESS_ID, "1")
  distributed.initialize()
  assert called[0]["coordinator_address"] == "127.0.0.1:1234"
  assert (called[0]["num_processes"], called[0]["process_id"]) == (2, 1)
  assert jax.config.jax_cpu_collectives_implementation == "gloo"


# ---------------------------------------------------------------------------
# Launching processes.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class _Job:
  """The processes of one launch (1, or N with --distributed), each under the audit hook."""

  def __init__(self, script, args, *, processes, tmp, name):
    audit = tmp / "audit.py"
    audit.write_text(_AUDIT)
    env = dict(os.environ, PYTHONPATH=str(REPO), JAXCODED_AUDIT_ROOT=str(tmp))
    # The test process's own device count (conftest) must not leak into the children.
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    port = _free_port()
    self.outputs, self.procs = [], []
    for index in range(processes):
      extra = ["--local_device_count=8"] if processes == 1 else [
          "--distributed", f"--coordinator_address=127.0.0.1:{port}",
          f"--num_processes={processes}", f"--process_id={index}", "--local_device_count=4"]
      out = (tmp / f"{name}.p{index}.out").open("w")
      self.outputs.append(out)
      self.procs.append(subprocess.Popen(
          [sys.executable, str(audit), script, *args, *extra], cwd=REPO, stdout=out,
          stderr=subprocess.STDOUT,
          env=dict(env, JAXCODED_AUDIT_LOG=str(tmp / f"audit.{name if processes == 1 else ''}"
                                                     f"p{index}.log")),
      ))

  def wait(self, deadline_s=LAUNCH_DEADLINE_S):
    """Waits for every process, with a deadline; fails with their output on an error."""
    end = time.monotonic() + deadline_s
    try:
      for proc in self.procs:
        proc.wait(timeout=max(1.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f"processes still running after {deadline_s} s:\n{self.tails()}")
    finally:
      self.close()
    if any(proc.returncode for proc in self.procs):
      pytest.fail(f"exit codes {[p.returncode for p in self.procs]}:\n{self.tails()}")

  def kill(self, index=None):
    for proc in self.procs if index is None else [self.procs[index]]:
      if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

  def close(self):
    for out in self.outputs:
      out.close()

  def tails(self):
    text = []
    for out in self.outputs:
      if not out.closed:
        out.flush()
      lines = [line for line in pathlib.Path(out.name).read_text().splitlines()
               if not line.startswith("[Gloo]")]
      text.append(f"--- {out.name}\n" + "\n".join(lines[-30:]))
    return "\n".join(text)


def _writers(tmp: pathlib.Path, root: pathlib.Path) -> dict[str, set[str]]:
  """{path under root: the process logs that wrote it}."""
  writers = {}
  for log in tmp.glob("audit.*.log"):
    for line in log.read_text().splitlines():
      if line.startswith(str(root) + os.sep):
        writers.setdefault(line, set()).add(log.name)
  return writers


def _assert_one_writer(tmp, root, must_be_process_0):
  writers = _writers(tmp, root)
  twice = {path: sorted(who) for path, who in writers.items() if len(who) > 1}
  assert not twice, f"files written by more than one process: {twice}"
  for name in must_be_process_0:
    path = str(root / name)
    assert writers.get(path) == {"audit.p0.log"}, (name, writers.get(path))


def _assert_close(ref, got, path="", rtol=1e-5, atol=1e-6):
  """Nested JSON values equal, floats to tolerance."""
  if isinstance(ref, dict):
    assert set(ref) == set(got), (path, sorted(set(ref) ^ set(got)))
    for key in ref:
      _assert_close(ref[key], got[key], f"{path}.{key}", rtol, atol)
  elif isinstance(ref, list):
    assert len(ref) == len(got), path
    for i, (a, b) in enumerate(zip(ref, got)):
      _assert_close(a, b, f"{path}[{i}]", rtol, atol)
  elif isinstance(ref, float) or isinstance(got, float):
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=path)
  else:
    assert ref == got, (path, ref, got)


# ---------------------------------------------------------------------------
# Learned-code training: one job over both processes, killed and resumed.

CODER_ARGS = [
    "--config=configs/coder_digits.py", "--config.num_stragglers=4", "--config.mesh_devices=8",
    "--config.groups_per_batch=8", "--config.num_steps=16", "--config.checkpoint_every=4",
    "--config.log_every=2", "--config.eval_num_masks=2", "--config.base.num_steps=20",
    "--config.base.warmup_steps=2",
]
_TIMING_FIELDS = ("steps_per_second", "base_seconds", "train_seconds", "load_table")


def _without(record, fields=_TIMING_FIELDS):
  return {k: v for k, v in record.items() if k not in fields}


def test_learned_code_training_over_two_processes_equals_one_process_and_resumes(tmp_path):
  ref, job_dir = tmp_path / "one", tmp_path / "two"
  # The reference: one process with 8 devices; it also trains the base classifier both use.
  _Job("train/train.py", [*CODER_ARGS, f"--workdir={ref}"], processes=1, tmp=tmp_path,
       name="one").wait()

  # Two processes, killed (process 1 first, as a failing host would be) after the checkpoint
  # of step 4 is committed, then started again: they resume from it.
  args = [*CODER_ARGS, f"--workdir={job_dir}", f"--config.base_workdir={ref / 'base'}"]
  job = _Job("train/train.py", args, processes=2, tmp=tmp_path, name="first")
  end = time.monotonic() + LAUNCH_DEADLINE_S
  try:
    while not (job_dir / "checkpoints" / "4").is_dir():
      if time.monotonic() > end or any(p.poll() is not None for p in job.procs):
        pytest.fail(f"no checkpoint of step 4 in time:\n{job.tails()}")
      time.sleep(POLL_S)
    job.kill(1)
    job.kill(0)
  finally:
    job.kill()
    job.close()
  assert not (job_dir / "final_metrics.json").exists(), "the job ended before it was killed"
  _Job("train/train.py", args, processes=2, tmp=tmp_path, name="second").wait()

  log = (job_dir / "jaxcoded.log").read_text()
  assert "Resumed from" in log
  # The same run: metrics, evaluation and parameters, to float tolerance.
  read = lambda d, f: json.loads((d / f).read_text())  # noqa: E731
  _assert_close(_without(read(ref, "final_metrics.json")),
                _without(read(job_dir, "final_metrics.json")), rtol=1e-4, atol=1e-5)
  _assert_close(_without(read(ref, "results.json")), _without(read(job_dir, "results.json")))
  lines = lambda d: [_without(json.loads(l)) for l in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E501,E731,E741
  _assert_close(lines(ref), lines(job_dir), rtol=1e-4, atol=1e-5)
  # One writer per file; the records and reports are process 0's.
  _assert_one_writer(tmp_path, job_dir, ["config.json", "metrics.jsonl", "final_metrics.json",
                                         "results.json", "jaxcoded.log"])


# ---------------------------------------------------------------------------
# The comparison: one job over both processes.

_EVAL_CONFIG = '''
"""configs/eval_digits.py:smoke with fewer schemes and steps (tests/test_distributed.py)."""
from configs import eval_digits


def get_config():
  config = eval_digits.get_config("smoke")
  for name in list(config.schemes.keys()):
    if name not in ("uncoded", "replication", "Berrut", "learned (R=3)"):
      del config.schemes[name]
  config.base.num_steps = 30
  config.schemes["learned (R=3)"].config.num_steps = 20
  config.schemes["learned (R=3)"].config.checkpoint_every = 10
  config.mesh_devices = 8  # replication at S = 1 has N = 8: its workers span both processes
  return config
'''
_RUN_FIELDS = ("seconds", "versions", "decode_us_per_group", "config", "workdir", "plots")


def _comparable(results):
  if isinstance(results, dict):
    return {k: _comparable(v) for k, v in results.items() if k not in _RUN_FIELDS}
  if isinstance(results, list):
    return [_comparable(v) for v in results]
  return results


def test_comparison_over_two_processes_equals_one_process(tmp_path):
  config = tmp_path / "eval_small.py"
  config.write_text(textwrap.dedent(_EVAL_CONFIG))
  ref, job_dir = tmp_path / "one", tmp_path / "two"
  common = [f"--config={config}", "--progress=false"]
  _Job("eval/evaluate.py", [*common, f"--workdir={ref}"], processes=1, tmp=tmp_path,
       name="one").wait()
  _Job("eval/evaluate.py", [*common, f"--workdir={job_dir}"], processes=2, tmp=tmp_path,
       name="two").wait()

  got = json.loads((job_dir / "results.json").read_text())
  want = json.loads((ref / "results.json").read_text())
  assert any(r["N"] == 8 for r in got["results"])  # a deployment shard_mapped over both
  _assert_close(_comparable(want), _comparable(got))
  _assert_one_writer(tmp_path, job_dir, [
      "results.json", "results.md", "masks.npz", "jaxcoded.log", "base/metrics.jsonl",
      "trained/learned__R_3_/metrics.jsonl", "trained/learned__R_3_/results.json"])
  assert not list(job_dir.rglob("*.orbax-checkpoint-tmp"))
