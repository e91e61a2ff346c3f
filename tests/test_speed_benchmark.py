"""benchmarks/speed.py: the FLOP count of the floor, the steady-rate clock, and the worker command line."""

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

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


def test_product_recorder_keeps_only_matrix_products_with_their_layouts():
    x, w, bias = torch.randn(4, 3), torch.randn(5, 3), torch.randn(5)
    batched_x, batched_w = torch.randn(2, 4, 3), torch.randn(2, 3, 5)
    recorder = speed.product_recorder()
    with recorder:
        y = torch.relu(torch.nn.functional.linear(x, w, bias))  # addmm on the transposed weight, and a ReLU
        z = torch.baddbmm(bias.expand(2, 4, 5), batched_x, batched_w)  # a broadcast operand
    assert [str(func) for func, _, _ in recorder.calls] == ["aten.addmm.default", "aten.baddbmm.default"]
    (addmm, addmm_args, _), (baddbmm, baddbmm_args, _) = recorder.calls
    assert addmm_args[2].stride() == w.t().stride() and baddbmm_args[0].stride() == (0, 0, 1)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(baddbmm_args, (bias, batched_x, batched_w), strict=True))
    torch.testing.assert_close(torch.relu(addmm(*addmm_args)), y)
    torch.testing.assert_close(baddbmm(*baddbmm_args), z)
    assert speed.replay_ms(recorder.calls, "cpu", seconds=0.06) > 0


@pytest.mark.parametrize(("algo", "products_per_step"), [("sac", 53), ("td3", 35)])
def test_worker_records_exactly_two_training_steps_of_products(algo, products_per_step, tmp_path, monkeypatch, capsys):
    """Counted by hand, with a backward pass costing a weight- and an input-gradient product per layer, minus the
    ones nothing needs (the gradient of the observations, the critics' weights in the actor step). Each critic
    is its own three layers. SAC: critic step 4 (next actions) + 6 (targets) + 6 + 10 (both critics forward and
    backward), actor step 4 + 6 + 6 + 7, acting 4. TD3: critic step 3 + 6 + 6 + 10, an actor step 3 + 3 + 3 + 5
    (Q1 only) every second step, acting 3."""
    monkeypatch.chdir(tmp_path)
    steps = ["--learning-starts", "40", "--burn-in", "5", "--measure", "20"]
    speed.worker(["ours", algo, "--env-id", "Pendulum-v1", *steps, "--flags=--batch-size 16"])
    result = json.loads(capsys.readouterr().out.split("RESULT ")[-1])
    assert result["products"] == products_per_step and result["products_ms"] > 0
    assert result["steps_per_s"] > 0


def test_run_workers_returns_the_result_of_each_worker():
    """Two real workers (tiny runs), started together, each report a steady rate; --torch-threads reaches them."""
    a = argparse.Namespace(env_id="Pendulum-v1", device="cpu", learning_starts=40, burn_in=5, measure=20)
    results = speed.run_workers(Path(sys.executable), "ours", "td3", a, "--batch-size 16 --torch-threads 1", 2)
    assert len(results) == 2 and all(r["steps_per_s"] > 0 for r in results)


def test_side_by_side_reports_each_run_the_total_and_the_total_against_alone(monkeypatch, capsys):
    """Medians over repeats: of every run's rate, of the sum of the runs that shared the machine, and that sum
    against the same threads alone; on every env, the old default (PyTorch's threads, explicit) beside ours."""
    rates = {("--torch-threads 2", 1): [[100.0], [90.0]], ("--torch-threads 2", 2): [[20.0, 30.0], [10.0, 15.0]]}
    rates |= {("", 1): [[96.0], [94.0]], ("", 2): [[55.0, 57.0], [55.0, 57.0]]}
    calls = []

    def fake_run_workers(python, impl, algo, a, flags, together):
        calls.append((impl, a.env_id, flags, together))
        done = sum(c[1:] == (a.env_id, flags, together) for c in calls)
        return [{"steps_per_s": r} for r in rates[flags, together][done - 1]]

    monkeypatch.setattr(speed, "run_workers", fake_run_workers)
    a = argparse.Namespace(algos=["sac"], repeats=2, side_by_side_envs=["Pendulum-v1", "Hopper-v5"], env_id="x")
    speed.side_by_side(a, default_threads=2)
    table = capsys.readouterr().out.split("\n| env")[1]
    for env in ("Pendulum-v1", "Hopper-v5"):
        assert f"| {env} | sac | 2 threads (old default), alone | 95.0 | 95.0 | 1.00 |" in table
        assert f"| {env} | sac | 2 threads (old default), 2 side by side | 17.5 | 37.5 | 0.39 |" in table
        assert f"| {env} | sac | default, alone | 95.0 | 95.0 | 1.00 |" in table
        assert f"| {env} | sac | default, 2 side by side | 56.0 | 112.0 | 1.18 |" in table
    assert {c[0] for c in calls} == {"ours"} and len(calls) == 16


FAKE_CLEANRL = """
import json, os, sys
import gymnasium as gym
flags = dict(zip(sys.argv[1::2], sys.argv[2::2]))
envs = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")])
envs.reset(seed=1)
for _ in range(int(flags["--total-timesteps"])):
    envs.step(envs.action_space.sample())
os.makedirs("runs")
with open(os.path.join(os.path.dirname(__file__), "called.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "utils": any(p.endswith("fake") for p in sys.path)}, f)
"""


def test_cleanrl_worker_times_the_checkouts_script_with_our_step_counts(tmp_path):
    """The script of the given checkout runs as `python cleanrl/<algo>_continuous_action.py` would: with the v4 twin
    of a v5 task (CleanRL's Gymnasium 0.29 has no v5), our step counts, on the CPU, in a scratch folder, with the
    checkout importable (its cleanrl_utils); every env step is timed."""
    checkout = tmp_path / "fake"
    (checkout / "cleanrl").mkdir(parents=True)
    (checkout / "cleanrl" / "td3_continuous_action.py").write_text(FAKE_CLEANRL)
    a = argparse.Namespace(env_id="Hopper-v5", device="cpu", learning_starts=20, burn_in=5, measure=10)
    a.cleanrl = str(checkout)
    (result,) = speed.run_workers(Path(sys.executable), "cleanrl", "td3", a, "")
    assert result["steps_per_s"] > 0
    called = json.loads((checkout / "cleanrl" / "called.json").read_text())
    flags = dict(zip(called["argv"][::2], called["argv"][1::2], strict=False))
    assert (
        flags["--env-id"] == "Hopper-v4" and flags["--total-timesteps"] == "35" and flags["--learning-starts"] == "20"
    )
    assert "--no-cuda" in called["argv"] and called["utils"]
    assert not Path(called["cwd"]).exists() and not (speed.ROOT / "runs" / "called.json").exists()


def test_cleanrl_runs_the_v4_twin_of_a_v5_task_and_needs_a_checkout(tmp_path, capsys):
    assert speed.cleanrl_env("HalfCheetah-v5") == "HalfCheetah-v4" and speed.cleanrl_env("Pendulum-v1") == "Pendulum-v1"
    with pytest.raises(SystemExit, match="is not a CleanRL checkout"):
        speed.cleanrl_python(str(tmp_path))
