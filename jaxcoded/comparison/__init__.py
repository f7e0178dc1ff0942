"""The comparison of every scheme on shared straggler masks (docs/evaluation.md).

  plan     config checks; schemes by name (the registry) built at each S
  trained  the base classifier and each scheme's trained part, trained or reloaded
  masks    the masks every scheme with the same N shares
  metrics  the one evaluator: accuracy, agreement with f, RMSE, degraded mode, load
  report   results.md tables; plots: the PNG figures
  run      ``run_comparison(config, workdir)``: all of the above, into a workdir
"""

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
from jaxcoded.comparison.run import run_comparison

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
