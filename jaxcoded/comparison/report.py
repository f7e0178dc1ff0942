"""The comparison's reports: the Markdown tables of ``results.md``, and JSON helpers."""

from __future__ import annotations

import platform
from typing import Any

import jax
import numpy as np

__all__ = ["format_compact", "format_results", "jsonable", "markdown_table", "versions"]


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
  """A Markdown table; floats are printed with three decimals."""

  def cell(value):
    return f"{value:.3f}" if isinstance(value, float) else str(value)

  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def versions() -> dict[str, str]:
  """The software and machine a result was measured with."""
  import flax
  import optax

  import jaxcoded

  return dict(jaxcoded=jaxcoded.__version__, jax=jax.__version__, flax=flax.__version__,
              optax=optax.__version__, numpy=np.__version__, python=platform.python_version(),
              platform=platform.platform(), backend=jax.default_backend())


def _rmse(record: dict[str, Any]) -> str:
  value = record.get("rmse_mean")
  return "—" if value is None else f"{value:.3f}"


def _setting(value) -> str:
  return f"{value:.3g}" if isinstance(value, float) else str(value)


def jsonable(value):
  """``json.dumps(default=...)`` for numpy scalars and arrays."""
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_results(results: dict[str, Any]) -> str:
  """The Markdown report: base accuracy, the main table, the deadline table."""
  base = results["base"]
  lines = [
      f"Base classifier {base['model']}: test accuracy {base['accuracy']:.3f} "
      f"({results['num_groups']} groups of K = {results['num_queries']}).",
      "",
  ]
  rows = []
  for r in results["results"]:
    degraded = "—" if r["degraded_accuracy"] is None else f"{r['degraded_accuracy']:.3f}"
    name = r["scheme"] + ("" if r["guaranteed"] else " (beyond S_max)")
    rows.append([
        name, r["S"], r["N"], r["R"], f"{r['redundancy']:.2f}",
        f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}", f"{r['accuracy_min']:.3f}",
        f"{r['agreement_mean']:.3f}", degraded, f"{r['answered_mean']:.3f}",
        f"{100 * r['master_fraction']:.1f}%", f"{r['worker_fraction']:.2f}",
        f"{r['compute_per_query']:.2f}", _rmse(r),
        f"{r['decode_us_per_group']:.1f}", f"{r['num_masks']} {r['masks_kind']}",
    ])
  lines.append(markdown_table(
      ["scheme", "S", "N", "R", "N/K", "accuracy (mean ± std)", "worst mask", "agreement with f",
       "degraded", "answered", "master / f", "worker / f", "compute / query", "RMSE vs f",
       "decode µs/group", "masks"], rows))
  chosen = [(r["scheme"], r["S"], r["N"], r["settings"]) for r in results["results"]
            if r.get("settings")]
  if chosen:
    lines += ["", "Chosen settings (fitted on held-out training images where it says so):", ""]
    lines.append(markdown_table(
        ["scheme", "S", "N", "settings"],
        [[name, s, n, ", ".join(f"{key} = {_setting(value)}" for key, value in settings.items())]
         for name, s, n, settings in chosen]))
  if results.get("deadline"):
    model = results.get("deadline_model", "shifted_exponential").replace("_", "-")
    lines += ["", f"Deadline masks ({model} latencies, fixed deadline):", ""]
    drows = [[d["scheme"], d["N"], d["R"], f"{d['mean_stragglers']:.2f}",
              f"{d['accuracy_mean']:.3f} ± {d['accuracy_std']:.3f}", f"{d['answered_mean']:.3f}",
              d["num_masks"]] for d in results["deadline"]]
    lines.append(markdown_table(
        ["scheme", "N", "R", "mean stragglers", "accuracy", "answered", "masks"], drows))
  return "\n".join(lines) + "\n"


def format_compact(results: dict[str, Any], stragglers: tuple[int, ...] | None = None) -> str:
  """The README's shorter table of a results file: accuracy, f's metrics and the costs.

  One row per (scheme, S) with S in ``stragglers`` (default: every S > 0),
  in the order of ``results["results"]``; compute / query in bold, since it
  is the column the rows are compared at.
  """
  rows = []
  for r in results["results"]:
    if (stragglers is None and r["S"] == 0) or (stragglers is not None and r["S"] not in stragglers):
      continue
    name = r["scheme"] + ("" if r["guaranteed"] else " (beyond S_max)")
    rows.append([
        name, r["S"], r["N"], f"{r['redundancy']:.2f}",
        f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}", f"{r['agreement_mean']:.3f}",
        _rmse(r), f"{100 * r['master_fraction']:.1f}%", f"{r['worker_fraction']:.2f}",
        f"**{r['compute_per_query']:.2f}**",
    ])
  return markdown_table(
      ["scheme", "S", "N", "N/K", "accuracy (mean ± std)", "agreement with f", "RMSE vs f",
       "master / f", "worker / f", "compute / query"], rows) + "\n"
