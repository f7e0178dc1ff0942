#!/usr/bin/env bash
# A prepared accelerator check: short, bounded runs of the project's three heavy paths, one table.
#
#   bash bench/device_check.sh [OUTDIR]            # on a GPU machine: under 8 minutes
#   bash bench/device_check.sh --smoke [OUTDIR]    # the same path on a CPU in about a minute (tests)
#
# 1. Makes sure JAX sees the accelerator: where nvidia-smi lists a GPU but JAX has no GPU
#    backend, installs the jax[cudaNN] wheel matching the driver's CUDA major version and the
#    installed jax version (PIP_ARGS passes extra pip arguments, e.g. "--no-index --find-links
#    .whl" on a machine without a registry); installs the project (pip install -e .) if
#    jaxcoded does not import.
# 2. Trains the comparison's base classifier briefly (train/train.py): steps/s, and MFU from
#    models.flops_per_example (3 x forward FLOPs x batch per step, against PEAK_TFLOPS or the
#    device's dense TF32 peak, JAX's default float32 matmul precision on recent NVIDIA GPUs).
# 3. Trains the comparison's learned code briefly (train/train.py): steps/s.
# 4. Runs the comparison's evaluation (eval/evaluate.py) on a bounded number of groups and masks,
#    with mesh_devices set to the device count; its other trained parts (ParM, a second learned
#    code) are trained inside it for a few steps, and reuse the base and the code of 2 and 3.
#
# Full mode uses the Fashion-MNIST comparison (configs/eval_fmnist.py:k8; DATA_DIR names the
# folder of its files, else the default places of jaxcoded.data) and falls back to the digits
# comparison, saying so, when Fashion-MNIST cannot be loaded; BASE_STEPS, LEARNED_STEPS,
# PART_STEPS, NUM_GROUPS and MASKS override its sizes. --smoke uses configs/eval_digits.py with
# tiny step counts. Every phase runs under `timeout`, so the whole script ends in time even
# if one hangs; a failed phase is reported in the table and makes the exit status 1.
# Writes OUTDIR/device_check.md (default /tmp/jaxcoded-device-check) and prints it.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
MODE=full
OUT=/tmp/jaxcoded-device-check
for arg in "$@"; do
  case "$arg" in
    --smoke) MODE=smoke ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) OUT="$arg" ;;
  esac
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # configs/ from this checkout
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET_S=440  # the phases' share of the 8 minutes; the report and the install take the rest

mkdir -p "$OUT"
rm -rf "$OUT/base" "$OUT/learned" "$OUT/eval" "$OUT/phases.tsv"
: > "$OUT/phases.tsv"
echo "device check ($MODE) -> $OUT, python $PYTHON"

# -- 1. JAX on the accelerator, and the project ---------------------------------------------
NOTES=""
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  if ! "$PYTHON" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
    cuda=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n 1)
    if [ "${cuda:-12}" -ge 13 ]; then extra=cuda13; else extra=cuda12; fi
    version=$("$PYTHON" -c "import jax; print(jax.__version__)" 2>/dev/null || true)
    wheel="jax[$extra]${version:+==$version}"
    echo "a GPU is visible but JAX has no GPU backend: pip install $wheel"
    # shellcheck disable=SC2086
    if ! "$PYTHON" -m pip install -q ${PIP_ARGS:-} -U "$wheel"; then
      echo "error: could not install $wheel (no registry? carry the wheels, PIP_ARGS=...)" >&2
      exit 2
    fi
    NOTES="installed $wheel"
  fi
fi
DEVICES=$("$PYTHON" -c "import jax, jaxcoded; print(jax.device_count())" 2>/dev/null)
if [ -z "$DEVICES" ]; then
  echo "jaxcoded does not import: pip install -e $ROOT"
  # shellcheck disable=SC2086
  "$PYTHON" -m pip install -q ${PIP_ARGS:-} -e "$ROOT" || { echo "error: install failed" >&2; exit 2; }
  DEVICES=$("$PYTHON" -c "import jax, jaxcoded; print(jax.device_count())") || exit 2
fi

# -- The bounded configs: derived from the comparison's own config ----------------------------
if [ "$MODE" = smoke ]; then
  EVAL_MODULE=eval_digits; VARIANT=None
  BASE_STEPS=30; LEARNED_STEPS=20; PART_STEPS=10; NUM_GROUPS=6; MASKS=3
  # Fewer compilations: S = 0, 1 and the first scheme of each kind below (one learned code).
  STRAGGLERS="(0, 1)"; KINDS='("uncoded", "berrut", "parm", "learned")'
  BASE_T=90; LEARNED_T=90; EVAL_T=150
else
  # The sizes can be overridden from the environment (e.g. a longer run on a fast device).
  BASE_STEPS=${BASE_STEPS:-1000}; LEARNED_STEPS=${LEARNED_STEPS:-500}; PART_STEPS=${PART_STEPS:-200}
  NUM_GROUPS=${NUM_GROUPS:-250}; MASKS=${MASKS:-8}
  STRAGGLERS=None; KINDS=None
  BASE_T=80; LEARNED_T=100; EVAL_T=260  # compilation dominates the evaluation
  if "$PYTHON" -c "
