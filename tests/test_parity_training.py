"""Training ParM's parity model: batches, metrics, and a short digits run that learns."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import parm_digits, parm_fmnist
from jaxcoded import comparison, data, deployment, models, training
from jaxcoded.schemes.parm import ParityCode


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A short ParM run on digits (base trained on demand into <workdir>/base)."""
  workdir = tmp_path_factory.mktemp("parm")
  config = parm_digits.get_config()
  config.base.num_steps = 100
  config.base.eval_every = 0
  config.num_steps = 150
  config.log_every = 25
  config.eval_every = 0
  config.checkpoint_every = 150
  config.progress_bar = False
  result = training.parity.train(config, workdir)
  return config, workdir, result


def test_short_run_reduces_the_parity_loss(trained):
  config, workdir, result = trained
  assert result.completed and result.step == config.num_steps
  records = training.read_metrics(workdir)
  assert records[-1]["loss"] < 0.2 * records[0]["loss"]
  metrics = result.final_metrics
  assert metrics["test_parity_mse"] < records[0]["loss"]
  assert metrics["test_degraded_accuracy"] > 0.5  # Chance is 0.1.
  assert metrics["test_base_accuracy"] > 0.9
  assert metrics["test_one_straggler_accuracy"] == pytest.approx(
      (4 * metrics["test_base_accuracy"] + metrics["test_degraded_accuracy"]) / 5)
  assert json.loads((workdir / "config.json").read_text())["task"] == "parity"
  assert (workdir / "checkpoints" / str(config.num_steps)).exists()
  assert (workdir / "base" / "final_metrics.json").exists()


def test_decoder_path_agrees_with_the_metrics(trained):
  # The scheme's decode over every single-straggler mask gives what the
  # trainer's closed-form metrics report.
  config, workdir, result = trained
  base_model = training.parity.load_or_train_base(config, workdir)
  test = data.load("digits", "test", seed=None)
  code = ParityCode.create(config.num_queries)
  base_fn, base_params = training.parity.as_worker_fn(base_model)
  parity_fn, parity_params = training.parity.as_worker_fn(result.model)
  masks = np.array([np.arange(code.num_workers) != s for s in range(code.num_workers)])
  served = deployment.Deployment.parity("ParM", code, base_fn, base_params, parity_fn,
                                        parity_params)
  groups, group_labels = comparison.make_groups(test.images, test.labels, code.num_queries)
  predictions = jax.vmap(jax.vmap(base_fn, in_axes=(None, 0)), in_axes=(None, 0))(
      base_params, groups).argmax(-1)
  scores = comparison.evaluate_deployment(served, groups, group_labels, predictions, masks)
  metrics = result.final_metrics
  np.testing.assert_allclose(
      scores.accuracy.mean(), metrics["test_one_straggler_accuracy"], atol=1e-6)
  degraded = scores.degraded_correct / np.maximum(scores.degraded_count, 1)
  np.testing.assert_allclose(degraded[:-1].mean(), metrics["test_degraded_accuracy"], atol=1e-6)
  assert scores.degraded_count[-1] == 0  # Only the parity straggled.
  np.testing.assert_array_equal(scores.answered, 1.0)


def test_finished_base_is_reused(trained, tmp_path):
  config, workdir, _ = trained
  config = parm_digits.get_config("smoke")
  config.base_workdir = str(workdir / "base")
  before = (workdir / "base" / "metrics.jsonl").read_text()
  result = training.parity.train(config, tmp_path)
  assert result.completed and result.step == 4
  assert (workdir / "base" / "metrics.jsonl").read_text() == before
  assert not (tmp_path / "base").exists()
  assert result.final_metrics["test_base_accuracy"] > 0.9


