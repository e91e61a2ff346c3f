"""benchmark.sh and benchmarks/grid.py: the runs a grid makes, their commands and folders, resume, Slurm.

No training happens here: the pool tests run benchmark.sh in a copy of the repository whose
td3_continuous.py and sac_continuous.py are stand-ins that finish, fail or wait for a signal on request.
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks import grid, results
from tests import helpers

ROOT = Path(__file__).resolve().parents[1]
PY = "python"  # the interpreter named in commands built in-process
ALGORITHMS = "td3, sac, sb3-td3, sb3-sac"
PENDULUM_FLAGS = ["--learning-starts", "1000", "--eval-frequency", "2000"]
STAND_IN = """
import os, signal, sys, time
from pathlib import Path
args = sys.argv[1:]
run_name = args[args.index("--run-name") + 1]
run_dir = Path("runs") / run_name
def stop(signum, frame):  # as the scripts do: save the training state, exit 128 + the signal
    (run_dir / "stopped").write_text(signal.Signals(signum).name)
    (run_dir / "training_state.pt").write_text("stand-in")
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
(run_dir / "pid").write_text(str(os.getpid()))
with open(run_dir / "argv", "a") as argv_log:
    argv_log.write(" ".join(args) + "\\n")
print("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS"))
if run_name in os.environ.get("STAND_IN_FAIL", "").split():
    sys.exit("error: stand-in failure")
while os.path.exists(os.environ.get("STAND_IN_HOLD", "")):  # until the test lets it end
    time.sleep(0.05)
if os.environ.get("STAND_IN_WAIT"):
    time.sleep(60)
