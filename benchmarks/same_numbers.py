"""Same seed, same numbers: runs both scripts of two checkouts with the same short commands and compares every
TensorBoard scalar (charts/SPS aside), the hyperparameter table and the --save-model weights. For changes that
only reorganise code: they must not change a number.

    python benchmarks/same_numbers.py b8284c3          # that commit against the working tree
    python benchmarks/same_numbers.py OLD NEW          # two commits

The commands (Hopper-v5, seed 1, one torch thread, 3,000 steps of which 2,000 learn, an evaluation every 1,000):
one env, three envs (--num-envs 3), and a finished 2,000-step run extended to 3,000 with --resume. Two at a time;
about a minute on a 2-core machine. Exit status 0 only if everything is identical.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--env-id", "Hopper-v5", "--seed", "1", "--torch-threads", "1", "--learning-starts", "1000"]
COMMON += ["--eval-frequency", "1000", "--eval-episodes", "2", "--save-model", "--checkpoint-frequency", "1000"]
CASES = {  # name -> the commands run one after the other in the case's folder; the first names the run
    "one-env": [["--total-timesteps", "3000"]],
    "three-envs": [["--total-timesteps", "3000", "--num-envs", "3"]],
    "resumed": [["--total-timesteps", "2000"], ["--resume", "runs/resumed", "--total-timesteps", "3000"]],
}


def run_case(checkout: Path, out: Path, algo: str, case: str) -> None:
    folder = out / f"{algo}-{case}"
    folder.mkdir(parents=True)
    for i, flags in enumerate(CASES[case]):
        first = [*COMMON, "--run-name", case] if i == 0 else []
        command = [sys.executable, str(checkout / f"{algo}_continuous.py"), *first, *flags]
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, check=False, cwd=folder, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed in {folder}:\n{done.stderr[-2000:]}")


def logged(run_dir: Path) -> dict:
    """Every scalar but steps/s, the hyperparameter table's rows (their order follows Args) and the weights."""
    import torch  # noqa: PLC0415 (slow)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    text = sorted(row for tag in events.Tags()["tensors"] for e in events.Tensors(tag) for row in
                  b"".join(e.tensor_proto.string_val).decode().splitlines())  # fmt: skip
    checkpoint = torch.load(next(run_dir.glob("*_continuous.pt")), weights_only=True)
    weights = {net: value for net, value in checkpoint.items() if isinstance(value, torch.Tensor)}  # log α
    for net, state in checkpoint.items():
        if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):  # a state_dict
            weights |= {f"{net}.{name}": value for name, value in state.items()}
    # every value in the order logged: with --num-envs 3, episodes that end together share a step
    values = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return {"scalars": {k: v for k, v in values.items() if k != "charts/SPS"}, "text": text, "weights": weights}


def differences(a: dict, b: dict) -> list[str]:
    """What differs between two `logged` results: scalar tags, the table, and weights (bit for bit)."""
    out = [f"scalar {tag}" for tag in sorted(a["scalars"].keys() | b["scalars"].keys())
           if a["scalars"].get(tag) != b["scalars"].get(tag)]  # fmt: skip
    out += ["hyperparameter table"] if a["text"] != b["text"] else []
    for name in sorted(a["weights"].keys() | b["weights"].keys()):
        x, y = a["weights"].get(name), b["weights"].get(name)
        if x is None or y is None or x.dtype != y.dtype or x.shape != y.shape or not bool((x == y).all()):
            out.append(f"weights {name}")
    return out


def checkout(commit: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), commit], check=True,
                   capture_output=True)  # fmt: skip
    return into


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        raise SystemExit(__doc__)
    work = Path(tempfile.mkdtemp(prefix="same-numbers-"))
    trees = [checkout(argv[0], work / "old"), checkout(argv[1], work / "new") if len(argv) == 2 else ROOT]
    try:
        jobs = [(tree, work / side, algo, case) for tree, side in zip(trees, ("old-runs", "new-runs"), strict=True)
                for algo in ("td3", "sac") for case in CASES]  # fmt: skip
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda job: run_case(*job), jobs))
        same = True
        for algo in ("td3", "sac"):
            for case in CASES:
                a, b = (logged(work / side / f"{algo}-{case}" / "runs" / case) for side in ("old-runs", "new-runs"))
                found = differences(a, b)
                values = sum(len(points) for points in a["scalars"].values())
                print(f"{algo} {case:10s} {len(a['scalars'])} tags, {values} values, {len(a['weights'])} weight "
                      f"tensors: {'identical' if not found else 'DIFFERENT: ' + ', '.join(found)}")  # fmt: skip
                same &= not found
        print("every logged number identical" if same else "numbers differ")
        return 0 if same else 1
    finally:
        for tree in trees:
            if tree != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