import os
from jaxcoded import data
data.load('fashion_mnist', 'test', seed=None, data_dir=os.environ.get('DATA_DIR') or None)
" >/dev/null 2>&1; then
    EVAL_MODULE=eval_fmnist; VARIANT="'k8'"
  else
    EVAL_MODULE=eval_digits; VARIANT=None
    NOTES="${NOTES:+$NOTES; }Fashion-MNIST not found (DATA_DIR): the digits comparison instead"
  fi
fi
MESH=$(( DEVICES > 1 ? DEVICES : 0 ))

cat > "$OUT/check_configs.py" <<EOF
"""The device check's configs (written by bench/device_check.sh): base, learned, eval."""
import os
import ml_collections
from configs import $EVAL_MODULE

OUT = "$OUT"
STRAGGLERS = $STRAGGLERS  # None: the comparison's own
KINDS = $KINDS  # None: every scheme; else the first scheme of each of these kinds


def _shrink(config, steps, final_eval=False):
  config.num_steps = steps
  if "warmup_steps" in config:
    config.warmup_steps = min(config.warmup_steps, max(1, steps // 10))
  config.log_every = max(1, steps // 5)
  config.eval_every = steps if final_eval else 0
  config.checkpoint_every = steps
  if "eval_num_masks" in config:  # a learned code's own evaluation after training
    config.eval_num_masks = 2
    config.eval_max_groups = $NUM_GROUPS
  config.progress_bar = False
  if os.environ.get("DATA_DIR") and "data_dir" in config:
    config.data_dir = os.environ["DATA_DIR"]


def _eval():
  config = $EVAL_MODULE.get_config($VARIANT)
  if os.environ.get("DATA_DIR"):
    config.data_dir = os.environ["DATA_DIR"]
  _shrink(config.base, $BASE_STEPS, final_eval=True)
  config.base_workdir = OUT + "/base"
  config.max_groups = $NUM_GROUPS
  config.mesh_devices = $MESH
  config.masks.num_random = $MASKS
  config.masks.exhaustive_limit = $MASKS
  config.masks.deadline.num_masks = $MASKS
  if STRAGGLERS is not None:
    config.stragglers = STRAGGLERS
  ordered = sorted(config.schemes, key=lambda name: config.schemes[name].position)
  if KINDS is not None:
    firsts = {}
    for name in ordered:
      firsts.setdefault(config.schemes[name].kind, name)
    for name in ordered:
      if firsts.get(config.schemes[name].kind) != name or config.schemes[name].kind not in KINDS:
        del config.schemes[name]
  learned = [name for name in ordered if name in config.schemes
             and config.schemes[name].kind == "learned"]
  for name, entry in config.schemes.items():
    if entry.get("config") is not None:
      _shrink(entry.config, $PART_STEPS)
  config.schemes[learned[0]].workdir = OUT + "/learned"  # the code of the "learned" phase
  return config


def _learned(config):
  name = next(n for n, e in config.schemes.items() if e.get("workdir") == OUT + "/learned")
  part = ml_collections.ConfigDict(config.schemes[name].config.to_dict())
  part.task = "coder"
  part.num_queries = config.num_queries
  part.base = ml_collections.ConfigDict(config.base.to_dict())
  part.base_workdir = config.base_workdir
  _shrink(part, $LEARNED_STEPS)
  return part


def get_config(variant):
  config = _eval()
  if variant == "base":
    return config.base
  if variant == "learned":
    return _learned(config)
  return config
EOF

# -- Phases, each under a timeout ---------------------------------------------------------------
phase() {  # phase NAME SECONDS COMMAND...: runs it, logs to OUT/NAME.log, records rc and seconds
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET_S - ($(date +%s) - START) ))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt 5 ]; then
    printf '%s\t124\t0\n' "$name" >> "$OUT/phases.tsv"
    echo "$name: skipped, no time left"
    return
  fi
  echo "$name: $* (at most ${limit} s)"
  local t0 rc
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local seconds
  seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$name" "$rc" "$seconds" >> "$OUT/phases.tsv"
  if [ "$rc" -ne 0 ]; then echo "$name: failed (exit $rc), last lines of $OUT/$name.log:"; tail -n 15 "$OUT/$name.log"; fi
}

phase base "$BASE_T" "$PYTHON" train/train.py --config "$OUT/check_configs.py:base" --workdir "$OUT/base"
phase learned "$LEARNED_T" "$PYTHON" train/train.py --config "$OUT/check_configs.py:learned" \
  --workdir "$OUT/learned"
phase eval "$EVAL_T" "$PYTHON" eval/evaluate.py --config "$OUT/check_configs.py:eval" \
  --workdir "$OUT/eval" --noprogress

# -- The table ----------------------------------------------------------------------------------
NOTES="$NOTES" MODE="$MODE" START="$START" MESH="$MESH" "$PYTHON" - "$OUT" <<'EOF'
import json, os, pathlib, platform, statistics, sys, time

