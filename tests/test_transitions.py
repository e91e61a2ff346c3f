"""What enters the replay buffer is exactly what the environment did: across terminations, time-limit
truncations and autoresets, with one and with several envs, through each script's real training loop."""

import numpy as np
import pytest

from tests.helpers import PREDICTABLE
from tests.predictable_env import ACTION_HIGH, ACTION_LOW, TERMINATE_AFTER, TIME_LIMIT, terminates


def stored_transitions(result) -> dict[str, np.ndarray]:
    rb = result["replay_buffer"]
    return {key: value[: rb.size].cpu().numpy() for key, value in rb.data.items()}


@pytest.mark.parametrize("num_envs", [1, 3])
def test_every_stored_transition_is_real(algo, train, num_envs):
    # 40 random warm-up steps, then the learning actor acts (and must stay inside the asymmetric Box)
    total = 120
    result = train(
        algo, env_id=PREDICTABLE, num_envs=num_envs, total_timesteps=total, learning_starts=40, batch_size=8, seed=7
    )
    t = stored_transitions(result)
    assert len(t["obs"]) == total, "one stored transition per environment step"

    env_seed, episode, step = t["obs"].T
    next_seed, next_episode, next_step = t["next_obs"].T
    # Never a (final observation -> reset observation) pair: the next observation continues the same episode
    np.testing.assert_array_equal(next_seed, env_seed)
    np.testing.assert_array_equal(next_episode, episode)
    np.testing.assert_array_equal(next_step, step + 1)
    # The stored action is the normalized one the env was given (mapped onto its Box), and it produced the reward
    assert (np.abs(t["actions"]) <= 1).all(), "actions are stored in [-1, 1]^A, not in the env's units"
    env_actions = algo.to_env_actions(t["actions"], algo.gym.spaces.Box(ACTION_LOW, ACTION_HIGH))
    np.testing.assert_allclose(t["rewards"][:, 0], step + env_actions.sum(axis=1), rtol=1e-6, atol=1e-6)
    # Termination is stored only where the env really terminated; time-limit truncation is not termination
    expected_done = [
        terminates(int(s), int(e)) and n == TERMINATE_AFTER
        for s, e, n in zip(env_seed, episode, next_step, strict=True)
    ]
    np.testing.assert_array_equal(t["terminations"][:, 0], np.array(expected_done, dtype=np.float32))
    truncated = (next_step == TIME_LIMIT) & (t["terminations"][:, 0] == 0)
    assert truncated.any() and t["terminations"].any(), "the run must cover both kinds of episode end"

    # Per env, the stored steps are the env's whole history, in order: no step lost, none duplicated
    assert sorted(set(env_seed.astype(int))) == [7 + i for i in range(num_envs)]
    for seed in set(env_seed):
        mine = env_seed == seed
        history = list(zip(episode[mine].astype(int), step[mine].astype(int), strict=True))
        expected, e, s = [], 0, 0
        while len(expected) < len(history):
            expected.append((e, s))
            s += 1
            if s == TIME_LIMIT or (terminates(int(seed), e) and s == TERMINATE_AFTER):
                e, s = e + 1, 0
        assert history == expected


def test_replay_buffer_ring_overwrites_oldest(algo):
    rb = algo.ReplayBuffer(
        capacity=5, obs_dim=1, act_dim=1, device=algo.torch.device("cpu"), storage=algo.torch.device("cpu")
    )
    for start in (0, 3, 6):  # 9 transitions added 3 at a time into 5 slots
        values = np.arange(start, start + 3, dtype=np.float32)
        rb.add(values[:, None], values[:, None], values, values[:, None] + 1, np.zeros(3))
    assert rb.size == 5
    assert sorted(rb.data["obs"][:, 0].tolist()) == [4, 5, 6, 7, 8], "the oldest four were overwritten"
    batch = rb.sample(64)
    assert batch.rewards.shape == (64, 1) and batch.terminations.shape == (64, 1), "scalars are [B, 1]"
    assert set(batch.obs[:, 0].tolist()) <= {4, 5, 6, 7, 8}
    np.testing.assert_array_equal(batch.obs.numpy(), batch.actions.numpy())  # rows stay aligned
