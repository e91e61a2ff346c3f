"""benchmarks/results.py and benchmarks/sb3_peer.py: what a finished grid run leaves to commit, and the peer's
evaluation protocol."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import sac_continuous as sac
import td3_continuous as td3
from benchmarks import grid, results, sb3_peer

ROOT = Path(__file__).resolve().parents[1]


def test_downsample_keeps_a_short_series_and_averages_runs_of_consecutive_episodes():
    assert results.downsample([5, 9], [1.0, 2.0], points=3) == ([5, 9], [1.0, 2.0])
    steps, values = list(range(10, 1010, 10)), [float(v) for v in range(100)]
    down_steps, down_values = results.downsample(steps, values, points=7)
    # 100 episodes into 7 runs of 15, 15, 14, 14, 14, 14, 14: each point at the step its last episode ended
    assert down_steps == [150, 300, 440, 580, 720, 860, 1000]
    assert down_values == [7.0, 22.0, 36.5, 50.5, 64.5, 78.5, 92.5]
    assert len(results.downsample(steps * 10, values * 10)[0]) == results.TRAIN_POINTS


def test_a_finished_grid_run_exports_its_result_and_a_final_actor_that_evaluates_the_same(tmp_path, monkeypatch):
    """A real (tiny) run through the grid's executor: result.json and actor.pt in the run folder and the
    committed copy; the actor alone gives the final evaluation again; a DONE run lacking a copy is exported."""
    monkeypatch.chdir(tmp_path)
    run_dir, to = Path("runs/grid/medium/Pendulum-v1/sac/seed1"), Path("docs/benchmarks/medium/Pendulum-v1/sac/seed1")
    command = [sys.executable, str(ROOT / "sac_continuous.py"), "--env-id", "Pendulum-v1", "--total-timesteps", "300",
               "--learning-starts", "100", "--eval-frequency", "150", "--eval-episodes", "1", "--save-model",
               "--run-name", str(run_dir.relative_to("runs"))]  # fmt: skip
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as a Slurm task sets it: the run's environment, not `env`
    assert grid.execute(run_dir, command, None, to) == 0
    result = json.loads((to / results.RESULT).read_text())
    assert result == json.loads((run_dir / results.RESULT).read_text())
    assert (result["grid"], result["env_id"], result["algo"], result["seed"]) == ("medium", "Pendulum-v1", "sac", 1)
    assert result["command"].split()[1:] == command[1:] and result["attempts"] == 1
    assert result["versions"]["torch"].startswith("2.13.0") and result["machine"]["torch_threads"] == "1"
    assert result["commit"] is None  # not run inside a git checkout
    attempt = {"start": result["start"], "wall_seconds": result["wall_seconds"], "commit": None}
    assert result["attempt_history"] == [{**attempt, "uncommitted_changes": None}]
    assert result["eval"]["steps"] == [150, 300] and result["final_eval"]["step"] == 300
    assert result["final_eval"]["mean"] == result["eval"]["mean"][-1] == results.scalars(run_dir)[results.EVAL_TAG][300]
    assert result["train_episodes"]["count"] == 1 and result["train_episodes"]["steps"] == [200]

    actor = sac.torch.load(to / results.ACTOR, weights_only=True)
    assert sorted(actor) == ["actor", "algorithm", "args", "global_step", "spaces"]  # no critics
    assert (to / results.ACTOR).read_bytes() == (run_dir / results.ACTOR).read_bytes()
    args = sac.Args(checkpoint=str(to / results.ACTOR), eval_episodes=1)
    (returned,) = sac.evaluate_checkpoint(args, sac.torch.device("cpu"))["eval_returns"]
    assert returned == pytest.approx(result["final_eval"]["mean"], rel=1e-6)

    again = Path("elsewhere/Pendulum-v1/sac/seed1")
    assert grid.execute(run_dir, ["false"], to=again) == 0  # finished: not run again, only exported
    assert json.loads((again / results.RESULT).read_text()) == result


def test_export_refuses_a_run_that_has_not_finished_or_never_evaluated(tmp_path):
    run_dir = tmp_path / "g/Pendulum-v1/td3/seed1"
    run_dir.mkdir(parents=True)
    with pytest.raises(results.ExportError, match="has not finished"):
        results.export(run_dir)
    grid.write_done(run_dir, ["python", "td3_continuous.py"], *[grid.datetime.now(grid.UTC)] * 2, 1.0)
    with pytest.raises(results.ExportError, match="logged no eval/episodic_return"):
        results.export(run_dir)
    assert results.main([str(run_dir)]) == 1


def test_result_files_keep_lists_of_numbers_on_one_line(tmp_path):
    record = {"eval": {"steps": [1, 2], "mean": [-1.5, 2.25], "std": [None, 0.0]}, "command": "a [b] c"}
    results.write_json(tmp_path / "r.json", record)
    text = (tmp_path / "r.json").read_text()
    assert '"steps": [1, 2],' in text and '"mean": [-1.5, 2.25],' in text and '"std": [null, 0.0]' in text
    assert json.loads(text) == record and not (tmp_path / "r.json.tmp").exists()


class FakeEnv:
    """Counts steps; an episode ends after 3 steps with reward 1 each; records how it was reset."""

    def __init__(self):
        self.seeds, self.t = [], 0

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.t = 0
        return np.zeros(2), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2), 1.0, False, self.t == 3, {}


class FakeModel:
    def __init__(self):
        self.deterministic = []

    def predict(self, obs, deterministic=False):
        self.deterministic.append(deterministic)
        return np.zeros(1), None


def test_sb3_peer_evaluates_like_our_scripts():
    env, model = FakeEnv(), FakeModel()
    assert sb3_peer.evaluate(model, env, episodes=3, seed=10_001) == [3.0, 3.0, 3.0]
    assert env.seeds == [10_001, None, None]  # as sac.evaluate: only the first reset of an evaluation is seeded
    assert model.deterministic == [True] * 9
    assert sb3_peer.EVAL_SEED_OFFSET == sac.EVAL_SEED_OFFSET
    assert {"sac": sac.Args().learning_starts, "td3": td3.Args().learning_starts} == sb3_peer.LEARNING_STARTS


def stand_in_sb3(monkeypatch) -> list:
    """A stable_baselines3 package (not installed here) whose TD3 and SAC record how they were made and the
    logger they were given; returns the list of models made."""
    made = []

    class Model:
        def __init__(self, policy, env, **kwargs):
            self.algo, self.kwargs, self.logger = type(self).__name__, kwargs, None
            made.append(self)

        def set_logger(self, logger):
            self.logger = logger

    root, common = types.ModuleType("stable_baselines3"), types.ModuleType("stable_baselines3.common")
    root.SAC, root.TD3 = type("SAC", (Model,), {}), type("TD3", (Model,), {})
    logger, noise = types.ModuleType("logger"), types.ModuleType("noise")
    logger.Logger = lambda folder, output_formats: (folder, output_formats)
    noise.NormalActionNoise = lambda mean, sigma: ("normal", list(mean), list(sigma))
    modules = {"": root, ".common": common, ".common.logger": logger, ".common.noise": noise}
    for suffix, module in modules.items():
        monkeypatch.setitem(sys.modules, "stable_baselines3" + suffix, module)
    return made


def test_sb3_peer_is_configured_like_our_defaults_and_logs_nowhere(monkeypatch):
    made = stand_in_sb3(monkeypatch)
    env = type("Env", (), {"action_space": sac.gym.spaces.Box(-1.0, 1.0, (2,))})()
    sb3_peer.make_model("td3", env, seed=3, learning_starts=td3.Args().learning_starts)
    sb3_peer.make_model("sac", env, seed=3, learning_starts=sac.Args().learning_starts)
    (td3_model, sac_model) = made
    for model, args in [(td3_model, td3.Args()), (sac_model, sac.Args())]:
        ours = {key: getattr(args, key) for key in ("buffer_size", "batch_size", "tau", "gamma")}
        assert {key: model.kwargs[key] for key in ours} == ours
        rates = [args.learning_rate] if model is td3_model else [args.policy_lr, args.q_lr]  # SB3: one for all
        assert rates == [model.kwargs["learning_rate"]] * len(rates)
        assert (model.kwargs["learning_starts"], model.kwargs["seed"]) == (args.learning_starts, 3)
        assert (model.kwargs["train_freq"], model.kwargs["gradient_steps"]) == (1, 1)  # one update per env step
        assert model.kwargs["policy_kwargs"] == {"net_arch": [256, 256]}  # as our Actor's and critics' defaults
    a, kwargs = td3.Args(), td3_model.kwargs
    assert td3_model.algo == "TD3" and kwargs["action_noise"] == ("normal", [0.0, 0.0], [a.exploration_noise] * 2)
    assert (kwargs["target_policy_noise"], kwargs["target_noise_clip"]) == (a.policy_noise, a.noise_clip)
    assert td3_model.kwargs["policy_delay"] == a.policy_frequency
    # SB3's "auto" learns α towards an entropy of -|A|, as ours does; its target networks follow every update
    assert sac_model.algo == "SAC" and sac.Args().autotune and sac_model.kwargs["ent_coef"] == "auto"
    assert sac_model.kwargs["target_update_interval"] == sac.Args().target_network_frequency
    assert sac.Args().policy_frequency == 1  # SB3's SAC updates its actor at every step
    # no folder, no outputs: SB3 would otherwise create an empty /tmp/SB3-<time>/ folder for every run
    assert td3_model.logger == sac_model.logger == (None, [])
