"""Gradient flow and TD targets: each update changes exactly what it should, and nothing else."""

import copy

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

import sac_continuous as sac
import td3_continuous as td3
from tests.helpers import twin_critics

OBS_DIM, BATCH = 4, 32
LOW, HIGH = np.array([-1.0, 0.0, -5.0], np.float32), np.array([3.0, 0.5, -2.0], np.float32)


TERMINATIONS = ["none", "all", "mixed"]


def make_batch(terminations: str = "none", seed: int = 0) -> td3.Batch:
    """A random batch; terminations "none", "all", or "mixed" (a different flag per row, about half of them 1)."""
    g = torch.Generator().manual_seed(seed)
    actions = 2 * torch.rand(BATCH, len(LOW), generator=g) - 1  # normalized, as the replay buffer stores them
    obs, next_obs = torch.randn(BATCH, OBS_DIM, generator=g), torch.randn(BATCH, OBS_DIM, generator=g)
    rewards = torch.randn(BATCH, 1, generator=g)
    done = {"none": torch.zeros(BATCH, 1), "all": torch.ones(BATCH, 1)}.get(terminations)
    if done is None:
        done = (torch.rand(BATCH, 1, generator=g) < 0.5).float()
        assert 0 < done.sum() < BATCH
    return td3.Batch(obs, actions, rewards, next_obs, done)


def networks(module):
    torch.manual_seed(0)
    actor = module.Actor(OBS_DIM, len(LOW))
    qf = twin_critics(module, OBS_DIM, len(LOW))
    return actor, qf, copy.deepcopy(actor), copy.deepcopy(qf)


class Snapshot:
    """Remembers parameters, to ask afterwards which of them an update changed."""

    def __init__(self, **tensors_or_modules):
        self.before = {name: self._flat(x).clone() for name, x in tensors_or_modules.items()}
        self.items = tensors_or_modules

    @staticmethod
    def _flat(x):
        params = list(x.parameters()) if isinstance(x, torch.nn.Module) else [x]
        return torch.cat([p.detach().flatten() for p in params])

    def changed(self) -> set[str]:
        return {name for name, x in self.items.items() if not torch.equal(self._flat(x), self.before[name])}

    def with_gradients(self) -> set[str]:
        """Which of them a backward pass reached (a gradient that was stopped leaves .grad as None)."""

        def reached(x):
            params = list(x.parameters()) if isinstance(x, torch.nn.Module) else [x]
            return any(p.grad is not None for p in params)

        return {name for name, x in self.items.items() if reached(x)}


def test_twin_critics_are_two_independent_mlps(algo):
    """Q(s, a) is an MLP of [obs | action], [B, 1]; the two critics start from different weights, and a loss of
    one reaches only its own weights."""
    _, qf, _, _ = networks(algo)
    obs, actions = torch.randn(BATCH, OBS_DIM), torch.randn(BATCH, len(LOW))
    q1, q2 = (q(obs, actions) for q in qf)
    assert q1.shape == q2.shape == (BATCH, 1)
    torch.testing.assert_close(q1, qf[0].net(torch.cat([obs, actions], dim=-1)))
    assert not torch.allclose(q1, q2), "the two critics are initialised independently"
    q1.sum().backward()
    assert all(p.grad is not None for p in qf[0].parameters()) and all(p.grad is None for p in qf[1].parameters())


# ----------------------------------------------------------------------------- TD3
def td3_args(**flags):
    return td3.Args(**({"gamma": 0.9, "policy_noise": 0.2, "noise_clip": 0.5} | flags))