def test_degraded_metrics_against_the_decoder(rng):
  groups, k, c = 7, 3, 5
  outputs = rng.normal(size=(groups, k, c))
  parity = outputs.sum(1) + 0.8 * rng.normal(size=(groups, c))
  labels = rng.integers(c, size=(groups, k))
  metrics = training.parity.degraded_metrics(outputs, parity, labels)
  code = ParityCode.create(k)
  coded_outputs = np.concatenate([outputs, parity[:, None]], axis=1)  # (G, N, C)
  masks = np.arange(k + 1) != np.arange(k)[:, None]  # (K, N): worker j straggles.
  decode = jax.vmap(jax.vmap(code.decode, in_axes=(None, 0)), in_axes=(0, None))
  values = np.asarray(decode(jnp.asarray(coded_outputs), jnp.asarray(masks)).values)
  recovered = values[:, np.arange(k), np.arange(k)]  # (G, K, C): query j when j straggles.
  correct = recovered.argmax(-1) == labels
  agree = recovered.argmax(-1) == outputs.argmax(-1)
  assert metrics["degraded_accuracy"] == pytest.approx(np.mean(correct))
  assert metrics["degraded_agreement"] == pytest.approx(np.mean(agree))
  assert metrics["base_accuracy"] == pytest.approx(np.mean(outputs.argmax(-1) == labels))
  assert metrics["parity_mse"] == pytest.approx(np.mean((parity - outputs.sum(1)) ** 2))
  with pytest.raises(ValueError, match="labels"):
    training.parity.degraded_metrics(outputs, parity, labels[:, :2])


def test_parity_batches_sum_groups_and_resume(rng):
  images = rng.normal(size=(50, 2, 2, 1)).astype(np.float32)
  outputs = rng.normal(size=(50, 3)).astype(np.float32)
  stream = training.parity.parity_batches(images, outputs, 4, 3, seed=1)
  batches = list(itertools.islice(stream, 9))  # 4 per epoch: crosses two epochs.
  resumed = list(itertools.islice(
      training.parity.parity_batches(images, outputs, 4, 3, seed=1, start_step=5), 4))
  for (p, t), (p2, t2) in zip(batches[5:], resumed):
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(t, t2)
  order = np.random.default_rng([1, 0]).permutation(50)[:12].reshape(3, 4)
  np.testing.assert_allclose(batches[0][0], images[order].sum(1), rtol=1e-6)
  np.testing.assert_allclose(batches[0][1], outputs[order].sum(1), rtol=1e-6)
  with pytest.raises(ValueError, match="cannot fill"):
    next(training.parity.parity_batches(images, outputs, 10, 6, seed=0))


def test_softmax_worker_outputs_probabilities(rng):
  model = models.create("digits_mlp", rngs=nnx.Rngs(0))
  fn, params = training.parity.as_worker_fn(model, "softmax")
  x = jnp.asarray(rng.normal(size=(8, 8, 1)), jnp.float32)
  probabilities = fn(params, x)
  np.testing.assert_allclose(probabilities, jax.nn.softmax(model(x[None])[0]), rtol=1e-6)
  outputs = training.parity.base_outputs(model, np.asarray(x[None]), target="softmax")
  np.testing.assert_allclose(outputs[0], probabilities, rtol=1e-6)


@pytest.mark.parametrize(
    "field,value,match",
    [("num_parities", 2, "r = 1"), ("num_queries", 0, "K >= 1"), ("target", "probits", "target"),
     ("task", "classify", "task"), ("dataset", "fashion_mnist", "trained on digits")],
)
def test_bad_configs_are_rejected(trained, tmp_path, field, value, match):
  _, workdir, _ = trained
  config = parm_digits.get_config("smoke")
  config.base_workdir = str(workdir / "base")
  config[field] = value
  with pytest.raises(ValueError, match=match):
    training.parity.train(config, tmp_path)


def test_fmnist_configs():
  for variant, k in parm_fmnist.GROUP_SIZES.items():
    config = parm_fmnist.get_config(variant)
    assert config.num_queries == k and config.task == "parity"
    assert config.model == config.base.model == "lenet5"
  assert parm_fmnist.get_config().num_queries == 8
  with pytest.raises(ValueError, match="k8"):
    parm_fmnist.get_config("k7")
