"""A fixed-seed run of each algorithm swings up and holds a pendulum: Pendulum-v1 within 15,000 steps, and the
same pendulum driven through an action Box far from [-1, 1] (tests/far_box_env.py) within 8,000.

Pendulum returns lie in about [-1600, 0]; a deterministic evaluation return of -250 (-300 on the far Box, whose
second action dimension costs a little) or more over 10 episodes means the pendulum is swung up and held. Before
the critics saw normalized actions, every seed of both algorithms was at -1212 or below on the far Box at 8,000
steps (README). The far-Box runs are in the default suite; the Pendulum-v1 ones, as long as both of those
together, are marked slow and run with `pytest -m slow`. --compile is not trained to the end here:
tests/test_speed.py shows that compiled updates compute what the eager ones do, and tests/test_schedule.py that
a compiled run makes the same updates.
"""

import pytest

import tests.far_box_env  # noqa: F401  (registers FarBoxPendulum-v0)


@pytest.mark.parametrize(
    ("env_id", "steps", "threshold"),
    [
        pytest.param("Pendulum-v1", 15_000, -250, marks=pytest.mark.slow),
        ("tests.far_box_env:FarBoxPendulum-v0", 8_000, -300),
    ],
    ids=["pendulum", "far-box"],
)
def test_swings_up_the_pendulum(algo, train, env_id, steps, threshold):
    result = train(
        algo,
        env_id=env_id,
        seed=1,
        total_timesteps=steps,
        learning_starts=1_000,
        batch_size=256,
        buffer_size=100_000,
        eval_frequency=steps,
        eval_episodes=10,
    )
    final_return = result["eval_returns"][-1]
    assert final_return >= threshold, f"{algo.ALGORITHM} on {env_id}: final eval return {final_return:.1f}"
