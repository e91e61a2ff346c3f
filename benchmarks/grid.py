"""The benchmark grid: which runs a preset or a custom grid makes, their folders and commands, and resume.

`bash benchmark.sh` calls this module for every decision; bash itself only runs the pool of workers.

    python -m benchmarks.grid list quick                # --dry-run: the commands, finished runs marked skipped
    python -m benchmarks.grid prepare grid --algos td3 --envs Pendulum-v1 --seeds 1 2 --steps 20000
    python -m benchmarks.grid run runs/grid/custom/plan-<pid>.json 0    # one run of the plan (a local worker)
    python -m benchmarks.grid summary runs/grid/custom/plan-<pid>.json  # ran / skipped / failed, 1 if any failed
    python -m benchmarks.grid submit full --slurm --partition gpu [--dry-run]    # a Slurm job array
    python -m benchmarks.grid exec [--results DIR] RUN_DIR -- COMMAND...    # one run (a Slurm array task)

Every run lives in runs/grid/<name>/<env>/<algo>/seed<k>/: its TensorBoard logs, train.log (its stdout and stderr)
and, once it exited 0, a DONE marker (JSON: the command, start and end in UTC, wall seconds summed over its
attempts, host, and each attempt's start, wall seconds and commit). A run with DONE is skipped. A folder without
DONE is what an interrupted or failed run left behind: if it holds the run's training state, the run continues from
it (--resume); otherwise the folder is deleted just before the run starts again from scratch. Slurm array tasks ask
for SIGUSR1 some minutes before their time limit: the run saves and stops, and the task requeues itself to
continue.

While a run goes, the process running it holds a lock on the file .seed<k>.lock beside its folder (flock: the
kernel frees it when that process ends, however it ends), so a second pool or Slurm task on the same folders
skips a run that is in progress instead of training into its folder too, and the dry run marks it.
"""

import argparse
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from benchmarks import results, sb3_peer

ALGORITHMS = ("td3", "sac")  # run as <algo>_continuous.py
PEERS = ("sb3-td3", "sb3-sac")  # Stable-Baselines3, run as benchmarks/sb3_peer.py in its own virtual environment
DONE = "DONE"
LOG = "train.log"
STATE = "training_state.pt"  # what the scripts save for --resume
ATTEMPTS = "attempts"  # one JSON line per attempt of a run: its start, wall seconds and commit
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
RUNS = Path("runs")  # relative to the repository root, where benchmark.sh runs everything
COMMITTED = Path("docs/benchmarks")  # the exported results of presets that commit theirs


@dataclass(frozen=True)
class Preset:
    algos: tuple[str, ...]
    seeds: tuple[int, ...]
    envs: tuple[tuple[str, int, str], ...]  # (env id, total timesteps, flags for every run of this env)
    peers: tuple[str, ...] = ()  # Stable-Baselines3 runs of the same envs ...
    peer_seeds: tuple[int, ...] = ()  # ... with these seeds only
    committed: bool = False  # each finished run's result goes to docs/benchmarks/<name>/ too, to commit
    env_seeds: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (env id, seeds): ours only, with these seeds, no peers


