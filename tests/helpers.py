"""Constants and helpers shared by the tests (fixtures live in conftest.py)."""

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


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard run directory: tag -> [(step, value), ...]."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
