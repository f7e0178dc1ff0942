"""End to end: a short digits run learns, checkpoints and resumes."""

import json
import os

import jax
import numpy as np

from configs import coder_digits
from jaxcoded import coder_training


def test_sample_masks_have_between_r_and_n_available():
  masks = np.asarray(coder_training.sample_masks(jax.random.key(0), 500, 7, 4))
  counts = masks.sum(axis=1)
  assert masks.shape == (500, 7) and counts.min() == 4 and counts.max() == 7
  assert len(np.unique(masks, axis=0)) > 50


def test_short_digits_run_beats_chance_at_max_stragglers(tmp_path):
  config = coder_digits.get_config()
  workdir = str(tmp_path)
  results = coder_training.train_and_evaluate(config, workdir)
  s = results["num_workers"] - results["recovery_threshold"]
  assert results["accuracy_by_stragglers"][s]["mean"] > 0.5  # chance is 0.1
  assert results["master_fraction"]["A"] <= config.master_budget
  for name in ("config.json", "metrics.jsonl", "results.json"):
    assert os.path.exists(os.path.join(workdir, name))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  # Resuming a finished run trains nothing more and gives the same code.
  again = coder_training.train_and_evaluate(config, workdir)
  assert again["accuracy_by_stragglers"] == results["accuracy_by_stragglers"]
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  assert json.loads(lines[-1])["step"] == config.num_steps