# The presets, one row per env. quick is sized for about an hour on a 2-core laptop, one run at a time (short
# warm-ups so that learning shows within the budget); medium is the blog's four tasks at 300k steps (the TD3
# paper's curves give an anchor there) with 5 seeds, and Humanoid with 3 (its runs are the longest, 1.3-1.6x an
# Ant run), with Stable-Baselines3 beside seed 1 of the four; full is the papers' MuJoCo protocol at 1M steps.
# fmt: off
PRESETS = {
    "quick": Preset(algos=("td3", "sac"), seeds=(1, 2, 3), envs=(
        ("Pendulum-v1",            20_000, "--learning-starts 1000 --eval-frequency 2000"),
        ("InvertedPendulum-v5",    20_000, "--learning-starts 1000 --eval-frequency 2000"),
        ("Hopper-v5",              50_000, "--learning-starts 5000 --eval-frequency 5000"),
    )),
    "medium": Preset(algos=("td3", "sac"), seeds=(1, 2, 3, 4, 5), peers=PEERS, peer_seeds=(1,), committed=True,
                     env_seeds=(("Humanoid-v5", (1, 2, 3)),), envs=(
        ("HalfCheetah-v5",        300_000, "--eval-frequency 10000 --save-model"),
        ("Hopper-v5",             300_000, "--eval-frequency 10000 --save-model"),
        ("Walker2d-v5",           300_000, "--eval-frequency 10000 --save-model"),
        ("Ant-v5",                300_000, "--eval-frequency 10000 --save-model"),
        ("Humanoid-v5",           300_000, "--eval-frequency 10000 --save-model"),
    )),
    "full": Preset(algos=("td3", "sac"), seeds=(1, 2, 3, 4, 5), envs=(
        ("HalfCheetah-v5",      1_000_000, "--eval-frequency 10000"),
        ("Hopper-v5",           1_000_000, "--eval-frequency 10000"),
        ("Walker2d-v5",         1_000_000, "--eval-frequency 10000"),
        ("Ant-v5",              1_000_000, "--eval-frequency 10000"),
        ("Humanoid-v5",         1_000_000, "--eval-frequency 10000"),
    )),
}
# fmt: on
GRID_SETS = ("--env-id", "--seed", "--total-timesteps", "--run-name", "--checkpoint")  # not allowed in --flags
SLURM_DEFAULTS = {"time": "24:00:00", "cpus_per_task": 2, "mem": "8G", "gpus": 0}
# Slurm sends a task SIGUSR1 this long before its time limit: the run saves and stops, the task requeues itself
SLURM_WARNING_SECONDS = 300


class GridError(Exception):
    """Bad input: reported as one line, before anything runs."""


@dataclass(frozen=True)
class RunSpec:
    """One training run of a grid."""

    grid: str
    algo: str
    env_id: str
    seed: int
    steps: int
    flags: tuple[str, ...] = ()
    committed: bool = False  # its result is exported to docs/benchmarks/<grid>/... as well

    @property
    def results_dir(self) -> Path | None:
        """Where the committed copy of its result goes (None if its grid commits no results)."""
        return COMMITTED / self.grid / self.env_id / self.algo / f"seed{self.seed}" if self.committed else None

    @property
    def run_name(self) -> str:
        """The scripts' --run-name: they log to runs/<run_name>/."""
        return f"grid/{self.grid}/{self.env_id}/{self.algo}/seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return RUNS / self.run_name

    def command(self, python: str) -> list[str]:
        if self.algo in PEERS:  # Stable-Baselines3's interpreter, whatever runs ours
            python, script = str(sb3_peer.SB3_PYTHON), "benchmarks/sb3_peer.py"
            script_flags = ["--algo", self.algo.removeprefix("sb3-")]
        else:
            script, script_flags = f"{self.algo}_continuous.py", []
        return [python, script, *script_flags, "--env-id", self.env_id, "--seed", str(self.seed),
                "--total-timesteps", str(self.steps), *self.flags, "--run-name", self.run_name]  # fmt: skip


# ----------------------------------------------------------------------------- building and checking a grid


def expand(name: str, algos, env_rows, seeds, peers=(), peer_seeds=(), committed=False, env_seeds=()) -> list[RunSpec]:
    """All runs, seed by seed, then env, then algorithm: a grid cut short has every env × algorithm pair at
    seed 1 before any at seed 2. Peers (Stable-Baselines3) run only with peer_seeds, after ours of that seed.
    An env of env_seeds runs ours with its own seeds and no peers."""
    own = dict(env_seeds)

    def wanted(seed: int, env_id: str, group_seeds, is_peer: bool) -> bool:
        return seed in group_seeds if env_id not in own else not is_peer and seed in own[env_id]

    every_seed = sorted({*seeds, *peer_seeds, *(s for group in own.values() for s in group)})
    groups = [(algos, seeds, False), (peers, peer_seeds, True)]
    return [RunSpec(name, algo, env_id, seed, steps, tuple(shlex.split(flags)), committed)
            for seed in every_seed for group, group_seeds, is_peer in groups
            for env_id, steps, flags in env_rows if wanted(seed, env_id, group_seeds, is_peer)
            for algo in group]  # fmt: skip


def preset_runs(name: str, p: Preset) -> list[RunSpec]:
    """The runs of preset p, in grid `name`."""
    return expand(name, p.algos, p.envs, p.seeds, p.peers, p.peer_seeds, p.committed, p.env_seeds)


