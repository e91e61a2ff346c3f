"""--resume: an interrupted run continues exactly where it stopped, and bad input stops with one line and writes
nothing. The exactness tests use an env whose reset does not depend on the seed and interrupt it when every
episode has just ended, the only point where cutting the envs off changes nothing."""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import read_scalars, run, started
from tests.predictable_env import TIME_LIMIT, SteadyEnv

ROOT = Path(__file__).resolve().parents[1]
STEADY = "tests.predictable_env:Steady-v0"
RUN = {"env_id": STEADY, "total_timesteps": 150, "learning_starts": 40, "batch_size": 16, "eval_frequency": 50}


@pytest.fixture
def interrupt_at(monkeypatch):
    """interrupt_at(k): SIGINT (Ctrl-C) arrives during the k-th step of the first env that takes k steps."""

    def arm(steps: int | None) -> None:
        monkeypatch.setattr(SteadyEnv, "interrupt_at", steps)
        monkeypatch.setattr(SteadyEnv, "signalled", False)

    return arm


def resume(algo, run_name: str, **flags) -> dict:
    """What `python <algo>_continuous.py --resume runs/<run_name> [flags]` does, in the test's folder."""
    return algo.main(algo.Args(resume=f"runs/{run_name}", **flags))


def state_file(tmp_path: Path, run_name: str) -> Path:
    return tmp_path / "runs" / run_name / "training_state.pt"


