"""Behaviour of whole runs: bad input, the CLI, logging, checkpoints, Ctrl-C, NaN, determinism, video."""

import ctypes.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import sac_continuous
import td3_continuous
from tests.helpers import read_scalars, run
from tests.predictable_env import NanRewardEnv

ROOT = Path(__file__).resolve().parents[1]
COMMON_TAGS = {
    "charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return",
    "losses/qf1_values", "losses/qf2_values", "losses/qf1_loss", "losses/qf2_loss", "losses/qf_loss",
    "losses/actor_loss",
}  # fmt: skip
SAC_TAGS = {"losses/alpha", "losses/alpha_loss", "losses/entropy"}


def cli(algo, *flags, cwd, env=None) -> subprocess.CompletedProcess:
    """Run a script exactly as a user would."""
    script = ROOT / f"{algo.ALGORITHM}_continuous.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, str(script), *flags]
    return run(command, cwd=cwd, env=env)


def only_run_dir(cwd: Path) -> Path:
    (run_dir,) = (cwd / "runs").iterdir()
    return run_dir


# ----------------------------------------------------------------------------- bad input
BAD_FLAGS = [
    ({"total_timesteps": 0}, "--total-timesteps"),
    ({"batch_size": -1}, "--batch-size"),
    ({"batch_size": 2_000, "buffer_size": 1_000}, "--batch-size must not exceed --buffer-size"),
    ({"learning_starts": 600}, "--learning-starts"),
    ({"gamma": 1.5}, "--gamma"),
    ({"gamma": 0.0}, "--gamma"),
    ({"tau": 0.0}, "--tau"),
    ({"num_envs": 0}, "--num-envs"),
    ({"eval_episodes": 0}, "--eval-episodes"),
    ({"torch_threads": 0}, "--torch-threads"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS, ids=[m for _, m in BAD_FLAGS])
def test_nonsense_flags_stop_before_training(algo, train, tmp_path, flags, message):
    with pytest.raises(algo.StopRun, match=message):
        train(algo, **flags)
    assert not (tmp_path / "runs").exists(), "nothing was started"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"policy_noise": -0.1}, "--policy-noise"),
        ({"exploration_noise": -1.0}, "--exploration-noise"),
        ({"noise_clip": -0.5}, "--noise-clip"),
        ({"policy_frequency": 0}, "--policy-frequency"),
    ],
)
def test_td3_rejects_negative_noise_and_zero_delay(train, flags, message):
    with pytest.raises(td3_continuous.StopRun, match=message):
        train(td3_continuous, **flags)


def test_sac_rejects_negative_alpha(train):
    with pytest.raises(sac_continuous.StopRun, match="--alpha"):
        train(sac_continuous, autotune=False, alpha=-0.2)


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("NoSuchEnv-v0", "cannot make env 'NoSuchEnv-v0'"),
        ("no_such_module:Env-v0", "cannot make env"),
        ("CartPole-v1", "Discrete action space"),
        ("tests.predictable_env:UnboundedAction-v0", "unbounded action space"),
    ],
)
def test_unusable_envs_stop_with_a_clear_message(algo, train, env_id, message):
    with pytest.raises(algo.StopRun, match=message):
        train(algo, env_id=env_id)


