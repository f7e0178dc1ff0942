"""Plots of a comparison (``comparison.run_comparison``'s results), written as PNG.

* ``accuracy_vs_stragglers.png``: mean accuracy (± std over masks) against S
  for every scheme, with the base classifier as a dashed line;
* ``accuracy_vs_redundancy.png``: accuracy against N / K, one panel per S >= 1;
* ``accuracy_vs_compute.png``: accuracy against compute per query
  ((N x worker FLOPs + master FLOPs) / (K x f's FLOPs)), one panel per S >= 1;
* ``accuracy_vs_threshold.png``: the learned codes' accuracy against their
  recovery threshold R (at the largest evaluated S they guarantee), when the
  comparison holds learned codes.

Needs matplotlib (``pip install 'jaxcoded[plot]'``).
"""

from __future__ import annotations

import collections
import pathlib
from typing import Any

__all__ = ["write_comparison_plots"]


def _pyplot():
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(
        "Plots need matplotlib: pip install 'jaxcoded[plot]' (or pip install matplotlib)."
    ) from error
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  return pyplot


def _by_scheme(records):
  grouped = collections.defaultdict(list)
  for r in records:
    grouped[r["scheme"]].append(r)
  return grouped


def write_comparison_plots(results: dict[str, Any], workdir: str | pathlib.Path) -> list[str]:
  """Writes the comparison's PNG plots into ``workdir``; returns their file names."""
  plt = _pyplot()
  workdir = pathlib.Path(workdir)
  records = results["results"]
  # The evaluated groups may be a subset of the test set: compare on them.
  base_accuracy = results["base"].get("accuracy_on_groups", results["base"]["accuracy"])
  k = results["num_queries"]
  written = []
  names = list(dict.fromkeys(r["scheme"] for r in records))
  palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
  style = {name: dict(color=palette(i % palette.N), marker="osD^v<>ph*"[i % 10])
           for i, name in enumerate(names)}  # the same look for a scheme in every plot

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, rs in _by_scheme(records).items():
    rs = sorted(rs, key=lambda r: r["S"])
    ax.errorbar([r["S"] for r in rs], [r["accuracy_mean"] for r in rs],
                yerr=[r["accuracy_std"] for r in rs], capsize=3, label=name, **style[name])
  ax.axhline(base_accuracy, color="gray", linestyle="--", label="base classifier")
  ax.set(xlabel="stragglers S", ylabel="top-1 accuracy", ylim=(0, 1),
         title=f"Accuracy vs stragglers (K = {k})")
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.legend(fontsize=8, loc="lower left")
  ax.grid(alpha=0.3)
  written.append(_save(fig, plt, workdir / "accuracy_vs_stragglers.png"))

  for key, label, file_name in (
      ("redundancy", "redundancy N / K", "accuracy_vs_redundancy.png"),
      ("compute_per_query", "compute per query (f evaluations)", "accuracy_vs_compute.png"),
  ):
    path = _per_stragglers_scatter(plt, records, key, label, base_accuracy, style,
                                   f"Accuracy vs {label.split(' (')[0]} (K = {k})",
                                   workdir / file_name)
    if path:
      written.append(path)

  learned = [r for r in records if r["kind"] == "learned" and r["guaranteed"]]
  if learned:
    points = {}
    for r in learned:  # per scheme: its largest guaranteed S
      if r["scheme"] not in points or r["S"] > points[r["scheme"]]["S"]:
        points[r["scheme"]] = r
    ordered = sorted(points.values(), key=lambda r: r["R"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["R"] for r in ordered], [r["accuracy_mean"] for r in ordered], marker="o")
    for r in ordered:
      ax.annotate(f"{r['scheme']}\nN = {r['N']}, S = {r['S']}", (r["R"], r["accuracy_mean"]),
                  fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.axhline(base_accuracy, color="gray", linestyle="--", label="base classifier")
    ax.set(xlabel="recovery threshold R", ylabel="top-1 accuracy", ylim=(0, 1),
           title=f"Learned codes: accuracy vs R (K = {k})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    written.append(_save(fig, plt, workdir / "accuracy_vs_threshold.png"))
  return written


def _per_stragglers_scatter(plt, records, key, label, base_accuracy, style, title, path):
  """Accuracy against ``record[key]``, one panel per S >= 1; None when there is no such S."""
  stragglers = sorted({r["S"] for r in records if r["S"] >= 1 and key in r})
  if not stragglers:
    return None
  fig, axes = plt.subplots(1, len(stragglers), figsize=(4 * len(stragglers), 4), squeeze=False)
  for ax, s in zip(axes[0], stragglers):
    for name, rs in _by_scheme([r for r in records if r["S"] == s]).items():
      ax.scatter([r[key] for r in rs], [r["accuracy_mean"] for r in rs], label=name,
                 **style[name])
    ax.axhline(base_accuracy, color="gray", linestyle="--")
    ax.set(xlabel=label, ylabel="top-1 accuracy", ylim=(0, 1), title=f"S = {s}")
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="lower right")
  fig.suptitle(title)
  return _save(fig, plt, path)


def _save(fig, plt, path: pathlib.Path) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path.name
