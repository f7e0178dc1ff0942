"""The comparison's Markdown reports (jaxcoded.comparison.report) on hand-made records."""

from jaxcoded.comparison import report


def _record(scheme, s, **overrides):
  record = dict(scheme=scheme, S=s, N=4 + s, R=4, redundancy=(4 + s) / 4, guaranteed=True,
                accuracy_mean=0.9, accuracy_std=0.01, accuracy_min=0.88, agreement_mean=0.95,
                degraded_accuracy=None, answered_mean=1.0, master_fraction=0.02,
                worker_fraction=1.0, compute_per_query=(4 + s) / 4 + 0.02, rmse_mean=1.5,
                decode_us_per_group=3.0, num_masks=4, masks_kind="all")
  record.update(overrides)
  return record


def _results(records):
  return dict(base=dict(model="m", accuracy=0.9), num_groups=3, num_queries=4, results=records)


def test_compact_table_rows_costs_and_straggler_filter():
  results = _results([_record("uncoded", 0, N=4, compute_per_query=1.0),
                      _record("Berrut", 2), _record("ParM", 2, guaranteed=False, rmse_mean=None)])
  lines = report.format_compact(results).splitlines()
  assert lines[0].startswith("| scheme | S | N | N/K | accuracy")
  assert len(lines) == 4  # header, rule, two rows: S = 0 is left out by default
  assert lines[2] == ("| Berrut | 2 | 6 | 1.50 | 0.900 ± 0.010 | 0.950 | 1.500 | 2.0% | 1.00 "
                      "| **1.52** |")
  assert lines[3].startswith("| ParM (beyond S_max) | 2 |") and "| — |" in lines[3]
  only_zero = report.format_compact(results, (0,)).splitlines()
  assert len(only_zero) == 3 and only_zero[2].startswith("| uncoded | 0 | 4 |")


def test_full_report_lists_fitted_settings():
  settings = dict(smoothing="fitted", encoder_smoothing=3.1622776e-06, fit_masks=16)
  text = report.format_results(_results([_record("spline", 1, settings=settings)]))
  assert "Chosen settings" in text
  assert "| spline | 1 | 5 | smoothing = fitted, encoder_smoothing = 3.16e-06, fit_masks = 16 |" in text
