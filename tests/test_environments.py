"""Envs written elsewhere: Dict and Tuple observations are flattened (training, evaluation, checkpoints, resume),
Gymnasium-Robotics runs from the command line, and an installed package that fails inside itself stops the run
with one line. The Gymnasium-Robotics tests skip where it is not installed (requirements-benchmark.txt has it)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import run

ROOT = Path(__file__).resolve().parents[1]
DICT_OBS = "tests.predictable_env:DictObs-v0"
HAS_ROBOTICS = importlib.util.find_spec("gymnasium_robotics") is not None
needs_robotics = pytest.mark.skipif(not HAS_ROBOTICS, reason="gymnasium-robotics is not installed")


def test_a_nested_dict_of_vectors_and_scalars_is_flattened_and_said_once(algo, train, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(algo, "FLATTENED", set())  # said once per process: other tests may have made this env
    env = algo.make_env(DICT_OBS)
    obs, _ = env.reset(seed=7)
    assert obs.tolist() == [0.0, 0.0, 7.0], "sorted keys: (episode, t) of 'rest', then 'seed'"
    assert env.step(env.action_space.low)[0].tolist() == [0.0, 1.0, 7.0]
    said = (
        f"{DICT_OBS}: Dict observations (rest, seed) flattened into a Box of 3 (gymnasium.wrappers.FlattenObservation)"
    )

    result = train(algo, env_id=DICT_OBS, num_envs=2, total_timesteps=100, learning_starts=40, eval_frequency=100,
                   save_model=True, run_name="dict")  # fmt: skip
    checkpoint = tmp_path / "runs" / "dict" / f"{algo.ALGORITHM}_continuous.pt"
    assert torch.load(checkpoint, weights_only=True)["spaces"]["obs_dim"] == 3
    assert train(algo, checkpoint=str(checkpoint))["eval_returns"] == result["eval_returns"]
    assert algo.main(algo.Args(resume="runs/dict", total_timesteps=150))["global_step"] == 150
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "flattened" in line] == [said], "once, for all the envs of all the runs"


@pytest.mark.parametrize("env_id", ["tests.predictable_env:ImageObs-v0", "tests.predictable_env:DiscreteInDict-v0"])
def test_observations_that_are_not_vectors_stop_with_one_line(algo, env_id, tmp_path):
    result = run([sys.executable, str(ROOT / f"{algo.ALGORITHM}_continuous.py"), "--env-id", env_id], cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {env_id} has ")
    assert "observations; the networks take one vector" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("folder", "body", "raised"),
    [
        ("site-packages", "assert joint in (1, 2)", r"AssertionError in oldpkg_\w+/__init__.py:6 \(assert joint in"),
        ("site-packages", "joint.no_such_field", r"AttributeError in oldpkg_\w+/__init__.py:6 \('int' object has no"),
        ("dist-packages", "assert joint in (1, 2)", r"AssertionError in oldpkg_\w+/__init__.py:6"),  # Debian's Python
        ("my_project", "assert joint in (1, 2)", None),  # the user's own code: its traceback is kept
    ],
)
def test_an_installed_package_failing_inside_itself_is_one_line(
    algo, train, tmp_path, monkeypatch, folder, body, raised
):
    """As Gymnasium-Robotics 1.4.2 and dm_control 1.0.50 fail with MuJoCo 4.0.0 (docs/environments.md)."""
    name = f"oldpkg_{tmp_path.name}"  # a module of its own for each case
    package = tmp_path / folder / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"import gymnasium as gym\n\n\ndef make():\n    joint = 3\n    {body}\n\n\ngym.register('{name}-v0', make)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    expected = pytest.raises(algo.StopRun, match=raised) if raised else pytest.raises(AssertionError)
    with expected:
        train(algo, env_id=f"{name}:{name}-v0")


@needs_robotics
@pytest.mark.parametrize("env_id", ["PointMaze_UMaze-v3", "AdroitHandDoor-v1"])
def test_gymnasium_robotics_trains_saves_evaluates_and_resumes(algo, train, tmp_path, env_id):
    env_id = f"gymnasium_robotics:{env_id}"
    first = train(algo, env_id=env_id, total_timesteps=300, learning_starts=100, eval_frequency=150, save_model=True,
                  run_name="robotics")  # fmt: skip
    assert first["global_step"] == 300 and len(first["eval_returns"]) == 2
    checkpoint = tmp_path / "runs" / "robotics" / f"{algo.ALGORITHM}_continuous.pt"
    evaluated = train(algo, checkpoint=str(checkpoint))["eval_returns"]
    assert evaluated == first["eval_returns"][-1:], "the weights of step 300, evaluated as at step 300"
    resumed = algo.main(algo.Args(resume="runs/robotics", total_timesteps=450))
    assert resumed["global_step"] == 450 and resumed["eval_returns"][:2] == first["eval_returns"]


@needs_robotics
def test_fetch_reach_stops_with_one_line_naming_the_failing_assertion(algo, tmp_path):
    """Gymnasium-Robotics 1.4.2 asserts `joint_type in (mjJNT_HINGE, mjJNT_SLIDE)`, which is False with MuJoCo
    3.12 and later: their enum no longer equals the numpy integers of model.jnt_type (docs/environments.md)."""
    script = str(ROOT / f"{algo.ALGORITHM}_continuous.py")
    result = run([sys.executable, script, "--env-id", "gymnasium_robotics:FetchReach-v4"], cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error == [result.stderr.strip().splitlines()[-1]]
    assert "AssertionError in gymnasium_robotics/utils/mujoco_utils.py:142 (assert joint_type in" in error[0]
