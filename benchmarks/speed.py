"""Steady training throughput of td3/sac_continuous.py against Stable-Baselines3 and CleanRL, and the compute floor.

    python benchmarks/speed.py                       # Hopper-v5 on the CPU, 3 alternating repeats (~10 min on 2 cores)
    python benchmarks/speed.py --cleanrl ~/cleanrl   # CleanRL's scripts too, from that checkout (~15 min)
    python benchmarks/speed.py --device cuda --env-id HalfCheetah-v5 --no-sb3 \
        --variant eager= --variant graphs="--compile --cudagraphs"      # on a GPU: eager against compile + graphs
    python benchmarks/speed.py --side-by-side --learning-starts 1000 --burn-in 500 --measure 2000
                                   # several seeds at once, on Pendulum-v1 and Hopper-v5: alone and 2 at once, with
                                   # PyTorch's default threads (one per core) and with the scripts' default

Every run is a fresh process. It trains for learning_starts + burn_in + measure env steps; the clock wraps the
env's step(), so "steady steps/s" is measure / (wall time from step learning_starts + burn_in to the last
step): everything the training loop does per step (acting, storing, sampling, updating), after start-up,
random warm-up, the first updates (and any compilation) are over. Evaluation is pushed past the end.
Runs alternate (ours, SB3, ours, SB3, ...) so that a slow phase of the machine hits both.

SB3 is configured like our defaults (benchmarks/sb3_peer.py says how), with the same learning_starts. It is
installed into its own virtual environment (.bench-venvs/sb3, from benchmarks/requirements-sb3.txt) and never
imported into ours. CleanRL (github.com/vwxyzjn/cleanrl) is not a package: its unchanged scripts
cleanrl/{td3,sac}_continuous_action.py run from the checkout given with --cleanrl, with their own defaults and the
same learning_starts, in .bench-venvs/cleanrl (benchmarks/requirements-cleanrl.txt: CleanRL's Gymnasium 0.29.1
with our torch). Gymnasium 0.29 has no MuJoCo v5 tasks, so CleanRL runs the v4 task of the same name.

The floor: FLOPs of the matrix products one env step costs (counted from the layer sizes below) divided by the
float32 matmul rate this process measures on 256x256x256 products, on the same threads, in the same run. A second,
measured floor for our scripts: the matrix products of the last two training steps of each run are recorded (the
same ops, shapes and memory layouts) and replayed back to back, with nothing else in between.
"""

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: our training scripts and benchmarks.sb3_peer
from benchmarks.sb3_peer import make_model, peer_python, sb3_python  # noqa: E402 (needs the line above)

HIDDEN, BATCH = 256, 256
CLEANRL_VENV, CLEANRL_REQUIREMENTS = Path(".bench-venvs") / "cleanrl", ROOT / "benchmarks" / "requirements-cleanrl.txt"


# ----------------------------------------------------------------------------- workers (one process per run)
def step_clock(env, times: list[float]):
    """Wrap env.step so that every call appends its finishing time to `times`."""
    step = env.step

    def timed_step(actions):
        result = step(actions)
        times.append(time.perf_counter())
        return result

    env.step = timed_step
    return env


def steady_rate(times: list[float], start: int, measure: int) -> float:
    """Steps per second between env step `start` and env step `start + measure` (1-based step counts)."""
    return measure / (times[start + measure - 1] - times[start - 1])


MATRIX_PRODUCTS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default", "aten.baddbmm.default"}


def product_recorder():
    """A torch dispatch mode that, while active, keeps every matrix product as (op, copied operands, kwargs);
    the copies keep each operand's shape and memory layout (transposed, expanded), so a replay runs the very
    kernels the training step ran."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    def copy_operand(x):
        if not isinstance(x, torch.Tensor):
            return x
        if 0 in x.stride():  # a broadcast operand: copy the one slice it repeats, then broadcast the copy
            base = x[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in x.stride())]
            return base.detach().clone(memory_format=torch.preserve_format).expand(x.shape)
        return x.detach().clone(memory_format=torch.preserve_format)

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func) in MATRIX_PRODUCTS:
                self.calls.append((func, tree_map(copy_operand, args), kwargs or {}))
            return func(*args, **(kwargs or {}))

    return Recorder()


def replay_ms(calls, device: str, seconds: float = 1.0) -> float:
    """Milliseconds per replay of the recorded products, back to back (median of 5 timed blocks)."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        times = []
        for _ in range(6):  # the first block warms up and is dropped
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 6:
                for func, args, kwargs in calls:
                    func(*args, **kwargs)
                n += 1
            sync()
            times.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(times[1:])


