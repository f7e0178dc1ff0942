#!/usr/bin/env bash
# Reproduces the Fashion-MNIST comparison from scratch: trains the base LeNet-5,
# the ParM parity model and the learned codes, then evaluates every scheme at
# S = 0..3 stragglers on shared masks (configs/eval_fmnist.py).
#
#   bash eval/reproduce.sh [--full | --equal | --frontier] [WORKDIR]
#   (default WORKDIR: /tmp/jaxcoded-reproduce)
#
# CPU scale (default): K = 8, about 18 minutes on a 2-core CPU (3 of them evaluating).
# --full: K = 8, 10 and 12 with longer learned-code training and more masks
# (the paper-sized run; hours on a CPU, minutes on a GPU).
# --equal: the equal-resource tables of the README (configs/eval_fmnist_equal.py, K = 8 and 12:
# every coded scheme at N = K + S, learned codes trained once and redeployed; worker <= 1.1x f,
# master <= 10%). From scratch 1 h 40 min end to end on this 2-core CPU, shared (2026-12-02);
# re-evaluating trained parts 7 min (K = 8) and 16 min (K = 12), most of it the spline fits.
# The README's tables: python eval/tables.py WORKDIR/eval_fmnist_equal_k8/results.json.
# --frontier: the accuracy-against-cost frontier (configs/eval_fmnist_frontier.py, K = 8, S = 0..3):
# the equal-resource schemes plus the learned polynomial code at R = 3, 5, 7, each trained once into
# WORKDIR/coders/coder_k8_r<R> and deployed at N = K + S and at N = R + S. Training the three codes
# takes about 3 x 10,000 steps on top of --equal's parts. The README's front table:
# python eval/tables.py --frontier WORKDIR/eval_fmnist_frontier_k8/results.json; --frontier copies
# the results to docs/results/fmnist_frontier_k8.{json,md} (and the plot to docs/figures/).
# The base classifier is trained once into WORKDIR/base and shared. Reruns
# reuse whatever finished; an interrupted run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
variants=(k8)
config=configs/eval_fmnist.py
extra=()
if [[ "${1:-}" == "--full" ]]; then
  variants=(k8_full k10_full k12_full)
  shift
elif [[ "${1:-}" == "--equal" ]]; then
  config=configs/eval_fmnist_equal.py
  variants=(k8 k12)
  shift
elif [[ "${1:-}" == "--frontier" ]]; then
  config=configs/eval_fmnist_frontier.py
  variants=(k8)
  frontier=1
  shift
fi
workdir="${1:-/tmp/jaxcoded-reproduce}"
if [[ -n "${frontier:-}" ]]; then
  extra=(--config.coders_dir="$workdir/coders")
fi
python="${PYTHON:-python}"
mkdir -p "$workdir"
for variant in "${variants[@]}"; do
  name="$(basename "$config" .py)_$variant"
  echo "=== $config:$variant -> $workdir/$name"
  "$python" eval/evaluate.py --config "$config:$variant" \
    --workdir "$workdir/$name" --config.base_workdir="$workdir/base" --noprogress \
    ${extra[@]+"${extra[@]}"}
done
if [[ -n "${frontier:-}" && -f "$workdir/eval_fmnist_frontier_k8/results.json" ]]; then
  # The committed results of the frontier: docs/results/fmnist_frontier_k8.{json,md} and its plot.
  cp "$workdir/eval_fmnist_frontier_k8/results.json" docs/results/fmnist_frontier_k8.json
  cp "$workdir/eval_fmnist_frontier_k8/results.md" docs/results/fmnist_frontier_k8.md
  mkdir -p docs/figures
  cp "$workdir/eval_fmnist_frontier_k8/accuracy_vs_compute.png" \
    docs/figures/fmnist_frontier_k8_accuracy_vs_compute.png
  echo "Copied to docs/results/fmnist_frontier_k8.{json,md} and docs/figures/; the front table:"
  "$python" eval/tables.py --frontier docs/results/fmnist_frontier_k8.json
fi
echo "Results: $workdir/<config>_<variant>/results.md and the PNG plots beside it."
