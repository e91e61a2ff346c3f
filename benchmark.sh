#!/usr/bin/env bash
# Benchmarks TD3 and SAC: a grid of algorithms × env ids × seeds, run on this machine (--workers at a time) or
# submitted as a Slurm job array, then one table and one figure per grid. benchmarks/grid.py decides which
# runs to make, with which commands and folders, and which are already done; this script only runs the pool.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash benchmark.sh COMMAND [options]

commands:
  quick [options]     Pendulum-v1 and InvertedPendulum-v5 (20k steps), Hopper-v5 (50k steps);
                      td3 and sac, seeds 1 2 3 (about an hour on a 2-core laptop)
  medium [options]    HalfCheetah, Hopper, Walker2d and Ant v5 at 300k steps, td3 and sac, seeds 1-5, and
                      Stable-Baselines3's TD3 and SAC (sb3-td3, sb3-sac) with seed 1; Humanoid-v5 at 300k steps,
                      td3 and sac, seeds 1-3; each finished run's result goes to docs/benchmarks/medium/ too, to
                      commit (about 35 hours with --workers 2 on 2 cores)
  full [options]      HalfCheetah, Hopper, Walker2d, Ant and Humanoid v5 at 1M steps; td3 and sac, seeds 1-5
  grid --algos "td3 sac" --envs "Hopper-v5 ..." --seeds "1 2 3" --steps N [--flags "..."] [options]
                      your own grid; --flags are added to every run's command
  aggregate runs/grid/NAME | docs/benchmarks/NAME [--out DIR]
                      results.md (final eval return per env and algorithm: mean ± std over seeds, IQM with a
                      95% bootstrap CI, each seed; where and when each run ran) and curves.png (learning
                      curves), into DIR (default: NAME's folder)
  videos docs/benchmarks/NAME [--seed K] [--missing]
                      an animated WebP (about 4 s, 240 px wide, under 1 MB) of seed K's final actor (default 1) for
                      each env and algorithm, recorded with --checkpoint ... --capture-video (benchmarks/videos.py);
                      --missing: only those not recorded yet
  speed [args]        training-speed measurements against Stable-Baselines3 (and, with --cleanrl PATH to a
                      CleanRL checkout, CleanRL): benchmarks/speed.py --help

options of quick, medium, full and grid:
  --workers N         runs in parallel on this machine (default 1); each gets max(1, cores / N) torch threads
  --name NAME         the grid's folder runs/grid/NAME/ (default: the preset's name, or custom for grid)
  --max-runs N        only the first N runs still to do, in the grid's order (to fit a time window);
                      the same command again goes on with the next ones
  --dry-run           print the commands, finished runs marked as skipped, and do nothing else
  --slurm             write a Slurm job array (one task per unfinished run) to runs/grid/NAME/slurm/job.sh and
                      submit it with sbatch; with --dry-run, print the script and the sbatch command instead
      --partition P  --account A  --time D-HH:MM:SS (24:00:00)  --cpus-per-task N (2)  --mem M (8G)
      --gpus N (0)   --max-parallel K (at most K array tasks at once)

Each run lives in runs/grid/NAME/<env>/<algo>/seed<k>/: its TensorBoard logs, train.log (its output) and DONE
once it finished (the command, start and end time, wall seconds). The same command again skips finished runs,
continues interrupted ones from their saved training state (--resume) and restarts the others from scratch.
A run in progress in another process (a second pool, a Slurm task) is left alone: its lock is held.
A grid that commits its results (medium) also writes each finished run's result.json (command, commit,
versions, machine, times, curves) and actor.pt (the final actor) to docs/benchmarks/NAME/<env>/<algo>/seed<k>/
and counts a run whose result is there as finished. Stable-Baselines3 runs cannot resume: they start again.
A failed run does not stop the others; the exit status is 1 if any run failed, 130 after Ctrl-C. Slurm array
tasks are requeueable: 5 minutes before the time limit Slurm signals the task, the run saves and stops, and the
task requeues itself and resumes. Submit a Slurm grid again only once its earlier array has ended.
PYTHON (default .venv/bin/python if it exists, else python3) runs everything.
EOF
}

cd "$(dirname "$0")"
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

run_grid() {  # run_grid quick|full|grid [options]: the runs of the plan on this machine, --workers at a time
  local out plan count workers i
  out=$("$PYTHON" -m benchmarks.grid prepare --python "$PYTHON" "$@")
  read -r plan count workers <<<"$out"
  trap 'stop_workers "$plan"' INT TERM
  for ((i = 0; i < count; i++)); do
    while (($(jobs -pr | wc -l) >= workers)); do sleep 1; done  # polling, not `wait -n`: macOS ships bash 3.2
    "$PYTHON" -m benchmarks.grid run "$plan" "$i" &
  done
  wait
  trap - INT TERM
  local status=0
  "$PYTHON" -m benchmarks.grid summary "$plan" || status=$?
  rm -f "$plan"
  return "$status"
}

stop_workers() {  # Ctrl-C or SIGTERM: each worker passes one SIGTERM to its run and waits for it to end
  trap '' INT TERM
  echo "benchmark.sh: stopping the runs in progress" >&2
  local pids
  pids=$(jobs -pr)
  [[ -z $pids ]] || kill -TERM $pids 2>/dev/null || true
  wait || true
  "$PYTHON" -m benchmarks.grid summary "$1" || true
  rm -f "$1"
  exit 130
}

command=${1:-}
[[ $# -eq 0 ]] || shift
case $command in
  quick | medium | full | grid)
    mode=run
    for arg in "$@"; do
      case $arg in
        --slurm) mode=submit ;;
        --dry-run) [[ $mode == submit ]] || mode=list ;;
        -h | --help) usage; exit 0 ;;
      esac
    done
    case $mode in
      run) run_grid "$command" "$@" ;;
      *) exec "$PYTHON" -m benchmarks.grid "$mode" --python "$PYTHON" "$command" "$@" ;;
    esac ;;
  aggregate) exec "$PYTHON" -m benchmarks.aggregate "$@" ;;
  videos) exec "$PYTHON" -m benchmarks.videos "$@" ;;
  speed) exec "$PYTHON" benchmarks/speed.py "$@" ;;
  -h | --help) usage ;;
  "") usage >&2; exit 2 ;;
  *) echo "benchmark.sh: unknown command '$command' (see bash benchmark.sh --help)" >&2; exit 2 ;;
esac
