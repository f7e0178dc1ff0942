"""Tests for the functional train step of ``training.fit``: one trace, no per-step sync.

``fit`` splits the model and optimizer once and runs one ``jax.jit`` of a pure
function of their state; the metrics stay on the device and are fetched at
log, eval and checkpoint steps and at the last step. What is tested here:
the step is traced once (and reused by a second run), the metrics are
fetched only there and average exactly as if fetched every step, the
non-finite check at fetch time still names the first bad step and saves
nothing after it, the model holds the trained state in place, and a
checkpoint written by the earlier per-step ``nnx.jit`` loop (the same
items) resumes.
"""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcoded import data, models, training
from jaxcoded.training import checkpoints, loop

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(**overrides):
  spec = importlib.util.spec_from_file_location("configs_digits", REPO / "configs" / "digits.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def digits_train():
  return data.load("digits", "train", seed=0)


def _batches(dataset, poison=None):
  """train_batches for fit; ``poison`` maps a step to the value added to its loss."""
  poison = poison or {}

  def batches(num_done):
    stream = training.batch_stream(dataset, 64, seed=0, start_step=num_done)
    for step, (images, labels) in enumerate(stream, start=num_done + 1):
      yield images, labels, np.float32(poison.get(step, 0.0))

  return batches


def _poisoned_loss(model, batch, rng):
  images, labels, poison = batch
  loss, metrics = training.classification_loss(model, (images, labels), rng)
  return loss + poison, {**metrics, "loss": loss + poison}


def _params(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


# One transformation object: nnx.Optimizer keeps it in its static structure, the jit cache key.
TX = optax.adam(1e-3)


def _fit(workdir, dataset, config, poison=None, loss_fn=_poisoned_loss, model=None):
  model = model or models.create("digits_mlp", rngs=nnx.Rngs(0))
  return training.fit(
      model, TX, loss_fn, _batches(dataset, poison), num_steps=config.num_steps,
      workdir=workdir, config=config,
  )


def test_metrics_are_fetched_only_at_log_and_checkpoint_steps(tmp_path, digits_train, monkeypatch):
  fetches = []
  fetch = loop._fetch_history

  def counting_fetch(history):
    fetches.append(int(jax.device_get(history["loss"]).shape[0]))
    return fetch(history)

  monkeypatch.setattr(loop, "_fetch_history", counting_fetch)
  config = _config(num_steps=12, log_every=4, checkpoint_every=6, eval_every=0)
  _fit(tmp_path / "windowed", digits_train, config)
  # Fetches at the log steps 4, 8, 12 and the checkpoint step 6; a history of 4 slots.
  assert fetches == [4, 4, 4, 4]
  windowed = training.read_metrics(tmp_path / "windowed")
  assert [r["step"] for r in windowed] == [4, 8, 12]

  # The averages are those of the per-step values, as when fetched every step.
  fetches.clear()
  _fit(tmp_path / "every", digits_train, _config(num_steps=12, log_every=1, checkpoint_every=6))
  assert len(fetches) == 12
  every = training.read_metrics(tmp_path / "every")
  for record in windowed:
    window = every[record["step"] - 4 : record["step"]]
    for name in ("loss", "accuracy"):
      assert record[name] == pytest.approx(np.mean([r[name] for r in window]), rel=1e-6)


def test_the_step_is_traced_once_and_shared_by_later_runs(tmp_path, digits_train):
  traces = []

  def counting_loss(model, batch, rng):
    traces.append(1)  # Python side effect: runs once per trace
    return _poisoned_loss(model, batch, rng)

  config = _config(num_steps=6, log_every=2, checkpoint_every=2)
  _fit(tmp_path / "first", digits_train, config, loss_fn=counting_loss)
  assert len(traces) == 1
  _fit(tmp_path / "second", digits_train, config, loss_fn=counting_loss)
  assert len(traces) == 1


@pytest.mark.parametrize("bad, expected", [
    ({6: np.nan}, r"nan at step 6 \(last finite loss [0-9.]+ at step 5\).*latest checkpoint is "
                  r"step 4"),
    ({6: np.inf, 7: np.nan}, r"inf at step 6 \(last finite loss [0-9.]+ at step 5\)"),
    ({5: np.nan}, r"nan at step 5 \(last finite loss [0-9.]+ at step 4\)"),
    ({1: -np.inf}, r"-inf at step 1 \(no finite loss before it\).*no checkpoint was saved"),
])
def test_a_non_finite_loss_between_fetches_names_its_first_step(tmp_path, digits_train, bad,
                                                                  expected):
  """Found at the next fetch (step 8 here), named by the first bad step; nothing saved after."""
  config = _config(num_steps=12, log_every=4, checkpoint_every=4, eval_every=0)
  with pytest.raises(training.NonFiniteLossError, match=expected) as raised:
    _fit(tmp_path, digits_train, config, poison=bad)
  first_bad = min(bad)
  saved = [step for step in (4, 8, 12) if step < first_bad]
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == saved
  records = training.read_metrics(tmp_path) if saved else []  # no file before a first log
  assert [r["step"] for r in records] == saved
  assert "stopped without saving this state" in str(raised.value)


def test_a_non_finite_loss_at_the_stop_step_is_caught(tmp_path, digits_train):
  config = _config(num_steps=12, log_every=4, checkpoint_every=4, stop_after_steps=6)
  with pytest.raises(training.NonFiniteLossError, match="nan at step 6"):
    _fit(tmp_path, digits_train, config, poison={6: np.nan})


def test_the_model_holds_the_trained_state_in_place(tmp_path, digits_train):
  model = models.create("digits_mlp", rngs=nnx.Rngs(0))
  config = _config(num_steps=5, log_every=2, checkpoint_every=2)
  result = _fit(tmp_path, digits_train, config, model=model)
  assert result.model is model
  leaves = jax.tree.leaves(nnx.state(model))
  assert leaves and not any(leaf.is_deleted() for leaf in leaves)
  saved, _ = training.load_model(tmp_path)  # step 5, the last one, always saved
  jax.tree.map(np.testing.assert_array_equal, _params(model), _params(saved))

  # After an error too, the model holds (undeleted) arrays.
  broken = models.create("digits_mlp", rngs=nnx.Rngs(0))
  with pytest.raises(training.NonFiniteLossError):
    _fit(tmp_path / "nan", digits_train, config, poison={3: np.nan}, model=broken)
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(nnx.state(broken)))


def test_a_checkpoint_of_the_earlier_loop_resumes(tmp_path, digits_train):
  """The per-step nnx.jit loop saved the same two items; such a run resumes unchanged."""
  config = _config(num_steps=6, log_every=2, checkpoint_every=2)
  straight = _fit(tmp_path / "straight", digits_train, config)

  # Steps 1-2 as the earlier loop ran them: nnx.jit of the same update, then its save.
  model = models.create("digits_mlp", rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, TX, wrt=nnx.Param)

  @nnx.jit(static_argnames="loss_fn")
  def old_step(model, optimizer, batch, rng, loss_fn):
    return loop._train_step(model, optimizer, batch, rng, loss_fn)

  key = jax.random.key(config.seed)
  for step, batch in zip((1, 2), _batches(digits_train)(0)):
    old_step(model, optimizer, batch, jax.random.fold_in(key, step), loss_fn=_poisoned_loss)
  workdir = tmp_path / "old"
  with checkpoints.manager(workdir) as manager:
    checkpoints.save_train_state(manager, 2, model, optimizer)
    manager.wait_until_finished()

  resumed = _fit(workdir, digits_train, config)
  assert resumed.completed and resumed.step == 6
  jax.tree.map(np.testing.assert_array_equal, _params(resumed.model), _params(straight.model))
