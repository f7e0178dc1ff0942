"""End to end: a short digits run learns, checkpoints and resumes."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import coder_digits
from jaxcoded import stragglers, training, workers


def test_sample_masks_have_between_r_and_n_available():
  masks = np.asarray(stragglers.dropout_masks(jax.random.key(0), 500, 7, 4))
  counts = masks.sum(axis=1)
  assert masks.shape == (500, 7) and counts.min() == 4 and counts.max() == 7
  assert len(np.unique(masks, axis=0)) > 50


def test_short_digits_run_beats_chance_at_max_stragglers(tmp_path):
  config = coder_digits.get_config()
  workdir = str(tmp_path)
  results = training.coder.train(config, workdir).report
  s = results["num_workers"] - results["recovery_threshold"]
  assert results["accuracy_by_stragglers"][s]["mean"] > 0.5  # chance is 0.1
  assert results["master_fraction"]["A"] <= config.master_budget
  for name in ("config.json", "metrics.jsonl", "results.json"):
    assert os.path.exists(os.path.join(workdir, name))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  # Resuming a finished run trains nothing more and gives the same code.
  again = training.coder.train(config, workdir).report
  assert again["accuracy_by_stragglers"] == results["accuracy_by_stragglers"]
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  assert json.loads(lines[-1])["step"] == config.num_steps


def test_training_loss_with_workers_on_a_device_mesh_matches_vmap():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices; tests/conftest.py sets them")
  config = coder_digits.get_config()
  config.num_stragglers = 4  # N = 8: one worker per device
  code = training.coder.build_code(config, (8, 8, 1), 10, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  batch = (jnp.asarray(rng.normal(size=(3, 4, 8, 8, 1)), jnp.float32),
           jnp.asarray(rng.integers(0, 10, size=(3, 4))), jnp.zeros((3, 4, 10)))
  mesh = workers.make_worker_mesh(8)
  results = []
  for loss_fn in (training.coder.make_loss_fn(0.0, 2.0), training.coder.make_loss_fn(0.0, 2.0, mesh)):
    grad_fn = nnx.jit(nnx.value_and_grad(lambda c: loss_fn(c, batch, jax.random.key(1)), has_aux=True))
    (loss, _), grads = grad_fn(code)
    results.append((loss, jax.tree.leaves(grads)))
  np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
  for sharded, single in zip(results[1][1], results[0][1]):
    np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-6)


def test_mesh_that_does_not_divide_n_is_refused(tmp_path):
  config = coder_digits.get_config()  # N = 6
  config.mesh_devices = 4
  config.base.num_steps = 4
  config.base.warmup_steps = 1
  with pytest.raises(ValueError, match="must divide the N = 6 workers"):
    training.coder.train(config, str(tmp_path))
