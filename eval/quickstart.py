r"""The main job on the embedded default: train a base classifier, then serve it coded.

  python eval/quickstart.py --workdir /tmp/jaxcoded-quickstart

1. Trains the base classifier f of ``--config`` (default: the MLP on
   scikit-learn's 8x8 digits, seconds on a CPU) into ``WORKDIR/base``; a
   finished run there is reused, an interrupted one resumed.
2. Serves the test set in groups of K queries with each scheme (uncoded,
   replication, LCC, Berrut), each sized to tolerate S stragglers where it
   can, and evaluates every pattern of S stragglers among its N workers (or a
   random sample of them), with the workers running f: accuracy against the
   labels, agreement with f's own predictions.
3. Prints a Markdown table and writes it with the raw numbers to
   ``WORKDIR/results.md`` and ``WORKDIR/results.json``.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from jaxcoded import data, evaluation, schemes, training

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(_ROOT / "configs" / "digits.py"), "Base classifier config."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jaxcoded-quickstart", "Output directory.")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 4, "K, queries per group.")
_MAX_STRAGGLERS = flags.DEFINE_integer("max_stragglers", 2, "Evaluate S = 0 .. this.")
_MAX_MASKS = flags.DEFINE_integer("max_masks", 64, "Masks per (scheme, S) at most.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the mask sampler.")


def build_schemes(
    num_queries: int, num_stragglers: int, train_labels: np.ndarray, num_classes: int
) -> dict[str, schemes.Scheme]:
  """The schemes compared at S stragglers (coded ones sized to tolerate S)."""
  compared = {
      "uncoded": schemes.Uncoded.create(num_queries),
      "uncoded + majority fallback": schemes.Uncoded.create(
          num_queries, fallback=schemes.majority_class_logits(train_labels, num_classes)
      ),
  }
  if num_stragglers:
    compared["replication"] = schemes.Replication.create(num_queries, num_stragglers)
  compared["LCC (d=1)"] = schemes.LagrangeCode.create(num_queries, num_stragglers, degree=1)
  compared["Berrut"] = schemes.BerrutCode.create(num_queries, num_stragglers)
  return compared


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  workdir = pathlib.Path(_WORKDIR.value)
  config = _CONFIG.value
  print(f"[1/2] base classifier: {config.model} on {config.dataset} -> {workdir / 'base'}")
  training.train_and_evaluate(config, workdir / "base")
  model, config = training.load_model(workdir / "base")
  test = data.load(config.dataset, "test", seed=None)
  train_labels = data.load(config.dataset, "train", seed=None).labels
  graphdef, params = nnx.split(model)

  def classify(params, x):
    return nnx.merge(graphdef, params)(x[None])[0]

  base_accuracy = float(np.mean(
      np.argmax(jax.jit(jax.vmap(classify, in_axes=(None, 0)))(params, test.images), -1)
      == test.labels
  ))
  print(f"      base test accuracy: {base_accuracy:.4f} ({len(test.labels)} images)")

  k = _NUM_QUERIES.value
  print(f"[2/2] coded serving, K = {k}, S = 0..{_MAX_STRAGGLERS.value}")
  rows, records = [], []
  key = jax.random.key(_SEED.value)
  for s in range(_MAX_STRAGGLERS.value + 1):
    for name, scheme in build_schemes(k, s, train_labels, test.num_classes).items():
      masks = evaluation.straggler_masks(
          jax.random.fold_in(key, s), scheme.num_workers, s, _MAX_MASKS.value
      )
      metrics = evaluation.evaluate_masks(scheme, classify, params, test.images, test.labels, masks)
      record = dict(
          scheme=name, K=k, S=s, N=scheme.num_workers, R=scheme.recovery_threshold,
          redundancy=scheme.num_workers / k, num_masks=len(masks),
          accuracy_mean=float(metrics.accuracy.mean()), accuracy_std=float(metrics.accuracy.std()),
          agreement_mean=float(metrics.agreement.mean()), answered_mean=float(metrics.answered.mean()),
      )
      records.append(record)
      rows.append([name, s, scheme.num_workers, scheme.recovery_threshold,
                   f"{scheme.num_workers / k:.2f}",
                   f"{record['accuracy_mean']:.3f} ± {record['accuracy_std']:.3f}",
                   record["agreement_mean"], len(masks)])
  table = evaluation.markdown_table(
      ["scheme", "S", "N", "R", "N/K", "accuracy (mean ± std over masks)", "agreement with f", "masks"], rows
  )
  print(f"\nBase classifier alone (no stragglers): accuracy {base_accuracy:.3f}\n")
  print(table)
  (workdir / "results.md").write_text(
      f"Base classifier accuracy: {base_accuracy:.3f}\n\n{table}\n"
  )
  (workdir / "results.json").write_text(json.dumps(
      dict(base_accuracy=base_accuracy, config=config.to_dict(), results=records), indent=2
  ))
  print(f"\nwrote {workdir / 'results.md'} and results.json")


if __name__ == "__main__":
  sys.exit(app.run(main))