def words(values: list[str] | None) -> list[str]:
    """`--seeds 1 2 3`, `--seeds "1 2 3"` and `--seeds 1,2,3` all mean the same."""
    return [w for v in values or [] for w in v.replace(",", " ").split()]


def check_env_ids(env_ids: list[str]) -> None:
    """Catch typos before a grid starts; `module:EnvId` is imported by the run itself, so it is not checked."""
    import gymnasium  # noqa: PLC0415 (only the commands that build a grid need it)

    for env_id in env_ids:
        if "/" in env_id:  # a namespaced id (ALE/Pong-v5) would add a folder level to the grid's layout
            raise GridError(f"env id {env_id!r} cannot name a run folder (no '/'); register an alias for it")
        if ":" not in env_id and env_id not in gymnasium.registry:
            raise GridError(f"unknown env id {env_id!r} (not registered in Gymnasium; use module:EnvId for your own)")


def build_grid(args: argparse.Namespace) -> list[RunSpec]:
    """The runs that `quick`, `full` or `grid --algos ... --envs ... --seeds ... --steps N` stand for."""
    custom = {"--algos": args.algos, "--envs": args.envs, "--seeds": args.seeds, "--steps": args.steps}
    if args.preset in PRESETS:
        given = [flag for flag, value in {**custom, "--flags": args.flags}.items() if value is not None]
        if given:
            raise GridError(f"{', '.join(given)} only go with `grid`: a preset always runs the same grid")
        return preset_runs(args.name, PRESETS[args.preset])
    missing = [flag for flag, value in custom.items() if value is None]
    if missing:
        raise GridError(f"`grid` needs {', '.join(missing)}")
    algos, env_ids, seed_words = words(args.algos), words(args.envs), words(args.seeds)
    if unknown := [a for a in algos if a not in ALGORITHMS + PEERS]:
        raise GridError(f"unknown algorithm {unknown[0]!r} (choose from {', '.join(ALGORITHMS + PEERS)})")
    if not re.fullmatch(r"\d+", args.steps) or int(args.steps) == 0:
        raise GridError(f"--steps must be a positive whole number (got {args.steps!r})")
    if bad := [s for s in seed_words if not re.fullmatch(r"\d+", s)]:
        raise GridError(f"--seeds must be whole numbers (got {bad[0]!r})")
    seeds = [int(s) for s in seed_words]
    for flag, values in {"--algos": algos, "--envs": env_ids, "--seeds": seeds}.items():
        if not values or len(set(values)) != len(values):
            raise GridError(f"{flag} must list at least one value, each once")
    flags = shlex.split(args.flags or "")
    if clash := [f for f in flags if f.split("=")[0] in GRID_SETS]:
        raise GridError(f"--flags must not contain {clash[0].split('=')[0]}: the grid sets it for every run")
    check_env_ids(env_ids)
    return expand(args.name, algos, [(env_id, int(args.steps), shlex.join(flags)) for env_id in env_ids], seeds)