def run_ours(algo: str, env_id: str, steps: int, learning_starts: int, device: str, flags: list[str], times):
    module = __import__(f"{algo}_continuous")
    import tyro

    recorder = product_recorder()
    compiled = {"--compile", "--cudagraphs"} & set(flags)  # compiled kernels and graph replays bypass the recorder

    def record_last_two_steps(env):
        """Records from the end of env step steps - 2 to the end of the last one: two full training steps (for
        TD3 one with and one without the delayed actor update), each with its acting, sampling and updates."""
        step = env.step

        def recording_step(actions):
            result = step(actions)
            if len(times) == steps - 2 and not compiled:
                recorder.__enter__()
            elif len(times) == steps and not compiled:
                recorder.__exit__(None, None, None)
            return result

        env.step = recording_step
        return env

    make_vector_env = module.make_vector_env
    module.make_vector_env = lambda args: record_last_two_steps(step_clock(make_vector_env(args), times))
    argv = ["--env-id", env_id, "--total-timesteps", str(steps), "--learning-starts", str(learning_starts)]
    run_name = f"speed/{algo}-{os.getpid()}"  # workers side by side must not share a run folder
    argv += ["--eval-frequency", str(10 * steps), "--eval-episodes", "1", "--run-name", run_name]
    argv += ["--buffer-size", "1000000", "--batch-size", str(BATCH)]
    argv += ([] if device == "cuda" else ["--no-cuda"]) + flags
    try:
        module.main(tyro.cli(module.Args, args=argv))
    finally:
        shutil.rmtree(Path("runs") / run_name, ignore_errors=True)  # logs and training state: not needed here
    return recorder.calls


def run_cleanrl(algo: str, env_id: str, steps: int, learning_starts: int, device: str, checkout: str, times):
    """CleanRL's script as `python cleanrl/<algo>_continuous_action.py ...` would run it, in a scratch folder (it
    writes runs/ there); every SyncVectorEnv it makes gets the step clock."""
    import runpy
    import tempfile

    import gymnasium as gym

    class TimedSyncVectorEnv(gym.vector.SyncVectorEnv):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            step_clock(self, times)

    gym.vector.SyncVectorEnv = TimedSyncVectorEnv
    script = Path(checkout).resolve() / "cleanrl" / f"{algo}_continuous_action.py"
    sys.path.insert(0, str(script.parent.parent))  # its cleanrl_utils
    sys.argv = [str(script), "--env-id", cleanrl_env(env_id), "--seed", "1", "--total-timesteps", str(steps)]
    sys.argv += ["--learning-starts", str(learning_starts)] + (["--no-cuda"] if device == "cpu" else [])
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        runpy.run_path(str(script), run_name="__main__")


def cleanrl_env(env_id: str) -> str:
    """The task CleanRL runs for env_id: Gymnasium 0.29's v4 for a v5 MuJoCo task, else env_id itself."""
    return env_id.removesuffix("-v5") + "-v4" if env_id.endswith("-v5") else env_id


def run_sb3(algo: str, env_id: str, steps: int, learning_starts: int, device: str, times):
    import gymnasium as gym

    make_model(algo, step_clock(gym.make(env_id), times), 1, learning_starts, device).learn(total_timesteps=steps)


def worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("impl", choices=["ours", "sb3", "cleanrl"])
    p.add_argument("algo", choices=["td3", "sac"])
    p.add_argument("--env-id", required=True)
    p.add_argument("--learning-starts", type=int, required=True)
    p.add_argument("--burn-in", type=int, required=True)
    p.add_argument("--measure", type=int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--flags", default="")
    p.add_argument("--cleanrl", help="the CleanRL checkout (impl cleanrl)")
    return p


def worker(argv: list[str]) -> None:
    a = worker_parser().parse_args(argv)
    process_start = time.perf_counter()
    steps = a.learning_starts + a.burn_in + a.measure
    times: list[float] = []
    products = None
    if a.impl == "ours":
        products = run_ours(a.algo, a.env_id, steps, a.learning_starts, a.device, a.flags.split(), times)
    elif a.impl == "cleanrl":
        run_cleanrl(a.algo, a.env_id, steps, a.learning_starts, a.device, a.cleanrl, times)
    else:
        run_sb3(a.algo, a.env_id, steps, a.learning_starts, a.device, times)
    ls, rate = a.learning_starts, steady_rate(times, a.learning_starts + a.burn_in, a.measure)
    burn_in_s = times[ls + a.burn_in - 1] - times[ls - 1]
    result = {
        "steps_per_s": rate,
        "startup_s": times[0] - process_start,
        # what the first burn_in training steps took beyond the steady rate: compilation, graph capture, warm-up
        "warmup_s": burn_in_s - a.burn_in / rate,
    }
    if products:  # recorded over the last two steps
        result |= {"products_ms": replay_ms(products, a.device) / 2, "products": len(products) / 2}
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- the floor
def layer_flops(sizes: list[int]) -> int:
    """Multiply-adds x 2 of one forward pass of an MLP with these layer sizes, per sample."""
    return sum(2 * fan_in * fan_out for fan_in, fan_out in itertools.pairwise(sizes))


def step_flops(algo: str, obs_dim: int, act_dim: int) -> float:
    """Matmul FLOPs of one env step's gradient update (batch BATCH). A backward pass costs two forwards
    (input and weight gradients); one that only needs input gradients (the critics in the actor step) costs one.
    SAC:  critic step = actor fwd (a') + 2 target critics + 2 critics fwd + 2 critics bwd = a + 8c
          actor step  = actor fwd + 2 critics fwd + 2 critics input-bwd + actor bwd     = 3a + 4c
    TD3:  critic step = target actor fwd + the same critics                              = a + 8c
          actor step every 2nd update = actor fwd + Q1 fwd + Q1 input-bwd + actor bwd    = (3a + 2c) / 2"""
    actor_out = 2 * act_dim if algo == "sac" else act_dim  # SAC's actor outputs mean and log std
    a = layer_flops([obs_dim, HIDDEN, HIDDEN, actor_out])
    c = layer_flops([obs_dim + act_dim, HIDDEN, HIDDEN, 1])
    per_sample = (a + 8 * c) + (3 * a + 4 * c if algo == "sac" else (3 * a + 2 * c) / 2)
    return per_sample * BATCH


def matmul_rate(device: str, seconds: float = 2.0) -> float:
    """Measured float32 GFLOP/s of 256x256 @ 256x256 on this process's torch threads (median of 5 runs)."""
    import torch

    x, w = (torch.randn(HIDDEN, HIDDEN, device=device) for _ in range(2))
    rates = []
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            for _ in range(50):
                x @ w
            if device == "cuda":
                torch.cuda.synchronize()
            n += 50
        rates.append(2 * HIDDEN**3 * n / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def env_dims(env_id: str) -> tuple[int, int]:
    import gymnasium as gym

    env = gym.make(env_id)
    return env.observation_space.shape[0], env.action_space.shape[0]


# ----------------------------------------------------------------------------- the orchestrator
def cleanrl_python(checkout: str) -> Path:
    """CleanRL's interpreter, once the checkout is known to hold its scripts."""
    if not all((Path(checkout) / "cleanrl" / f"{algo}_continuous_action.py").is_file() for algo in ("td3", "sac")):
        sys.exit(f"error: --cleanrl {checkout} is not a CleanRL checkout (no cleanrl/td3_continuous_action.py)")
    return peer_python(CLEANRL_VENV, CLEANRL_REQUIREMENTS, "CleanRL")


def worker_command(python: Path, impl: str, algo: str, a: argparse.Namespace, flags: str) -> list[str]:
    cmd = [str(python), __file__, "worker", impl, algo, "--env-id", a.env_id, "--device", a.device]
    cmd += ["--learning-starts", str(a.learning_starts), "--burn-in", str(a.burn_in), "--measure", str(a.measure)]
    cmd += ["--cleanrl", a.cleanrl] if impl == "cleanrl" else []
    return [*cmd, f"--flags={flags}"]  # one word: flags such as --compile must not be parsed as the worker's own


def run_workers(python: Path, impl: str, algo: str, a: argparse.Namespace, flags: str, together: int = 1) -> list:
    """`together` identical worker processes started at once, sharing the machine; the result of each."""
    cmd = worker_command(python, impl, algo, a, flags)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    processes = [subprocess.Popen(cmd, cwd=ROOT, **pipes) for _ in range(together)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        if process.returncode != 0 or not lines:
            sys.exit(f"error: {' '.join(cmd)} failed (exit {process.returncode}):\n{stderr[-3000:]}")
        results.append(json.loads(lines[-1].removeprefix("RESULT ")))
    return results


def side_by_side_configurations(default_threads: int) -> list[tuple[str, str, int]]:
    """(name, flags, runs at once): PyTorch's default threads (one per core: the scripts' default before
    FreeCoreThreads) and the scripts' default now, each alone and two side by side."""
    old = f"--torch-threads {default_threads}"
    return [(f"{default_threads} threads (old default), alone", old, 1),
            (f"{default_threads} threads (old default), 2 side by side", old, 2),
            ("default, alone", "", 1), ("default, 2 side by side", "", 2)]  # fmt: skip


def side_by_side(a: argparse.Namespace, default_threads: int) -> None:
    """Our eager scripts in each configuration on each env: steps/s of each run, of all runs together, and that
    total against the same threads alone (below 1: two runs together did less work than one alone)."""
    configurations = side_by_side_configurations(default_threads)
    results = {
        (env, algo, name): [] for env in a.side_by_side_envs for algo in a.algos for name, _, _ in configurations
    }
    for repeat in range(a.repeats):
        for env, algo in itertools.product(a.side_by_side_envs, a.algos):
            for name, flags, together in configurations:
                run_args = argparse.Namespace(**(vars(a) | {"env_id": env}))
                rates = [
                    r["steps_per_s"] for r in run_workers(Path(sys.executable), "ours", algo, run_args, flags, together)
                ]
                results[env, algo, name].append(rates)
                print(f"  repeat {repeat + 1}: {env} {algo} {name}: {' + '.join(f'{r:.1f}' for r in rates)} steps/s",
                      flush=True)  # fmt: skip
    print(f"\n| env | algo | threads | steps/s of each run (median of {a.repeats}) | all runs | all runs / alone |")
    print("|---|---|---|---|---|---|")
    for (env, algo, name), repeats in results.items():
        each = statistics.median(rate for rates in repeats for rate in rates)
        total = statistics.median(sum(rates) for rates in repeats)
        alone = statistics.median(sum(rates) for rates in results[env, algo, name.split(", ")[0] + ", alone"])
        print(f"| {env} | {algo} | {name} | {each:.1f} | {total:.1f} | {total / alone:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-id", default="Hopper-v5")
    p.add_argument("--algos", nargs="+", default=["sac", "td3"], choices=["sac", "td3"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--learning-starts", type=int, default=5000)
    p.add_argument("--burn-in", type=int, default=1000, help="training steps after learning starts, untimed")
    p.add_argument("--measure", type=int, default=4000, help="training steps timed")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--variant", action="append", default=[], metavar="NAME=FLAGS",
        help='a configuration of our scripts, e.g. compiled="--compile"; repeatable (default: eager=)',
    )  # fmt: skip
    p.add_argument("--no-sb3", action="store_true", help="measure only our scripts (and CleanRL with --cleanrl)")
    p.add_argument("--cleanrl", metavar="PATH", help="also CleanRL's scripts, from this checkout of its repository")
    p.add_argument(
        "--side-by-side", action="store_true",
        help="instead: our eager scripts alone and two at once, with PyTorch's default threads and with ours",
    )  # fmt: skip
    p.add_argument("--side-by-side-envs", nargs="+", default=["Pendulum-v1", "Hopper-v5"], metavar="ENV_ID")
    a = p.parse_args()
    if a.repeats < 1 or a.burn_in < 1 or a.measure < 1 or a.learning_starts < 1:
        sys.exit("error: --repeats, --learning-starts, --burn-in and --measure must be positive")
    if any("=" not in v for v in a.variant):
        sys.exit('error: --variant takes NAME=FLAGS, e.g. compiled="--compile"')
    variants = dict(v.split("=", 1) for v in a.variant) or {"eager": ""}

    import torch

    if a.side_by_side:
        return side_by_side(a, torch.get_num_threads())

    rate = matmul_rate(a.device)
    obs_dim, act_dim = env_dims(a.env_id)
    runs = [(algo, "ours", name) for algo in a.algos for name in variants]
    runs += [] if a.no_sb3 else [(algo, "sb3", "SB3") for algo in a.algos]
    runs += [(algo, "cleanrl", "CleanRL") for algo in a.algos] if a.cleanrl else []
    python = {"ours": Path(sys.executable)} | ({} if a.no_sb3 else {"sb3": sb3_python()})
    python |= {"cleanrl": cleanrl_python(a.cleanrl)} if a.cleanrl else {}
    results: dict[tuple[str, str, str], list[dict]] = {run: [] for run in runs}
    print(
        f"{a.env_id} on {a.device}, torch threads {torch.get_num_threads()}: learning starts {a.learning_starts}, "
        f"burn-in {a.burn_in}, {a.measure} steps timed, {a.repeats} repeats; matmul {rate:.0f} GFLOP/s",
        flush=True,
    )
    if a.cleanrl:
        git = ["git", "-C", a.cleanrl, "log", "-1", "--format=%h %cs"]
        commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip() or "unknown commit"
        print(f"CleanRL {a.cleanrl} at {commit}: {cleanrl_env(a.env_id)} (Gymnasium 0.29.1)", flush=True)
    for repeat in range(a.repeats):
        for algo in a.algos:  # alternate ours and the peers within every repeat
            for run in (r for r in runs if r[0] == algo):
                (result,) = run_workers(python[run[1]], run[1], algo, a, variants.get(run[2], ""))
                results[run].append(result)
                print(f"  repeat {repeat + 1}: {algo} {run[2]:>8}: {result['steps_per_s']:7.1f} steps/s", flush=True)

    print(f"\n| algo | impl | steps/s (median of {a.repeats}) | range | ms/step | matmuls alone ms/step | "
          "floor ms/step | x floor | ours/SB3 | ours/CleanRL | compile + warm-up s | start-up s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for algo, impl, name in runs:
        sps = [r["steps_per_s"] for r in results[algo, impl, name]]
        median = statistics.median(sps)
        floor_ms = step_flops(algo, obs_dim, act_dim) / (rate * 1e9) * 1e3
        ratios = []
        for peer in (results.get((algo, "sb3", "SB3")), results.get((algo, "cleanrl", "CleanRL"))):
            peer_rate = statistics.median(r["steps_per_s"] for r in peer) if peer else None
            ratios.append(f"{median / peer_rate:.2f}" if peer_rate and impl == "ours" else "")
        warmup = statistics.median(r["warmup_s"] for r in results[algo, impl, name])
        startup = statistics.median(r["startup_s"] for r in results[algo, impl, name])
        alone = [r["products_ms"] for r in results[algo, impl, name] if "products_ms" in r]
        alone = f"{statistics.median(alone):.2f}" if alone else ""
        print(
            f"| {algo} | {name} | {median:.1f} | {min(sps):.1f}-{max(sps):.1f} | {1e3 / median:.2f} | {alone} | "
            f"{floor_ms:.2f} | "
            f"{1e3 / median / floor_ms:.1f} | {' | '.join(ratios)} | {warmup:.1f} | {startup:.1f} |"
        )
    flops = {algo: step_flops(algo, obs_dim, act_dim) / 1e9 for algo in a.algos}
    print(f"\nFLOPs per step: {', '.join(f'{k} {v:.3f} GFLOP' for k, v in flops.items())}; floor = FLOPs / matmul rate")
    products = {algo: r["products"] for (algo, _, _), rs in results.items() for r in rs if "products" in r}
    if products:
        print(
            "matmuls alone: the matrix products of one training step of ours "
            f"({', '.join(f'{k} {v:g}' for k, v in products.items())} products; TD3: the mean of a step with and one "
            "without the delayed actor update), replayed back to back"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2:])
    else:
        main()
