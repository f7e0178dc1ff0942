"""Plots of a comparison (``comparison.run_comparison``'s results), written as PNG.

* ``accuracy_vs_stragglers.png``: mean accuracy (± std over masks) against S
  for every scheme, with the base classifier as a dashed line;
* ``accuracy_vs_redundancy.png``: accuracy against N / K, one panel per S;
* ``accuracy_vs_compute.png``: accuracy against compute per query
  ((N x worker FLOPs + master FLOPs) / (K x f's FLOPs)), one panel per S, every
  scheme and every R, with each S's Pareto front (``comparison.frontier``:
  lower compute and higher accuracy dominate) ringed and joined by a staircase;
* ``accuracy_vs_threshold.png``: the learned codes' accuracy against their
  recovery threshold R, one line per S, beside their compute per query
  against R, when the comparison holds learned codes.

Every panel's y-axis is zoomed to its data (and the base classifier's line);
legends sit outside the axes, below the panels, so they cover no point, and
the figures use constrained layout so that no label meets the title.

Needs matplotlib (``pip install 'jaxcoded[plot]'``).
"""

from __future__ import annotations

import collections
import pathlib
from collections.abc import Sequence
from typing import Any

from jaxcoded.comparison import frontier

__all__ = ["text_overlaps", "write_comparison_plots", "zoomed_limits"]


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


def zoomed_limits(values: Sequence[float], *, pad: float = 0.08, min_span: float = 0.02,
                  low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
  """(bottom, top) axis limits around ``values``: their range, padded, inside [low, high].

  Args:
    values: the plotted values (accuracies, with the base classifier's).
    pad: the margin on each side, a fraction of the span.
    min_span: the smallest span shown (equal values get a window around them).
    low, high: the values the limits never pass (accuracy: 0 and 1).

  Returns:
    (bottom, top), bottom < top.
  """
  values = [float(v) for v in values]
  if not values:
    return low, high
  lo, hi = min(values), max(values)
  span = max(hi - lo, min_span)
  middle = (lo + hi) / 2
  lo, hi = min(lo, middle - span / 2), max(hi, middle + span / 2)
  bottom, top = max(low, lo - pad * span), min(high, hi + pad * span)
  return (bottom, top) if bottom < top else (low, high)


def text_overlaps(fig) -> list[tuple[str, str]]:
  """Pairs of visible, non-empty texts of a drawn figure whose boxes overlap (titles included).

  Tick labels and legend entries are left out (matplotlib places those); what is
  checked is what this module places: titles, axis labels and annotations.
  """
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  texts = [fig._suptitle] if getattr(fig, "_suptitle", None) is not None else []
  for ax in fig.axes:
    texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    texts += list(ax.texts)
  boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts
           if t.get_visible() and t.get_text()]
  return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
          if box_a.overlaps(box_b)]


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
  # tab20 pairs a dark and a light shade of each hue: the ten dark ones first, then the light.
  shades = list(range(palette.N)) if palette.N <= 10 else [*range(0, 20, 2), *range(1, 20, 2)]
  style = {name: dict(color=palette(shades[i % len(shades)]), marker="osD^v<>ph*"[i % 10])
           for i, name in enumerate(names)}  # the same look for a scheme in every plot

  fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
  for name, rs in _by_scheme(records).items():
    rs = sorted(rs, key=lambda r: r["S"])
    ax.errorbar([r["S"] for r in rs], [r["accuracy_mean"] for r in rs],
                yerr=[r["accuracy_std"] for r in rs], capsize=3, label=name, **style[name])
  ax.axhline(base_accuracy, color="gray", linestyle="--", label="base classifier")
  ax.set(xlabel="stragglers S", ylabel="top-1 accuracy",
         ylim=zoomed_limits([r["accuracy_mean"] + sign * r["accuracy_std"] for r in records
                             for sign in (-1, 1)] + [base_accuracy]),
         title=f"Accuracy vs stragglers (K = {k})")
  ax.xaxis.get_major_locator().set_params(integer=True)
  fig.legend(loc="outside right upper", fontsize=7)
  ax.grid(alpha=0.3)
  written.append(_save(fig, plt, workdir / "accuracy_vs_stragglers.png"))

  for key, label, file_name, front in (
      ("redundancy", "redundancy N / K", "accuracy_vs_redundancy.png", False),
      ("compute_per_query", "compute per query (f evaluations)", "accuracy_vs_compute.png", True),
  ):
    path = _per_stragglers_scatter(plt, records, key, label, base_accuracy, style,
                                   f"Accuracy vs {label.split(' (')[0]} (K = {k})",
                                   workdir / file_name, front=front)
    if path:
      written.append(path)

  learned = [r for r in records if r["kind"] == "learned" and r["guaranteed"]]
  if learned:
    written.append(_threshold_plot(plt, learned, base_accuracy, k,
                                   workdir / "accuracy_vs_threshold.png"))
  return written


