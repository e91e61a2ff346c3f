"""Tiny environments whose every transition a test can predict, registered under `tests.predictable_env:ID`.

Predictable-v0: observation [env_seed, episode, t]; reward t + sum(action). Episode k of the env seeded s
terminates after 3 steps when (s + k) % 3 == 0; every other episode is truncated by the 5-step time limit.
The action Box is asymmetric and stepping outside it raises, so a test run also checks the bounds.
"""

import os
import signal

import gymnasium as gym
import numpy as np

TIME_LIMIT = 5
TERMINATE_AFTER = 3
ACTION_LOW = np.array([-1.0, 0.0], dtype=np.float32)
ACTION_HIGH = np.array([3.0, 0.5], dtype=np.float32)


def terminates(env_seed: int, episode: int) -> bool:
    return (env_seed + episode) % 3 == 0


class PredictableEnv(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)

    def __init__(self):
        self.env_seed, self.episode, self.t, self.total_steps = -1, -1, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.env_seed = seed
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        reward = self.t + float(np.sum(action))
        self.t += 1
        self.total_steps += 1
        return self._obs(), reward, terminates(self.env_seed, self.episode) and self.t == TERMINATE_AFTER, False, {}

    def _obs(self):
        return np.array([self.env_seed, self.episode, self.t], dtype=np.float32)


class NanRewardEnv(PredictableEnv):
    """Rewards turn into NaN after 100 steps, as a broken env would."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, (np.nan if self.total_steps > 100 else reward), terminated, truncated, info


class InterruptingEnv(PredictableEnv):
    """Raises KeyboardInterrupt at its 150th step, as Ctrl-C would."""

    def step(self, action):
        if self.total_steps == 150:
            raise KeyboardInterrupt
        return super().step(action)


class UnboundedActionEnv(PredictableEnv):
    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


class SteadyEnv(PredictableEnv):
    """Resets to the same observation whatever the seed and never terminates: every episode of every env is
    truncated after TIME_LIMIT steps, all at once. If `interrupt_at` is set, the first instance to take that
    many steps (0: the first reset) sends this process SIGINT, as Ctrl-C would, once."""

    interrupt_at: int | None = None
    signalled = False

    def _obs(self):
        return np.array([0.0, 0.0, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        self._maybe_interrupt()
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, _, truncated, info = super().step(action)
        self._maybe_interrupt()
        return obs, reward, False, truncated, info

    def _maybe_interrupt(self):
        if self.total_steps == SteadyEnv.interrupt_at and not SteadyEnv.signalled:
            SteadyEnv.signalled = True
            os.kill(os.getpid(), signal.SIGINT)


class EndlessEnv(PredictableEnv):
    """Never terminates and is registered without a time limit; reward 1 per step. Raises after 100,000 steps
    of one episode, so that a test of a missing cut-off fails instead of hanging."""

    def step(self, action):
        if self.t >= 100_000:
            raise RuntimeError("no time limit ended this episode")
        obs, _, _, _, info = super().step(action)
        return obs, 1.0, False, False, info


class DictObsEnv(PredictableEnv):
    """Predictable-v0's observation as a nested Dict, {"rest": (episode, [t]), "seed": env_seed}, with 0-d Boxes.
    Gymnasium sorts a Dict's keys, so it flattens to [episode, t, env_seed]."""

    scalar = gym.spaces.Box(-np.inf, np.inf, ())
    observation_space = gym.spaces.Dict(
        {"seed": scalar, "rest": gym.spaces.Tuple((scalar, gym.spaces.Box(0, 9, (1,))))}
    )

    def _obs(self):
        rest = (np.array(self.episode, np.float32), np.array([self.t], np.float32))
        return {"seed": np.array(self.env_seed, np.float32), "rest": rest}


class ImageObsEnv(PredictableEnv):
    observation_space = gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)


class DiscreteInDictEnv(PredictableEnv):
    observation_space = gym.spaces.Dict({"position": gym.spaces.Box(-1, 1, (2,)), "mode": gym.spaces.Discrete(3)})


class BrokenEnv(PredictableEnv):
    """A bug in the env's own code, unrelated to rendering."""

    def __init__(self):
        super().__init__()
        self.scale = 1 / 0


for env_id, entry_point in [
    ("Predictable-v0", PredictableEnv),
    ("NanReward-v0", NanRewardEnv),
    ("Interrupting-v0", InterruptingEnv),
    ("UnboundedAction-v0", UnboundedActionEnv),
    ("Broken-v0", BrokenEnv),
    ("Steady-v0", SteadyEnv),
    ("DictObs-v0", DictObsEnv),
    ("ImageObs-v0", ImageObsEnv),
    ("DiscreteInDict-v0", DiscreteInDictEnv),
]:
    gym.register(id=env_id, entry_point=entry_point, max_episode_steps=TIME_LIMIT)
gym.register(id="Endless-v0", entry_point=EndlessEnv)
