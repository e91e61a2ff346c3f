"""benchmarks/speed.py: the FLOP count of the floor, the steady-rate clock, and the worker command line."""

import argparse
import sys
from pathlib import Path

import pytest

from benchmarks import speed

OBS, ACT, H, B = 11, 3, speed.HIDDEN, speed.BATCH


def test_layer_flops_counts_two_per_multiply_add():
    assert speed.layer_flops([11, 256, 256, 6]) == 2 * (11 * 256 + 256 * 256 + 256 * 6)


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_step_flops_follow_the_documented_formula(algo):
    actor = 2 * (OBS * H + H * H + H * (2 * ACT if algo == "sac" else ACT))
    critic = 2 * ((OBS + ACT) * H + H * H + H)
    # SAC: critic step a + 8c, actor step 3a + 4c; TD3: critic step a + 8c, actor step (3a + 2c) every 2nd update
    expected = actor + 8 * critic + (3 * actor + 4 * critic if algo == "sac" else (3 * actor + 2 * critic) / 2)
    assert speed.step_flops(algo, OBS, ACT) == pytest.approx(expected * B)


def test_hopper_step_costs_match_the_issues_estimate():
    """About 0.5 GFLOP per SAC step and 0.4 per TD3 step on Hopper (11-dim observations, 3-dim actions)."""
    assert 0.5e9 < speed.step_flops("sac", OBS, ACT) < 0.6e9
    assert 0.35e9 < speed.step_flops("td3", OBS, ACT) < 0.45e9


def test_step_clock_and_steady_rate():
    class Env:
        def step(self, action):
            return action

    times: list[float] = []
    env = speed.step_clock(Env(), times)
    assert [env.step(i) for i in range(3)] == [0, 1, 2] and len(times) == 3 and times == sorted(times)
    ticks = [0.5 * i for i in range(1, 11)]  # step k (1-based) ends at 0.5 k s: 2 steps/s
    assert speed.steady_rate(ticks, start=4, measure=6) == pytest.approx(2.0)
    assert speed.steady_rate([1, 2, 3, 10, 11], start=3, measure=2) == pytest.approx(2 / 8)  # the slow step counts


def test_worker_command_keeps_script_flags_as_one_argument():
    a = argparse.Namespace(env_id="Hopper-v5", device="cpu", learning_starts=5, burn_in=2, measure=3)
    cmd = speed.worker_command(Path(sys.executable), "ours", "sac", a, "--compile --batch-size 512")
    parsed = speed.worker_parser().parse_args(cmd[3:])
    assert (parsed.impl, parsed.algo, parsed.flags) == ("ours", "sac", "--compile --batch-size 512")
    assert (parsed.learning_starts, parsed.burn_in, parsed.measure) == (5, 2, 3)