def test_td3_critic_step_changes_only_the_critics():
    actor, qf, actor_target, qf_target = networks(td3)
    snap = Snapshot(actor=actor, qf=qf, actor_target=actor_target, qf_target=qf_target)
    optimizer = torch.optim.Adam(qf.parameters(), lr=1e-3)
    metrics = td3.update_critic(make_batch(), actor_target, qf, qf_target, optimizer, td3_args())
    assert snap.changed() == {"qf"}
    assert snap.with_gradients() == {"qf"}, "the TD target is built under torch.no_grad()"
    assert {"qf1_values", "qf2_values", "qf1_loss", "qf2_loss", "qf_loss"} <= metrics.keys()
    assert all(not v.requires_grad for v in metrics.values()), "metrics are detached"


def test_td3_actor_step_changes_only_the_actor():
    actor, qf, actor_target, qf_target = networks(td3)
    snap = Snapshot(actor=actor, qf=qf, actor_target=actor_target, qf_target=qf_target)
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3)
    td3.update_actor(make_batch(), actor, qf, optimizer)
    assert snap.changed() == {"actor"}
    assert snap.with_gradients() == {"actor"}, "the critic is frozen in the actor step; targets are not used"


def test_frozen_critic_passes_the_same_action_gradient(algo):
    """frozen=True skips the critics' weight gradients but must not change dQ/da, which drives the actor."""
    _, qf, _, _ = networks(algo)
    batch = make_batch()
    obs, actions = batch.obs, batch.actions.requires_grad_(True)
    for q in qf:
        (grad_full,) = torch.autograd.grad(q(obs, actions).sum(), actions)
        (grad_frozen,) = torch.autograd.grad(q(obs, actions, frozen=True).sum(), actions)
        torch.testing.assert_close(grad_frozen, grad_full, rtol=0, atol=0)
        torch.testing.assert_close(q(obs, actions, frozen=True), q(obs, actions), rtol=0, atol=0)
        q(obs, actions, frozen=True).sum().backward()
    assert all(p.grad is None for p in qf.parameters())


def test_soft_update_moves_targets_by_tau():
    _, qf, _, qf_target = networks(td3)
    with torch.no_grad():
        for p in qf.parameters():
            p.add_(1.0)
    before = [p.clone() for p in qf_target.parameters()]
    td3.soft_update(qf_target, qf, tau=0.25)
    for old, new, source in zip(before, qf_target.parameters(), qf.parameters(), strict=True):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * source)


@pytest.mark.parametrize("terminations", TERMINATIONS)
def test_td3_target_is_clipped_double_q_of_the_smoothed_action_masked_per_row(terminations):
    """Recomputes y = r + γ (1 - terminated) min_i Q'_i(s', clip(μ'(s') + clip(σ ε, -c, c), -1, 1)) with the
    same random draw ε, per row of a batch whose rows terminate independently."""
    _, qf, actor_target, qf_target = networks(td3)
    with torch.no_grad():  # make the target networks differ from the online ones
        for p in [*qf_target.parameters(), *actor_target.parameters()]:
            p.mul_(1.5)
    batch, args = make_batch(terminations), td3_args(policy_noise=0.2, noise_clip=0.5)
    torch.manual_seed(123)
    loss, _ = td3.critic_loss(batch, actor_target, qf, qf_target, args)
    with torch.no_grad():
        mu = actor_target(batch.next_obs)
        torch.manual_seed(123)
        noise = (0.2 * torch.randn_like(mu)).clamp(-0.5, 0.5)
        assert (noise != 0).all() and (noise.abs() == 0.5).any(), "the smoothing noise is drawn and clipped"
        next_q = torch.min(*(q(batch.next_obs, (mu + noise).clamp(-1, 1)) for q in qf_target))
        target = batch.rewards + args.gamma * (1 - batch.terminations) * next_q
        expected = sum(((q(batch.obs, batch.actions) - target) ** 2).mean() for q in qf)
    torch.testing.assert_close(loss, expected)


# ----------------------------------------------------------------------------- SAC
def sac_args(**flags):
    return sac.Args(**({"gamma": 0.9} | flags))


