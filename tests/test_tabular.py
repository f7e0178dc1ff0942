"""A dataset of feature vectors given as in-memory arrays, end to end (issue 22).

scikit-learn's wine set (13 features, 3 classes) is registered with
``data.from_arrays`` by configs/eval_wine.py; its smoke comparison trains a
base MLP, ParM's parity MLP and a learned polynomial code on feature vectors,
then evaluates every scheme on shared masks. Nothing in the path assumes
images.
"""

import json

import numpy as np
import pytest

from configs import eval_wine
from jaxcoded import comparison, data


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("wine")
  comparison.run_comparison(eval_wine.get_config("smoke"), str(workdir), progress=False)
  return json.loads((workdir / "results.json").read_text()), workdir


def test_in_memory_dataset_is_registered_and_standardised():
  spec = eval_wine.register_wine()
  assert spec.input_shape == (13,) and spec.num_classes == 3 and not spec.images
  train = data.load("wine", "train", seed=None)
  assert train.images.shape == (eval_wine.NUM_TRAIN, 13) and train.images.dtype == np.float32
  np.testing.assert_allclose(train.images.mean(axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(train.images.std(axis=0), 1.0, atol=1e-4)
  spec_of_queries = data.query_spec("wine")
  assert spec_of_queries.low is None and not spec_of_queries.float_only


def test_every_scheme_ran_on_feature_vectors(results):
  results, workdir = results
  names = {row["scheme"] for row in results["results"]}
  assert names == set(eval_wine.get_config("smoke").schemes)
  assert results["base"]["accuracy"] > 0.6  # 3 classes: chance is about 0.4
  learned = [row for row in results["results"] if row["scheme"] == "learned (R=3)"]
  assert learned and all(row["accuracy_mean"] > 0.5 for row in learned)
  assert (workdir / "trained").is_dir() and (workdir / "results.md").is_file()


@pytest.mark.parametrize("bad", [
    dict(train=(np.zeros((4,)), np.zeros(4, int))),
    dict(train=(np.zeros((4, 2)), np.zeros(3, int))),
    dict(train=(np.full((4, 2), np.nan), np.zeros(4, int))),
    dict(train=(np.zeros((4, 2)), -np.ones(4, int))),
])
def test_from_arrays_refuses_bad_arrays(bad):
  good = (np.zeros((4, 2)), np.zeros(4, int))
  with pytest.raises(ValueError, match="from_arrays"):
    data.from_arrays("bad", bad.get("train", good), good, replace=True)