def run_status(spec: RunSpec, python: str) -> str:
    """'done' (DONE marker, or a committed result), 'running' (another process holds its lock), 'unfinished'
    (a folder without DONE: resumed or rerun) or 'new'."""
    done = spec.run_dir / DONE
    if not done.exists() and spec.results_dir is not None and (spec.results_dir / results.RESULT).exists():
        done = spec.results_dir / results.RESULT  # finished elsewhere, its result committed
    if not done.exists() and running_elsewhere(spec.run_dir):
        return "running"
    if not done.exists():
        return "unfinished" if spec.run_dir.exists() else "new"
    try:
        recorded = shlex.split(json.loads(done.read_text())["command"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise GridError(f"unreadable {done} ({err}); delete it to rerun that run") from err
    if recorded[-2:] == ["--resume", str(spec.run_dir)]:  # older versions recorded a resumed attempt's command
        recorded = recorded[:-2]
    if recorded[1:] != spec.command(python)[1:]:  # the interpreter may differ (laptop, cluster), the run may not
        raise GridError(f"{spec.run_dir} finished with other flags ({shlex.join(recorded[1:])}); use another --name")
    return "done"


def lock_path(run_dir: Path) -> Path:
    """Beside the run's folder, not in it: the folder of a failed run is deleted before it starts again."""
    return run_dir.with_name(f".{run_dir.name}.lock")


def try_lock(path: Path) -> TextIO | None:
    """`path` opened and locked for this process alone, or None if another process holds it. The lock lasts
    until the file is closed or the process ends. Where the filesystem cannot lock, the file comes back
    unlocked: runs there are not guarded."""
    handle = open(path, "a+")  # noqa: SIM115 (held open for as long as the run goes)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    except OSError:
        pass
    return handle


def running_elsewhere(run_dir: Path) -> str | None:
    """Who runs it now ('pid 4242 on node7', as its lock file says), or None if no process does."""
    path = lock_path(run_dir)
    if not path.exists():
        return None
    handle = try_lock(path)
    if handle is not None:
        handle.close()
        return None
    return path.read_text().strip() or "another process"


def cpu_count() -> int:
    """Cores this process may use (respects taskset and container limits, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_env(workers: int) -> dict[str, str]:
    """Extra environment of each run: with N parallel workers, each torch gets its share of the cores."""
    return {} if workers == 1 else {"OMP_NUM_THREADS": str(max(1, cpu_count() // workers))}


def command_line(command: list[str], env: dict[str, str]) -> str:
    return " ".join([*(f"{k}={v}" for k, v in env.items()), shlex.join(command)])


# ----------------------------------------------------------------------------- running one run


def execute(run_dir: Path, command: list[str], env: dict[str, str] | None = None, to: Path | None = None) -> int:
    """Run one training command with its output in run_dir/train.log; write run_dir/DONE if it exits 0. With
    `to` (a grid that commits its results), export its result (benchmarks/results.py) there and into run_dir.

    A run that another process is running (it holds the lock) is left alone: status 1, nothing touched. A
    finished run (DONE) is skipped (and exported, if `to` lacks its result). A run that saved its training
    state continues from it (--resume); any other folder is deleted first, so the run starts from scratch. The
    training process gets its own session, so a Ctrl-C reaches it exactly once: forwarded here as SIGTERM, on
    which the scripts end their step, save and exit with status 143. SIGUSR1 (Slurm's warning before a time
    limit) does the same, and then the Slurm task is requeued, to continue where it stopped.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(20):  # a dry run elsewhere may hold the lock for an instant, to see whether the run is running
        lock = try_lock(lock_path(run_dir))
        if lock is not None:
            break
        time.sleep(0.05)
    else:
        holder = running_elsewhere(run_dir) or "another process"
        print(f"{'RUNNING':17}{run_dir}: {holder} runs it now; left alone", flush=True)
        return 1
    with lock:
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        return train(run_dir, command, env, to, lock.fileno())


def train(run_dir: Path, command: list[str], env: dict[str, str] | None, to: Path | None, lock: int) -> int:
    """`execute` once this process holds the run's lock (file descriptor `lock`, which the training process
    inherits: the lock lasts while either of them lives)."""
    if (run_dir / DONE).exists():
        print(f"{'skipped (done)':17}{run_dir}", flush=True)
        return 0 if to is None or (to / results.RESULT).exists() else export(run_dir, to)
    resume = (run_dir / STATE).exists()
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # a failed attempt with nothing to resume; its logs must not mix with the new run
    run_dir.mkdir(parents=True, exist_ok=True)
    attempt_command = [*command, "--resume", str(run_dir)] if resume else command  # DONE records `command`
    child: subprocess.Popen | None = None
    stopping, requeue = False, False

    def stop(signum, frame):
        nonlocal stopping, requeue
        if child is not None and not stopping:
            child.send_signal(signal.SIGTERM)
        stopping, requeue = True, requeue or signum == signal.SIGUSR1

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, stop)
    start, start_clock, checkout = datetime.now(UTC), time.monotonic(), results.git_state()
    print(f"{'resumed' if resume else 'started':17}{run_dir}", flush=True)
    with open(run_dir / LOG, "a" if resume else "w") as log:
        log.write(f"$ {command_line(attempt_command, env or {})}\n")
        log.flush()
        # PYTHONUNBUFFERED: train.log fills as the run goes, and an error stays its last line
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        cache = kernel_cache(command, child_env)
        try:
            child = subprocess.Popen(attempt_command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=child_env, start_new_session=True, pass_fds=(lock,))  # fmt: skip
            if stopping:  # a signal came while it was starting
                child.send_signal(signal.SIGTERM)
            status = child.wait()
        finally:
            if cache is not None:
                shutil.rmtree(cache, ignore_errors=True)
    attempt = {
        "start": start.strftime(UTC_FORMAT),
        "wall_seconds": round(time.monotonic() - start_clock, 1),
        **checkout,
    }
    with open(run_dir / ATTEMPTS, "a") as attempts:
        attempts.write(json.dumps(attempt) + "\n")
    history = read_attempts(run_dir)
    wall = sum(a["wall_seconds"] for a in history)
    if requeue and status in (130, 143):
        requeue_slurm_task()
    if status == 0:
        first = datetime.strptime(next(a["start"] for a in history if a["start"]), UTC_FORMAT).replace(tzinfo=UTC)
        extra = {**results.provenance(command[0], child_env), "attempt_history": history}
        write_done(run_dir, command, first, datetime.now(UTC), wall, extra)
        print(f"{'done':7}{wall:6.0f} s  {run_dir}", flush=True)
        return 0 if to is None else export(run_dir, to)
    outcome = "STOPPED" if status in (130, 143) else "FAILED"  # the run was interrupted: Ctrl-C (130), SIGTERM (143)
    print(f"{outcome:7}{wall:6.0f} s  {run_dir} (exit {status}): {last_line(run_dir / LOG)}", flush=True)
    return status if status > 0 else 128 - status  # killed by signal n: 128 + n, as a shell reports it


def read_attempts(run_dir: Path) -> list[dict]:
    """Each attempt of a run: start (UTC), wall seconds, commit and uncommitted changes. A line with only a number
    (the wall seconds, as older versions of this file wrote them) gives None for the rest."""
    unknown = {"start": None, "wall_seconds": None, "commit": None, "uncommitted_changes": None}
    records = [json.loads(line) for line in (run_dir / ATTEMPTS).read_text().splitlines() if line.strip()]
    return [{**unknown, **(r if isinstance(r, dict) else {"wall_seconds": r})} for r in records]


def kernel_cache(command: list[str], env: dict[str, str]) -> str | None:
    """A `--compile` run gets a torch.compile kernel cache of its own (set in env; the caller deletes the folder it
    returns), unless the user chose one: runs that build the same kernel into one shared cache at the same moment
    can load each other's half-written library and fail with "file too short" (pytorch/torchdynamo#1347)."""
    if "--compile" not in command or "TORCHINDUCTOR_CACHE_DIR" in env:
        return None
    env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="torchinductor-run-")
    return env["TORCHINDUCTOR_CACHE_DIR"]


