#!/usr/bin/env bash
# Device check: the flagship scan (sweep against a loop of jitted runs at 64 configurations, and
# the sweep's throughput up to 4,096), curation up to 10^8 candidates and the exact curated map up
# to 10^7 states, with compile time apart, and a profile of the sweep against the loop. Made for
# one accelerator and at most 8 minutes; every section stops growing its sizes when its time runs
# short and is stopped from outside at its cap, keeping what it measured.
#
#   benchmarks/device_check.sh [--smoke] [OUTDIR]
#
# Run from anywhere (it works in the repository root with PYTHONPATH=.: no installation, no
# network). The JSON files go to OUTDIR, else $OUT, else benchmarks/results/device:
# flagship.json, profile.json (and trace/, a jax.profiler trace, when the profiler works),
# curation.json, theory.json and device_check.json (the headline figures and each section's exit
# status). --smoke: tiny sizes, seconds on a CPU. DEVICE_CHECK_BUDGET_S (default 450) is the
# whole run's budget in seconds; PYTHON chooses the interpreter.
set -uo pipefail
smoke=""
outdir=""
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke="--smoke" ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "device_check.sh: unknown option $arg" >&2; exit 2 ;;
    *) outdir="$arg" ;;
  esac
done
root="$(cd "$(dirname "$0")/.." && pwd)"
outdir="${outdir:-${OUT:-$root/benchmarks/results/device}}"
mkdir -p "$outdir" || exit 2
outdir="$(cd "$outdir" && pwd)"  # a relative OUTDIR is taken from the caller's folder
cd "$root" || exit 2
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python}"
command -v "$py" >/dev/null 2>&1 || py=python3
budget="${DEVICE_CHECK_BUDGET_S:-450}"
start=$SECONDS
statuses=()
failed=0

# run_section NAME SHARE: at most SHARE seconds, and never past the whole budget (30 s are kept
# for the summary). The section's own budget leaves 15 s for its start and its last write.
run_section() {
  local name=$1 share=$2
  local left=$((budget - (SECONDS - start) - 30))
  local cap=$((share < left ? share : left))
  if ((cap < 20)); then
    echo "== $name: skipped, ${left} s left of the budget"
    statuses+=("$name=skipped")
    return
  fi
  echo "== $name (cap ${cap} s)"
  local t0=$SECONDS
  if command -v timeout >/dev/null 2>&1; then
    timeout -k 5 "$cap" "$py" benchmarks/bench_device.py --section "$name" --out "$outdir" \
      --budget-s $((cap - 15)) $smoke
  else
    "$py" benchmarks/bench_device.py --section "$name" --out "$outdir" \
      --budget-s $((cap - 15)) $smoke
  fi
  local rc=$?
  echo "== $name: exit status $rc, $((SECONDS - t0)) s"
  statuses+=("$name=$rc")
  # 124 / 137: stopped at the cap, with what it measured written
  if ((rc != 0 && rc != 124 && rc != 137)); then failed=1; fi
}

if [[ -n "$smoke" ]]; then
  run_section flagship 120
  run_section curation 60
  run_section theory 60
else
  run_section flagship 240
  run_section curation 80
  run_section theory 80
fi
limit=""
if command -v timeout >/dev/null 2>&1; then limit="timeout -k 5 30"; fi
$limit "$py" benchmarks/bench_device.py --section summary --out "$outdir" \
  --total-s $((SECONDS - start)) --status "${statuses[@]}" $smoke || failed=1
echo "== device check: $((SECONDS - start)) s, results in $outdir"
exit $failed
