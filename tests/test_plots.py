"""Tests of jaxcoded/comparison/plots.py on tiny synthetic results (matplotlib Agg)."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from jaxcoded.comparison import frontier, plots

K = 8


def _record(scheme, kind, s, n, r, accuracy, worker=1.0, master=0.02, guaranteed=True):
  return dict(
      scheme=scheme, kind=kind, S=s, N=n, R=r, K=K, redundancy=n / K, guaranteed=guaranteed,
      accuracy_mean=accuracy, accuracy_std=0.01, master_fraction=master, worker_fraction=worker,
      compute_per_query=(n * worker + K * master) / K,
  )


def synthetic_results(stragglers=(0, 1, 2, 3)):
  """A frontier-like comparison: fixed schemes at N = K + S, learned codes at R + S and K + S.

  11 schemes: more than tab10's colours, so the plots' tab20 path runs.
  """
  records = []
  for s in stragglers:
    records.append(_record("uncoded + fallback", "uncoded", s, K, K, 0.906 - 0.1 * s,
                           guaranteed=s == 0))
    records.append(_record("replication", "replication", s, K * (s + 1), K * (s + 1) - s, 0.906))
    records.append(_record("Berrut", "berrut", s, K + s, K, 0.75 - 0.02 * s))
    records.append(_record("LCC (d=1)", "lcc", s, K + s, K, 0.70 - 0.03 * s))
    records.append(_record("spline (LeTCC)", "spline", s, K + s, K, 0.76 - 0.02 * s,
                           master=0.03))
    for r, accuracy in ((3, 0.86), (5, 0.88), (7, 0.899)):
      for where, n in (("R + S", r + s), ("K + S", K + s)):
        if n >= r:
          records.append(_record(f"learned R={r} (N = {where})", "learned", s, n, r, accuracy,
                                 worker=0.9, master=0.08))
  return dict(base=dict(model="lenet5", accuracy=0.906), num_queries=K, num_groups=10,
              results=records)


EXPECTED = {"accuracy_vs_stragglers.png", "accuracy_vs_redundancy.png",
            "accuracy_vs_compute.png", "accuracy_vs_threshold.png"}


@pytest.fixture
def drawn(monkeypatch):
  """Records, for each figure written, the colliding texts found before it is closed."""
  found = {}
  save = plots._save

  def checked_save(fig, plt, path):
    found[path.name] = (plots.text_overlaps(fig), [ax.get_ylim() for ax in fig.axes])
    return save(fig, plt, path)

  monkeypatch.setattr(plots, "_save", checked_save)
  return found


def test_plots_are_written_without_colliding_labels(tmp_path, drawn):
  results = synthetic_results()
  written = plots.write_comparison_plots(results, tmp_path)
  assert set(written) == EXPECTED
  for name in written:
    data = (tmp_path / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
  for name, (overlaps, _) in drawn.items():
    assert overlaps == [], (name, overlaps)


def test_accuracy_axes_are_zoomed_to_the_data(tmp_path, drawn):
  results = synthetic_results()
  plots.write_comparison_plots(results, tmp_path)
  # S = 0 panel of accuracy vs compute: accuracies 0.75 .. 0.906, so not the whole [0, 1].
  bottom, top = drawn["accuracy_vs_compute.png"][1][0]
  assert 0.6 < bottom < 0.75 and 0.906 < top < 0.95
  bottom, top = drawn["accuracy_vs_threshold.png"][1][0]  # learned codes only: 0.86 .. 0.906
  assert 0.8 < bottom < 0.86 and 0.906 < top < 0.93


def test_threshold_plot_has_a_point_per_threshold_and_s(tmp_path, monkeypatch):
  lines = {}
  save = plots._save

  def keep(fig, plt, path):
    if path.name == "accuracy_vs_threshold.png":
      lines["acc"] = [(line.get_label(), list(line.get_ydata())) for line in fig.axes[0].lines]
    return save(fig, plt, path)

  monkeypatch.setattr(plots, "_save", keep)
  plots.write_comparison_plots(synthetic_results(), tmp_path)
  per_s = {label: ys for label, ys in lines["acc"] if label.startswith("S = ")}
  assert set(per_s) == {"S = 0", "S = 1", "S = 2", "S = 3"}
  for ys in per_s.values():
    assert ys == [0.86, 0.88, 0.899]


def test_compute_plot_marks_the_front(tmp_path, monkeypatch):
  rings = {}
  save = plots._save

  def keep(fig, plt, path):
    if path.name == "accuracy_vs_compute.png":
      for ax in fig.axes:
        for collection in ax.collections:
          if collection.get_label() == "Pareto front":
            rings[ax.get_title()] = sorted(map(tuple, collection.get_offsets().tolist()))
    return save(fig, plt, path)

  monkeypatch.setattr(plots, "_save", keep)
  results = synthetic_results()
  plots.write_comparison_plots(results, tmp_path)
  for s, front in frontier.fronts_by_stragglers(results["results"]).items():
    expected = sorted((r["compute_per_query"], r["accuracy_mean"]) for r in front)
    got = rings[f"S = {s}"]
    assert len(got) == len(expected)
    assert [v for point in got for v in point] == pytest.approx(
        [v for point in expected for v in point])


def test_plots_of_a_single_s_and_no_learned_code(tmp_path):
  results = synthetic_results(stragglers=(1,))
  results["results"] = [r for r in results["results"] if r["kind"] != "learned"]
  written = plots.write_comparison_plots(results, tmp_path)
  assert set(written) == EXPECTED - {"accuracy_vs_threshold.png"}


@pytest.mark.parametrize("values, expected", [
    ([0.5, 0.9], (0.468, 0.932)),
    ([0.9, 0.9], (0.8884, 0.9116)),  # equal values: a min_span window around them, padded
    ([0.0, 1.0], (0.0, 1.0)),  # clipped to [0, 1]
    ([], (0.0, 1.0)),
])
def test_zoomed_limits(values, expected):
  assert plots.zoomed_limits(values) == pytest.approx(expected)