def requeue_slurm_task() -> None:
    """Put this Slurm array task (or job) back in the queue; when it runs again, its run resumes."""
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{job}_{task}" if job and task else os.environ.get("SLURM_JOB_ID")
    if job_id:
        print(f"requeueing Slurm job {job_id}", flush=True)
        subprocess.run(["scontrol", "requeue", job_id], check=False)


def export(run_dir: Path, to: Path) -> int:
    """A finished run's result.json and actor.pt; an export that fails leaves the run done (export it again
    with `python -m benchmarks.results RUN_DIR --to DIR`) but makes the status 1."""
    try:
        results.export(run_dir, to)
    except (results.ExportError, OSError, ValueError, KeyError) as err:
        print(f"{'EXPORT FAILED':17}{run_dir}: {err}", flush=True)
        return 1
    print(f"{'exported':17}{to}", flush=True)
    return 0


def write_done(run_dir: Path, command: list[str], start: datetime, end: datetime, wall_seconds: float,
               extra: dict | None = None) -> None:  # fmt: skip
    """The DONE marker: what ran, where, when and for how long, and `extra` (written atomically)."""
    record = {"command": shlex.join(command), "start": start.strftime(UTC_FORMAT), "end": end.strftime(UTC_FORMAT),
              "wall_seconds": round(wall_seconds, 1), "host": socket.gethostname(), **(extra or {})}  # fmt: skip
    tmp = run_dir / f"{DONE}.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(run_dir / DONE)


