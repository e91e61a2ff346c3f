#!/usr/bin/env bash
# Reproduces the numbers quoted in the README, one run at a time (two PyTorch processes on a 2-core
# machine slow each other down badly, so runs are never overlapped).
#
#   bash benchmark.sh pendulum   # TD3 and SAC on Pendulum-v1, seeds 1 2 3, 20k steps each   (~12 min on 2 cores)
#   bash benchmark.sh hopper     # TD3 and SAC on Hopper-v5, seed 1, 100k steps each         (~25 min on 2 cores)
#   bash benchmark.sh summary    # the table of what is under runs/benchmark/
#
# Runs are written to runs/<env>__bench_<algo>__<seed>__<time>/; PYTHON defaults to .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}

run() {  # run ALGO ENV SEED STEPS [FLAGS...]
  local algo=$1 env=$2 seed=$3 steps=$4
  shift 4
  echo "== $algo $env seed $seed, $steps steps: $(date -u +%FT%TZ)"
  "$PYTHON" "${algo}_continuous.py" --env-id "$env" --seed "$seed" --total-timesteps "$steps" \
    --exp-name "bench_${algo}" --no-cuda "$@"
}

summary() {
  "$PYTHON" - <<'PY'
import glob, statistics
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
print("| run | steps | final eval return | steady steps/s (median of logged SPS after the first 10%) |")
print("|---|---|---|---|")
for run_dir in sorted(glob.glob("runs/*__bench_*")):
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0}); events.Reload()
    tags = events.Tags()["scalars"]
    if "eval/episodic_return" not in tags:
        continue
    evals = events.Scalars("eval/episodic_return")
    last = evals[-1].step
    steady = [e.value for e in events.Scalars("charts/SPS") if e.step > 0.1 * last] if "charts/SPS" in tags else []
    speed = f"{statistics.median(steady):.0f}" if steady else "n/a"
    print(f"| {run_dir.split('runs/')[1]} | {last} | {evals[-1].value:.1f} | {speed} |")
PY
}

case "${1:-}" in
  pendulum)
    for seed in 1 2 3; do
      for algo in td3 sac; do run "$algo" Pendulum-v1 "$seed" 20000 --learning-starts 1000 --eval-frequency 5000; done
    done ;;
  hopper)
    for algo in td3 sac; do run "$algo" Hopper-v5 1 100000 --eval-frequency 10000; done ;;
  summary) summary ;;
  *) echo "usage: bash benchmark.sh {pendulum|hopper|summary}" >&2; exit 2 ;;
esac
