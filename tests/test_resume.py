"""--resume: an interrupted run continues exactly where it stopped, and bad input stops with one line and writes
nothing. The exactness tests use an env whose reset does not depend on the seed and interrupt it when every
episode has just ended, the only point where cutting the envs off changes nothing."""

import signal
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import read_scalars
from tests.predictable_env import TIME_LIMIT, SteadyEnv

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