print("finished")
"""


@pytest.fixture
def cli(monkeypatch, tmp_path, capsys):
    """cli(*argv) runs benchmarks.grid in an empty working directory: (exit status, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        code = grid.main([*argv[:2], "--python", PY, *argv[2:]] if argv[0] in ("list", "submit") else list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def repo(tmp_path):
    """A copy of benchmark.sh and benchmarks/ with stand-in training scripts; run(*args) runs benchmark.sh there."""
    shutil.copy(ROOT / "benchmark.sh", tmp_path)
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    for algo in grid.ALGORITHMS:
        (tmp_path / f"{algo}_continuous.py").write_text(STAND_IN)

    def run(*args, env=None):
        env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
        command = ["bash", "benchmark.sh", *args]
        return helpers.run(command, cwd=tmp_path, env=env)

    run.path = tmp_path
    return run


def specs_of(*argv) -> list[grid.RunSpec]:
    return grid.build_grid(grid.parse(["list", *argv]))


def finish(spec: grid.RunSpec, python: str = PY, command: list[str] | None = None) -> None:
    """Make spec look like a run that finished (its folder with a DONE marker)."""
    spec.run_dir.mkdir(parents=True)
    now = datetime.now(UTC)
    grid.write_done(spec.run_dir, command or spec.command(python), now, now, 1.0)


def tree(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


# ----------------------------------------------------------------------------- which runs, which commands


def test_quick_preset_runs_and_commands():
    specs = specs_of("quick")
    assert len(specs) == 3 * 2 * 3
    assert specs[0].command(PY) == [
        PY, "td3_continuous.py", "--env-id", "Pendulum-v1", "--seed", "1", "--total-timesteps", "20000",
        *PENDULUM_FLAGS, "--run-name", "grid/quick/Pendulum-v1/td3/seed1",
    ]  # fmt: skip
    assert specs[0].run_dir == Path("runs/grid/quick/Pendulum-v1/td3/seed1")
    # seed by seed, then env, then algorithm: a grid cut short has every pair at seed 1 before any at seed 2
    assert [(s.seed, s.env_id, s.algo) for s in specs[:7]] == [
        (1, "Pendulum-v1", "td3"), (1, "Pendulum-v1", "sac"), (1, "InvertedPendulum-v5", "td3"),
        (1, "InvertedPendulum-v5", "sac"), (1, "Hopper-v5", "td3"), (1, "Hopper-v5", "sac"), (2, "Pendulum-v1", "td3"),
    ]  # fmt: skip
    assert not any(s.committed for s in specs) and specs[0].results_dir is None
    budgets = {(s.env_id, s.steps, s.flags) for s in specs}
    assert budgets == {
        ("Pendulum-v1", 20_000, tuple(PENDULUM_FLAGS)),
        ("InvertedPendulum-v5", 20_000, tuple(PENDULUM_FLAGS)),
        ("Hopper-v5", 50_000, ("--learning-starts", "5000", "--eval-frequency", "5000")),
    }
    assert len({s.run_dir for s in specs}) == len(specs)


def test_full_preset_runs():
    specs = specs_of("full")
    assert len(specs) == 5 * 2 * 5
    assert [s.env_id for s in specs[:10:2]] == ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5"]
    assert [s.seed for s in specs[::10]] == [1, 2, 3, 4, 5] and {s.algo for s in specs} == {"td3", "sac"}
    assert {(s.steps, s.flags) for s in specs} == {(1_000_000, ("--eval-frequency", "10000"))}
    assert specs[-1].run_name == "grid/full/Humanoid-v5/sac/seed5"


@pytest.mark.parametrize("seeds", [["1", "2"], ["1 2"], ["1,2"]], ids=["words", "one-string", "commas"])
def test_custom_grid_commands(seeds):
    specs = specs_of("grid", "--algos", "sac", "td3", "--envs", "Hopper-v5", "InvertedPendulum-v5",
                     "--seeds", *seeds, "--steps", "3000", "--flags", "--no-cuda", "--name", "mine")  # fmt: skip
    assert len(specs) == 2 * 2 * 2
    assert specs[-1].command(".venv/bin/python") == [
        ".venv/bin/python", "td3_continuous.py", "--env-id", "InvertedPendulum-v5", "--seed", "2",
        "--total-timesteps", "3000", "--no-cuda", "--run-name", "grid/mine/InvertedPendulum-v5/td3/seed2",
    ]  # fmt: skip
    assert specs[0].run_dir == Path("runs/grid/mine/Hopper-v5/sac/seed1")


def test_a_grid_of_one_run_is_described_in_the_singular():
    (spec,) = specs_of(*CUSTOM)
    assert (
        grid.describe([spec], [spec]) == "1 run (1 env × 1 algorithm × 1 seed) in runs/grid/custom/: 0 done, 1 to run"
    )


def test_medium_preset_runs_seed_by_seed_with_sb3_beside_seed_1_humanoid_with_3_seeds_and_commits_results():
    specs = specs_of("medium")
    four, algos = ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"], ("td3", "sac")
    ours = [(1, env, algo) for env in [*four, "Humanoid-v5"] for algo in algos]
    peers = [(1, env, algo) for env in four for algo in ("sb3-td3", "sb3-sac")]
    with_humanoid = [(seed, env, algo) for seed in (2, 3) for env in [*four, "Humanoid-v5"] for algo in algos]
    without = [(seed, env, algo) for seed in (4, 5) for env in four for algo in algos]
    assert [(s.seed, s.env_id, s.algo) for s in specs] == ours + peers + with_humanoid + without
    assert {(s.steps, s.flags) for s in specs} == {(300_000, ("--eval-frequency", "10000", "--save-model"))}
    assert specs[0].command(PY) == [
        PY, "td3_continuous.py", "--env-id", "HalfCheetah-v5", "--seed", "1", "--total-timesteps", "300000",
        "--eval-frequency", "10000", "--save-model", "--run-name", "grid/medium/HalfCheetah-v5/td3/seed1",
    ]  # fmt: skip
    assert specs[11].command(PY) == [
        ".bench-venvs/sb3/bin/python", "benchmarks/sb3_peer.py", "--algo", "sac", "--env-id", "HalfCheetah-v5",
        "--seed", "1", "--total-timesteps", "300000", "--eval-frequency", "10000", "--save-model",
        "--run-name", "grid/medium/HalfCheetah-v5/sb3-sac/seed1",
    ]  # fmt: skip
    assert specs[-1].results_dir == Path("docs/benchmarks/medium/Ant-v5/sac/seed5")
    assert grid.describe(specs, specs[1:]) == (
        "54 runs (5 envs, 4 algorithms, 5 seeds, not every combination) in runs/grid/medium/: 1 done, 53 to run"
    )


def test_custom_grid_is_named_custom_by_default_and_keeps_quoted_flags():
    (spec,) = specs_of("grid", "--algos", "td3", "--envs", "Pendulum-v1", "--seeds", "7", "--steps", "500",
                       "--flags", "--exp-name 'a b' --batch-size 32")  # fmt: skip
    assert spec.run_name == "grid/custom/Pendulum-v1/td3/seed7"
    assert spec.flags == ("--exp-name", "a b", "--batch-size", "32")


CUSTOM = ["grid", "--algos", "td3", "--envs", "Pendulum-v1", "--seeds", "1", "--steps", "100"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["grid", "--algos", "td3", "ppo", *CUSTOM[3:]],
            "unknown algorithm 'ppo' (choose from td3, sac, sb3-td3, sb3-sac)",
        ),
        (["quik"], "invalid choice: 'quik'"),
        ([*CUSTOM[:5], "--seeds", "1 two", "--steps", "100"], "--seeds must be whole numbers (got 'two')"),
        ([*CUSTOM[:5], "--seeds", "1.5", "--steps", "100"], "--seeds must be whole numbers (got '1.5')"),
        ([*CUSTOM[:5], "--seeds", "1 1", "--steps", "100"], "--seeds must list at least one value, each once"),
        ([*CUSTOM[:7], "--steps", "1e6"], "--steps must be a positive whole number (got '1e6')"),
        (CUSTOM[:7], "`grid` needs --steps"),
        (["quick", "--steps", "100"], "--steps only go with `grid`"),
        (["full", "--flags", "--no-cuda"], "--flags only go with `grid`"),
        ([*CUSTOM, "--flags", "--seed 3"], "--flags must not contain --seed"),
        ([*CUSTOM, "--flags", "--run-name=x"], "--flags must not contain --run-name"),
        (["grid", "--algos", "td3", "--envs", "Hoper-v5", *CUSTOM[5:]], "unknown env id 'Hoper-v5'"),
        (["grid", "--algos", "td3", "--envs", "ALE/Pong-v5", *CUSTOM[5:]], "cannot name a run folder"),
        (["quick", "--name", "../elsewhere"], "--name must be a plain folder name"),
        (["quick", "--workers", "0"], "--workers: must be a positive whole number (got '0')"),
        (["quick", "--max-runs", "0"], "--max-runs: must be a positive whole number (got '0')"),
        (["quick", "--partition", "gpu"], "--partition needs --slurm"),
        (["quick", "--slurm", "--workers", "2"], "with --slurm, use --max-parallel"),
        (["quick", "--slurm", "--time", "tomorrow"], "--time must look like HH:MM:SS"),
        (["quick", "--slurm", "--gpus", "-1"], "--gpus must not be negative"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_input_stops_with_one_line(cli, tmp_path, argv, message):
    code, out, err = cli("list", *argv)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists()


def test_bad_input_through_benchmark_sh(repo):
    result = repo("grid", "--algos", "ppo", "--envs", "Pendulum-v1", "--seeds", "1", "--steps", "100")
    assert (
        result.returncode == 1
        and result.stderr == "error: unknown algorithm 'ppo' (choose from td3, sac, sb3-td3, sb3-sac)\n"
    )
    result = repo("quik")
    assert result.returncode == 2 and "unknown command 'quik'" in result.stderr
    assert not (repo.path / "runs").exists()


@pytest.mark.parametrize(("cores", "workers", "threads"), [(2, 1, None), (2, 2, "1"), (2, 3, "1"), (8, 3, "2")])
def test_parallel_runs_share_the_cores(monkeypatch, cores, workers, threads):
    monkeypatch.setattr(grid, "cpu_count", lambda: cores)
    assert grid.run_env(workers).get("OMP_NUM_THREADS") == threads


def test_help_lists_every_command_and_option(repo):
    result = repo("--help")
    assert result.returncode == 0
    words = ["quick", "medium", "full", "grid", "aggregate", "videos", "speed", "--workers", "--name",
             "--dry-run", "--slurm", "--partition", "--time", "--cpus-per-task", "--mem", "--gpus", "--account",
             "--max-parallel", "--max-runs"]  # fmt: skip
    for word in words:
        assert word in result.stdout


# ----------------------------------------------------------------------------- dry run and resume


def test_dry_run_marks_finished_and_unfinished_runs_and_changes_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "cpu_count", lambda: 2)
    specs = specs_of("quick")
    finish(specs[0])
    specs[1].run_dir.mkdir(parents=True)  # an interrupted run
    before = tree(tmp_path)
    code, out, _ = cli("list", "quick", "--workers", "2", "--dry-run")
    assert code == 0 and tree(tmp_path) == before
    lines = out.splitlines()
    commands = [shlex.join(s.command(PY)) for s in specs]
    assert lines[0] == f"# skipped (done): OMP_NUM_THREADS=1 {commands[0]}"
    assert lines[1] == f"OMP_NUM_THREADS=1 {commands[1]}  # unfinished: {specs[1].run_dir} is deleted first"
    assert lines[2:-1] == [f"OMP_NUM_THREADS=1 {c}" for c in commands[2:]]
    assert lines[-1] == "# 18 runs (3 envs × 2 algorithms × 3 seeds) in runs/grid/quick/: 1 done, 17 to run"


def test_dry_run_shows_which_runs_resume_and_which_wait_for_a_later_call(cli, tmp_path):
    specs = specs_of("quick")
    finish(specs[0])
    specs[2].run_dir.mkdir(parents=True)
    (specs[2].run_dir / grid.STATE).write_bytes(b"saved")  # interrupted after its first checkpoint
    code, out, _ = cli("list", "quick", "--max-runs", "3", "--dry-run")
    lines = out.splitlines()
    commands = [shlex.join(s.command(PY)) for s in specs]
    assert code == 0 and lines[0] == f"# skipped (done): {commands[0]}"
    assert lines[1:4] == [commands[1], f"{commands[2]}  # unfinished: resumes from {specs[2].run_dir / grid.STATE}",
                          commands[3]]  # fmt: skip
    assert lines[4:-1] == [f"# later (--max-runs 3): {c}" for c in commands[4:]]
    assert lines[-1].endswith(": 1 done, 17 to run, the first 3 now")


def commit_result(spec: grid.RunSpec, command: list[str]) -> None:
    """Make spec look like a run that finished on another machine: only its committed result is here."""
    spec.results_dir.mkdir(parents=True)
    results.write_json(spec.results_dir / results.RESULT, {"command": shlex.join(command)})


def test_a_committed_result_counts_as_finished_and_must_have_the_same_flags(cli, tmp_path):
    specs = specs_of("medium")
    commit_result(specs[0], specs[0].command("/elsewhere/python"))  # the interpreter may differ
    code, out, _ = cli("list", "medium")
    assert code == 0 and out.splitlines()[0].startswith("# skipped (done): ")
    assert out.splitlines()[-1].endswith(": 1 done, 53 to run") and not (tmp_path / "runs").exists()
    commit_result(specs[1], [*specs[1].command(PY), "--batch-size", "32"])
    code, _, err = cli("list", "medium")
    assert code == 1 and f"{specs[1].run_dir} finished with other flags" in err
    commit_result(specs[2], [*specs[2].command(PY), "--resume", str(specs[2].run_dir)])  # as older versions did
    shutil.rmtree(specs[1].results_dir)
    code, out, _ = cli("list", "medium")
    assert code == 0 and out.splitlines()[-1].endswith(": 2 done, 52 to run")


def test_slurm_tasks_of_a_committing_grid_export_their_results():
    specs = specs_of("medium")[:2]
    script = grid.slurm_script(specs, PY, grid.parse(["submit", "medium", "--slurm"]))
    task = re.search(r"^  1\) exec (.*) ;;$", script, flags=re.MULTILINE).group(1)
    assert shlex.split(task) == [PY, "-m", "benchmarks.grid", "exec", "--results", str(specs[1].results_dir),
                                 str(specs[1].run_dir), "--", *specs[1].command(PY)]  # fmt: skip
    parsed = grid.parse(shlex.split(task)[3:])
    assert (parsed.run_dir, parsed.results) == (specs[1].run_dir, specs[1].results_dir)


def test_a_run_in_progress_elsewhere_is_left_alone_until_it_ends(cli, tmp_path, capsys):
    specs = specs_of("quick")
    specs[1].run_dir.mkdir(parents=True)
    (specs[1].run_dir / grid.LOG).write_text("training...\n")
    held = grid.try_lock(grid.lock_path(specs[1].run_dir))  # as a pool or Slurm task running it holds it
    held.write("pid 4242 on node7\n")
    held.flush()
    code, out, _ = cli("list", "quick", "--max-runs", "2", "--dry-run")
    lines, commands = out.splitlines(), [shlex.join(s.command(PY)) for s in specs]
    assert code == 0 and lines[:4] == [commands[0], f"# skipped (running: pid 4242 on node7): {commands[1]}",
                                       commands[2], f"# later (--max-runs 2): {commands[3]}"]  # fmt: skip
    assert lines[-1].endswith(": 0 done, 1 running, 17 to run, the first 2 now")
    code, out, _ = cli("prepare", "quick", "--python", PY, "--max-runs", "2")
    plan = json.loads((tmp_path / out.split()[0]).read_text())
    assert [r["run_dir"] for r in plan["runs"]] == [str(specs[0].run_dir), str(specs[2].run_dir)]
    (tmp_path / out.split()[0]).unlink()
    before = tree(tmp_path)
    assert grid.execute(specs[1].run_dir, [sys.executable, "-c", "open('ran', 'w')"]) == 1
    assert capsys.readouterr().out == f"{'RUNNING':17}{specs[1].run_dir}: pid 4242 on node7 runs it now; left alone\n"
    assert tree(tmp_path) == before, "its folder is not deleted, nothing is started"

    held.close()  # the run ended (or its process died: the kernel frees the lock)
    assert cli("list", "quick", "--dry-run")[1].splitlines()[1].endswith("is deleted first")
    assert grid.execute(specs[1].run_dir, [sys.executable, "-c", "open('ran', 'w')"]) == 0
    assert (tmp_path / "ran").exists()


def test_the_lock_lasts_while_the_training_process_lives_even_if_its_worker_dies(tmp_path):
    run_dir = tmp_path / "runs/grid/g/Pendulum-v1/td3/seed1"
    pid_file = tmp_path / "pid"
    training = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    worker = [sys.executable, "-m", "benchmarks.grid", "exec", str(run_dir), "--", sys.executable, "-c", training]
    with helpers.started(worker, cwd=ROOT, stdout=subprocess.DEVNULL) as process:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            assert grid.running_elsewhere(run_dir) == f"pid {process.pid} on {socket.gethostname()}"
            process.kill()  # the worker dies; the training process, in a session of its own, goes on
            process.wait()
            assert grid.running_elsewhere(run_dir) == f"pid {process.pid} on {socket.gethostname()}"
        finally:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while grid.running_elsewhere(run_dir) and time.monotonic() < deadline:  # until the kernel has reaped it
        time.sleep(0.05)
    assert grid.running_elsewhere(run_dir) is None


def test_a_finished_run_with_other_flags_is_an_error_not_a_skip(cli):
    (spec,) = specs_of(*CUSTOM)
    finish(spec, command=[PY, *spec.command(PY)[1:-2], "--batch-size", "32", *spec.command(PY)[-2:]])
    code, _, err = cli("list", *CUSTOM)
    assert code == 1 and "finished with other flags" in err and "use another --name" in err


def test_execute_logs_output_and_marks_success(tmp_path):
    run_dir = tmp_path / "runs/grid/g/Pendulum-v1/td3/seed1"
    command = [sys.executable, "-c", "import os, sys; print('out', os.environ['OMP_NUM_THREADS']); sys.exit(0)"]
    assert grid.execute(run_dir, command, {"OMP_NUM_THREADS": "1"}) == 0
    assert (run_dir / grid.LOG).read_text().splitlines()[-1] == "out 1"
    done = json.loads((run_dir / grid.DONE).read_text())
    assert done["command"] == shlex.join(command)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", done["start"]) and done["end"] >= done["start"]
    assert 0 <= done["wall_seconds"] < 60 and done["host"]


def test_each_compiled_run_gets_a_kernel_cache_of_its_own_unless_the_user_chose_one(tmp_path, monkeypatch):
    """Compiled runs side by side must not build kernels into one cache (pytorch/torchdynamo#1347)."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    show = "import os; d = os.environ.get('TORCHINDUCTOR_CACHE_DIR'); print('cache', d, os.path.isdir(d or ''))"

    def cache_of(name, *flags, env=None):
        run_dir = tmp_path / name
        assert grid.execute(run_dir, [sys.executable, "-c", show, *flags], env) == 0
        return (run_dir / grid.LOG).read_text().splitlines()[-1].split()[1:]

    first, second = cache_of("a", "--compile"), cache_of("b", "--seed", "2", "--compile")
    assert first[1] == second[1] == "True" and first[0] != second[0], "a cache of each run's own"
    assert not Path(first[0]).exists() and not Path(second[0]).exists(), "deleted when the run ends"
    assert cache_of("c", "--seed", "2") == ["None", "False"], "runs that compile nothing need none"
    assert cache_of("d", "--compile", env={"TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}) == [str(tmp_path), "True"]


def test_execute_failure_keeps_the_log_and_writes_no_marker(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert grid.execute(run_dir, [sys.executable, "-c", "import sys; sys.exit('error: no good')"]) == 1
    assert not (run_dir / grid.DONE).exists() and "error: no good" in (run_dir / grid.LOG).read_text()
    assert "FAILED" in capsys.readouterr().out


def test_execute_starts_an_unfinished_run_from_scratch_and_skips_a_finished_one(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "events.out.tfevents.partial").write_text("left by an interrupted run")
    assert grid.execute(run_dir, [sys.executable, "-c", "pass"]) == 0
    assert sorted(p.name for p in run_dir.iterdir()) == [grid.DONE, grid.ATTEMPTS, grid.LOG]
    marker = tmp_path / "ran"
    assert grid.execute(run_dir, [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]) == 0
    assert not marker.exists()


def test_execute_resumes_a_run_that_saved_its_training_state(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / grid.STATE).write_text("saved by an interrupted attempt")
    (run_dir / grid.LOG).write_text("first attempt\n")
    first = {"start": "2026-01-02T03:04:05Z", "wall_seconds": 100.0, "commit": "0" * 40, "uncommitted_changes": False}
    (run_dir / grid.ATTEMPTS).write_text(json.dumps(first) + "\n")
    command = [sys.executable, "-c", "import sys; print('argv', sys.argv[1:])", "--seed", "1"]
    assert grid.execute(run_dir, command) == 0
    log = (run_dir / grid.LOG).read_text()
    assert log.startswith("first attempt\n") and f"argv ['--seed', '1', '--resume', '{run_dir}']" in log
    assert "resumed" in capsys.readouterr().out
    done = json.loads((run_dir / grid.DONE).read_text())
    assert done["command"] == shlex.join(command), "the run's command; only its attempt added --resume"
    assert done["wall_seconds"] >= 100, "summed over the attempts"
    assert done["start"] == first["start"], "the run started with its first attempt"
    (earlier, last) = done["attempt_history"]
    assert earlier == first and last["start"] >= done["start"] and last["wall_seconds"] < 100
    assert last["commit"] == done["commit"] == grid.results.git_state()["commit"]  # this checkout's


def test_attempts_written_by_older_versions_count_with_only_their_wall_time(tmp_path):
    (tmp_path / grid.ATTEMPTS).write_text('39.5\n{"start": "2026-01-02T03:04:05Z", "wall_seconds": 2.5}\n')
    old, new = grid.read_attempts(tmp_path)
    assert old == {"start": None, "wall_seconds": 39.5, "commit": None, "uncommitted_changes": None}
    assert new == {"start": "2026-01-02T03:04:05Z", "wall_seconds": 2.5, "commit": None, "uncommitted_changes": None}


STAND_IN_GRID = ["grid", "--algos", "td3 sac", "--envs", "Pendulum-v1", "--seeds", "1 2", "--steps", "100"]


def test_pool_runs_everything_survives_a_failure_and_resumes(repo):
    failing = "grid/e2e/Pendulum-v1/sac/seed2"
    first = repo(*STAND_IN_GRID, "--workers", "2", "--name", "e2e", env={"STAND_IN_FAIL": failing})
    assert first.returncode == 1, first.stderr
    assert first.stdout.splitlines()[-2:] == [
        "e2e: 3 ran, 0 skipped (done before), 1 failed or stopped",
        "  runs/grid/e2e/Pendulum-v1/sac/seed2: error: stand-in failure",
    ]
    runs = repo.path / "runs/grid/e2e/Pendulum-v1"
    done = sorted(str(p.parent.relative_to(runs)) for p in runs.glob(f"*/*/{grid.DONE}"))
    assert done == ["sac/seed1", "td3/seed1", "td3/seed2"]
    threads = str(max(1, grid.cpu_count() // 2))  # two workers share the cores
    assert f"OMP_NUM_THREADS {threads}" in (runs / "td3/seed1" / grid.LOG).read_text()

    pids = {p: (p / "pid").read_text() for p in runs.glob("*/seed*")}
    second = repo(*STAND_IN_GRID, "--workers", "2", "--name", "e2e")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "e2e: 1 ran, 3 skipped (done before), 0 failed or stopped"
    rerun = {p.relative_to(runs).as_posix() for p, pid in pids.items() if (p / "pid").read_text() != pid}
    assert rerun == {"sac/seed2"}

    dry = repo(*STAND_IN_GRID, "--name", "e2e", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("# skipped (done): ") == 4


def test_max_runs_runs_the_first_runs_still_to_do_and_leaves_the_rest_for_the_next_call(repo):
    runs = repo.path / "runs/grid/few/Pendulum-v1"
    first = repo(*STAND_IN_GRID, "--name", "few", "--max-runs", "3")
    assert first.returncode == 0, first.stderr
    assert (
        "4 runs (1 env × 2 algorithms × 2 seeds) in runs/grid/few/: 0 done, 4 to run, the first 3 now" in first.stderr
    )
    assert sorted(p.parent.relative_to(runs).as_posix() for p in runs.glob(f"*/*/{grid.DONE}")) == [
        "sac/seed1", "td3/seed1", "td3/seed2"]  # fmt: skip
    assert not (runs / "sac/seed2").exists()
    second = repo(*STAND_IN_GRID, "--name", "few", "--max-runs", "3")
    assert (
        second.returncode == 0
        and second.stdout.splitlines()[-1] == "few: 1 ran, 3 skipped (done before), 0 failed or stopped"
    )


def test_a_second_pool_beside_the_first_runs_what_is_left_and_neither_reads_the_others_plan(repo):
    hold = repo.path / "hold"  # the first pool's first run lasts until this file is gone
    hold.touch()
    env = {**os.environ, "PYTHON": sys.executable, "STAND_IN_HOLD": str(hold)}
    command = ["bash", "benchmark.sh", *STAND_IN_GRID, "--max-runs", "2"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    runs = repo.path / "runs/grid/custom/Pendulum-v1"
    with helpers.started(command, cwd=repo.path, env=env, **pipes) as first:  # plans td3 seed 1, then sac seed 1
        deadline = time.monotonic() + 30
        while not (runs / "td3/seed1/pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = repo(*STAND_IN_GRID, "--max-runs", "1")  # td3 seed 1 is running: the first left is sac seed 1
        hold.unlink()
        out, err = first.communicate(timeout=30)
    assert second.returncode == 0 and second.stdout.splitlines()[-1] == (
        "custom: 1 ran, 0 skipped (done before), 0 failed or stopped"
    )
    assert first.returncode == 0, err
    assert f"{'skipped (done)':17}runs/grid/custom/Pendulum-v1/sac/seed1" in out.splitlines()  # the second ran it
    assert (runs / "sac/seed1/argv").read_text().count("\n") == 1 and not (runs / "td3/seed2").exists()
    assert not list(runs.parent.glob("plan*.json")), "each pool deletes its plan when it ends"


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_every_run(repo, how):
    env = {**os.environ, "PYTHON": sys.executable, "STAND_IN_WAIT": "1"}
    command = ["bash", "benchmark.sh", *STAND_IN_GRID[:5], "--seeds", "1", "--steps", "100", "--workers", "2"]
    pid_files = [repo.path / f"runs/grid/custom/Pendulum-v1/{algo}/seed1/pid" for algo in grid.ALGORITHMS]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with helpers.started(command, cwd=repo.path, env=env, **pipes) as bench:  # its own process group
        deadline = time.monotonic() + 30
        while not all(p.exists() and p.read_text() for p in pid_files) and time.monotonic() < deadline:
            time.sleep(0.1)
        if how == "ctrl-c":
            os.killpg(bench.pid, signal.SIGINT)  # a terminal sends Ctrl-C to the whole foreground process group
        else:
            bench.send_signal(signal.SIGTERM)  # `kill` reaches benchmark.sh alone
        out, err = bench.communicate(timeout=30)
    assert bench.returncode == 130, err
    for pid_file in pid_files:
        assert (pid_file.parent / "stopped").read_text() == "SIGTERM"  # each run got exactly its one signal
        assert not (pid_file.parent / grid.DONE).exists()
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
    assert "custom: 0 ran, 0 skipped (done before), 2 failed or stopped" in out


# ----------------------------------------------------------------------------- Slurm

SLURM = ["--slurm", "--partition", "gpu", "--time", "12:00:00", "--max-parallel", "4", "--gpus", "1",
         "--account", "lab", "--cpus-per-task", "4", "--mem", "16G"]  # fmt: skip


def test_slurm_dry_run_prints_the_job_array_of_unfinished_runs(cli, tmp_path):
    specs = specs_of("quick")
    finish(specs[0])
    before = tree(tmp_path)
    code, out, _ = cli("submit", "quick", *SLURM, "--dry-run")
    assert code == 0 and tree(tmp_path) == before
    for line in ["#SBATCH --array=0-16%4", "#SBATCH --partition=gpu", "#SBATCH --time=12:00:00",
                 "#SBATCH --gres=gpu:1", "#SBATCH --account=lab", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16G",
                 f"#SBATCH --output={tmp_path.resolve()}/runs/grid/quick/slurm/%A_%a.out",
                 f"cd {tmp_path.resolve()}", "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]:  # fmt: skip
        assert line in out.splitlines(), line
    tasks = re.findall(r"^  (\d+)\) exec (.*) ;;$", out, flags=re.MULTILINE)
    assert [int(i) for i, _ in tasks] == list(range(17))
    for (_, line), spec in zip(tasks, specs[1:], strict=True):  # the finished run is left out
        assert shlex.split(line) == [PY, "-m", "benchmarks.grid", "exec", str(spec.run_dir), "--", *spec.command(PY)]
    assert out.splitlines()[-1] == "sbatch runs/grid/quick/slurm/job.sh"


def test_slurm_with_max_runs_submits_only_the_first_runs_still_to_do(cli):
    specs = specs_of("quick")
    finish(specs[0])
    code, out, _ = cli("submit", "quick", "--slurm", "--max-runs", "2", "--dry-run")
    tasks = re.findall(r"^  \d+\) exec .* -- (.*) ;;$", out, flags=re.MULTILINE)
    assert code == 0 and "#SBATCH --array=0-1" in out.splitlines()
    assert [shlex.split(t) for t in tasks] == [s.command(PY) for s in specs[1:3]]
    assert "1 done, 17 to run, the first 2 now; this would run:" in out


def test_slurm_defaults():
    code = grid.slurm_script(specs_of("quick")[:2], PY, grid.parse(["submit", "quick", "--slurm"]))
    assert "#SBATCH --array=0-1\n" in code and "#SBATCH --time=24:00:00\n" in code
    assert "#SBATCH --cpus-per-task=2\n" in code and "#SBATCH --mem=8G\n" in code
    assert "--partition" not in code and "--gres" not in code and "--account" not in code


def test_slurm_without_sbatch_fails_with_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = cli("submit", "quick", "--slurm")
    assert code == 1 and err.startswith("error: sbatch not found on PATH") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_slurm_submits_a_script_whose_tasks_run_like_local_runs(repo):
    bin_dir = repo.path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "$@" > sbatch.args\necho "Submitted batch job 42"\n')
    (bin_dir / "sbatch").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = repo(*STAND_IN_GRID, "--slurm", "--name", "hpc", env=env)
    assert result.returncode == 0, result.stderr
    assert "Submitted batch job 42" in result.stdout
    script = repo.path / "runs/grid/hpc/slurm/job.sh"
    assert (repo.path / "sbatch.args").read_text().split() == [str(script.relative_to(repo.path))]
    task = helpers.run(["bash", str(script)], env={**os.environ, "SLURM_ARRAY_TASK_ID": "3"})
    assert task.returncode == 0, task.stderr
    assert [p.parent.name for p in (repo.path / "runs/grid/hpc").glob(f"**/{grid.DONE}")] == ["seed2"]
    assert (repo.path / "runs/grid/hpc/Pendulum-v1/sac/seed2" / grid.DONE).exists()
    again = repo(*STAND_IN_GRID, "--slurm", "--name", "hpc", "--dry-run")
    assert "#SBATCH --array=0-2\n" in again.stdout  # the finished task is not submitted again


def test_a_slurm_task_warned_of_its_time_limit_saves_requeues_and_resumes(repo):
    """Slurm sends SIGUSR1 (#SBATCH --signal) before the time limit: the run saves and stops, the task requeues
    itself with scontrol (#SBATCH --requeue), and when it runs again the run resumes from its saved state."""
    bin_dir = repo.path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 42"\n')
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {repo.path / "scontrol.args"}\n')
    for tool in ("sbatch", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    path = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    assert repo(*STAND_IN_GRID, "--slurm", "--name", "hpc", env=path).returncode == 0
    script = repo.path / "runs/grid/hpc/slurm/job.sh"
    assert f"#SBATCH --signal=B:USR1@{grid.SLURM_WARNING_SECONDS}\n" in script.read_text()
    assert "#SBATCH --requeue\n" in script.read_text()
    run_dir = repo.path / "runs/grid/hpc/Pendulum-v1/sac/seed2"  # array task 3
    task_env = {**os.environ, **path, "SLURM_ARRAY_JOB_ID": "42", "SLURM_ARRAY_TASK_ID": "3"}
    with helpers.started(["bash", str(script)], env={**task_env, "STAND_IN_WAIT": "1"}) as task:
        deadline = time.monotonic() + 30
        while not (run_dir / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        task.send_signal(signal.SIGUSR1)  # the job script exec'd the grid runner: it is the batch shell
        assert task.wait(timeout=30) == 143
    assert (run_dir / "stopped").read_text() == "SIGTERM" and not (run_dir / grid.DONE).exists()
    assert (repo.path / "scontrol.args").read_text() == "requeue 42_3\n"
    again = helpers.run(["bash", str(script)], env=task_env)  # Slurm starts the requeued task
    assert again.returncode == 0, again.stderr
    first, second = (run_dir / "argv").read_text().splitlines()
    assert "--resume" not in first and second.endswith(f"--resume {run_dir.relative_to(repo.path)}")
    assert (run_dir / grid.DONE).exists() and len(grid.read_attempts(run_dir)) == 2
    listed = repo(*STAND_IN_GRID, "--name", "hpc", "--dry-run")  # the resumed run counts as done, flags unchanged
    assert listed.returncode == 0 and listed.stdout.count("# skipped (done): ") == 1, listed.stderr
