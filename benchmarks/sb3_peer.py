"""Stable-Baselines3's TD3 and SAC configured like our defaults, for the speed benchmark and the grid.

    .bench-venvs/sb3/bin/python benchmarks/sb3_peer.py --algo sac --env-id Hopper-v5 --seed 1 \
        --total-timesteps 300000 --eval-frequency 10000 --run-name grid/medium/Hopper-v5/sb3-sac/seed1

SB3 is installed into its own virtual environment (.bench-venvs/sb3, from benchmarks/requirements-sb3.txt,
created on first use by `sb3_python()`) and never into the project's: this file imports it only inside the
functions that run there. Configured like our defaults: 256-256 MLPs, batch 256, buffer 1M, learning starts
25k (TD3) / 5k (SAC), one gradient step per env step, Adam 3e-4, tau 0.005, gamma 0.99; TD3 with policy delay 2,
N(0, 0.1) exploration noise, target noise 0.2 clipped at 0.5; SAC with auto-α (initial 1) and target entropy -|A|.

A grid run (`main`) evaluates exactly as our scripts do: every --eval-frequency env steps and at the end,
--eval-episodes episodes of the deterministic policy on a separate env whose first reset of each evaluation is
seeded with seed + 10,000, logged to runs/<run name>/ under our TensorBoard tags (eval/episodic_return and its
std, charts/episodic_return of the training episodes), so one aggregation reads both. SIGTERM or Ctrl-C stops
it with status 143 or 130; SB3 has no exact resume, so the grid runs an interrupted peer again from scratch.
"""

import argparse
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SB3_VENV = Path(".bench-venvs") / "sb3"  # relative to the repository root, like the grid's commands
SB3_PYTHON = SB3_VENV / "bin" / "python"
SB3_REQUIREMENTS = ROOT / "benchmarks" / "requirements-sb3.txt"
LEARNING_STARTS = {"td3": 25_000, "sac": 5_000}  # our scripts' defaults
EVAL_SEED_OFFSET = 10_000  # as in our scripts


def peer_python(venv: Path, requirements: Path, name: str) -> Path:
    """A peer's interpreter (absolute), in a virtual environment of its own (venv, relative to the repository root),
    created from `requirements` on first use and again whenever they change."""
    python, stamp = ROOT / venv / "bin" / "python", ROOT / venv / "installed.txt"
    if stamp.exists() and stamp.read_text() == requirements.read_text():
        return python
    print(f"creating {venv} for {name} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(ROOT / venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True)
    stamp.write_text(requirements.read_text())
    return python


def sb3_python() -> Path:
    return peer_python(SB3_VENV, SB3_REQUIREMENTS, "Stable-Baselines3")


def make_model(algo: str, env, seed: int, learning_starts: int, device: str = "cpu"):
    """SB3's TD3 or SAC with our defaults (see the module docstring)."""
    import numpy as np  # noqa: PLC0415 (in the peer's virtual environment)
    import stable_baselines3 as sb3  # noqa: PLC0415
    from stable_baselines3.common.logger import Logger  # noqa: PLC0415
    from stable_baselines3.common.noise import NormalActionNoise  # noqa: PLC0415

    common = {"learning_rate": 3e-4, "buffer_size": 1_000_000, "learning_starts": learning_starts}
    common |= {"batch_size": 256, "tau": 0.005, "gamma": 0.99, "train_freq": 1, "gradient_steps": 1}
    common |= {"policy_kwargs": {"net_arch": [256, 256]}, "device": device, "seed": seed, "verbose": 0}
    if algo == "sac":
        model = sb3.SAC("MlpPolicy", env, ent_coef="auto", target_update_interval=1, **common)
    else:
        noise = NormalActionNoise(np.zeros(env.action_space.shape), 0.1 * np.ones(env.action_space.shape))
        model = sb3.TD3("MlpPolicy", env, action_noise=noise, policy_delay=2, target_policy_noise=0.2,
                        target_noise_clip=0.5, **common)  # fmt: skip
    model.set_logger(Logger(folder=None, output_formats=[]))  # else learn() leaves an empty /tmp/SB3-<time>/ each run
    return model


def evaluate(model, env, episodes: int, seed: int) -> list[float]:
    """Our scripts' protocol: deterministic actions, the first reset seeded, `episodes` whole episodes."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        done, episode_return = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    return returns


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/sb3_peer.py", description=__doc__.split("\n")[0])
    p.add_argument("--algo", choices=sorted(LEARNING_STARTS), required=True)
    p.add_argument("--env-id", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, required=True)
    p.add_argument("--eval-frequency", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--learning-starts", type=int, help="default: ours, 25k (TD3) or 5k (SAC)")
    p.add_argument("--save-model", action="store_true", help="save SB3's model to runs/<run name>/model.zip")
    p.add_argument("--run-name", required=True)
    return p


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    import gymnasium as gym  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from stable_baselines3.common.callbacks import BaseCallback  # noqa: PLC0415
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

    run_dir = Path("runs") / a.run_name
    writer = SummaryWriter(str(run_dir))
    eval_env = gym.make(a.env_id)
    learning_starts = LEARNING_STARTS[a.algo] if a.learning_starts is None else a.learning_starts
    model = make_model(a.algo, gym.make(a.env_id), a.seed, learning_starts)

    evaluations: dict[int, float] = {}  # step -> mean return

    def evaluate_and_log(step: int) -> None:
        returns = evaluate(model, eval_env, a.eval_episodes, a.seed + EVAL_SEED_OFFSET)
        evaluations[step] = float(np.mean(returns))
        writer.add_scalar("eval/episodic_return", evaluations[step], step)
        writer.add_scalar("eval/episodic_return_std", float(np.std(returns)), step)
        print(f"step {step:>9,}/{a.total_timesteps:,}  eval {evaluations[step]:9.1f}", flush=True)

    class Log(BaseCallback):
        next_eval = a.eval_frequency

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:  # SB3's Monitor: a training episode ended
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"], self.num_timesteps)
                    writer.add_scalar("charts/episodic_length", info["episode"]["l"], self.num_timesteps)
            if self.num_timesteps >= self.next_eval:
                evaluate_and_log(self.num_timesteps)
                self.next_eval += a.eval_frequency
            return True

    log = Log()
    try:
        model.learn(total_timesteps=a.total_timesteps, callback=log)
    except KeyboardInterrupt:
        return 130
    if model.num_timesteps not in evaluations:  # a final evaluation, unless one just ran
        evaluate_and_log(model.num_timesteps)
    if a.save_model:
        model.save(run_dir / "model.zip")
    writer.close()
    eval_env.close()
    final = evaluations[model.num_timesteps]
    print(f"SB3 {a.algo.upper()} {a.env_id}: finished {model.num_timesteps:,} steps, final eval return {final:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
