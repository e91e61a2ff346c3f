"""One finished run as a small result file: what ran, where, when, and what it scored.

    python -m benchmarks.results runs/grid/medium/Hopper-v5/sac/seed1 [--to docs/benchmarks/medium/Hopper-v5/sac/seed1]

A run folder holds TensorBoard event files (megabytes) and, with --save-model, a checkpoint with the critics
(about a megabyte); neither belongs in git. `export` writes what a results table, a learning curve and a video
need into result.json (a few kilobytes) and actor.pt (the final actor only: a checkpoint that
`<algo>_continuous.py --checkpoint actor.pt` evaluates and records), in the run folder and, for a grid whose
results are committed, in docs/benchmarks/<grid>/<env>/<algo>/seed<k>/ as well.

result.json: the command, the commit, package versions, the machine, start/end/wall time (from the DONE marker,
which records them when the run finishes; with each attempt's start, wall seconds and commit for a run that was
stopped and resumed), the evaluation curve (step, mean and std of the episodes' returns), the training episodes'
returns downsampled to at most TRAIN_POINTS points (each the mean of a run of consecutive episodes, at the step
where the last of them ended), and the final evaluation.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

RESULT = "result.json"
ACTOR = "actor.pt"
FORMAT = 1
TRAIN_POINTS = 300
EVAL_TAG, EVAL_STD_TAG, TRAIN_TAG = "eval/episodic_return", "eval/episodic_return_std", "charts/episodic_return"
PACKAGES = ("torch", "gymnasium", "mujoco", "numpy", "stable-baselines3")
# Printed by the run's own interpreter (a peer's virtual environment has other packages than this one)
VERSIONS = (
    "import importlib.metadata as m, json, platform, sys\n"
    "v = {'python': platform.python_version()}\n"
    "for p in sys.argv[1:]:\n"
    "    try: v[p] = m.version(p)\n"
    "    except m.PackageNotFoundError: pass\n"
    "print(json.dumps(v))"
)


class ExportError(Exception):
    """A finished run that cannot be exported (no evaluation logged, no checkpoint): reported in one line."""


# ----------------------------------------------------------------------------- what a run records when it finishes


def provenance(python: str, env: dict[str, str]) -> dict:
    """The commit, package versions and machine of a run that just finished (stored in its DONE marker); `env` is
    the environment the run had (its torch threads come from OMP_NUM_THREADS)."""
    versions = subprocess.run([python, "-c", VERSIONS, *PACKAGES],
                              capture_output=True, text=True, check=False)  # fmt: skip
    return {
        **git_state(),
        "versions": json.loads(versions.stdout) if versions.returncode == 0 else None,
        "machine": machine(env),
    }


def git_state() -> dict:
    """The commit checked out here and whether tracked files differ from it (both None outside a git repository)."""
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    return {
        "commit": git.stdout.strip() or None,
        "uncommitted_changes": bool(dirty.stdout.strip()) if git.returncode == 0 else None,
    }


def machine(env: dict[str, str]) -> dict:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        models = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = models[0].strip() if models else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "torch_threads": env.get("OMP_NUM_THREADS"), "system": platform.system()}


# ----------------------------------------------------------------------------- reading a run folder


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of a run's TensorBoard logs (the last value logged at a step wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415 (slow)

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def downsample(steps: list[int], values: list[float], points: int = TRAIN_POINTS) -> tuple[list[int], list[float]]:
    """At most `points` points: consecutive values split into equal runs, each the mean at its last step."""
    if len(steps) <= points:
        return list(steps), [float(v) for v in values]
    chunks = np.array_split(np.arange(len(steps)), points)
    return [int(steps[c[-1]]) for c in chunks], [float(np.mean(np.asarray(values)[c])) for c in chunks]


def build_result(run_dir: Path, grid: str, env_id: str, algo: str, seed: int) -> dict:
    done = json.loads((run_dir / "DONE").read_text())
    logged = scalars(run_dir)
    curve, stds = logged.get(EVAL_TAG), logged.get(EVAL_STD_TAG, {})
    if not curve:
        raise ExportError(f"{run_dir} logged no {EVAL_TAG}")
    train = logged.get(TRAIN_TAG, {})
    train_steps, train_returns = downsample(sorted(train), [train[s] for s in sorted(train)])
    train_returns = [round(r, 2) for r in train_returns]
    attempts = run_dir / "attempts"
    history = done.get("attempt_history")  # older DONE markers lack it, and their attempts files hold numbers only
    final = max(curve)
    return {
        "format": FORMAT,
        "grid": grid, "env_id": env_id, "algo": algo, "seed": seed,
        "command": done["command"],
        **{key: done.get(key) for key in ("commit", "uncommitted_changes", "versions", "machine", "host")},
        "start": done["start"], "end": done["end"], "wall_seconds": done["wall_seconds"],
        "attempts": len(history or attempts.read_text().split()) if attempts.exists() else 1,
        "attempt_history": history,
        "eval": {"steps": sorted(curve), "mean": [curve[s] for s in sorted(curve)],
                 "std": [stds.get(s) for s in sorted(curve)]},
        "train_episodes": {"count": len(train), "steps": train_steps, "mean_return": train_returns},
        "final_eval": {"step": final, "mean": curve[final], "std": stds.get(final)},
    }  # fmt: skip


def final_actor(run_dir: Path) -> dict | None:
    """The --save-model checkpoint of a run without its critics (None if it saved none)."""
    import torch  # noqa: PLC0415 (the table and the curves need no torch)

    saved = [p for p in run_dir.glob("*.pt") if p.name not in (ACTOR, "training_state.pt")]
    if not saved:
        return None
    checkpoint = torch.load(saved[0], map_location="cpu", weights_only=True)
    return {key: checkpoint[key] for key in ("algorithm", "args", "global_step", "spaces", "actor")}


def export(run_dir: Path, to: Path | None = None) -> dict:
    """Write result.json (and actor.pt, if the run saved a model) into run_dir and, if given, into `to`."""
    *_, env_id, algo, seed = run_dir.parts
    grid = run_dir.parent.parent.parent.name
    if not seed.startswith("seed") or not seed[4:].isdigit():
        raise ExportError(f"{run_dir} is not a grid run folder <grid>/<env>/<algo>/seed<k>")
    if not (run_dir / "DONE").exists():
        raise ExportError(f"{run_dir} has not finished (no DONE marker)")
    result = build_result(run_dir, grid, env_id, algo, int(seed[4:]))
    actor = final_actor(run_dir)
    if actor is not None:
        import torch  # noqa: PLC0415

        torch.save(actor, run_dir / ACTOR)
    write_json(run_dir / RESULT, result)
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
        if actor is not None:
            shutil.copyfile(run_dir / ACTOR, to / ACTOR)
        write_json(to / RESULT, result)
    return result


def write_json(path: Path, record: dict) -> None:
    """Atomically: a reader (or a commit) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(record, indent=1)  # then every list of numbers on one line:
    text = re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    tmp.write_text(text + "\n")
    tmp.replace(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.results", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished grid run, runs/grid/<grid>/<env>/<algo>/seed<k>")
    parser.add_argument("--to", type=Path, help="a second folder for result.json and actor.pt (the committed copy)")
    args = parser.parse_args(argv)
    try:
        result = export(args.run_dir, args.to)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    final = result["final_eval"]
    print(f"{args.run_dir}: final evaluation {final['mean']:.1f} at step {final['step']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
