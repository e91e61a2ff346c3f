"""Pendulum-v1 driven through an action Box far from [-1, 1], registered as `tests.far_box_env:FarBoxPendulum-v0`.

Action a = [a0, a1] in [200, 260] x [-100, -90]: scaled (half-ranges 30 and 5), shifted far from zero, and not
symmetric about it. a0 is the torque in disguise, torque = 2 (a0 - 230) / 30 in [-2, 2]; a1 does nothing but
cost COST_A1 * ((a1 + 95) / 5)² per step, so it is best held at the centre of its range. The best policy is
the plain Pendulum's (returns near -150) with a1 = -95. An agent that handles the Box correctly learns this
as fast as Pendulum-v1; one whose critics see a0 ≈ 230 as a raw input does not.
"""

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv

LOW = np.array([200.0, -100.0], dtype=np.float32)
HIGH = np.array([260.0, -90.0], dtype=np.float32)
CENTRE, HALF_RANGE = (HIGH + LOW) / 2, (HIGH - LOW) / 2
COST_A1 = 1.0


class FarBoxPendulum(gym.Env):
    metadata = PendulumEnv.metadata
    action_space = gym.spaces.Box(LOW, HIGH, dtype=np.float32)

    def __init__(self, render_mode: str | None = None):
        self.pendulum = PendulumEnv(render_mode=render_mode)
        self.observation_space, self.render_mode = self.pendulum.observation_space, render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.pendulum.reset(seed=seed, options=options)

    def step(self, action):
        unit = (np.asarray(action, dtype=np.float64) - CENTRE) / HALF_RANGE  # each dimension in [-1, 1]
        obs, reward, terminated, truncated, info = self.pendulum.step(np.array([2.0 * unit[0]], dtype=np.float32))
        return obs, float(reward) - COST_A1 * unit[1] ** 2, terminated, truncated, info

    def render(self):
        return self.pendulum.render()

    def close(self):
        self.pendulum.close()


gym.register(id="FarBoxPendulum-v0", entry_point=FarBoxPendulum, max_episode_steps=200)
