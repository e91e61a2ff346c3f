"""The training schedule, counted through each script's real loop: how many critic, actor, temperature and target
updates a run makes, with delays above 1, the host buffer, a fixed α, a warm-up shorter than a batch, --compile
(which is thereby also trained end to end), and that every loss it logs is finite."""

import collections
import functools
import math

import pytest

import sac_continuous as sac
import td3_continuous as td3
from tests.helpers import SHORT_RUN, read_scalars

TOTAL = SHORT_RUN["total_timesteps"]


def count_updates(algo, monkeypatch) -> collections.Counter:
    """Counts every call of the update functions and of soft_update (one per target network updated)."""
    counts = collections.Counter()

    def counting(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    for name in ["update_critic", "update_actor", "update_alpha", "soft_update"]:
        if hasattr(algo, name):
            monkeypatch.setattr(algo, name, counting(name, getattr(algo, name)))
    return counts


def logged_losses(tmp_path, result) -> dict[str, list[float]]:
    """The run's logged losses/* scalars, after checking that every one of them is finite."""
    scalars = read_scalars(tmp_path / "runs" / result["run_name"])
    losses = {tag: [value for _, value in points] for tag, points in scalars.items() if tag.startswith("losses/")}
    assert losses["losses/qf_loss"] and all(math.isfinite(v) for values in losses.values() for v in values)
    return losses


@pytest.mark.parametrize(
    "flags",
    [{}, {"host_buffer": True}, {"learning_starts": 10, "batch_size": 32}, {"compile": True}],
    ids=["default", "host-buffer", "warm-up-below-batch", "compile"],
)
def test_td3_delays_actor_and_targets_by_d(train, monkeypatch, tmp_path, flags):
    """Algorithm 1: a critic update every step from --learning-starts on; every d = 2, the actor and both targets."""
    counts = count_updates(td3, monkeypatch)
    result = train(td3, **flags)
    updates = TOTAL - flags.get("learning_starts", SHORT_RUN["learning_starts"]) + 1  # one per step from step L on
    assert counts["update_critic"] == updates
    assert counts["update_actor"] == updates // 2, "policy delay d = 2"
    assert counts["soft_update"] == 2 * (updates // 2), "both target networks, with the actor"
    assert result["global_step"] == TOTAL and not result["interrupted"]
    logged_losses(tmp_path, result)


@pytest.mark.parametrize(
    "flags",
    [
        {"policy_frequency": 2, "target_network_frequency": 3},
        {"policy_frequency": 2, "target_network_frequency": 3, "autotune": False},
        {"policy_frequency": 3, "target_network_frequency": 2, "host_buffer": True},
        {"learning_starts": 10, "batch_size": 32},
        {"policy_frequency": 2, "target_network_frequency": 3, "compile": True},
    ],
    ids=["delays", "fixed-alpha", "host-buffer", "warm-up-below-batch", "compile"],
)
def test_sac_schedule(train, monkeypatch, tmp_path, flags):
    """A critic update every step; actor and α every --policy-frequency, the target every
    --target-network-frequency critic updates; α fixed with --no-autotune."""
    counts = count_updates(sac, monkeypatch)
    result = train(sac, **flags)
    updates = TOTAL - flags.get("learning_starts", SHORT_RUN["learning_starts"]) + 1
    policy_frequency, target_frequency = flags.get("policy_frequency", 1), flags.get("target_network_frequency", 1)
    assert counts["update_critic"] == updates
    assert counts["update_actor"] == updates // policy_frequency
    assert counts["update_alpha"] == (updates // policy_frequency if flags.get("autotune", True) else 0)
    assert counts["soft_update"] == updates // target_frequency
    assert result["global_step"] == TOTAL and not result["interrupted"]
    alphas = set(logged_losses(tmp_path, result)["losses/alpha"])
    if not flags.get("autotune", True):
        assert len(alphas) == 1 and alphas.pop() == pytest.approx(0.2), "--no-autotune keeps α at --alpha"
    else:
        assert len(alphas) > 1, "α is learned"