def assert_same(a, b, where="state"):
    """Bit for bit: tensors equal in dtype, shape and every value; everything else equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("num_envs", [1, 3])
def test_right_after_resume_the_learner_is_what_was_saved(algo, train, tmp_path, interrupt_at, num_envs):
    """Interrupted mid-run, then resumed and interrupted again before its first step: the second save, made from
    the restored objects, equals the first bit for bit (weights, optimizer states, buffer rows, random states,
    counters, evaluation history). It also shows that an interrupt during setup ends cleanly."""
    steps = 45 if num_envs == 1 else 20  # past the 40 warm-up steps: the optimizers have state
    interrupt_at(steps)
    first = train(algo, **RUN, num_envs=num_envs, run_name="r")
    assert first["signal"] == signal.SIGINT and first["global_step"] == steps * num_envs
    saved = torch.load(state_file(tmp_path, "r"), weights_only=True)
    assert saved["loop"]["updates"] > 0 and len(saved["learner"]["replay_buffer"]["rows"]) == steps * num_envs
    interrupt_at(0)  # Ctrl-C at the resumed run's first env reset, before its first step
    again = resume(algo, "r")
    assert again["interrupted"] and again["global_step"] == first["global_step"]
    assert_same(torch.load(state_file(tmp_path, "r"), weights_only=True), saved)


@pytest.mark.parametrize(("num_envs", "steps_before"), [(1, 30), (3, 20)])
def test_interrupt_and_resume_gives_the_uninterrupted_run(algo, train, tmp_path, interrupt_at, num_envs, steps_before):
    """Stopped by Ctrl-C when every episode has just ended (a multiple of the 5-step time limit), then resumed:
    every logged number (steps/s aside) and the final weights equal those of the run that was never stopped.
    With one env the stop falls in the random warm-up (30 < 40 steps), with three after learning started."""
    assert steps_before % TIME_LIMIT == 0
    interrupt_at(None)
    whole = train(algo, **RUN, num_envs=num_envs, run_name="whole")
    interrupt_at(steps_before)
    part = train(algo, **RUN, num_envs=num_envs, run_name="parts")
    assert part["interrupted"] and part["global_step"] == steps_before * num_envs
    time.sleep(1.1)  # TensorBoard reads a folder's event files in name order: <unix seconds>.<host>.<pid>.<n>, and
    # in one process within one second n alone would decide (".10" before ".9"); separate processes never tie
    rest = resume(algo, "parts")
    assert not rest["interrupted"] and rest["global_step"] == whole["global_step"]

    def logged(name):
        return {k: v for k, v in read_scalars(tmp_path / "runs" / name).items() if k != "charts/SPS"}

    assert logged("parts") == logged("whole")
    for name, value in whole["actor"].state_dict().items():
        assert torch.equal(rest["actor"].state_dict()[name], value), name


def test_steps_per_second_after_resume_count_only_the_resumed_steps(algo, train, tmp_path, interrupt_at, monkeypatch):
    """On a clock that ticks once per call, every step takes at least one tick of training time (its evaluation
    and saving pause takes one more, which is not counted), so no window can show more than one step per tick."""
    interrupt_at(45)  # after learning started (40): the resumed run goes on counting updates
    train(algo, **RUN, run_name="r")
    interrupt_at(None)
    monkeypatch.setattr(algo, "LOG_EVERY", 10)
    ticks = itertools.count()
    monkeypatch.setattr(algo.time, "perf_counter", lambda: float(next(ticks)))
    resume(algo, "r")
    resumed = [(step, sps) for step, sps in read_scalars(tmp_path / "runs" / "r")["charts/SPS"] if step > 45]
    assert resumed and all(0 < sps <= 1.0 for _, sps in resumed), resumed


def test_resume_keeps_the_runs_thread_count_unless_the_command_sets_one(algo, train, tmp_path, interrupt_at):
    """A run started with --torch-threads 1 and resumed without the flag goes on with one thread (PyTorch's
    default, one per core, would make runs that share the machine many times slower); --torch-threads on the
    resume command wins."""
    before = torch.get_num_threads()
    try:
        interrupt_at(45)
        train(algo, **RUN, torch_threads=1, run_name="r")
        interrupt_at(60)
        torch.set_num_threads(2)
        resume(algo, "r")
        assert torch.get_num_threads() == 1, "the resumed run uses the run's own thread count"
        assert torch.load(state_file(tmp_path, "r"), weights_only=True)["args"]["torch_threads"] == 1
        interrupt_at(None)
        resume(algo, "r", torch_threads=2)
        assert torch.get_num_threads() == 2, "the command's --torch-threads wins"
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- bad input
def folder_contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def edited_state(path: Path, **changes) -> None:
    state = torch.load(path, weights_only=True)
    torch.save(state | changes, path)


BAD_RESUMES = {
    "missing": (lambda run: run / "nothing-here.pt", "does not exist"),
    "truncated": (lambda run: run / "cut.pt", "cannot read"),
    "corrupt": (lambda run: run / "noise.pt", "cannot read"),
    "weights only": (lambda run: run / "weights.pt", "not a training state"),
    "other algorithm": (lambda run: run / "other.pt", "training state of format"),
    "unknown format": (lambda run: run / "future.pt", "format 99"),
    "other spaces": (lambda run: run / "spaces.pt", "no longer has the observation and action spaces"),
}


@pytest.mark.parametrize("case", list(BAD_RESUMES))
def test_bad_resume_input_stops_with_one_line_and_writes_nothing(algo, train, tmp_path, case):
    train(algo, **RUN, run_name="r", save_model=True)
    run_dir = tmp_path / "runs" / "r"
    state = run_dir / "training_state.pt"
    (run_dir / "cut.pt").write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    (run_dir / "noise.pt").write_bytes(bytes(range(256)) * 64)
    (run_dir / "weights.pt").write_bytes((run_dir / f"{algo.ALGORITHM}_continuous.pt").read_bytes())
    for name, changes in [("other", {"algorithm": "td3" if algo.ALGORITHM == "sac" else "sac"}),
                          ("future", {"format": 99}), ("spaces", {"spaces": {"obs_dim": 4}})]:  # fmt: skip
        (run_dir / f"{name}.pt").write_bytes(state.read_bytes())
        edited_state(run_dir / f"{name}.pt", **changes)
    path, message = BAD_RESUMES[case]
    before = folder_contents(tmp_path)
    with pytest.raises(algo.StopRun, match=message):
        algo.main(algo.Args(resume=str(path(run_dir))))
    assert folder_contents(tmp_path) == before


def test_a_changed_flag_is_named_and_total_timesteps_may_grow(algo, train, tmp_path):
    first = train(algo, **RUN, run_name="r")
    before = folder_contents(tmp_path)
    with pytest.raises(algo.StopRun, match=r"--batch-size 64 differs from the run's 16"):
        resume(algo, "r", batch_size=64)
    with pytest.raises(algo.StopRun, match="below the 150 steps done"):
        resume(algo, "r", total_timesteps=100)
    assert folder_contents(tmp_path) == before
    longer = resume(algo, "r", total_timesteps=200)  # a finished run, extended
    assert first["global_step"] == 150 and longer["global_step"] == 200 and not longer["interrupted"]
    steps = [step for step, _ in read_scalars(tmp_path / "runs" / "r")["charts/episodic_length"]]
    assert steps == list(range(5, 205, 5)), "every episode logged once, none skipped"


# ----------------------------------------------------------------------------- the command line
def test_a_run_killed_between_checkpoints_resumes_from_the_last_one_and_finishes(algo, tmp_path):
    """SIGKILL cannot be caught: the run continues from its last periodic training state, and the steps it had
    logged after it are not logged twice."""
    script = str(ROOT / f"{algo.ALGORITHM}_continuous.py")
    flags = ["--env-id", "Pendulum-v1", "--total-timesteps", "1600", "--learning-starts", "100", "--batch-size", "32"]
    flags += ["--eval-frequency", "800", "--eval-episodes", "1", "--checkpoint-frequency", "300", "--run-name", "k"]
    state = tmp_path / "runs" / "k" / "training_state.pt"
    with started([sys.executable, script, *flags, "--no-cuda"], cwd=tmp_path, stdout=subprocess.DEVNULL) as process:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if state.exists() and torch.load(state, weights_only=True)["loop"]["global_step"] >= 600:
                break
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    saved_step = torch.load(state, weights_only=True)["loop"]["global_step"]
    assert saved_step in (600, 900, 1200), "periodic saves, every 300 steps"
    resumed = run([sys.executable, script, "--resume", "runs/k"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "finished 1,600 steps" in resumed.stdout
    logged = read_scalars(tmp_path / "runs" / "k")
    for tag in ["charts/episodic_return", "losses/qf_loss", "eval/episodic_return"]:
        steps = [step for step, _ in logged[tag]]
        assert steps == sorted(set(steps)), f"{tag}: no step twice"
    assert [step for step, _ in logged["eval/episodic_return"]] == [800, 1600]


def test_sigterm_stops_a_run_that_resumes_with_exit_status_143(algo, tmp_path):
    """What `kill` or a batch system's preemption sends: the step ends, everything is saved, the status is
    128 + 15 and the output says how to continue."""
    script = str(ROOT / f"{algo.ALGORITHM}_continuous.py")
    flags = ["--env-id", "Pendulum-v1", "--learning-starts", "100", "--batch-size", "32", "--run-name", "t"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with started([sys.executable, script, *flags, "--eval-frequency", "300", "--no-cuda"], cwd=tmp_path, **pipes) as p:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("runs/t/events*")) and time.monotonic() < deadline:  # training has begun
            time.sleep(0.2)
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 143, stderr
    assert "Traceback" not in stderr and "interrupted at step" in stdout and "--resume runs/t" in stdout
    stopped_at = torch.load(tmp_path / "runs/t/training_state.pt", weights_only=True)["loop"]["global_step"]
    assert 0 < stopped_at < 1_000_000


def test_bad_resume_from_the_command_line_is_one_line_and_exit_1(algo, tmp_path):
    result = run([sys.executable, str(ROOT / f"{algo.ALGORITHM}_continuous.py"), "--resume", "runs/none"], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: --resume: runs/none does not exist"]