def last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if len(lines) > 1 else f"no output, see {path}"


# ----------------------------------------------------------------------------- plans: dry run, local pool, Slurm


def grid_dir(name: str) -> Path:
    return RUNS / "grid" / name


def pending(specs: list[RunSpec], python: str) -> tuple[list[RunSpec], list[RunSpec], list[RunSpec]]:
    """(runs to do, runs already done, runs another process is running now)."""
    status = {spec: run_status(spec, python) for spec in specs}
    todo = [s for s in specs if status[s] in ("new", "unfinished")]
    return todo, [s for s in specs if status[s] == "done"], [s for s in specs if status[s] == "running"]


def describe(specs: list[RunSpec], todo: list[RunSpec], max_runs: int | None = None, running: int = 0) -> str:
    """One line: '18 runs (3 envs × 2 algorithms × 3 seeds) in runs/grid/quick/: 2 done, 16 to run', and with
    --max-runs 4, '..., 16 to run, the first 4 now'; runs in progress elsewhere: '2 done, 1 running, 15 to run'."""
    sizes = [(len({getattr(s, field) for s in specs}), word) for field, word in
             [("env_id", "env"), ("algo", "algorithm"), ("seed", "seed")]]  # fmt: skip
    shape = " × ".join(f"{n} {word}{'s' if n > 1 else ''}" for n, word in sizes)
    if sizes[0][0] * sizes[1][0] * sizes[2][0] != len(specs):  # peers run with fewer seeds
        shape = shape.replace(" × ", ", ") + ", not every combination"
    done = len(specs) - len(todo) - running
    now = f", the first {max_runs} now" if max_runs is not None and max_runs < len(todo) else ""
    runs = f"{len(specs)} run{'s' if len(specs) != 1 else ''}"
    elsewhere = f", {running} running" if running else ""
    return f"{runs} ({shape}) in {grid_dir(specs[0].grid)}/: {done} done{elsewhere}, {len(todo)} to run{now}"


def list_commands(specs: list[RunSpec], python: str, workers: int, max_runs: int | None = None) -> str:
    """--dry-run: every command, one per line; finished runs and runs in progress elsewhere are commented out
    as skipped, and those beyond --max-runs as left for later."""
    lines, todo, running = [], [], 0
    for spec in specs:
        line = command_line(spec.command(python), run_env(workers))
        status = run_status(spec, python)
        if status == "done":
            line = f"# skipped (done): {line}"
        elif status == "running":
            line = f"# skipped (running: {running_elsewhere(spec.run_dir) or 'just ended'}): {line}"
            running += 1
        else:
            todo.append(spec)
        if status in ("new", "unfinished") and max_runs is not None and len(todo) > max_runs:
            line = f"# later (--max-runs {max_runs}): {line}"
        elif status == "unfinished" and (spec.run_dir / STATE).exists():
            line += f"  # unfinished: resumes from {spec.run_dir / STATE}"
        elif status == "unfinished":
            line += f"  # unfinished: {spec.run_dir} is deleted first"
        lines.append(line)
    lines.append(f"# {describe(specs, todo, max_runs, running)}")
    return "\n".join(lines)


def write_plan(specs: list[RunSpec], python: str, workers: int, max_runs: int | None = None) -> tuple[Path, int]:
    """The local plan of the runs still to do (the first max_runs of them), read by the workers (`run PLAN INDEX`)
    and by `summary`."""
    all_todo, done, running = pending(specs, python)
    todo = all_todo[:max_runs]
    if any(spec.algo in PEERS for spec in todo):
        sb3_peer.sb3_python()
    plan = {"grid": specs[0].grid, "skipped": len(done),
            "runs": [{"run_dir": str(s.run_dir), "command": s.command(python), "env": run_env(workers),
                      "results_dir": s.results_dir and str(s.results_dir)} for s in todo]}  # fmt: skip
    path = grid_dir(specs[0].grid) / f"plan-{os.getpid()}.json"  # a pool's own: a second pool may plan beside it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=1) + "\n")
    threads = run_env(workers).get("OMP_NUM_THREADS")
    pool = f"{workers} workers × {threads} torch thread(s)" if threads else "one run at a time"
    print(f"{describe(specs, all_todo, max_runs, len(running))}; {pool}", file=sys.stderr)
    return path, len(todo)


