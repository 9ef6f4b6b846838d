#!/usr/bin/env bash
# Runs the benchmark suite from the repository root, writing one JSON per benchmark.
#
#   benchmarks/run_all.sh            reduced sizes (--quick), a few minutes on a 2-core CPU
#   benchmarks/run_all.sh --full     the full sizes of benchmarks/README.md
#
# The JSON files go to $BENCH_RESULTS (default benchmarks/results). No installation is needed:
# the package is taken from the repository (PYTHONPATH=.). On a machine with one accelerator the
# same command runs there (JAX picks the GPU or TPU); set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="--quick"
if [[ "${1:-}" == "--full" ]]; then mode=""; fi
out="${BENCH_RESULTS:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python}"
for name in theory curation sweep scaling study reward_models ecosystem table; do
  echo "== bench_$name ${mode}"
  "$py" "benchmarks/bench_$name.py" $mode --json "$out/$name.json"
done
