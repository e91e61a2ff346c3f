"""Constants and helpers shared by the tests (fixtures live in conftest.py)."""

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import sac_continuous
import td3_continuous

ALGORITHMS = {"td3": td3_continuous, "sac": sac_continuous}
PREDICTABLE = "tests.predictable_env:Predictable-v0"

# Small but real runs: they pass learning_starts, so gradient steps happen and losses are logged.
SHORT_RUN = {
    "env_id": "Pendulum-v1",
    "total_timesteps": 600,
    "learning_starts": 300,
    "batch_size": 32,
    "buffer_size": 1_000,
    "eval_frequency": 10**9,
    "eval_episodes": 1,
    "cuda": False,
}


def twin_critics(module, obs_dim: int, act_dim: int):
    """Q1 and Q2 as the scripts' `train` makes them."""
    return module.nn.ModuleList([module.QNetwork(obs_dim, act_dim), module.QNetwork(obs_dim, act_dim)])


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard run directory: tag -> [(step, value), ...]."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@contextlib.contextmanager
def started(command: list[str], **popen_kwargs):
    """Popen in a process group of its own; when the block ends, however it ends (a failed assertion, a timeout),
    the whole group is killed, so no training run or benchmark worker outlives its test."""
    process = subprocess.Popen(command, start_new_session=True, **popen_kwargs)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(command: list[str], timeout: float = 600, **popen_kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output=True, text=True) that kills the command and its children on timeout."""
    with started(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs) as process:
        stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
