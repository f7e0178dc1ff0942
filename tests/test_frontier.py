"""Tests of jaxcoded/comparison/frontier.py: the per-S Pareto front of (compute, accuracy)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcoded.comparison import frontier


def brute_force_front(costs, accuracies):
  """O(n^2) float64 reference: i is on the front iff no j dominates it (written out in full)."""
  front = []
  for i in range(len(costs)):
    dominated = False
    for j in range(len(costs)):
      no_worse = costs[j] <= costs[i] and accuracies[j] >= accuracies[i]
      better = costs[j] < costs[i] or accuracies[j] > accuracies[i]
      if j != i and no_worse and better:
        dominated = True
    if not dominated:
      front.append(i)
  return front


@pytest.mark.parametrize("n", [1, 2, 7, 40, 300])
@pytest.mark.parametrize("ties", [False, True])
def test_front_matches_brute_force_on_random_points(n, ties):
  rng = np.random.default_rng(1000 * n + ties)
  for _ in range(20):
    costs = rng.uniform(0.3, 4.0, n).astype(np.float64)
    accuracies = rng.uniform(0.0, 1.0, n).astype(np.float64)
    if ties:  # a coarse grid: many equal costs, equal accuracies and equal points
      costs, accuracies = np.round(costs * 2) / 2, np.round(accuracies * 4) / 4
    costs, accuracies = costs.tolist(), accuracies.tolist()
    got = frontier.pareto_front(costs, accuracies)
    assert sorted(got) == brute_force_front(costs, accuracies)
    assert [costs[i] for i in got] == sorted(costs[i] for i in got)  # by rising cost


def test_ties_are_explicit():
  # Equal points: both kept. Same cost, lower accuracy: dominated. Same accuracy, higher cost:
  # dominated. A lower-cost point with the same accuracy dominates the costlier one.
  costs = [1.0, 1.0, 1.0, 2.0, 2.0, 3.0]
  accuracies = [0.8, 0.8, 0.7, 0.8, 0.9, 0.9]
  assert frontier.pareto_front(costs, accuracies) == [0, 1, 4]
  assert not frontier.dominates((1.0, 0.8), (1.0, 0.8))
  assert frontier.dominates((1.0, 0.8), (1.0, 0.7))
  assert frontier.dominates((1.0, 0.8), (2.0, 0.8))
  assert not frontier.dominates((1.0, 0.7), (2.0, 0.8))


def test_front_edge_cases_and_bad_input():
  assert frontier.pareto_front([], []) == []
  assert frontier.pareto_front([2.0, 1.0], [0.5, 0.5]) == [1]
  with pytest.raises(ValueError, match="2 costs but 1 accuracies"):
    frontier.pareto_front([1.0, 2.0], [0.5])
  with pytest.raises(ValueError, match="not finite"):
    frontier.pareto_front([1.0, float("nan")], [0.5, 0.6])


def _record(scheme, s, cost, accuracy, n=9, r=8, guaranteed=True):
  return dict(scheme=scheme, S=s, N=n, R=r, compute_per_query=cost, accuracy_mean=accuracy,
              accuracy_std=0.01, master_fraction=0.05, worker_fraction=1.0,
              guaranteed=guaranteed)


def test_fronts_by_stragglers_and_table():
  records = [
      _record("Berrut", 1, 1.14, 0.75), _record("learned R=3", 1, 0.51, 0.88, n=4, r=3),
      _record("replication", 1, 2.0, 0.906, n=16), _record("learned R=7", 1, 1.18, 0.87, r=7),
      _record("uncoded", 0, 1.0, 0.906, n=8), _record("learned R=3", 0, 0.40, 0.88, n=3, r=3),
      _record("ParM", 2, 1.13, 0.70, guaranteed=False), _record("Berrut", 2, 1.27, 0.74),
  ]
  fronts = frontier.fronts_by_stragglers(records)
  assert list(fronts) == [0, 1, 2]
  assert [r["scheme"] for r in fronts[0]] == ["learned R=3", "uncoded"]
  assert [r["scheme"] for r in fronts[1]] == ["learned R=3", "replication"]
  assert [r["scheme"] for r in fronts[2]] == ["ParM", "Berrut"]
  assert frontier.on_front(records) == [False, True, True, False, True, True, True, True]

  table = frontier.format_front_table(dict(results=records))
  lines = table.strip().split("\n")
  assert lines[0].startswith("| S | scheme | N | R | compute / query | accuracy")
  assert len(lines) == 2 + 6  # header, rule, one row per front point
  assert "| 1 | learned R=3 | 4 | 3 | **0.51** | 0.880 ± 0.010 |" in table
  assert "ParM (beyond S_max)" in table
  assert "| 2 of 3 |" in table  # learned R=3 at S = 1 dominates Berrut and learned R=7
  only = frontier.format_front_table(dict(results=records), stragglers=[2])
  assert "learned R=3" not in only and only.count("\n") == 4


def test_frontier_config_deploys_every_threshold_twice():
  from configs import eval_fmnist_equal, eval_fmnist_frontier  # pylint: disable=g-import-not-at-top
  from jaxcoded.comparison import scheme_names  # pylint: disable=g-import-not-at-top

  config = eval_fmnist_frontier.get_config()
  config.coders_dir = "/somewhere"  # a command-line override reaches every entry
  assert tuple(config.stragglers) == (0, 1, 2, 3)
  names = scheme_names(config)
  assert [config.schemes[n].position for n in names] == list(range(len(names)))
  equal = eval_fmnist_equal.get_config("k8")
  assert set(equal.schemes) - {"learned polynomial"} <= set(names)
  learned = [n for n in names if n.startswith("learned polynomial R=")]
  assert len(learned) == 6
  for threshold, module in eval_fmnist_frontier.SWEEP.items():
    training = module.get_config()
    assert training.encoder_degree * training.power**training.num_activations + 1 == threshold
    for where, deploy_at in (("K + S", "k_plus_s"), ("R + S", "r_plus_s")):
      entry = config.schemes[f"learned polynomial R={threshold} (N = {where})"]
      assert entry.deploy_at == deploy_at
      assert entry.workdir == f"/somewhere/coder_k8_r{threshold}"
      assert (entry.worker_budget, entry.master_budget) == (1.1, 0.10)
