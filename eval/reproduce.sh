#!/usr/bin/env bash
# Reproduces the Fashion-MNIST comparison from scratch: trains the base LeNet-5,
# the ParM parity model and the learned codes, then evaluates every scheme at
# S = 0..3 stragglers on shared masks (configs/eval_fmnist.py).
#
#   bash eval/reproduce.sh [--full] [WORKDIR]      (default WORKDIR: /tmp/jaxcoded-reproduce)
#
# CPU scale (default): K = 8, about 18 minutes on a 2-core CPU (3 of them evaluating).
# --full: K = 8, 10 and 12 with longer learned-code training and more masks
# (the paper-sized run; hours on a CPU, minutes on a GPU).
# The base classifier is trained once into WORKDIR/base and shared. Reruns
# reuse whatever finished; an interrupted run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
variants=(k8)
if [[ "${1:-}" == "--full" ]]; then
  variants=(k8_full k10_full k12_full)
  shift
fi
workdir="${1:-/tmp/jaxcoded-reproduce}"
python="${PYTHON:-python}"
mkdir -p "$workdir"
for variant in "${variants[@]}"; do
  echo "=== configs/eval_fmnist.py:$variant -> $workdir/$variant"
  "$python" eval/evaluate.py --config "configs/eval_fmnist.py:$variant" \
    --workdir "$workdir/$variant" --config.base_workdir="$workdir/base" --noprogress
done
echo "Results: $workdir/<variant>/results.md and the PNG plots beside it."