def summary(plan_path: Path) -> tuple[str, bool]:
    """What happened to a plan's runs, read from the run folders; (text, all finished)."""
    plan = json.loads(plan_path.read_text())
    unfinished = [Path(r["run_dir"]) for r in plan["runs"] if not (Path(r["run_dir"]) / DONE).exists()]
    failed = [run_dir for run_dir in unfinished if (run_dir / LOG).exists()]
    ran = len(plan["runs"]) - len(unfinished)
    counts = f"{ran} ran, {plan['skipped']} skipped (done before), {len(failed)} failed or stopped"
    not_started = len(unfinished) - len(failed)
    lines = [f"{plan['grid']}: {counts}" + (f", {not_started} not started" if not_started else "")]
    lines += [f"  {run_dir}: {last_line(run_dir / LOG)}" for run_dir in failed]
    return "\n".join(lines), not unfinished


def slurm_script(specs: list[RunSpec], python: str, options: argparse.Namespace) -> str:
    """A job array with one task per run; each task runs `exec`, so DONE and train.log work as locally."""
    root = Path.cwd().resolve()
    out = root / grid_dir(specs[0].grid) / "slurm"
    array = f"0-{len(specs) - 1}" + (f"%{options.max_parallel}" if options.max_parallel else "")
    sbatch = {"job-name": f"td3-sac-{specs[0].grid}", "array": array, "partition": options.partition,
              "account": options.account, "time": options.time, "cpus-per-task": options.cpus_per_task,
              "mem": options.mem, "gres": f"gpu:{options.gpus}" if options.gpus else None,
              "output": f"{out}/%A_%a.out", "open-mode": "append",
              "signal": f"B:USR1@{SLURM_WARNING_SECONDS}"}  # fmt: skip
    lines = [
        "#!/bin/bash",
        f"# TD3/SAC benchmark grid {specs[0].grid!r}: {len(specs)} runs, one per array task.",
        *(f"#SBATCH --{key}={value}" for key, value in sbatch.items() if value is not None),
        "#SBATCH --requeue",
        "set -euo pipefail",
        f"cd {shlex.quote(str(root))}",
        "# torch would otherwise start one thread per core of the whole node",
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
        'case "$SLURM_ARRAY_TASK_ID" in',
    ]
    for i, spec in enumerate(specs):
        to = ["--results", str(spec.results_dir)] if spec.results_dir else []
        run = [python, "-m", "benchmarks.grid", "exec", *to, str(spec.run_dir), "--", *spec.command(python)]
        lines.append(f"  {i}) exec {shlex.join(run)} ;;")
    lines += ['  *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;', "esac"]
    return "\n".join(lines) + "\n"


def submit(specs: list[RunSpec], python: str, options: argparse.Namespace) -> int:
    """Write the job array of the unfinished runs into the grid folder and sbatch it (or, dry, print both)."""
    all_todo, _, running = pending(specs, python)
    todo = all_todo[: options.max_runs]
    if not todo:
        print(f"nothing to submit: {describe(specs, todo, running=len(running))}")
        return 0
    if any(spec.algo in PEERS for spec in todo) and not options.dry_run:
        sb3_peer.sb3_python()
    script = slurm_script(todo, python, options)
    path = grid_dir(specs[0].grid) / "slurm" / "job.sh"
    plan = describe(specs, all_todo, options.max_runs, len(running))
    if options.dry_run:
        print(script + f"# dry run: nothing written or submitted. {plan}; this would run:")
        print(f"sbatch {path}")
        return 0
    if shutil.which("sbatch") is None:
        raise GridError("sbatch not found on PATH: --slurm must run where Slurm is (add --dry-run to see the job)")
    path.parent.mkdir(parents=True, exist_ok=True)  # also where Slurm writes the tasks' output
    path.write_text(script)
    print(f"{plan}; job script {path}", flush=True)
    return subprocess.run(["sbatch", str(path)], check=False).returncode


# ----------------------------------------------------------------------------- command line


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 1, like every other input error here
        raise GridError(message)


