"""--track: the scalars, flags and evaluation videos of a run reach Weights & Biases (offline runs here, read
back from their .wandb files), and wandb stays optional: training without --track never imports it."""

import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from tests.helpers import ALGORITHMS, SHORT_RUN, read_scalars

ROOT = Path(__file__).resolve().parents[1]
TAGS = ["charts/episodic_return", "losses/qf_loss", "losses/actor_loss"]
FILMED = "tests.test_track:FilmedPendulum-v0"


class FilmedPendulum(PendulumEnv):
    """Pendulum with 50-step episodes whose frames need no pygame: a small grey square, brighter when upright."""

    def render(self):
        return np.full((32, 32, 3), 127 + 100 * np.cos(self.state[0]), dtype=np.uint8)


gym.register(id="FilmedPendulum-v0", entry_point=FilmedPendulum, max_episode_steps=50)


@pytest.fixture
def local_wandb(monkeypatch, tmp_path):
    """wandb, with no user settings or login and everything it writes under tmp_path (skips if not installed)."""
    wandb = pytest.importorskip("wandb")
    for name in ["HOME", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"]:
        monkeypatch.setenv(name, str(tmp_path))  # HOME: no ~/.netrc login
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # wandb reads its settings once per process, and its service process keeps the working directory it started
    # in (where it looks for the relative runs/ folder): a fresh service for each test
    wandb.teardown()
    yield wandb
    wandb.teardown()
    wandb.tensorboard.unpatch()  # later tests' SummaryWriters are TensorBoard's own again


@pytest.fixture
def offline_wandb(local_wandb, monkeypatch, tmp_path):
    """wandb logs offline into tmp_path/wandb; returns how to read the runs back: {run name: run}."""
    monkeypatch.setenv("WANDB_MODE", "offline")

    def logged_runs() -> dict[str, dict]:
        # wandb.finish() can return before wandb's service process has written the run's file; teardown waits
        # for that process to exit
        local_wandb.teardown()
        runs = [read_offline_run(path) for path in tmp_path.glob("wandb/offline-run-*/run-*.wandb")]
        return {run["run"].display_name: run for run in runs}

    return logged_runs


def wandb_records(path: Path) -> list:
    """The records of a .wandb file, as protobufs. After a 7-byte header (":W&B", a key, a version) the file is a
    LevelDB log: 32 KiB blocks of chunks, each a 7-byte header (CRC-32 of type + data, length, type) and its data;
    a record is one FULL chunk, or FIRST, MIDDLE..., LAST. A block's tail too short for a header is padding."""
    from wandb.proto.wandb_internal_pb2 import Record  # noqa: PLC0415

    block, header, full, last = 32 * 1024, 7, 1, 4
    data = path.read_bytes()
    assert data.startswith(b":W&B"), "not a W&B transaction log"
    records, pos, parts = [], header, b""
    while pos + header <= len(data):
        if block - pos % block < header:
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        chunk = data[pos + header : pos + header + length]
        assert zlib.crc32(bytes([kind]) + chunk) == crc, f"corrupt chunk at byte {pos}"
        parts, pos = parts + chunk, pos + header + length
        if kind in (full, last):
            records.append(Record.FromString(parts))
            parts = b""
    return records


def read_offline_run(path: Path) -> dict:
    """What an offline run holds: its run record (name, project, config) and its history rows as dicts."""
    records = wandb_records(path)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    rows = [r.history.item for r in records if r.WhichOneof("record_type") == "history"]
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in row} for row in rows]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    return {"run": run, "config": config, "history": history, "folder": path.parent}


# ----------------------------------------------------------------------------- --track
def test_track_syncs_the_tensorboard_scalars_and_the_flags(algo, train, tmp_path, offline_wandb):
    # Two runs in one process, as in a notebook: each W&B run gets its own run's logs
    names = [train(algo, track=True, seed=seed, wandb_project_name="track-test")["run_name"] for seed in (7, 8)]
    logged = offline_wandb()
    assert sorted(logged) == sorted(names)

    for name, seed in zip(names, (7, 8), strict=True):
        run, config, history = logged[name]["run"], logged[name]["config"], logged[name]["history"]
        assert run.project == "track-test"
        assert config["env_id"] == "Pendulum-v1" and config["seed"] == seed and config["track"] is True
        assert config["batch_size"] == SHORT_RUN["batch_size"]
        # Every TensorBoard point of these tags is a W&B history row, at the same global_step with the same value
        tensorboard = read_scalars(tmp_path / "runs" / name)
        for tag in TAGS:
            synced = [(row["global_step"], row[tag]) for row in history if tag in row]
            assert [step for step, _ in synced] == [step for step, _ in tensorboard[tag]], tag
            assert [value for _, value in synced] == pytest.approx([value for _, value in tensorboard[tag]], rel=1e-6)


def test_track_uploads_every_evaluation_video(algo, train, tmp_path, monkeypatch, offline_wandb):
    monkeypatch.setenv("MUJOCO_GL", "egl")  # --capture-video sets it if unset, for the rest of the process
    # Evaluations at steps 300 and 600; the second video is written only when the eval env closes
    name = train(algo, env_id=FILMED, track=True, capture_video=True, eval_frequency=300)["run_name"]
    (logged,) = offline_wandb().values()
    assert logged["run"].display_name == name

    recorded = sorted((tmp_path / "videos").rglob("*.mp4"), key=lambda p: int(p.stem.rpartition("-")[2]))
    uploaded = [row for row in logged["history"] if "videos/eval/path" in row]
    assert len(recorded) == 2 and [row["videos/eval/caption"] for row in uploaded] == ["evaluation 1", "evaluation 2"]
    for video, row in zip(recorded, uploaded, strict=True):
        copy = logged["folder"] / "files" / row["videos/eval/path"]
        assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(video.read_bytes()).digest()


def test_track_without_wandb_installed_stops_before_training(algo, train, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(algo.StopRun, match=r"^--track needs Weights & Biases: pip install wandb$"):
        train(algo, track=True)
    assert not (tmp_path / "runs").exists(), "no logs: training never started"


def test_track_when_not_logged_in_says_so_in_one_line(algo, train, tmp_path, monkeypatch, local_wandb):
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(algo.StopRun, match=r"^--track cannot start a W&B run: .*API key.*WANDB_MODE=offline"):
        train(algo, track=True)
    assert not (tmp_path / "runs").exists()


def test_training_without_track_never_imports_wandb(tmp_path):
    # A fresh interpreter (this one imports wandb for the other tests) imports and trains with both scripts, then
    # lists its modules: one interpreter for both, as importing torch costs more than the two short runs
    scripts = [module.__name__ for module in ALGORITHMS.values()]
    code = f"import json, sys, {', '.join(scripts)}\n"
    code += f"for script in ({', '.join(scripts)}): script.main(script.Args(**{SHORT_RUN!r}))\n"
    code += "print(json.dumps(list(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"torch", *scripts} <= set(modules) and not [m for m in modules if m.partition(".")[0] == "wandb"]