def test_sac_critic_step_changes_only_the_critics():
    actor, qf, _, qf_target = networks(sac)
    log_alpha = torch.zeros(1, requires_grad=True)
    snap = Snapshot(actor=actor, qf=qf, qf_target=qf_target, log_alpha=log_alpha)
    optimizer = torch.optim.Adam(qf.parameters(), lr=1e-3)
    sac.update_critic(make_batch(), actor, qf, qf_target, optimizer, log_alpha.exp().detach(), sac_args())
    assert snap.changed() == {"qf"}
    assert snap.with_gradients() == {"qf"}, "the soft TD target is built under torch.no_grad()"


def test_sac_actor_step_changes_only_the_actor():
    actor, qf, _, qf_target = networks(sac)
    log_alpha = torch.zeros(1, requires_grad=True)
    snap = Snapshot(actor=actor, qf=qf, qf_target=qf_target, log_alpha=log_alpha)
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3)
    metrics, log_prob = sac.update_actor(make_batch(), actor, qf, optimizer, log_alpha.exp().detach())
    assert snap.changed() == {"actor"}
    assert snap.with_gradients() == {"actor"}, "critics frozen, α a constant in the actor loss, Q' not used"
    assert log_prob.shape == (BATCH, 1) and not log_prob.requires_grad
    torch.testing.assert_close(metrics["entropy"], -log_prob.mean())


@pytest.mark.parametrize("entropy_gap", [-3.0, 3.0])
def test_sac_alpha_step_changes_only_alpha_in_the_right_direction(entropy_gap):
    actor, qf, _, _ = networks(sac)
    log_alpha = torch.zeros(1, requires_grad=True)
    snap = Snapshot(actor=actor, qf=qf, log_alpha=log_alpha)
    target_entropy = -float(len(LOW))
    # log π = -(target entropy + gap): a positive gap means more entropy than the target, so α must fall
    log_prob = torch.full((BATCH, 1), -(target_entropy + entropy_gap))
    optimizer = torch.optim.Adam([log_alpha], lr=0.1)
    sac.update_alpha(log_alpha, optimizer, log_prob, target_entropy)
    assert snap.changed() == {"log_alpha"} and snap.with_gradients() == {"log_alpha"}
    assert (log_alpha.item() < 0) == (entropy_gap > 0)


@pytest.mark.parametrize("terminations", TERMINATIONS)
def test_sac_target_is_soft_clipped_double_q_masked_per_row(terminations):
    """Recomputes the soft TD target with torch.distributions' log-prob and the same random draw, per row of a
    batch whose rows terminate independently."""
    actor, qf, _, qf_target = networks(sac)
    batch, args, alpha = make_batch(terminations), sac_args(), torch.tensor([0.3])
    torch.manual_seed(123)
    loss, _ = sac.critic_loss(batch, actor, qf, qf_target, alpha, args)
    with torch.no_grad():
        mean, log_std = actor(batch.next_obs)
        torch.manual_seed(123)
        u = mean + log_std.exp() * torch.randn_like(mean)
        tanh = TanhTransform(cache_size=1)
        log_prob = TransformedDistribution(Normal(mean, log_std.exp()), [tanh]).log_prob(tanh(u)).sum(-1, keepdim=True)
        next_actions = torch.tanh(u)  # the critics see the normalized action, whose density log π is
        soft_value = torch.min(*(q(batch.next_obs, next_actions) for q in qf_target)) - alpha * log_prob
        target = batch.rewards + args.gamma * (1 - batch.terminations) * soft_value
        expected = sum(((q(batch.obs, batch.actions) - target) ** 2).mean() for q in qf)
    torch.testing.assert_close(loss, expected)