def positive(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number (got {text!r})")
    return int(text)


def parser() -> argparse.ArgumentParser:
    grid = Parser(add_help=False)
    grid.add_argument("preset", choices=[*PRESETS, "grid"])
    grid.add_argument("--algos", nargs="+")
    grid.add_argument("--envs", nargs="+")
    grid.add_argument("--seeds", nargs="+")
    grid.add_argument("--steps")
    grid.add_argument("--flags")
    grid.add_argument("--name")
    grid.add_argument("--workers", type=positive, default=1)
    grid.add_argument("--max-runs", type=positive)
    grid.add_argument("--python", default=".venv/bin/python" if Path(".venv/bin/python").exists() else "python3")
    grid.add_argument("--dry-run", action="store_true")
    grid.add_argument("--slurm", action="store_true")
    for flag in ("--partition", "--account", "--time", "--mem"):
        grid.add_argument(flag)
    for flag in ("--cpus-per-task", "--max-parallel"):
        grid.add_argument(flag, type=positive)
    grid.add_argument("--gpus", type=int)

    main_parser = Parser(prog="python -m benchmarks.grid", description=__doc__.split("\n")[0])
    commands = main_parser.add_subparsers(dest="command", required=True)
    for name in ("list", "prepare", "submit"):
        commands.add_parser(name, parents=[grid])
    for name in ("run", "summary"):
        sub = commands.add_parser(name)
        sub.add_argument("plan", type=Path)
        if name == "run":
            sub.add_argument("index", type=int)
    sub = commands.add_parser("exec")
    sub.add_argument("run_dir", type=Path)
    sub.add_argument("--results", type=Path, help="the committed copy of the run's result")
    sub.add_argument("training_command", nargs=argparse.REMAINDER)
    return main_parser


def parse(argv: list[str]) -> argparse.Namespace:
    # --flags takes one value that usually starts with "--", which argparse would read as an option
    argv = list(argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--flags":
            argv[i : i + 2] = [f"--flags={argv[i + 1]}"]
            break
    args = parser().parse_args(argv)
    if args.command in ("list", "prepare", "submit"):
        args.name = args.name or (args.preset if args.preset in PRESETS else "custom")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
            raise GridError(f"--name must be a plain folder name: letters, digits, '.', '_', '-' (got {args.name!r})")
        slurm_options = ("partition", "account", "time", "mem", "cpus_per_task", "max_parallel", "gpus")
        if not args.slurm and (given := [o for o in slurm_options if getattr(args, o) is not None]):
            raise GridError(f"--{given[0].replace('_', '-')} needs --slurm")
        if args.slurm and args.workers != 1:
            raise GridError("--workers is for runs on this machine; with --slurm, use --max-parallel")
        for option, default in SLURM_DEFAULTS.items():
            setattr(args, option, default if getattr(args, option) is None else getattr(args, option))
        if not re.fullmatch(r"(\d+-)?\d+(:\d\d){0,2}", args.time):
            raise GridError(f"--time must look like HH:MM:SS or D-HH:MM:SS (got {args.time!r})")
        if args.gpus < 0:
            raise GridError(f"--gpus must not be negative (got {args.gpus})")
    return args


def run_command(args: argparse.Namespace) -> int:
    """What each subcommand does; its exit status."""
    if args.command == "exec":
        command = args.training_command[1:] if args.training_command[:1] == ["--"] else args.training_command
        if not command:
            raise GridError("exec needs a command after --")
        return execute(args.run_dir, command, to=args.results)
    if args.command == "run":
        run = json.loads(args.plan.read_text())["runs"][args.index]
        to = run.get("results_dir")
        return execute(Path(run["run_dir"]), run["command"], run["env"], to and Path(to))
    if args.command == "summary":
        text, finished = summary(args.plan)
        print(text)
        return 0 if finished else 1
    specs = build_grid(args)
    if args.command == "submit":
        return submit(specs, args.python, args)
    if args.command == "list":
        print(list_commands(specs, args.python, args.workers, args.max_runs))
    elif args.dry_run or args.slurm:
        raise GridError("prepare plans runs on this machine; --dry-run is `list`, --slurm is `submit`")
    else:
        path, count = write_plan(specs, args.python, args.workers, args.max_runs)
        print(path, count, args.workers)  # read by benchmark.sh
    return 0


def main(argv: list[str]) -> int:
    try:
        return run_command(parse(argv))
    except GridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
