"""Tests of jaxcoded/comparison/trained.py: trained parts, trained, reloaded or taken as they are.

Training itself is replaced by a recorder (the training tasks have their own
tests); what is checked is when ``TrainedParts.get`` trains and what it refuses.
"""

import json

import ml_collections
import pytest

from jaxcoded import training
from jaxcoded.comparison import trained


@pytest.fixture
def fake_training(monkeypatch):
  """Records training calls and deploys the workdir's name instead of loading a model."""
  calls = []

  def train(config, workdir):
    calls.append(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / training.CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    (workdir / training.FINAL_METRICS_FILE).write_text("{}")

  monkeypatch.setattr(training, "train", train)
  monkeypatch.setattr(training.TASKS["coder"], "deployable", lambda workdir: workdir.name)
  return calls


def _entry(workdir):
  config = ml_collections.ConfigDict(dict(task="coder", num_steps=3))
  return ml_collections.ConfigDict(dict(kind="learned", config=config, workdir=str(workdir)))


def _parts(tmp_path, num_queries=4):
  base = ml_collections.ConfigDict(dict(dataset="digits"))
  return trained.TrainedParts(tmp_path, num_queries, base, tmp_path / "base", log=lambda _: None)


def _unfinished_run(workdir, num_queries):
  workdir.mkdir(parents=True)
  (workdir / training.CONFIG_FILE).write_text(json.dumps(dict(num_queries=num_queries)))


def test_missing_part_is_trained_once_then_cached(tmp_path, fake_training):
  parts = _parts(tmp_path)
  entry = _entry(tmp_path / "code")
  assert parts.get("learned", entry) == "code"
  assert parts.get("learned", entry) == "code"
  assert fake_training == [tmp_path / "code"]
  assert training.read_config(tmp_path / "code")["num_queries"] == 4


def test_unfinished_part_is_trained_by_default(tmp_path, fake_training):
  _unfinished_run(tmp_path / "code", 4)
  assert _parts(tmp_path).get("learned", _entry(tmp_path / "code")) == "code"
  assert fake_training == [tmp_path / "code"]


def test_train_false_takes_an_unfinished_run_as_it_is(tmp_path, fake_training):
  _unfinished_run(tmp_path / "code", 4)
  assert _parts(tmp_path).get("learned", _entry(tmp_path / "code"), train=False) == "code"
  assert not fake_training


def test_train_false_without_a_run_is_an_error(tmp_path, fake_training):
  with pytest.raises(FileNotFoundError, match=r"config\.json does not exist"):
    _parts(tmp_path).get("learned", _entry(tmp_path / "nothing"), train=False)
  assert not fake_training


def test_train_false_still_checks_k(tmp_path, fake_training):
  _unfinished_run(tmp_path / "code", 8)
  with pytest.raises(ValueError, match=r"is for K = 8 queries per group, but .* K = 4"):
    _parts(tmp_path).get("learned", _entry(tmp_path / "code"), train=False)


def test_kinds_without_a_part_need_no_workdir(tmp_path, fake_training):
  entry = ml_collections.ConfigDict(dict(kind="berrut"))
  assert _parts(tmp_path).get("Berrut", entry, train=False) is None
  assert not fake_training


def test_a_workdir_without_a_run_is_refused_by_name(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"is not a training workdir"):
    training.read_config(tmp_path)
