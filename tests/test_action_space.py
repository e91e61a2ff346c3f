"""The critics see normalized actions: what reaches them is in [-1, 1]^A whatever the env's Box (that a Box far
from [-1, 1] then learns as well as a unit one is in tests/test_learning.py). Old checkpoints, whose actors held
the Box as buffers, still load."""

import numpy as np
import torch

import tests.far_box_env  # noqa: F401  (registers FarBoxPendulum-v0)
from tests.far_box_env import HIGH, LOW

FAR_BOX = "tests.far_box_env:FarBoxPendulum-v0"


def test_critics_see_the_normalized_actions_of_the_replay_buffer(algo, train, monkeypatch):
    """Through the real loop on the far Box: every action any critic (online or target) is given lies in
    [-1, 1]^A, and the first online critic's actions (after the two target critics) are rows of the replay
    buffer, which map onto what the env got."""
    seen = []
    forward = algo.QNetwork.forward

    def recording_forward(self, obs, actions, *args, **kwargs):
        seen.append(actions.detach().clone())
        return forward(self, obs, actions, *args, **kwargs)

    monkeypatch.setattr(algo.QNetwork, "forward", recording_forward)
    result = train(algo, env_id=FAR_BOX, total_timesteps=400, learning_starts=300, batch_size=32, num_envs=2)
    assert len(seen) >= 50 * 4, "two target and two online critic calls per update"
    for actions in seen:
        assert actions.shape[1] == 2 and (actions.abs() <= 1).all(), actions.amax(0)
    stored = result["replay_buffer"].data["actions"][: result["replay_buffer"].size]
    assert all((stored == row).all(dim=1).any() for row in seen[2]), "the critic's batch actions are stored rows"
    env_actions = algo.to_env_actions(stored.numpy(), algo.gym.spaces.Box(LOW, HIGH))
    assert (env_actions.min(0) < LOW + 5).all() and (env_actions.max(0) > HIGH - 5).all(), "the whole Box is used"


def test_an_old_checkpoint_with_the_box_in_its_actor_evaluates_the_same(algo, train, tmp_path):
    """Checkpoints written before the actor worked in [-1, 1]^A hold action_low/high/scale/bias buffers in its
    state dict; their actor computed tanh(·) * scale + bias, which is exactly to_env_actions of ours."""
    train(algo, env_id=FAR_BOX, total_timesteps=400, learning_starts=300, save_model=True, run_name="new")
    path = tmp_path / "runs" / "new" / f"{algo.ALGORITHM}_continuous.pt"
    checkpoint = torch.load(path, weights_only=True)
    low, high = torch.as_tensor(LOW), torch.as_tensor(HIGH)
    old_buffers = {"action_low": low, "action_high": high, "action_scale": (high - low) / 2}
    checkpoint["actor"] = checkpoint["actor"] | old_buffers | {"action_bias": (high + low) / 2}
    old_path = tmp_path / "old.pt"
    torch.save(checkpoint, old_path)

    new = train(algo, checkpoint=str(path), eval_episodes=2)["eval_returns"]
    old = train(algo, checkpoint=str(old_path), eval_episodes=2)["eval_returns"]
    assert old == new and np.isfinite(new).all()
