"""The comparison of every scheme on shared straggler masks (docs/evaluation.md).

  builders scheme kinds by name: config entries -> schemes (one builder per kind)
  plan     config checks; the schemes of a config built at each S
  trained  the base classifier and each scheme's trained part, trained or reloaded
  masks    the masks every scheme with the same N shares
  metrics  the one evaluator: accuracy, agreement with f, RMSE, degraded mode, load
  report   results.md tables; plots: the PNG figures
  run      ``run_comparison(config, workdir)``: all of the above, into a workdir
"""

import importlib

from jaxcoded.comparison.masks import MaskBank, fingerprint
from jaxcoded.comparison.metrics import (
    SchemeMetrics,
    compute_per_query,
    evaluate_dataset,
    evaluate_deployment,
    make_groups,
    node_load,
    worker_outputs,
)
from jaxcoded.comparison.plan import add_scheme, check_config, scheme_names
from jaxcoded.comparison.report import format_results, markdown_table

__all__ = [
    "MaskBank",
    "SchemeMetrics",
    "add_scheme",
    "check_config",
    "compute_per_query",
    "evaluate_dataset",
    "evaluate_deployment",
    "fingerprint",
    "format_results",
    "make_groups",
    "markdown_table",
    "node_load",
    "run_comparison",
    "scheme_names",
    "worker_outputs",
]

_SUBMODULES = ("builders", "plots", "run", "spline_fit", "trained")


def __getattr__(name: str):
  # ``run`` trains what a comparison needs (``jaxcoded.training``), and the
  # trainers score learned codes with ``metrics``: loading ``run`` on first use
  # keeps ``import jaxcoded.comparison.metrics`` free of the training layer.
  if name == "run_comparison":
    return importlib.import_module("jaxcoded.comparison.run").run_comparison
  if name in _SUBMODULES:
    return importlib.import_module(f"jaxcoded.comparison.{name}")
  raise AttributeError(f"module 'jaxcoded.comparison' has no attribute {name!r}")
