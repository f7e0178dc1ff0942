"""Bad input, everywhere a user can give it: one case per row of docs/bad_input.md.

Every case asserts the exception type and that the message names the problem
and what is accepted. The service's cases are in tests/test_serving.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcoded import (
  coders,
  comparison,
  data,
  deployment,
  interp,
  models,
  schemes,
  stragglers,
  training,
  validation,
  workers,
)

REPO = pathlib.Path(__file__).resolve().parents[1]


def LINEAR(w, x):
  """A worker task for vectors of length 2 (w: (2, 2))."""
  return w @ x


def _raises(error, match, fn, *args, **kwargs):
  with pytest.raises(error, match=match):
    fn(*args, **kwargs)


def _params(table):
  """pytest params from {case: (arguments...) or pytest.param(arguments..., marks=...)}."""
  return [
      pytest.param(*value.values, marks=value.marks, id=case) if hasattr(value, "marks")
      else pytest.param(*value, id=case)
      for case, value in table.items()
  ]


# ---------------------------------------------------------------------------
# Command lines: started once, concurrently (each pays for importing JAX).

CLI_CASES = {  # case: (arguments, what reports it, the message)
    "train_unknown_variant": (
        ["train/train.py", "--config", "configs/digits.py:nope"],
        r"FATAL Flags parsing error(.|\n)*ValueError",
        r"Unknown variant 'nope' of configs/digits\.py; use 'smoke' or none",
    ),
    "train_unknown_task": (  # app.UsageError: the usage, then the message
        ["train/train.py", "--config", "configs/parm_digits.py", "--config.task=bogus"],
        r"--workdir: Directory for checkpoints",
        r"config\.task must be 'classifier', 'parity' or 'coder', got 'bogus'",
    ),
    "evaluate_negative_stragglers": (
        ["eval/evaluate.py", "--config", "configs/eval_digits.py", "--config.stragglers=(-1,)"],
        r"Traceback(.|\n)*ValueError: ",
        r"config\.stragglers must be integers >= 0, got \[-1\]",
    ),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
  """(return code, stdout + stderr, workdir) of each command line of CLI_CASES."""
  root = tmp_path_factory.mktemp("cli")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  started = {}
  for name, (args, _, _) in CLI_CASES.items():
    workdir = root / name
    started[name] = (subprocess.Popen(
        [sys.executable, *args, "--workdir", str(workdir)], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ), workdir)
  runs = {}
  for name, (process, workdir) in started.items():
    output, _ = process.communicate(timeout=300)
    runs[name] = (process.returncode, output, workdir)
  return runs


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_command_line(cli_runs, case):
  returncode, output, workdir = cli_runs[case]
  _, reporter, message = CLI_CASES[case]
  assert returncode == 1, output
  assert re.search(reporter, output), output
  assert re.search(message, output), output
  assert not workdir.exists()  # refused before anything was written


# ---------------------------------------------------------------------------
# Schemes: impossible K, N, R, S, E.

SIZES = {
    "K=0": (lambda: schemes.LagrangeCode.create(0, 1), r"K >= 1 queries \(an integer\), got K = 0"),
    "K=True": (lambda: schemes.BerrutCode.create(True, 1), r"K >= 1 .*got K = True"),
    "K=2.5": (lambda: schemes.Replication.create(2.5, 1), r"K >= 1 .*got K = 2\.5"),
    "S<0": (
        lambda: schemes.Replication.create(3, -1), r"S must be >= 0 \(an integer\), got S = -1"),
    "lcc d=0": (lambda: schemes.LagrangeCode.create(3, 1, degree=0), r"degree d >= 1, got d = 0"),
    "lcc E<0": (
        lambda: schemes.LagrangeCode.create(3, 1, num_adversaries=-1),
        r"adversaries E must be an integer >= 0, got -1",
    ),
    "uncoded S>0": (
        lambda: schemes.Uncoded.sizes_for(3, 1),
        r"tolerates no straggler, got S = 1.*use Replication with r = S \+ 1 = 2",
    ),
    "parm r=2": (
        lambda: schemes.ParityCode.create(3, 2), r"implements r = 1 parity worker.*got S = r = 2"),
    "parm r=0": (lambda: schemes.ParityCode.create(3, 0), r"r >= 1 parity workers, got r = 0"),
    "byzantine E=0": (
        lambda: schemes.ByzantineBerrutCode.create(2, 1, 0),
        r"needs E >= 1 adversaries, got E = 0 \(for E = 0 use BerrutCode",
    ),
    "byzantine search": (
        lambda: schemes.ByzantineBerrutCode.create(2, 1, 1, search="bogus"),
        r"search must be one of \('exhaustive', 'greedy'\), got 'bogus'",
    ),
    "byzantine too many sets": (
        lambda: schemes.ByzantineBerrutCode.create(40, 0, 8),
        r"C\(95, 8\) = \d+ candidate sets \(more than 100000\); use search=\"greedy\"",
    ),
    "lcc N<R": (
        lambda: schemes.LagrangeCode.create(3, 0, worker_points=[0.1, 0.2]),
        r"2 workers cannot reach the recovery threshold R = \(K - 1\) d \+ 1 \+ 2E = 3",
    ),
}


@pytest.mark.parametrize("case", list(SIZES))
def test_impossible_sizes(case):
  make, match = SIZES[case]
  _raises(ValueError, match, make)


POINTS = {
    "duplicate worker points": (
        dict(worker_points=[0.1, 0.2, 0.2]),
        r"worker points must be distinct, got \[0\.1 0\.2 0\.2\]"),
    "data point = worker point": (
        dict(data_points=[0.1, 0.5], worker_points=[0.1, 0.2, 0.3]),
        r"data points and worker points must differ, but both contain \[0\.1\]"),
    "non-finite points": (dict(worker_points=[0.1, np.nan, 0.3]), r"worker points must be finite"),
    "wrong number of data points": (
        dict(data_points=[0.7, 0.8, 0.9]), r"3 data points given for K = 2"),
    "2-D points": (
        dict(worker_points=[[0.1, 0.2, 0.3]]), r"worker points must be a non-empty 1-D array"),
}


@pytest.mark.parametrize("case", list(POINTS))
def test_bad_evaluation_points(case):
  kwargs, match = POINTS[case]
  _raises(ValueError, "LagrangeCode: " + match, schemes.LagrangeCode.create, 2, 1, **kwargs)


INTERP = {
    "duplicate nodes": (
        lambda: interp.lagrange_matrix(jnp.array([0.0, 1.0, 1.0]), jnp.array([0.5])),
        r"lagrange_matrix: nodes must be distinct, got \[0\. 1\. 1\.\]; repeated: \[1\.\]"),
    "non-finite nodes": (
        lambda: interp.berrut_matrix(jnp.array([0.0, jnp.inf, 1.0]), jnp.array([0.5])),
        r"berrut_matrix: nodes must be finite"),
    "no available node": (
        lambda: interp.berrut_matrix(jnp.array([0.0, 1.0]), jnp.array([0.5]), jnp.zeros(2, bool)),
        r"needs at least 1 available node\(s\), but only 0 of 2 are available"),
    "too few nodes for the degree": (
        lambda: interp.polyfit_matrix(jnp.array([0.0, 1.0]), jnp.array([0.5]), 2),
        r"polyfit_matrix: needs at least 3 available node\(s\), but only 2 of 2"),
    "mask of another length": (
        lambda: interp.lagrange_matrix(jnp.array([0.0, 1.0]), jnp.array([0.5]), jnp.ones(3, bool)),
        r"lagrange_matrix: mask has shape \(3,\), expected \(2,\) \(one boolean per node\)"),
    "no points": (lambda: interp.chebyshev_points(0), r"needs an integer n >= 1, got 0"),
}


@pytest.mark.parametrize("case", list(INTERP))
def test_bad_interpolation_input(case):
  make, match = INTERP[case]
  _raises(ValueError, match, make)


# ---------------------------------------------------------------------------
# Schemes at run time: masks, queries, outputs.


@pytest.fixture(scope="module")
def berrut():
  return schemes.BerrutCode.create(3, 1)  # K = 3, N = 4


SCHEME_CALLS = {
    "mask of another length": (
        lambda c: c.decode(jnp.ones((4, 2)), jnp.ones(3, bool)),
        r"BerrutCode: mask has shape \(3,\), expected \(4,\) \(one boolean per worker\)"),
    "mask not boolean": (
        lambda c: c.decode(jnp.ones((4, 2)), jnp.ones(4)), r"BerrutCode: mask must be boolean"),
    "wrong number of queries": (
        lambda c: c.encode(jnp.ones((2, 2))),
        r"expected a group of K = 3 queries along the leading axis, got shape \(2, 2\)"),
    "non-numeric queries": (
        lambda c: c.encode(np.full((3, 2), "x")),
        r"queries must be real numbers \(an integer or floating-point array\), got dtype <U1"),
    "outputs of another N": (
        lambda c: c.decode(jnp.ones((3, 2)), jnp.ones(4, bool)),
        r"BerrutCode: outputs have shape \(3, 2\), expected \(4, \.\.\.\): one row per worker"),
    "pipeline with a bad mask": (
        lambda c: c(LINEAR, jnp.eye(2), jnp.ones((3, 2)), jnp.ones(4, np.int32)),
        r"mask must be boolean, got int32"),
}


@pytest.mark.parametrize("case", list(SCHEME_CALLS))
def test_bad_scheme_call(berrut, case):
  call, match = SCHEME_CALLS[case]
  _raises(ValueError, match, call, berrut)


def test_replication_outputs_of_another_n():
  _raises(ValueError, r"Replication: outputs have shape \(3, 2\), expected \(6, \.\.\.\)",
          schemes.Replication.create(3, 1).decode, jnp.ones((3, 2)), jnp.ones(6, bool))


def test_parm_without_its_parity_model():
  code = schemes.ParityCode.create(3)
  _raises(ValueError, r"ParityCode runs two functions: .*Deployment\.parity", code, LINEAR,
          jnp.eye(2),
          jnp.ones((3, 2)), jnp.ones(4, bool))


@pytest.mark.parametrize("fallback, match", [
    pytest.param(np.array([1, 0]),
                 r"the fallback must be a float array \(e\.g\. logits\), got int64",
                 id="integer fallback"),
    pytest.param(np.array([1.0, np.nan]), r"the fallback must be finite", id="NaN fallback"),
])
def test_uncoded_bad_fallback(fallback, match):
  _raises(ValueError, "Uncoded: " + match, schemes.Uncoded.create, 3, fallback=fallback)


@pytest.fixture(scope="module")
def polynomial_code():
  """A small learned polynomial code (R = 3, N = 6) for K = 4 digits.

  Its degree check (tests/test_learned.py) is skipped: it costs seconds here.
  """
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(coders, "check_polynomial_degree", lambda *args, **kwargs: None)
    return schemes.PolynomialCode.create(
        4, 6, (8, 8, 1), 10, encoder_degree=1, worker_features=(2,), worker_out=4,
        head_hidden=0, rngs=nnx.Rngs(0),
    )


def _reassembled(code, num_workers, **kwargs):
  """The same networks at the first ``num_workers`` worker points."""
  return schemes.PolynomialCode(
      code.encoder, code.worker, code.head, code.data_points[...],
      code.worker_points[...][:num_workers], check_degree=False, **kwargs,
  )


POLYNOMIAL_CALLS = {
    "N < R": (
        lambda c: _reassembled(c, 2),
        r"PolynomialCode: N = 2 workers cannot reach the recovery threshold R = de \* dh \+ 1 = "
        r"1 \* 2 \+ 1 = 3"),
    "N < R + 2E": (
        lambda c: _reassembled(c, 4, num_adversaries=1),
        r"N = 4 workers cannot reach the recovery threshold R = de \* dh \+ 1 \+ 2E = "
        r"1 \* 2 \+ 1 \+ 2 \* 1 = 5"),
    "E < 0": (
        lambda c: _reassembled(c, 6, num_adversaries=-1),
        r"PolynomialCode: the number of adversaries E must be an integer >= 0, got -1"),
    "images of another shape": (
        lambda c: deployment.Deployment.learned("c", c)(jnp.ones((4, 7, 7, 1)), jnp.ones(6, bool)),
        r"CoefficientEncoder: expected queries of shape \(4, 8, 8, 1\), got \(4, 7, 7, 1\)"),
    "unknown system design": (
        lambda c: deployment.Deployment.learned("c", c, design="C"),
        r"Deployment 'c': unknown system design 'C'; use 'A' \(master encodes\) or 'B' "
        r"\(workers encode\)"),
    "redeployed on too few workers": (
        lambda c: c.with_worker_points(jnp.array([0.5, 0.9])),
        r"N = 2 workers cannot reach the recovery threshold R = de \* dh \+ 1 = 1 \* 2 \+ 1 = 3"),
    "redeployed on duplicate points": (
        lambda c: c.with_worker_points(jnp.array([0.5, 0.9, 0.9])),
        r"PolynomialCode: worker points must be distinct"),
    "redeployed on a data point": (
        lambda c: c.with_worker_points(
            jnp.concatenate([c.data_points[...][:1], jnp.array([2.0, 3.0])])),
        r"PolynomialCode: data points and worker points must differ"),
}


@pytest.mark.parametrize("case", list(POLYNOMIAL_CALLS))
def test_bad_polynomial_code_input(polynomial_code, case):
  call, match = POLYNOMIAL_CALLS[case]
  _raises(ValueError, match, call, polynomial_code)


# ---------------------------------------------------------------------------
# Deployment: the library's group boundary (the harness and the service use it).


@pytest.fixture(scope="module")
def served(berrut):  # what the comparison and the service build: the dataset's value checks
  return deployment.Deployment.homogeneous("Berrut", berrut, LINEAR, jnp.eye(2),
                                           query_range=data.query_spec("fashion_mnist"))


EVERYONE = jnp.ones(4, bool)
GOOD = np.arange(6.0).reshape(3, 2) / 3 - 0.8  # inside the normalised-image range


def _poisoned(row, column, value):
  queries = GOOD.copy()
  queries[row, column] = value
  return queries


DEPLOYMENT_QUERIES = {
    "NaN image": (
        lambda: _poisoned(1, 0, np.nan),
        r"Deployment 'Berrut': NaN or inf in 1 of 3 queries \(index 1\); every value must be "
        r"finite: in a coded group one such query would spoil the answers of all the others"),
    "inf image": (lambda: _poisoned(2, 1, -np.inf), r"NaN or inf in 1 of 3 queries \(index 2\)"),
    "integer images": (
        lambda: GOOD.astype(np.int32),
        r"queries must be a floating-point array \(fashion_mnist images normalised as data\.load "
        r"returns them\), got dtype int32\. Normalise raw pixels with "
        r"data\.normalise\('fashion_mnist', raw_pixels\)"),
    "empty batch": (
        lambda: np.zeros((0, 2)),
        r"expected a group of K = 3 queries along the leading axis, got shape \(0, 2\)"),
    "wrong number of images": (
        lambda: GOOD[:2], r"expected a group of K = 3 queries along the leading axis, got shape \(2, 2\)"),
    "a scalar": (
        lambda: np.float32(1.0), r"expected a group of K = 3 queries along the leading axis, got shape \(\)"),
    "raw pixels among normalised queries": (
        lambda: _poisoned(1, 0, 255.0),
        r"Deployment 'Berrut': query 1 has values in \[.*255\], outside the expected range "
        r"\[-0\.8131, 2\.025\] of fashion_mnist images normalised as data\.load returns them"),
    "uint8 images": (
        lambda: np.zeros((3, 2), np.uint8),
        r"queries must be a floating-point array .*got dtype uint8"),
    "image shape the workers cannot take": (
        lambda: np.ones((3, 3)),
        r"queries of shape \(3, 3\) do not fit its encoder or worker tasks; pass K = 3 images "
        r"of the shape they were built for\. \(TypeError: dot_general"),
}


@pytest.mark.parametrize("case", list(DEPLOYMENT_QUERIES))
def test_bad_queries_to_a_deployment(served, case):
  make, match = DEPLOYMENT_QUERIES[case]
  _raises(ValueError, match, served, make(), EVERYONE)


def test_valid_queries_decode_as_before(served, berrut):
  got = served(GOOD, EVERYONE)  # the checks refuse nothing valid and change nothing
  want = berrut(LINEAR, jnp.eye(2), GOOD, EVERYONE)
  np.testing.assert_array_equal(got.values, want.values)
  assert bool(got.answered.all())


DEPLOYMENT_SETUP = {
    "roles for another N": (
        lambda c: deployment.Deployment("x", c, (deployment.WorkerTask(LINEAR, None),), (0, 0, 0)),
        r"Deployment 'x': 3 roles for the N = 4 workers of BerrutCode"),
    "role without a task": (
        lambda c: deployment.Deployment(
            "x", c, (deployment.WorkerTask(LINEAR, None),), (0, 0, 0, 1)),
        r"roles \(0, 0, 0, 1\) must index the 1 tasks"),
    "worker index out of range": (
        lambda c: deployment.Deployment.homogeneous("x", c, LINEAR, None).worker(4),
        r"worker 4 is not in 0\.\.3"),
}


@pytest.mark.parametrize("case", list(DEPLOYMENT_SETUP))
def test_bad_deployment_setup(berrut, case):
  make, match = DEPLOYMENT_SETUP[case]
  _raises(ValueError, match, make, berrut)


def test_check_images_under_jit_checks_only_what_is_static():
  nan = jnp.full((2, 8, 8, 1), jnp.nan)

  @jax.jit
  def checked(x):
    validation.check_images(x, (None, 8, 8, 1), "jit")
    return x

  assert np.isnan(checked(nan)).all()  # values unknown under jit: no finiteness check
  _raises(ValueError, r"jit: images must have shape \(B, 8, 8, 1\), got \(2, 8, 8\)", checked,
          nan[..., 0])
  _raises(ValueError, r"jit: images must be a floating-point array .*got dtype int32", checked,
          jnp.zeros((2, 8, 8, 1), jnp.int32))


def test_check_images_refuses_ragged_lists():
  _raises(ValueError, r"digits: images must form a rectangular float array",
          validation.check_images, [[0.0, 1.0], [2.0]], None, "digits")


# ---------------------------------------------------------------------------
# Workers and straggler masks.

WORKERS = {
    "N not divisible by the devices": (
        lambda: workers.run_workers(LINEAR, jnp.eye(2), jnp.ones((5, 2)), jnp.ones(5, bool),
                                    mesh=workers.make_worker_mesh(4)),
        r"N = 5 workers cannot be split evenly over the 4 devices of mesh axis 'workers'; N must "
        r"be a multiple of 4"),
    "more devices than exist": (
        lambda: workers.make_worker_mesh(jax.device_count() + 1),
        rf"num_devices must be an integer in \[1, {jax.device_count()}\]"),
    "mesh without a workers axis": (
        lambda: workers.run_workers(LINEAR, jnp.eye(2), jnp.ones((4, 2)), jnp.ones(4, bool),
                                    mesh=workers.make_worker_mesh(2, "batch")),
        r"the mesh has no axis 'workers'; its axes are \('batch',\)"),
    "mask of another length": (
        lambda: workers.run_workers(LINEAR, jnp.eye(2), jnp.ones((5, 2)), jnp.ones(4, bool)),
        r"run_workers: mask has shape \(4,\), expected \(5,\) \(one boolean per worker\)"),
    "S = N stragglers": (
        lambda: stragglers.all_masks(4, 4),
        r"num_stragglers = 4 leaves no worker out of num_workers = 4; it must be < num_workers"),
    "S < 0 stragglers": (
        lambda: stragglers.random_masks(jax.random.key(0), 3, 4, -1),
        r"num_stragglers must be an integer >= 0, got -1"),
}


@pytest.mark.parametrize("case", list(WORKERS))
def test_bad_workers_input(case):
  if jax.device_count() < 4:
    pytest.skip("needs 4 (simulated) devices; tests/conftest.py sets 8")
  make, match = WORKERS[case]
  _raises(ValueError, match, make)


# ---------------------------------------------------------------------------
# Data, models, evaluation groups.

DATA = {
    "unknown dataset": (
        lambda: data.load("imagenet"),
        r"Unknown dataset 'imagenet'; known datasets: digits, fashion_mnist, mnist, cifar10"),
    "unknown split": (
        lambda: data.load("digits", "validation"), r"Unknown split 'validation' for digits; use "
        r"'train' or 'test'"),
    "source without that dataset": (
        lambda: data.load("digits", source="debian"),
        r"Source 'debian' does not provide digits; digits comes from 'sklearn'"),
    "batch larger than the split": (
        lambda: next(data.batches(data.load("digits", "test"), 1000, seed=0)),
        r"batch_size 1000 is larger than the 360 examples of digits/test"),
}


@pytest.mark.parametrize("case", list(DATA))
def test_bad_data_request(case):
  make, match = DATA[case]
  _raises(ValueError, match, make)


@pytest.fixture(scope="module")
def mlp():
  return models.create("digits_mlp", hidden=(4,), rngs=nnx.Rngs(0))


MODELS = {
    "unknown model": (
        lambda m: models.create("vgg", rngs=nnx.Rngs(0)),
        r"Unknown model 'vgg'; known models: mlp, digits_mlp, digits_cnn, lenet5, resnet18, sketch_mlp"),
    "no classes": (
        lambda m: models.create("digits_mlp", num_classes=0, rngs=nnx.Rngs(0)),
        r"num_classes must be a positive integer, got 0"),
    "images of another shape": (
        lambda m: m(jnp.ones((2, 28, 28, 1))),
        r"mlp expects inputs of shape \(B, 8, 8, 1\), got \(2, 28, 28, 1\)"),
    "image without a batch axis": (
        lambda m: m(jnp.ones((8, 8, 1))),
        r"mlp expects inputs of shape \(B, 8, 8, 1\), got \(8, 8, 1\)"),
    "empty batch": (
        lambda m: m(jnp.ones((0, 8, 8, 1))),
        r"mlp got an empty batch; pass B >= 1 inputs of shape \(B, 8, 8, 1\)"),
    "non-numeric images": (
        lambda m: m(np.full((2, 8, 8, 1), "x")),
        r"mlp expects real-valued \(float\) inputs, got dtype <U1"),
}


@pytest.mark.parametrize("case", list(MODELS))
def test_bad_model_input(mlp, case):
  make, match = MODELS[case]
  _raises(ValueError, match, make, mlp)


GROUPS = {
    "too few images": (
        lambda: comparison.make_groups(np.ones((3, 2)), np.ones(3, int), 4),
        r"cannot form groups of K = 4 from 3 images"),
    "labels not one per image": (
        lambda: comparison.make_groups(np.ones((8, 2)), np.ones(7, int), 4),
        r"labels must have shape \(n,\), one per image, to match images of shape \(8, 2\); got "
        r"labels of shape \(7,\)"),
    "K not an integer": (
        lambda: comparison.make_groups(np.ones((8, 2)), np.ones(8, int), 2.0),
        r"make_groups: K must be an integer >= 1, got 2\.0"),
    "masks of another N": (
        lambda: comparison.evaluate_dataset(
            deployment.Deployment.homogeneous("Berrut", schemes.BerrutCode.create(3, 1), LINEAR,
                                              jnp.eye(2)),
            deployment.WorkerTask(LINEAR, jnp.eye(2)),
            np.ones((6, 2)), np.ones(6, int), np.ones((2, 3), bool)),
        r"evaluate_deployment\('Berrut'\): masks must have shape \(M, 4\), got \(2, 3\)"),
}


@pytest.mark.parametrize("case", list(GROUPS))
def test_bad_evaluation_input(case):
  make, match = GROUPS[case]
  _raises(ValueError, match, make)


# ---------------------------------------------------------------------------
# Checkpoints of another kind, scheme or shape.


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """A real classifier run (one step of training.fit), and copies relabelled as other tasks."""
  root = tmp_path_factory.mktemp("runs")
  config = ml_collections.ConfigDict(dict(
      dataset="digits", num_classes=10, model="digits_mlp",
      model_kwargs=dict(hidden=(4,)), seed=0, log_every=1, checkpoint_every=1,
      keep_checkpoints=1, eval_every=0, progress_bar=False, stop_after_steps=0,
  ))
  model = models.create("digits_mlp", hidden=(4,), rngs=nnx.Rngs(0))

  def batches(start):
    while True:
      yield np.zeros((2, 8, 8, 1), np.float32), np.zeros((2,), np.int32)

  training.fit(model, optax.sgd(0.1), training.classification_loss, batches, num_steps=1,
               workdir=root / "classifier", config=config)
  relabelled = {
      "parity": dict(task="parity", num_queries=4),
      "coder": dict(task="coder", scheme="polynomial", num_queries=8,
                    base=dict(model="digits_mlp", num_classes=10)),
  }
  for task, fields in relabelled.items():
    shutil.copytree(root / "classifier", root / task)
    stored = json.loads((root / task / training.CONFIG_FILE).read_text())
    stored.update(fields)
    if task == "coder":
      del stored["model"]
    (root / task / training.CONFIG_FILE).write_text(json.dumps(stored))
  return root


def _other_shape(config):
  config = ml_collections.ConfigDict(config.to_dict())
  config.model_kwargs.hidden = (5,)
  return training.classifier.build_model(config)


CHECKPOINTS = {
    "learned code from a classifier run": (
        lambda w: training.coder.load(w / "classifier"), ValueError,
        r"holds a 'classifier' run, not a learned code \(config\.task == 'coder'\)"),
    "parity model from a classifier run": (
        lambda w: training.parity.load(w / "classifier"), ValueError,
        r"holds a 'classifier' run, not a parity model \(config\.task == 'parity'\)"),
    "parity model from a coder run": (
        lambda w: training.parity.load(w / "coder"), ValueError,
        r"holds a 'coder' run, not a parity model"),
    "learned code from a parity run": (
        lambda w: training.coder.load(w / "parity"), ValueError,
        r"holds a 'parity' run, not a learned code"),
    "module of another shape": (
        lambda w: training.restore_module(w / "classifier", _other_shape), ValueError,
        r"does not match the module built from its config\.json: it was written by another "
        r"scheme, model or shape"),
    "not a workdir": (
        lambda w: training.load_model(w), FileNotFoundError,
        r"config\.json does not exist: .* is not a training workdir"),
    "missing step": (
        lambda w: training.load_model(w / "classifier", step=7), FileNotFoundError,
        r"No checkpoint for step 7 in .*checkpoints \(steps there: \[1\]\)"),
    "trained part for another K": (
        lambda w: comparison.trained.TrainedParts(w, 4, None, w)._check_num_queries(w / "coder"),
        ValueError,
        r"is for K = 8 queries per group, but this comparison uses K = 4"),
    "classifier from a parity run": pytest.param(
        lambda w: training.load_model(w / "parity"), ValueError,
        r"holds a 'parity' run, not a classifier"),
    "classifier from a coder run": pytest.param(
        lambda w: training.load_model(w / "coder"), ValueError,
        r"holds a 'coder' run, not a classifier"),
}


@pytest.mark.parametrize("load, error, match", _params(CHECKPOINTS))
def test_checkpoint_of_another_kind(workdirs, load, error, match):
  _raises(error, match, load, workdirs)


# ---------------------------------------------------------------------------
# Comparison configs (eval/evaluate.py's config).


def _comparison(**fields):
  config = ml_collections.ConfigDict(dict(num_queries=4, stragglers=(0, 1), mesh_devices=0))
  comparison.add_scheme(config, "uncoded", "uncoded")
  comparison.add_scheme(config, "LCC", "lcc", degree=1)
  comparison.add_scheme(config, "Byzantine", "byzantine_berrut", num_adversaries=1)
  comparison.add_scheme(config, "ParM", "parm", config=ml_collections.ConfigDict(dict(seed=0)))
  for name, value in fields.items():
    config[name] = value
  return config


def _set(name, key, value):
  config = _comparison()
  config.schemes[name][key] = value
  return config


def _no_schemes():
  config = _comparison()
  config.schemes = ml_collections.ConfigDict()
  return config


CONFIGS = {
    "K = 0": (lambda: _comparison(num_queries=0),
              r"config\.num_queries \(K\) must be an integer >= 1, got 0"),
    "negative S": (lambda: _comparison(stragglers=(0, -1)),
                   r"config\.stragglers must be integers >= 0, got \[0, -1\]"),
    "no S": (lambda: _comparison(stragglers=()),
             r"config\.stragglers must be integers >= 0, got \[\]"),
    "no schemes": (_no_schemes, r"config\.schemes is empty: nothing to compare"),
    "unknown kind": (lambda: _set("LCC", "kind", "fountain"),
                     r"Scheme 'LCC': kind must be one of \(.*'uncoded'.*\), got 'fountain'"),
    "byzantine without E": (lambda: _set("Byzantine", "num_adversaries", 0),
                            r"Scheme 'Byzantine': byzantine_berrut needs num_adversaries >= 1"),
    "unknown adversary": (lambda: _set("Byzantine", "adversary", "evil"),
                          r"adversary must be one of \('random', 'sign_flip', 'plausible'\), "
                          r"got 'evil'"),
    "K = True": pytest.param(lambda: _comparison(num_queries=True), r"K\) must be an integer >= 1"),
    "LCC of degree 0": pytest.param(lambda: _set("LCC", "degree", 0), r"degree d >= 1"),
    "more mesh devices than exist": pytest.param(
        lambda: _comparison(mesh_devices=jax.device_count() + 1),
        rf"mesh_devices = {jax.device_count() + 1}, but only {jax.device_count()} devices"),
    "trained part without its config": pytest.param(
        lambda: _set("ParM", "config", None), r"Scheme 'ParM'.*needs entry\.config"),
}


@pytest.mark.parametrize("make, match", _params(CONFIGS))
def test_bad_comparison_config(make, match):
  _raises(ValueError, match, comparison.check_config, make())


def test_add_scheme_unknown_kind():
  _raises(ValueError, r"add_scheme\('x'\): kind must be one of \(.*'uncoded'.*\), got 'fountain'",
          comparison.add_scheme, _comparison(), "x", "fountain")


def test_add_scheme_twice_under_one_name():
  _raises(ValueError, r"'LCC' is already", comparison.add_scheme, _comparison(), "LCC", "berrut")


def test_mask_bank_without_masks():
  _raises(ValueError, r"MaskBank: num_random and exhaustive_limit must be >= 1, got 0 and 1",
          comparison.MaskBank, 0, 0, 1)