# ----------------------------------------------------------------------------- bounds
def saturated(actor):
    """Blow up the actor's output layer so its tanh saturates at ±1 in every dimension."""
    last = [m for m in actor.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer in last[-2:]:
            layer.weight.mul_(1e4)
    return actor


SPACE = td3.gym.spaces.Box(LOW, HIGH, dtype=np.float32)


def test_to_env_actions_maps_the_unit_box_onto_the_env_box_per_dimension(algo):
    unit = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.5, -0.5, 2.0]], np.float32)
    env_actions = algo.to_env_actions(unit, SPACE)
    assert env_actions.dtype == np.float32
    np.testing.assert_allclose(env_actions[0], LOW)
    np.testing.assert_allclose(env_actions[1], HIGH)
    np.testing.assert_allclose(env_actions[2], (LOW + HIGH) / 2)
    np.testing.assert_allclose(env_actions[3], [2.0, 0.125, HIGH[2]], rtol=1e-6)  # 2.0 is outside: clipped


def test_actions_are_normalized_and_reach_both_ends_of_an_asymmetric_box():
    """Actors and both noises act in [-1, 1]^A; to_env_actions then covers the whole asymmetric Box."""
    obs = torch.randn(4096, OBS_DIM) * 10
    td3_actor, sac_actor = saturated(td3.Actor(OBS_DIM, len(LOW))), saturated(sac.Actor(OBS_DIM, len(LOW)))
    with torch.no_grad():
        candidates = {
            "td3 actor": td3_actor(obs),
            "td3 exploration": td3.explore(td3_actor, obs, td3_args(exploration_noise=1.0)),
            "td3 target smoothing": td3.target_actions(td3_actor, obs, td3_args(policy_noise=5.0)),
            "sac sample": sac_actor.sample(obs)[0],
            "sac mean": sac_actor.deterministic(obs),
        }
    for name, actions in candidates.items():
        assert ((actions >= -1) & (actions <= 1)).all(), name
        assert (actions.amax(0) > 1 - 1e-3).all() and (actions.amin(0) < -1 + 1e-3).all(), name
        env_actions = td3.to_env_actions(actions.numpy(), SPACE)
        assert ((env_actions >= LOW) & (env_actions <= HIGH)).all(), name
        assert (env_actions.max(0) > HIGH - 1e-2).all() and (env_actions.min(0) < LOW + 1e-2).all(), name


def test_td3_noise_is_a_fraction_of_each_half_range():
    """In normalized units the exploration std and the smoothing clip are plain numbers; in the env's units they
    become that fraction of each dimension's own half-range."""
    actor = td3.Actor(OBS_DIM, len(LOW))
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.zero_()  # μ(s) = 0, the Box's centre, so no bound clamp interferes
        obs = torch.randn(200_000, OBS_DIM)
        centre, half_range = (HIGH + LOW) / 2, (HIGH - LOW) / 2
        explored = td3.explore(actor, obs, td3_args(exploration_noise=0.1))
        torch.testing.assert_close(explored.std(0), torch.full((3,), 0.1), rtol=0.02, atol=0)
        env_noise = td3.to_env_actions(explored.numpy(), SPACE) - centre
        np.testing.assert_allclose(env_noise.std(0), 0.1 * half_range, rtol=0.02)
        smoothing = td3.target_actions(actor, obs, td3_args(policy_noise=10.0, noise_clip=0.3))
        torch.testing.assert_close(smoothing.abs().amax(0), torch.full((3,), 0.3))
        # The defaults σ = 0.2, c = 0.5: zero-mean noise, std of N(0, 0.2²) clipped at ±2.5σ, in every dimension
        smoothing = td3.target_actions(actor, obs, td3_args(policy_noise=0.2, noise_clip=0.5))
        clipped = (0.2 * torch.randn(2_000_000)).clamp(-0.5, 0.5)
        torch.testing.assert_close(smoothing.mean(0), torch.zeros(3), atol=0.002, rtol=0)
        torch.testing.assert_close(smoothing.std(0), torch.full((3,), float(clipped.std())), rtol=0.01, atol=0)
        assert smoothing.abs().amax() <= 0.5 and float(clipped.std()) < 0.199