import jax
from absl import logging

from jaxcoded import models, training

logging.set_verbosity(logging.WARNING)
out = pathlib.Path(sys.argv[1])
phases = {}
for line in (out / "phases.tsv").read_text().splitlines():
  name, rc, seconds = line.split("\t")
  phases[name] = (int(rc), float(seconds))
device = jax.devices()[0]
kind = device.device_kind
# Dense TF32 peaks (JAX's default float32 matmul precision on these GPUs), TFLOP/s.
PEAKS = {"H200": 494.7, "H100": 494.7, "A100": 156.0, "L4": 60.0, "A10": 62.5}
peak = float(os.environ["PEAK_TFLOPS"]) if os.environ.get("PEAK_TFLOPS") else next(
    (value for key, value in PEAKS.items() if key in kind), None)
peak_note = (f"PEAK_TFLOPS={peak:g}" if os.environ.get("PEAK_TFLOPS")
             else f"{peak:g} TFLOP/s dense TF32" if peak else "no known peak (PEAK_TFLOPS)")


def status(name):
  rc, seconds = phases.get(name, (None, 0.0))
  if rc is None:
    return "not run", seconds
  if rc == 0:
    return "ok", seconds
  return ("timed out" if rc in (124, 137) else f"failed (exit {rc}), see {name}.log"), seconds


def steps_per_second(workdir):
  records = [r for r in training.read_metrics(workdir) if "steps_per_second" in r]
  rates = [r["steps_per_second"] for r in records]
  steady = rates[1:] or rates  # the first record includes compilation
  return statistics.median(steady), records[-1]["step"]


rows = []
state, seconds = status("base")
try:
  config = json.loads((out / "base" / training.CONFIG_FILE).read_text())
  rate, steps = steps_per_second(out / "base")
  model, _ = training.load_model(out / "base")
  shape = tuple(models.INPUT_SHAPES[config["model"]])
  flops = models.flops_per_example(model, shape)
  tflops = 3 * flops * config["batch_size"] * rate / 1e12
  mfu = f"{100 * tflops / peak:.3f}%" if peak else "—"
  rows.append([f"base classifier ({config['model']}, {config['dataset']})",
               f"{steps} steps, batch {config['batch_size']}, {flops:,} FLOPs/example forward",
               f"{seconds:.1f}", f"{rate:.1f}", f"{tflops:.4f}", mfu, state])
except Exception as error:  # pylint: disable=broad-except
  rows.append(["base classifier", "—", f"{seconds:.1f}", "—", "—", "—", f"{state}; {error}"])
state, seconds = status("learned")
try:
  config = json.loads((out / "learned" / training.CONFIG_FILE).read_text())
  rate, steps = steps_per_second(out / "learned")
  report = json.loads((out / "learned" / "results.json").read_text())
  rows.append([f"learned code ({config['scheme']}, {config['dataset']})",
               f"{steps} steps, K = {report['num_queries']}, N = {report['num_workers']}, "
               f"R = {report['recovery_threshold']}", f"{seconds:.1f}", f"{rate:.1f}", "—", "—",
               state])
except Exception as error:  # pylint: disable=broad-except
  rows.append(["learned code", "—", f"{seconds:.1f}", "—", "—", "—", f"{state}; {error}"])
state, seconds = status("eval")
try:
  results = json.loads((out / "eval" / "results.json").read_text())
  schemes = sorted({r["scheme"] for r in results["results"]})
  masks = sum(r.get("num_masks", 0) for r in results["results"])
  mesh = int(os.environ["MESH"])
  rows.append([f"comparison evaluation ({results['config']['dataset']}, K = {results['num_queries']})",
               f"{results['num_groups']} groups, {len(schemes)} schemes, {masks} (scheme, S, mask) "
               f"triples, mesh_devices = {mesh}", f"{seconds:.1f}", "—", "—", "—",
               f"{state}; its own clock {results['seconds']:.1f} s, incl. training ParM and "
               "other parts briefly"])
except Exception as error:  # pylint: disable=broad-except
  rows.append(["comparison evaluation", "—", f"{seconds:.1f}", "—", "—", "—", f"{state}; {error}"])

header = ["check", "what ran", "wall s", "steps/s", "model TFLOP/s", "MFU", "status"]
lines = [
    f"Device check ({os.environ['MODE']} mode), {time.strftime('%Y-%m-%d %H:%M %Z')}: "
    f"{jax.device_count()} x {kind} ({jax.default_backend()}), jax {jax.__version__}; host "
    f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
    f"MFU against {peak_note}; total {time.time() - float(os.environ['START']):.0f} s.",
]
if os.environ.get("NOTES"):
  lines.append(f"Notes: {os.environ['NOTES']}.")
lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
lines += ["| " + " | ".join(row) + " |" for row in rows]
table = "\n".join(lines) + "\n"
(out / "device_check.md").write_text(table)
print("\n" + table)
sys.exit(0 if all(rc == 0 for rc, _ in phases.values()) and len(phases) == 3 else 1)
EOF