def _per_stragglers_scatter(plt, records, key, label, base_accuracy, style, title, path, *,
                            front=False):
  """Accuracy against ``record[key]``, one panel per S; None when no record has ``key``.

  With ``front`` each panel rings its Pareto front (``frontier.pareto_front`` of
  (``key``, accuracy)) and joins it by a staircase.
  """
  records = [r for r in records if key in r]
  stragglers = sorted({r["S"] for r in records})
  if not stragglers:
    return None
  columns = min(len(stragglers), 4)
  rows = -(-len(stragglers) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns + 0.4, 3.4 * rows + 1.2),
                           squeeze=False, layout="constrained")
  handles = {}
  for index, s in enumerate(stragglers):
    ax = axes[index // columns][index % columns]
    at_s = [r for r in records if r["S"] == s]
    for name, rs in _by_scheme(at_s).items():
      handles[name] = ax.scatter([r[key] for r in rs], [r["accuracy_mean"] for r in rs],
                                 label=name, s=30, zorder=3, **style[name])
    ax.axhline(base_accuracy, color="gray", linestyle="--")
    if front:
      costs = [r[key] for r in at_s]
      accuracies = [r["accuracy_mean"] for r in at_s]
      on = frontier.pareto_front(costs, accuracies)
      xs, ys = [costs[i] for i in on], [accuracies[i] for i in on]
      handles["Pareto front"] = ax.scatter(xs, ys, s=110, facecolors="none", edgecolors="black",
                                           linewidths=1.2, zorder=4, label="Pareto front")
      right = max(costs) + 0.05 * (max(costs) - min(costs) + 1e-9)
      ax.step(xs + [right], ys + [ys[-1]], where="post", color="black", linewidth=0.8,
              alpha=0.6, zorder=2)
    ax.set(xlabel=label, ylabel="top-1 accuracy", title=f"S = {s}",
           ylim=zoomed_limits([r["accuracy_mean"] for r in at_s] + [base_accuracy]))
    ax.grid(alpha=0.3)
  for index in range(len(stragglers), rows * columns):
    axes[index // columns][index % columns].set_visible(False)
  order = [name for name in style if name in handles] + [n for n in handles if n not in style]
  handles = {name: handles[name] for name in order}  # the schemes' order, whichever panel
  handles["base classifier"] = axes[0][0].lines[0]
  fig.legend(list(handles.values()), list(handles), loc="outside lower center",
             ncol=min(4, len(handles)), fontsize=7)
  fig.suptitle(title)
  return _save(fig, plt, path)


def _threshold_plot(plt, learned, base_accuracy, k, path):
  """Learned codes: accuracy against R (one line per S) and compute per query against R.

  Where several learned records share (R, S) (one code deployed at N = K + S and
  at N = R + S), the accuracy panel shows their best accuracy and the compute
  panel every deployment (the lowest cost joined by the line). The accuracy
  lines are shifted sideways by S so that equal ones stay visible.
  """
  stragglers = sorted({r["S"] for r in learned})
  all_thresholds = sorted({r["R"] for r in learned})
  fig, (acc_ax, cost_ax) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
  markers = "osD^v<>ph*"
  for i, s in enumerate(stragglers):
    at_s = [r for r in learned if r["S"] == s]
    thresholds = sorted({r["R"] for r in at_s})
    best = [max(r["accuracy_mean"] for r in at_s if r["R"] == t) for t in thresholds]
    cheapest = [min(r["compute_per_query"] for r in at_s if r["R"] == t) for t in thresholds]
    style = dict(marker=markers[i % len(markers)], label=f"S = {s}")
    # An exact-threshold code answers the same at every S: the S lines would coincide, so
    # each is shifted a little sideways (the R ticks stay at the integers).
    dodge = 0.08 * (i - (len(stragglers) - 1) / 2)
    acc_ax.plot([t + dodge for t in thresholds], best, **style)
    line, = cost_ax.plot(thresholds, cheapest, **style)
    cost_ax.scatter([r["R"] for r in at_s], [r["compute_per_query"] for r in at_s],
                    s=14, color=line.get_color(), alpha=0.5)
  acc_ax.axhline(base_accuracy, color="gray", linestyle="--", label="base classifier")
  acc_ax.set(xlabel="recovery threshold R", ylabel="top-1 accuracy (best deployment)",
             ylim=zoomed_limits([r["accuracy_mean"] for r in learned] + [base_accuracy]),
             title="accuracy")
  cost_ax.axhline(1.0, color="gray", linestyle=":", label="one f per query")
  cost_ax.set(xlabel="recovery threshold R", ylabel="compute per query (f evaluations)",
              title="compute per query (line: cheapest N)")
  for ax in (acc_ax, cost_ax):
    ax.set_xticks(all_thresholds)
    ax.set_xlim(all_thresholds[0] - 1, all_thresholds[-1] + 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
  fig.suptitle(f"Learned codes against their recovery threshold R (K = {k})")
  return _save(fig, plt, path)


def _save(fig, plt, path: pathlib.Path) -> str:
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path.name