def test_user_errors_print_one_line_and_no_traceback(algo, tmp_path):
    result = cli(algo, "--env-id", "CartPole-v1", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Box" in lines[0]


def test_help_documents_every_flag(algo, tmp_path):
    result = cli(algo, "--help", cwd=tmp_path)
    assert result.returncode == 0
    for field in algo.Args.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field
    assert "discount factor γ" in result.stdout, "the per-flag docstrings are the help text"


def test_env_bugs_keep_their_traceback_when_mujoco_gl_is_set(algo, train, monkeypatch):
    """Only errors from OpenGL or MuJoCo's GL backends get the rendering message; an env's own bug stays itself."""
    monkeypatch.setenv("MUJOCO_GL", "egl")
    with pytest.raises(ZeroDivisionError):
        train(algo, env_id="tests.predictable_env:Broken-v0")


def test_evaluation_of_an_env_without_time_limit_ends(algo):
    env = algo.make_eval_env("tests.predictable_env:Endless-v0", episodes=2, video_folder=None)
    returns = algo.evaluate(lambda obs: algo.torch.zeros(1, 2), env, episodes=2, seed=0, device="cpu")
    assert returns == [algo.EVAL_MAX_EPISODE_STEPS] * 2, "one reward of 1 per step, cut off at the cap"


@pytest.mark.parametrize("deterministic", [False, True])
def test_torch_deterministic_means_deterministic_algorithms(algo, train, deterministic):
    train(algo, torch_deterministic=deterministic, total_timesteps=1, learning_starts=0)
    assert algo.torch.are_deterministic_algorithms_enabled() == deterministic


def test_torch_threads_sets_pytorch_threads(algo, train):
    before = algo.torch.get_num_threads()
    try:
        algo.torch.set_num_threads(2)
        train(algo, torch_threads=1, total_timesteps=1, learning_starts=0)
        assert algo.torch.get_num_threads() == 1
    finally:
        algo.torch.set_num_threads(before)


# ----------------------------------------------------------------------------- whole runs
def test_cli_run_trains_logs_saves_and_reloads(algo, tmp_path):
    flags = ["--env-id", "Pendulum-v1", "--total-timesteps", "1200", "--learning-starts", "600", "--batch-size", "64"]
    flags += ["--eval-frequency", "600", "--eval-episodes", "2", "--save-model", "--no-cuda"]
    result = cli(algo, *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "finished 1,200 steps, final eval return" in result.stdout

    run_dir = only_run_dir(tmp_path)
    scalars = read_scalars(run_dir)
    expected = COMMON_TAGS | (SAC_TAGS if algo.ALGORITHM == "sac" else set())
    assert expected <= scalars.keys(), expected - scalars.keys()
    assert [step for step, _ in scalars["eval/episodic_return"]] == [600, 1200]
    assert all(step >= 600 for step, _ in scalars["losses/qf_loss"]), "losses only after learning starts"
    assert len(scalars["charts/episodic_return"]) == 6, "Pendulum's 200-step episodes: 6 in 1200 steps"

    checkpoint = run_dir / f"{algo.ALGORITHM}_continuous.pt"
    assert checkpoint.is_file() and not list(run_dir.glob("*.tmp"))
    reloaded = cli(algo, "--checkpoint", str(checkpoint), "--eval-episodes", "2", "--no-cuda", cwd=tmp_path)
    assert reloaded.returncode == 0, reloaded.stderr
    final_eval = scalars["eval/episodic_return"][-1][1]
    assert f"eval return {final_eval:.1f}" in reloaded.stdout, "same seed, same weights: the same evaluation"


def test_checkpoint_of_the_other_algorithm_is_refused(algo, tmp_path, train):
    other = "sac" if algo.ALGORITHM == "td3" else "td3"
    path = tmp_path / "other.pt"
    algo.torch.save({"algorithm": other}, path)
    with pytest.raises(algo.StopRun, match=f"'{other}' checkpoint"):
        train(algo, checkpoint=str(path))


def test_non_finite_loss_stops_the_run_naming_step_and_loss(algo, train, tmp_path):
    with pytest.raises(algo.StopRun, match=r"non-finite .*qf1_loss.* at step \d+: training diverged") as error:
        train(algo, env_id="tests.predictable_env:NanReward-v0", total_timesteps=2_000, learning_starts=50)
    stop_step = int(re.search(r"at step (\d+)", str(error.value)).group(1))
    assert 100 < stop_step < 250, "rewards turn NaN after step 100; the run stops soon after"
    logged_episodes = read_scalars(only_run_dir(tmp_path))["charts/episodic_return"]
    assert logged_episodes[-1][0] > stop_step - 10, "logs were flushed up to the stop"


def test_a_diverged_run_closes_its_logs_and_envs(algo, train, monkeypatch):
    closed = []

    class Writer(algo.SummaryWriter):
        def close(self):
            closed.append("writer")
            super().close()

    monkeypatch.setattr(algo, "SummaryWriter", Writer)
    monkeypatch.setattr(NanRewardEnv, "close", lambda self: closed.append("env"))
    with pytest.raises(algo.StopRun, match="non-finite"):
        train(algo, env_id="tests.predictable_env:NanReward-v0", total_timesteps=2_000, learning_starts=50)
    assert sorted(closed) == ["env", "env", "writer"], "the training env, the evaluation env and the writer"


def test_ctrl_c_saves_a_checkpoint_and_ends_cleanly(algo, train, tmp_path, capsys):
    result = train(algo, env_id="tests.predictable_env:Interrupting-v0", learning_starts=50, save_model=True)
    assert result["interrupted"] and result["global_step"] == 150
    assert "interrupted at step 150" in capsys.readouterr().out
    actor, checkpoint = algo.load_actor(str(only_run_dir(tmp_path) / f"{algo.ALGORITHM}_continuous.pt"), "cpu")
    assert checkpoint["global_step"] == 150
    for name, tensor in actor.state_dict().items():
        assert algo.torch.equal(tensor, result["actor"].state_dict()[name]), name


def test_same_seed_same_numbers(algo, train, tmp_path):
    def logged(seed):
        result = train(algo, seed=seed, exp_name=f"seed{seed}-{len(list(tmp_path.glob('runs/*')))}")
        scalars = read_scalars(tmp_path / "runs" / result["run_name"])
        return {tag: values for tag, values in scalars.items() if tag != "charts/SPS"}

    first, second, other = logged(1), logged(1), logged(2)
    assert "losses/qf_loss" in first and first == second
    assert first["losses/qf_loss"] != other["losses/qf_loss"], "a different seed gives different numbers"


# ----------------------------------------------------------------------------- video
VIDEO_RUN = ["--env-id", "InvertedPendulum-v5", "--total-timesteps", "300", "--learning-starts", "200"]
VIDEO_RUN += ["--eval-episodes", "1", "--capture-video", "--no-cuda"]


@pytest.mark.skipif(ctypes.util.find_library("EGL") is None, reason="no libEGL on this machine")
def test_capture_video_works_headless(algo, tmp_path):
    result = cli(algo, *VIDEO_RUN, cwd=tmp_path, env={"MUJOCO_GL": "egl"})
    assert result.returncode == 0, result.stderr
    videos = list((tmp_path / "videos").rglob("*.mp4"))
    assert videos and all(v.stat().st_size > 1_000 for v in videos)


@pytest.mark.skipif(ctypes.util.find_library("EGL") is None, reason="no libEGL on this machine")
def test_videos_of_two_checkpoints_in_like_named_folders_do_not_collide(algo, train, tmp_path, monkeypatch, capsys):
    """Every committed actor lives in a seed<k> folder: recording one must not overwrite another's video."""
    monkeypatch.setenv("MUJOCO_GL", "egl")
    train(algo, env_id="InvertedPendulum-v5", total_timesteps=300, learning_starts=200, save_model=True, run_name="r")
    for grid in ("one", "two"):
        (tmp_path / grid / "seed1").mkdir(parents=True)
        shutil.copy(tmp_path / "runs" / "r" / f"{algo.ALGORITHM}_continuous.pt", tmp_path / grid / "seed1" / "actor.pt")
        algo.main(algo.Args(checkpoint=f"{grid}/seed1/actor.pt", capture_video=True, eval_episodes=1, cuda=False))
    folders = sorted(p.parent.name for p in (tmp_path / "videos").rglob("*.mp4"))
    assert folders == ["one-seed1-actor-eval", "two-seed1-actor-eval"]
    assert capsys.readouterr().out.count(" over 1 episode\n") == 2, "one episode, in the singular"


@pytest.mark.skipif(ctypes.util.find_library("EGL") is None, reason="no libEGL on this machine")
@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5"])
def test_videos_follow_the_agent(algo, env_id, tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")

    def pictures(env):
        """What the video shows at the start, and once the agent has moved 4 m forward."""
        sim = env.unwrapped
        env.reset(seed=0)
        start = sim.render().astype(float)
        qpos = sim.data.qpos.copy()
        qpos[0] += 4.0
        sim.set_state(qpos, sim.data.qvel.copy())
        moved = sim.render().astype(float)
        env.close()
        return np.abs(moved - start).mean()  # 0: the same picture

    assert pictures(algo.make_eval_env(env_id, 1, str(tmp_path / "videos"))) < 0.5  # the camera moved with it
    assert pictures(gym.make(env_id, render_mode="rgb_array")) > 1.5  # Gymnasium's free camera stays behind (≥ 3.8)


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed here")
def test_capture_video_without_a_renderer_says_how_to_fix_it(algo, tmp_path):
    result = cli(algo, *VIDEO_RUN, cwd=tmp_path, env={"MUJOCO_GL": "osmesa"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "MUJOCO_GL=egl" in lines[0]
