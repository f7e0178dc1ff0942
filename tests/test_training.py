"""Tests for jaxcoded.training: smoke run, resume, NaN guard, helpers and config flags."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from jaxcoded import data, models, training

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_config_module(name):
  spec = importlib.util.spec_from_file_location(f"configs_{name}", REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def smoke_config(**overrides):
  config = _load_config_module("digits").get_config("smoke")
  config.update(overrides)
  return config


def _params(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def _checkpoint_steps(workdir):
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _log_softmax_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
  return -log_probs[np.arange(len(labels)), labels]


@pytest.fixture(scope="module")
def digits_train():
  return data.load("digits", "train", seed=0)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """One smoke run of the trainer (4 steps), shared by the tests that read it."""
  workdir = tmp_path_factory.mktemp("smoke")
  config = smoke_config()
  return config, workdir, training.train(config, workdir)


def test_smoke_run_writes_config_metrics_and_checkpoints(smoke_run):
  config, workdir, result = smoke_run
  assert result.completed and result.step == config.num_steps == 4

  assert json.loads((workdir / "config.json").read_text()) == json.loads(config.to_json())

  records = training.read_metrics(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  for r in records:
    assert {"loss", "accuracy", "learning_rate", "steps_per_second"} <= set(r)
    assert math.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1
  assert [("test_accuracy" in r) for r in records] == [False, True, False, True]
  schedule = training.make_schedule(config)
  for r in records:
    assert r["learning_rate"] == pytest.approx(float(schedule(r["step"] - 1)), rel=1e-6)

  final = json.loads((workdir / "final_metrics.json").read_text())
  assert final == result.final_metrics == records[-1]

  # checkpoint_every=2 and the last step: steps 2 and 4, both kept.
  assert _checkpoint_steps(workdir) == [2, 4]
  for leaf in jax.tree.leaves(nnx.state(result.model, nnx.Param)):
    assert leaf.dtype == jnp.float32


def test_smoke_first_logged_loss_matches_numpy(smoke_run, digits_train):
  """Step 1's logged loss is the initial model's cross-entropy on the first batch."""
  config, workdir, _ = smoke_run
  initial = models.create(
      config.model, num_classes=10, rngs=nnx.Rngs(config.seed), **config.model_kwargs
  )
  images, labels = next(training.batch_stream(digits_train, config.batch_size, seed=config.seed))
  (w1, b1), (w2, b2) = (
      (np.asarray(layer.kernel[...], np.float64), np.asarray(layer.bias[...], np.float64))
      for layer in initial.layers
  )
  hidden = np.maximum(images.reshape(len(images), -1).astype(np.float64) @ w1 + b1, 0)
  logits = hidden @ w2 + b2
  first = training.read_metrics(workdir)[0]
  assert first["loss"] == pytest.approx(_log_softmax_ce(logits, labels).mean(), rel=1e-5)
  assert first["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == labels))


def test_load_model_restores_the_final_parameters(smoke_run):
  config, workdir, result = smoke_run
  model, loaded_config = training.load_model(workdir)
  assert loaded_config.model == config.model
  jax.tree.map(np.testing.assert_array_equal, _params(model), _params(result.model))
  test = data.load("digits", "test", seed=None)
  assert training.evaluate(model, test)["accuracy"] == result.final_metrics["test_accuracy"]

  earlier, _ = training.load_model(workdir, step=2)
  assert not np.array_equal(earlier.layers[0].kernel[...], model.layers[0].kernel[...])
  with pytest.raises(FileNotFoundError, match="step 3"):
    training.load_model(workdir, step=3)


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
  # augment=True makes the result depend on the per-step keys as well.
  overrides = dict(num_steps=6, checkpoint_every=2, keep_checkpoints=2, augment=True)
  straight = training.train(smoke_config(**overrides), tmp_path / "straight")

  starts = []
  batch_stream = training.batch_stream

  def recording_stream(dataset, batch_size, *, seed, start_step=0):
    starts.append(start_step)
    return batch_stream(dataset, batch_size, seed=seed, start_step=start_step)

  monkeypatch.setattr(training.classifier, "batch_stream", recording_stream)
  workdir = tmp_path / "interrupted"
  stopped = training.train(smoke_config(stop_after_steps=5, **overrides), workdir)
  assert not stopped.completed and stopped.step == 5 and stopped.final_metrics == {}
  assert not (workdir / "final_metrics.json").exists()
  # Interrupted after step 5: the last checkpoint is step 4, step 5 is lost.
  assert _checkpoint_steps(workdir) == [2, 4]
  assert [r["step"] for r in training.read_metrics(workdir)] == [1, 2, 3, 4, 5]

  resumed = training.train(smoke_config(**overrides), workdir)
  assert starts == [0, 4]
  assert resumed.completed and resumed.step == 6
  jax.tree.map(np.testing.assert_array_equal, _params(resumed.model), _params(straight.model))

  def without_timing(records):
    return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]

  assert without_timing(training.read_metrics(workdir)) == without_timing(
      training.read_metrics(tmp_path / "straight")
  )
  assert without_timing([resumed.final_metrics]) == without_timing([straight.final_metrics])
  assert _checkpoint_steps(workdir) == [4, 6]

  # A finished run is not trained again; it reports the same final metrics.
  again = training.train(smoke_config(**overrides), workdir)
  assert again.completed and again.step == 6 and again.final_metrics == resumed.final_metrics
  jax.tree.map(np.testing.assert_array_equal, _params(again.model), _params(straight.model))
  assert len(training.read_metrics(workdir)) == 6


def test_nan_loss_stops_with_a_clear_error_and_no_nan_checkpoint(tmp_path, digits_train):
  """A loss that turns NaN at step 3 stops the run there; checkpoint 2 survives."""
  config = smoke_config(num_steps=6, checkpoint_every=2)

  def poisoned_batches(num_done):
    stream = training.batch_stream(digits_train, config.batch_size, seed=0, start_step=num_done)
    for step, (images, labels) in enumerate(stream, start=num_done + 1):
      yield images, labels, np.float32(np.nan if step == 3 else 0.0)

  def loss_fn(model, batch, rng):
    images, labels, poison = batch
    loss, metrics = training.classification_loss(model, (images, labels), rng)
    return loss + poison, {**metrics, "loss": loss + poison}

  model = models.create("digits_mlp", rngs=nnx.Rngs(0))
  message = r"nan at step 3 \(last finite loss [0-9.]+ at step 2\).*latest checkpoint is step 2"
  with pytest.raises(training.NonFiniteLossError, match=message):
    training.fit(
        model, optax.adam(1e-3), loss_fn, poisoned_batches, num_steps=6, workdir=tmp_path,
        config=config,
    )
  assert issubclass(training.NonFiniteLossError, FloatingPointError)
  assert _checkpoint_steps(tmp_path) == [2]
  assert [r["step"] for r in training.read_metrics(tmp_path)] == [1, 2]
  restored, _ = training.load_model(tmp_path, step=2)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(_params(restored)))


def test_fit_trains_only_the_variables_selected_by_wrt(tmp_path, digits_train):
  model = models.create("digits_mlp", rngs=nnx.Rngs(0))
  before = _params(model)

  def last_layer(path, value):
    return isinstance(value, nnx.Param) and path[:2] == ("layers", 1)

  def batches(num_done):
    return training.batch_stream(digits_train, 64, seed=0, start_step=num_done)

  tx = optax.adamw(1e-2, weight_decay=0.1)  # Decay would move frozen weights too.
  config = smoke_config(num_steps=2)
  training.fit(
      model, tx, training.classification_loss, batches, num_steps=2, workdir=tmp_path,
      config=config, wrt=last_layer,
  )
  after = _params(model)
  for name in ("kernel", "bias"):
    np.testing.assert_array_equal(after["layers"][0][name], before["layers"][0][name])
    assert not np.array_equal(after["layers"][1][name], before["layers"][1][name])


class _TinyBatchNormNet(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(64, 10, rngs=rngs)
    self.norm = nnx.BatchNorm(10, momentum=0.5, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.dense(x.reshape(x.shape[0], -1)))


def test_batch_statistics_follow_training_and_eval_uses_running_averages(tmp_path, digits_train):
  model = _TinyBatchNormNet(nnx.Rngs(0))

  def batches(num_done):
    return training.batch_stream(digits_train, 64, seed=0, start_step=num_done)

  training.fit(
      model, optax.sgd(0.1), training.classification_loss, batches, num_steps=2, workdir=tmp_path,
      config=smoke_config(num_steps=2),
  )
  mean = np.asarray(model.norm.mean[...])
  assert np.all(mean != 0)  # Updated by the forward passes of training.
  assert model.norm.use_running_average is False

  test = data.load("digits", "test", seed=None)
  metrics = training.evaluate(model, test, batch_size=100)
  assert model.norm.use_running_average is False  # evaluate leaves the model's mode alone.
  np.testing.assert_array_equal(model.norm.mean[...], mean)
  model.eval()
  logits = np.asarray(nnx.jit(lambda m, x: m(x))(model, test.images), np.float64)
  assert metrics["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == test.labels))
  assert metrics["loss"] == pytest.approx(_log_softmax_ce(logits, test.labels).mean(), rel=1e-5)


def test_batch_stream_resumes_anywhere(digits_train):
  batch_size = 100  # 14 batches per epoch of 1437.
  reference = list(itertools.islice(training.batch_stream(digits_train, batch_size, seed=3), 30))
  for start in (0, 5, 13, 14, 20):
    stream = training.batch_stream(digits_train, batch_size, seed=3, start_step=start)
    resumed = itertools.islice(stream, 30 - start)
    for (images, labels), (ref_images, ref_labels) in zip(resumed, reference[start:], strict=True):
      np.testing.assert_array_equal(images, ref_images)
      np.testing.assert_array_equal(labels, ref_labels)
  # Epochs are reshuffled, and every epoch holds distinct examples.
  epoch0 = np.concatenate([labels for _, labels in reference[:14]])
  assert not np.array_equal(reference[0][1], reference[14][1])
  assert len(epoch0) == 1400
  with pytest.raises(ValueError, match="start_step"):
    next(training.batch_stream(digits_train, batch_size, seed=0, start_step=-1))


@pytest.mark.parametrize("padding", [0, 2])
def test_augment_crop_flip_is_a_shifted_and_maybe_flipped_crop(rng, padding):
  images = rng.normal(size=(16, 6, 5, 3)).astype(np.float32)
  out = training.augment_crop_flip(jnp.asarray(images), jax.random.key(0), padding=padding)
  out = np.asarray(out)
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  flips = []
  for image, augmented in zip(padded, out):
    candidates = [
        (flip, image[i : i + 6, j : j + 5][:, ::-1] if flip else image[i : i + 6, j : j + 5])
        for i in range(2 * padding + 1)
        for j in range(2 * padding + 1)
        for flip in (False, True)
    ]
    matches = [flip for flip, c in candidates if np.array_equal(c, augmented)]
    assert matches, "output is no crop of the padded image"
    flips.append(matches[0])
  assert 0 < sum(flips) < len(flips)  # Both outcomes occur (P(fail) = 2**-15).


def test_evaluate_matches_numpy_with_a_partial_last_batch(rng):
  dataset = data.Dataset(
      images=rng.normal(size=(37, 8, 8, 1)).astype(np.float32),
      labels=rng.integers(0, 10, size=37).astype(np.int32),
      num_classes=10,
      name="digits",
      split="test",
  )
  model = models.create("digits_mlp", rngs=nnx.Rngs(int(rng.integers(1000))))
  logits = np.asarray(model(dataset.images), np.float64)
  metrics = training.evaluate(model, dataset, batch_size=10)
  assert metrics["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == dataset.labels))
  assert metrics["loss"] == pytest.approx(_log_softmax_ce(logits, dataset.labels).mean(), rel=1e-5)


def test_warmup_cosine_schedule_matches_formula():
  config = smoke_config(num_steps=100, warmup_steps=10, learning_rate=0.5)
  schedule = training.make_schedule(config)
  for step in (0, 5, 10, 40, 99, 100):
    if step < 10:
      expected = 0.5 * step / 10
    else:
      expected = 0.5 * 0.5 * (1 + math.cos(math.pi * (step - 10) / 90))
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-7)
  with pytest.raises(ValueError, match="warmup_steps"):
    training.make_schedule(smoke_config(num_steps=10, warmup_steps=10))
  with pytest.raises(ValueError, match="Unknown schedule"):
    training.make_schedule(smoke_config(schedule="linear"))
  with pytest.raises(ValueError, match="Unknown optimizer"):
    training.make_optimizer(smoke_config(optimizer="lion"))


def test_mismatched_model_and_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"lenet5 expects images of shape \(28, 28, 1\)"):
    training.train(smoke_config(model="lenet5", model_kwargs={}), tmp_path)


@pytest.mark.parametrize("name", ["digits", "fashion_mnist_lenet", "cifar10_resnet18"])
def test_configs_build_and_state_their_command(name):
  module = _load_config_module(name)
  assert f"--config configs/{name}.py" in module.__doc__
  config = module.get_config()
  training.make_optimizer(config)
  assert config.model in models.MODELS and config.dataset in data.datasets()
  assert tuple(models.INPUT_SHAPES[config.model])  # a known input shape


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # inside ml_collections
def test_config_file_flag_takes_the_variant_and_overrides():
  """The syntax train/train.py accepts: ``--config file.py:variant --config.field=value``."""
  argv = ["train.py", f"--config={REPO}/configs/digits.py:smoke", "--config.num_steps=7"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file(
      "config", None, "config", flag_values=flag_values, lock_config=True, sys_argv=argv
  )
  flag_values(argv)
  config = flag_values.config
  assert config.num_steps == 7 and config.checkpoint_every == 2  # the smoke variant, overridden
  with pytest.raises(ValueError, match="Unknown variant"):
    _load_config_module("digits").get_config("large")
