"""TD3: Twin Delayed Deep Deterministic policy gradient, in one readable file.

Paper: Fujimoto, van Hoof & Meger (2018), "Addressing Function Approximation Error in Actor-Critic Methods",
https://arxiv.org/abs/1802.09477 (Algorithm 1).

Run: python td3_continuous.py --env-id Hopper-v5 (all flags: --help)

Part I: the algorithm and its loop, `train`. II: running an experiment; III: speed; IV: checks (no maths in II-IV).

Shapes: B batch, N parallel envs, O observation dim, A action dim. Rewards, termination flags and Q-values are
[B, 1].

Notation (the blog's, after Spinning Up's pseudocode): the actor μ_θ(s), the critics Q_φ1 and Q_φ2, their
target copies μ_θ' and Q_φ'1, Q_φ'2, and the smoothed target action ã' = clip(μ_θ'(s') + clip(σ ε, -c, c)).
The pseudocode's Polyak ρ is 1 - τ here.

Deliberate departures from the paper (marked `# NOTE:` in the code):
- 256-256 networks, learning rate 3e-4 and 25k random warm-up steps, as in the authors' updated code
  (github.com/sfujim/TD3); the paper used 400-300 units and 1e-3.
- One action space, a in [-1, 1]^A, as the paper assumes, for the actor, both noises, the replay buffer and the
  critics: only `to_env_actions` maps onto the env's Box, so each noise std is a fraction of a half-range. The
  authors' code feeds the critics env units, where a dimension in [200, 260] enters as a large constant.
- With --num-envs N, each vector step (N transitions) is followed by one gradient step.
- Evaluation episodes of an env without a time limit are cut off after 1,000 steps.
"""

import copy
import math
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch import nn
from torch.utils._pytree import tree_map
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "td3"
LOG_EVERY = 100  # gradient updates between metric logs


# ======================== Part I: the algorithm and its loop
@dataclass
class Args:
    """Train TD3 (arXiv 1802.09477) on a Gymnasium env with a Box action space, or evaluate a checkpoint."""

    # Algorithm
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions"""
    batch_size: int = 256
    """minibatch size of every gradient step"""
    # NOTE: 3e-4 and a 25k-step random warm-up, as in the authors' updated code (the paper: 1e-3 and 1k or 10k)
    learning_rate: float = 3e-4
    """Adam learning rate of actor and critics"""
    gamma: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
    """soft target update rate τ: θ' ← τ θ + (1 - τ) θ'"""
    learning_starts: int = 25_000
    """environment steps with uniformly random actions before the first gradient step"""
    exploration_noise: float = 0.1
    """std of the Gaussian exploration noise, as a fraction of each action dimension's half-range"""
    policy_noise: float = 0.2
    """target policy smoothing noise std σ, as a fraction of each dimension's half-range"""
    noise_clip: float = 0.5
    """target policy smoothing noise clip c, as a fraction of each dimension's half-range"""
    policy_frequency: int = 2
    """policy delay d: actor and target networks are updated every d critic updates"""

    # Experiment
    exp_name: str = "td3_continuous"
    """name of the experiment, part of the run name runs/<env>__<exp_name>__<seed>__<time>"""
    env_id: str = "Hopper-v5"
    """anything `gymnasium.make` accepts, including `my_module:MyEnv-v0` for your own env"""
    seed: int = 1
    """seed for Python, NumPy, PyTorch and the environments"""
    total_timesteps: int = 1_000_000
    """environment steps in total, summed over all envs"""
    num_envs: int = 1
    """parallel environments; each vector step (num_envs transitions) gets one gradient step"""
    torch_deterministic: bool = True
    """deterministic kernels only (`torch.use_deterministic_algorithms`; on GPUs also CUBLAS_WORKSPACE_CONFIG)"""
    cuda: bool = True
    """train on the GPU when one is available"""
    eval_frequency: int = 10_000
    """evaluate the deterministic policy every this many environment steps"""
    eval_episodes: int = 10
    """episodes per evaluation, on a separate env seeded with seed + 10_000"""
    capture_video: bool = False
    """record the first episode of every evaluation to videos/<run_name>/ (headless MuJoCo: MUJOCO_GL=egl)"""
    save_model: bool = False
    """write the weights to runs/<run_name>/<exp_name>.pt (what --checkpoint reads) at each evaluation and the end"""
    run_name: str | None = None
    """folder under runs/ (and videos/) for this run; default <env>__<exp_name>__<seed>__<unix time>"""
    checkpoint: str | None = None
    """evaluate (and with --capture-video record) the weights of this --save-model file instead of training"""
    resume: str | None = None
    """continue the run in this folder from its training_state.pt (see --checkpoint-frequency), with its flags"""
    checkpoint_frequency: int = 100_000
    """write runs/<run_name>/training_state.pt, all --resume reads, every this many steps and on stop (0: never)"""
    track: bool = False
    """sync TensorBoard logs, hyperparameters and --capture-video videos to Weights & Biases (`pip install wandb`)"""
    wandb_project_name: str = "td3-sac"
    """Weights & Biases project of --track runs"""
    wandb_entity: str | None = None
    """Weights & Biases team or user that owns --track runs; None: your W&B default entity"""

    # Speed
    host_buffer: bool = False
    """keep the replay buffer in host memory (for large observations) instead of on the training device"""
    compile: bool = False
    """torch.compile the updates and the acting policy (pays off on a GPU; on our 2-core CPU it is slower)"""
    cudagraphs: bool = False
    """capture every update and the acting policy as CUDA graphs and replay them (GPU only; best with --compile)"""
    torch_threads: int | None = None
    """PyTorch's CPU threads; default: as many as the cores other processes leave free (`FreeCoreThreads`)"""


# ------------------------ environments
def make_vector_env(args: Args) -> gym.vector.SyncVectorEnv:
    """N envs (`make_env`, Part IV, is `gym.make` with one-line errors), autoresetting as the loop's comment says."""
    return gym.vector.SyncVectorEnv(
        [lambda: make_env(args.env_id)] * args.num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )


def to_env_actions(actions: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """Normalized actions in [-1, 1]^A mapped per dimension onto the env's Box (clipped: bias + scale a may round
    past the bounds in the Box's dtype)."""
    # NOTE: the env's units appear only here; actor, critics and replay buffer use the normalized action
    scale, bias = (space.high - space.low) / 2, (space.high + space.low) / 2
    return np.clip((bias + scale * actions).astype(space.dtype), space.low, space.high)


# ------------------------ replay buffer
class Batch(NamedTuple):
    obs: torch.Tensor  # [B, O]
    actions: torch.Tensor  # [B, A]
    rewards: torch.Tensor  # [B, 1]
    next_obs: torch.Tensor  # [B, O]  the true next observation, also after a time-limit truncation
    terminations: torch.Tensor  # [B, 1]  1.0 only if the episode really ended (not on truncation)


class ReplayBuffer:
    """Ring buffer, sampled uniformly: a transition is one row [obs | action | reward | next_obs | terminated] of one
    preallocated float32 tensor [capacity, 2O+A+2] (PERF: one copy per add of N transitions, one gather per sample)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device, storage: torch.device):
        self.capacity, self.device, self.storage = capacity, device, storage
        self.pos, self.size = 0, 0
        self.widths = [obs_dim, act_dim, 1, obs_dim, 1]  # in Batch._fields order
        self.rows = torch.zeros(capacity, sum(self.widths), dtype=torch.float32, device=storage)
        self.data = dict(zip(Batch._fields, self.rows.split(self.widths, dim=1), strict=True))  # columns by name

    def add(self, obs, actions, rewards, next_obs, terminations) -> None:
        """Store N transitions given as arrays [N, O], [N, A], [N], [N, O], [N]."""
        n = len(obs)
        columns = (obs, actions, rewards, next_obs, terminations)
        rows = np.concatenate([np.asarray(c, dtype=np.float32).reshape(n, -1) for c in columns], axis=1)
        idx = torch.arange(self.pos, self.pos + n, device=self.storage) % self.capacity
        self.rows[idx] = torch.as_tensor(rows, device=self.storage)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        idx = torch.randint(self.size, (batch_size,), device=self.storage)
        rows = self.rows[idx].to(self.device, non_blocking=True)
        return Batch(*rows.split(self.widths, dim=1))

    def state_dict(self) -> dict:
        """For --resume: a host copy of the filled rows only, and the next write position."""
        return {"rows": self.rows[: self.size].to("cpu", copy=True), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.pos = len(state["rows"]), state["pos"]
        self.rows[: self.size] = state["rows"].to(self.storage)


# ------------------------ networks
# NOTE: 256-256 hidden units in both networks, as in the authors' updated code (the paper: 400-300)
class QNetwork(nn.Module):
    """One critic Q(s, a): obs [B, O] and normalized action [B, A] in [-1, 1]^A -> [B, 1]. The twin critics
    Q1, Q2 are two of these, initialised independently, in an nn.ModuleList (`qf[0]`, `qf[1]`)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim + act_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Q(s, a) [B, 1]. With frozen=True the weights act as constants: gradients still reach obs and actions,
        but no weight gradients are computed."""
        x = torch.cat([obs, actions], dim=-1)  # [B, O + A]
        if frozen:  # PERF: the actor step needs dQ/da only; detached weights skip dQ/dθ, a third of the matmuls
            return torch.func.functional_call(self.net, {k: w.detach() for k, w in self.net.named_parameters()}, x)
        return self.net(x)


class Actor(nn.Module):
    """Deterministic policy μ(s): obs [B, O] -> normalized action [B, A] in [-1, 1]^A."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, act_dim)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))  # [B, A]


# ------------------------ losses and updates
def explore(actor: Actor, obs: torch.Tensor, args: Args) -> torch.Tensor:
    """Behaviour action: μ(s) + N(0, exploration_noise²), clipped to [-1, 1]^A, [N, A]: what the env gets and the
    replay buffer stores (the noise std is a fraction of each dimension's half-range)."""
    action = actor(obs)
    return (action + torch.randn_like(action) * args.exploration_noise).clamp(-1.0, 1.0)


def target_actions(actor_target: Actor, next_obs: torch.Tensor, args: Args) -> torch.Tensor:
    """Target policy smoothing (paper Sec. 5.3): ã' = clip(μ'(s') + clip(N(0, σ²), -c, c), -1, 1), [B, A]; σ and
    c are fractions of each dimension's half-range."""
    action = actor_target(next_obs)  # [B, A]
    noise = (torch.randn_like(action) * args.policy_noise).clamp(-args.noise_clip, args.noise_clip)
    return (action + noise).clamp(-1.0, 1.0)


def critic_loss(
    batch: Batch, actor_target: Actor, qf: nn.ModuleList, qf_target: nn.ModuleList, args: Args
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped double-Q TD loss (paper Sec. 4.2). The TD target is built without gradients
    (torch.no_grad): only the online critics qf receive gradients from this loss."""
    with torch.no_grad():
        next_actions = target_actions(actor_target, batch.next_obs, args)  # [B, A]
        next_q1, next_q2 = (q(batch.next_obs, next_actions) for q in qf_target)  # [B, 1] each
        min_next_q = torch.min(next_q1, next_q2)  # the smaller estimate counters overestimation
        # Bootstrap unless the episode truly terminated: a time-limit truncation keeps its future value
        td_target = batch.rewards + args.gamma * (1 - batch.terminations) * min_next_q  # [B, 1]
    q1, q2 = (q(batch.obs, batch.actions) for q in qf)  # [B, 1] each
    qf1_loss, qf2_loss = F.mse_loss(q1, td_target), F.mse_loss(q2, td_target)
    metrics = {"qf1_values": q1.mean(), "qf2_values": q2.mean(), "qf1_loss": qf1_loss, "qf2_loss": qf2_loss}
    return qf1_loss + qf2_loss, metrics


def actor_loss(batch: Batch, actor: Actor, qf: nn.ModuleList) -> torch.Tensor:
    """Deterministic policy gradient: maximise Q1(s, μ(s)) (paper Algorithm 1: Q1 only). Gradients flow through
    the critic into the actor; the critic stays unchanged, as actor_optimizer holds only the actor (frozen=True
    merely skips the critic's unneeded weight gradients)."""
    return -qf[0](batch.obs, actor(batch.obs), frozen=True).mean()


def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def update_critic(batch, actor_target, qf, qf_target, q_optimizer, args) -> dict[str, torch.Tensor]:
    loss, metrics = critic_loss(batch, actor_target, qf, qf_target, args)
    optimize(q_optimizer, loss)
    return {k: v.detach() for k, v in (metrics | {"qf_loss": loss}).items()}


def update_actor(batch, actor, qf, actor_optimizer) -> dict[str, torch.Tensor]:
    loss = actor_loss(batch, actor, qf)
    optimize(actor_optimizer, loss)
    return {"actor_loss": loss.detach()}


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """θ' ← τ θ + (1 - τ) θ', which is θ'.lerp_(θ, τ) for every parameter."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)  # PERF: one fused op


# ------------------------ the training loop
def train(args: Args, device: torch.device, stop: "StopSignals", resumed: dict | None) -> dict:
    """TD3 with a replay buffer (paper Algorithm 1), after `main` (Part II) checked the flags and seeded.
    `Run` (Part II) keeps the counters (run.global_step, run.updates), logs, evaluations and checkpoints; on
    --resume it also restores the learner's weights, optimizers, replay buffer and random states."""
    envs = make_vector_env(args)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    actor = Actor(obs_dim, act_dim).to(device)
    qf = nn.ModuleList([QNetwork(obs_dim, act_dim), QNetwork(obs_dim, act_dim)]).to(device)  # Q1, Q2
    actor_target, qf_target = copy.deepcopy(actor), copy.deepcopy(qf)
    # PERF: fused Adam, one kernel per step (capturable: the step count stays on the GPU, for CUDA graphs)
    adam = {"lr": args.learning_rate, "fused": True, "capturable": args.cudagraphs}
    actor_optimizer = torch.optim.Adam(actor.parameters(), **adam)
    q_optimizer = torch.optim.Adam(qf.parameters(), **adam)
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device, torch.device("cpu") if args.host_buffer else device)
    random_actions = gym.spaces.Box(-1.0, 1.0, (args.num_envs, act_dim), seed=args.seed)  # for the warm-up

    # Part II: logs, evaluation and checkpoints; `learner` is what --resume saves and restores
    learner = {"actor": actor, "qf": qf, "actor_target": actor_target, "qf_target": qf_target,
               "actor_optimizer": actor_optimizer, "q_optimizer": q_optimizer, "replay_buffer": rb}  # fmt: skip
    run = Run(args, device, stop, envs, learner, random_actions, actor, resumed)
    # PERF (Part III): --compile and --cudagraphs rebind these names to compiled or graphed versions of the functions
    explore, update_critic, update_actor = speed_up(args, "explore", "update_critic", "update_actor")

    obs, _ = envs.reset(seed=args.seed + run.global_step)
    metrics, actor_metrics = {}, {}  # name -> tensor, read only when logged
    with run:  # Part II: a crash keeps the logs so far and closes the envs
        while run.global_step < args.total_timesteps and stop.signal is None:
            # Act: uniformly random during warm-up, then the actor plus exploration noise
            if run.global_step < args.learning_starts:
                actions = random_actions.sample()  # [N, A], uniform on [-1, 1]^A, so uniform on the Box
            else:
                with torch.no_grad():
                    obs_tensor = torch.as_tensor(obs, dtype=torch.float32, device=device)
                    actions = explore(actor, obs_tensor, args).cpu().numpy()  # [N, A]; the one host sync per step
                check_actions(actions, metrics | actor_metrics, run.global_step)  # Part IV: a diverged actor
            next_obs, rewards, terminations, truncations, infos = envs.step(to_env_actions(actions, envs.action_space))
            run.global_step += args.num_envs

            # Store the real transition: with SAME_STEP autoreset an env that just finished returns its reset
            # observation in next_obs; the true last one is in infos["final_obs"], where the mask "_final_obs" is set
            real_next_obs = next_obs.copy()  # [N, O]
            for i in np.flatnonzero(infos.get("_final_obs", [])):
                real_next_obs[i] = infos["final_obs"][i]
            rb.add(obs, actions, rewards, real_next_obs, terminations)
            obs = next_obs

            # Learn (paper Algorithm 1): a critic step every vector step; actor and targets every d steps.
            # NOTE: one gradient step per vector step, so with --num-envs N one per N transitions
            if run.global_step >= args.learning_starts:
                batch = rb.sample(args.batch_size)
                metrics = update_critic(batch, actor_target, qf, qf_target, q_optimizer, args)
                run.updates += 1
                if run.updates % args.policy_frequency == 0:
                    actor_metrics = update_actor(batch, actor, qf, actor_optimizer)
                    soft_update(qf_target, qf, args.tau)
                    soft_update(actor_target, actor, args.tau)
                if run.updates % LOG_EVERY == 0:  # losses leave the device only here (and for a NaN action)
                    run.log_losses(metrics | actor_metrics)
            run.after_step(rewards, terminations | truncations)  # Part II: logs, evaluation, checkpoints
    return run.finish()


# ======================== Part II: running an experiment
# Envs cannot be saved: a resumed run restarts them, the running episodes cut off (none stored as terminal).
EVAL_SEED_OFFSET = 10_000  # the evaluation env is seeded with seed + EVAL_SEED_OFFSET
EVAL_MAX_EPISODE_STEPS = 1_000  # an evaluation episode of an env without a time limit is cut off here
TRAINING_STATE, TRAINING_STATE_FORMAT = "training_state.pt", 2  # 2: two plain critics
MAY_CHANGE_ON_RESUME = {"resume", "total_timesteps", "torch_threads"}
COUNTERS = ("global_step", "updates", "next_eval", "last_eval")


def main(args: Args) -> dict:
    """Train (or, with --checkpoint, evaluate). Ctrl-C and SIGTERM end the run cleanly at the end of a step."""
    with StopSignals() as stop:  # from the start: an interrupt during setup ends cleanly too
        resumed, args = load_training_state(args) if args.resume else (None, args)  # checks come before any write
        validate_args(args)
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        # PERF: subnormal floats (|x| < 1.2e-38), like Adam's moments of dead ReLU units, are slow on x86: flush them
        torch.set_flush_denormal(True)
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
        if args.torch_deterministic and device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS is deterministic only with this
        torch.use_deterministic_algorithms(args.torch_deterministic)
        if args.capture_video and not os.environ.get("DISPLAY"):
            os.environ.setdefault("MUJOCO_GL", "egl")  # headless default; must be set before MuJoCo is imported
        return evaluate_checkpoint(args, device) if args.checkpoint else train(args, device, stop, resumed)


class Run:
    """Counters, logs, evaluation and checkpoints; a second Ctrl-C ends the loop mid-step, without a training state."""

    def __init__(self, args, device, stop, envs, learner: dict, random_actions, policy, resumed: dict | None):
        self.args, self.device, self.stop, self.envs, self.policy = args, device, stop, envs, policy
        self.learner, self.random_actions, self.hard_stop = learner, random_actions, False
        self.spaces = spaces_of(envs.single_observation_space, envs.single_action_space)
        if resumed and resumed["spaces"] != self.spaces:
            envs.close()
            raise StopRun(f"--resume: {args.env_id} no longer has the observation and action spaces of the run")
        default_name = f"{args.env_id.replace(':', '-').replace('/', '-')}__{args.exp_name}__{args.seed}"
        self.name = resumed["run_name"] if resumed else args.run_name or f"{default_name}__{int(time.time())}"
        self.video_folder = f"videos/{self.name}" if args.capture_video else None
        self.eval_env = make_eval_env(args.env_id, args.eval_episodes, self.video_folder)
        if args.track:
            start_tracking(args, self.name)
        # On --resume the logs continue in the same folder; whatever was logged after the saved step is dropped
        loop = resumed["loop"] if resumed else dict(zip(COUNTERS, (0, 0, args.eval_frequency, 0), strict=True))
        self.writer = SummaryWriter(f"runs/{self.name}", purge_step=loop["global_step"] + 1 if resumed else None)
        if resumed:
            for name, x in learner.items():
                saved = resumed["learner"][name]
                x.detach().copy_(saved) if isinstance(x, torch.Tensor) else x.load_state_dict(saved)
            set_random_states(resumed["random"], random_actions)
        else:
            table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        self.global_step, self.updates, self.next_eval, self.last_eval = (loop[k] for k in COUNTERS)
        self.recent_returns = deque(loop.get("recent_returns", []), maxlen=10)
        self.eval_returns: list[float] = loop.get("eval_returns", [])
        self.episode_returns, self.episode_lengths = np.zeros(args.num_envs), np.zeros(args.num_envs, dtype=int)
        self.checkpoint_path = Path(f"runs/{self.name}/{args.exp_name}.pt")
        self.state_path = Path(f"runs/{self.name}/{TRAINING_STATE}")
        self.window_start, self.window_step = time.perf_counter(), self.global_step  # for steps/s
        self.threads = FreeCoreThreads.start(args, device)  # Part III: the default --torch-threads on the CPU
        self.interactive, self.last_print = sys.stdout.isatty(), -math.inf  # for the progress line

    def log_losses(self, metrics: dict[str, torch.Tensor]) -> None:
        values = {k: v.item() for k, v in metrics.items()}
        for name, value in values.items():
            self.writer.add_scalar(f"losses/{name}", value, self.global_step)
        sps = (self.global_step - self.window_step) / (time.perf_counter() - self.window_start)
        self.writer.add_scalar("charts/SPS", sps, self.global_step)
        self.window_start, self.window_step = time.perf_counter(), self.global_step
        if self.threads:
            self.writer.add_scalar("charts/torch_threads", self.threads.update(), self.global_step)
        stop_if_non_finite(values, self.global_step)
        # The progress line: rewritten in place on a terminal, a new line every 30 s in a log file
        if self.interactive or time.monotonic() - self.last_print >= 30:
            self.last_print, left = time.monotonic(), self.args.total_timesteps - self.global_step
            line = f"step {self.global_step:>9,}/{self.args.total_timesteps:,}  {sps:6.0f} steps/s  "
            line += f"ETA {time.strftime('%H:%M:%S', time.gmtime(left / max(sps, 1e-9)))}"
            line += f"  return(last 10) {np.mean(self.recent_returns):9.1f}" if self.recent_returns else ""
            line += f"  eval {self.eval_returns[-1]:9.1f}" if self.eval_returns else ""
            print(line, end="\r" if self.interactive else "\n", flush=True)

    def after_step(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        """Episode returns; evaluation, checkpoint and training state when due (steps/s counts training only)."""
        pause_start = time.perf_counter()
        self.episode_returns += rewards
        self.episode_lengths += 1
        for i in np.flatnonzero(dones):
            self.writer.add_scalar("charts/episodic_return", self.episode_returns[i], self.global_step)
            self.writer.add_scalar("charts/episodic_length", self.episode_lengths[i], self.global_step)
            self.recent_returns.append(self.episode_returns[i])
            self.episode_returns[i], self.episode_lengths[i] = 0.0, 0
        if self.global_step >= self.next_eval:
            self.evaluate_and_log()
            self.save_checkpoint()
            self.next_eval, self.last_eval = self.next_eval + self.args.eval_frequency, self.global_step
        if self.args.checkpoint_frequency and self.global_step % self.args.checkpoint_frequency < self.args.num_envs:
            self.save_state()
        self.window_start += time.perf_counter() - pause_start
        if self.updates == 0:  # steps/s measures training, not the faster random warm-up
            self.window_start, self.window_step = time.perf_counter(), self.global_step

    def evaluate_and_log(self) -> None:
        seed = self.args.seed + EVAL_SEED_OFFSET
        returns = evaluate(self.policy, self.eval_env, self.args.eval_episodes, seed, self.device)
        self.eval_returns.append(float(np.mean(returns)))
        self.writer.add_scalar("eval/episodic_return", self.eval_returns[-1], self.global_step)
        self.writer.add_scalar("eval/episodic_return_std", float(np.std(returns)), self.global_step)

    def save_checkpoint(self) -> None:
        """--save-model: the weights of the networks (and learned tensors), the flags and the env's spaces."""
        if self.args.save_model:
            weights = {name: x.state_dict() if isinstance(x, nn.Module) else x.detach()
                       for name, x in self.learner.items() if isinstance(x, nn.Module | torch.Tensor)}  # fmt: skip
            run = {"algorithm": ALGORITHM, "args": asdict(self.args), "global_step": self.global_step}
            save_atomically(run | {"spaces": self.spaces} | weights, self.checkpoint_path)

    def save_state(self) -> None:
        loop = {k: getattr(self, k) for k in COUNTERS} | {"eval_returns": self.eval_returns}
        loop["recent_returns"] = [float(r) for r in self.recent_returns]
        state = {"args": asdict(self.args) | {"resume": None}, "run_name": self.name, "spaces": self.spaces}
        state |= {"loop": loop, "random": random_states(self.random_actions)}
        save_training_state(self.state_path, state, self.learner)

    def close(self, failed: bool) -> None:
        self.envs.close()
        self.eval_env.close()  # writes the last evaluation video
        self.writer.close()
        if self.threads:  # Part III: PyTorch's own thread count again, for whatever this process runs next
            torch.set_num_threads(self.threads.most)
        if self.args.track:
            import wandb  # noqa: PLC0415

            # Not wandb's monitor_gym hook, which breaks RecordVideo.close; rl-video-episode-<n>.mp4 sorted by n
            videos = Path(self.video_folder).glob("*.mp4") if self.video_folder else []
            for i, path in enumerate(sorted(videos, key=lambda path: int(path.stem.rpartition("-")[2])), start=1):
                wandb.log({"videos/eval": wandb.Video(str(path), caption=f"evaluation {i}")})
            wandb.finish(exit_code=1 if failed else 0)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, error, trace) -> bool:
        self.hard_stop = isinstance(error, KeyboardInterrupt)
        if error is not None and not self.hard_stop:  # a diverged run (StopRun) or a bug: keep the logs so far
            self.close(failed=True)
        return self.hard_stop

    def finish(self) -> dict:
        interrupted = self.hard_stop or self.stop.signal is not None
        if self.interactive:
            print()
        if not interrupted and self.last_eval < self.global_step:
            self.evaluate_and_log()
        self.save_checkpoint()
        if not self.hard_stop and self.args.checkpoint_frequency:
            self.save_state()
        self.close(failed=False)
        final = f"final eval return {self.eval_returns[-1]:.1f}" if self.eval_returns else "no evaluation yet"
        status = f"interrupted at step {self.global_step:,}" if interrupted else f"finished {self.global_step:,} steps"
        saved = f"; checkpoint {self.checkpoint_path}" if self.args.save_model else ""
        saved += f"; resume with --resume runs/{self.name}" if interrupted and self.state_path.exists() else ""
        print(f"{ALGORITHM} {self.args.env_id}: {status}, {final}; logs runs/{self.name}{saved}")
        return {"run_name": self.name, "global_step": self.global_step, "eval_returns": self.eval_returns,
                "interrupted": interrupted, "signal": self.stop.signal} | self.learner  # fmt: skip


# ------------------------ evaluation and checkpoints
def make_eval_env(env_id: str, episodes: int, video_folder: str | None) -> gym.Env:
    env = make_env(env_id, render_mode="rgb_array" if video_folder else None)
    if env.spec is None or env.spec.max_episode_steps is None:  # NOTE: else an evaluation might never end
        env = gym.wrappers.TimeLimit(env, max_episode_steps=EVAL_MAX_EPISODE_STEPS)
    if video_folder is None:
        return env
    return gym.wrappers.RecordVideo(env, video_folder, episode_trigger=lambda ep: ep % episodes == 0)


@torch.no_grad()
def evaluate(policy, env: gym.Env, episodes: int, seed: int, device: torch.device) -> list[float]:
    """Returns of the deterministic policy; only the first reset is seeded: every evaluation starts the same way."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        terminated, truncated, episode_return = False, False, 0.0
        while not (terminated or truncated):
            action = policy(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0]
            obs, reward, terminated, truncated, _ = env.step(to_env_actions(action.cpu().numpy(), env.action_space))
            episode_return += float(reward)
        returns.append(episode_return)
    return returns


def spaces_of(observation_space: gym.spaces.Box, action_space: gym.spaces.Box) -> dict:
    """What checkpoints record of the env, to check the env they are used with."""
    return {"obs_dim": observation_space.shape[0], "action_low": action_space.low.tolist(),
            "action_high": action_space.high.tolist()}  # fmt: skip


def save_atomically(data: dict, path: Path) -> None:
    """torch.save to a temporary file, then a rename: a crash never leaves a half-written file at path."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def load_actor(path: str, device: torch.device) -> tuple[Actor, dict]:
    """The actor of a --save-model checkpoint, ready to act (eval mode), and the checkpoint."""
    if not Path(path).is_file():
        raise StopRun(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    if checkpoint.get("algorithm") != ALGORITHM:
        raise StopRun(f"{path} is a {checkpoint.get('algorithm')!r} checkpoint; load it with its own script")
    actor = Actor(checkpoint["spaces"]["obs_dim"], len(checkpoint["spaces"]["action_low"]))
    # Older checkpoints also hold the Box as buffers, the map that to_env_actions now makes: dropped
    old_buffers = ("action_low", "action_high", "action_scale", "action_bias")
    actor.load_state_dict({k: v for k, v in checkpoint["actor"].items() if k not in old_buffers})
    return actor.to(device).eval(), checkpoint


def evaluate_checkpoint(args: Args, device: torch.device) -> dict:
    actor, checkpoint = load_actor(args.checkpoint, device)
    env_id = checkpoint["args"]["env_id"]
    # videos/<the checkpoint's path, folders joined by "-">-eval: two checkpoints never share a folder
    name = "-".join(part for part in Path(os.path.relpath(args.checkpoint)).with_suffix("").parts if part != "..")
    video_folder = f"videos/{name}-eval" if args.capture_video else None
    env = make_eval_env(env_id, args.eval_episodes, video_folder)
    if spaces_of(env.observation_space, env.action_space) != checkpoint["spaces"]:
        raise StopRun(f"{env_id} no longer has the observation and action spaces the checkpoint was trained on")
    returns = evaluate(actor, env, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, device)
    env.close()
    print(f"{env_id} ({args.checkpoint}, step {checkpoint['global_step']}): eval return {np.mean(returns):.1f} ± "
          f"{np.std(returns):.1f} over {len(returns)} episode{'s' * (len(returns) != 1)}")  # fmt: skip
    return {"eval_returns": returns}


# ------------------------ resuming: the whole training state
def random_states(warm_up: gym.spaces.Box) -> dict:
    """Every random-number generator the loop draws from: Python, NumPy, PyTorch (CPU and CUDA), the warm-up's."""
    numpy = np.random.get_state(legacy=False)
    numpy["state"]["key"] = torch.from_numpy(numpy["state"]["key"].astype(np.int64))  # a tensor: weights_only loads it
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state(), "cuda": cuda,
            "warm_up": warm_up.np_random.bit_generator.state}  # fmt: skip


def set_random_states(states: dict, warm_up: gym.spaces.Box) -> None:
    states["numpy"]["state"]["key"] = states["numpy"]["state"]["key"].numpy().astype(np.uint32)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    warm_up.np_random.bit_generator.state = states["warm_up"]


def save_training_state(path: Path, state: dict, learner: dict) -> None:
    saved = {name: x.detach().cpu() if isinstance(x, torch.Tensor) else x.state_dict() for name, x in learner.items()}
    save_atomically(state | {"format": TRAINING_STATE_FORMAT, "algorithm": ALGORITHM, "learner": saved}, path)


def load_training_state(args: Args) -> tuple[dict, Args]:
    """The state of --resume (a run folder or its file) and the run's flags; all checks happen before any write."""
    path = Path(args.resume) / TRAINING_STATE if Path(args.resume).is_dir() else Path(args.resume)
    if not path.is_file():
        raise StopRun(f"--resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise StopRun(f"--resume: cannot read {path} ({type(err).__name__}): truncated or not a checkpoint") from None
    if not isinstance(state, dict) or "learner" not in state or "format" not in state:
        raise StopRun(f"--resume: {path} is not a training state (a --save-model checkpoint holds weights only)")
    if state["format"] != TRAINING_STATE_FORMAT or state["algorithm"] != ALGORITHM:
        raise StopRun(f"--resume: {path} is a {state['algorithm']!r} training state of format {state['format']}; "
                      f"this script reads {ALGORITHM!r} format {TRAINING_STATE_FORMAT}")  # fmt: skip
    defaults, saved = asdict(Args()), state["args"]
    for name, value in asdict(args).items():
        if name not in MAY_CHANGE_ON_RESUME and value != defaults[name] and value != saved[name]:
            flag = "--" + name.replace("_", "-")
            raise StopRun(f"--resume: {flag} {value} differs from the run's {saved[name]}; only --total-timesteps "
                          "and --torch-threads may change")  # fmt: skip
    total = args.total_timesteps if args.total_timesteps != defaults["total_timesteps"] else saved["total_timesteps"]
    if total < state["loop"]["global_step"]:
        raise StopRun(f"--resume: --total-timesteps {total} is below the {state['loop']['global_step']} steps done")
    threads = args.torch_threads or saved["torch_threads"]  # the run's own unless given
    return state, Args(**(saved | {"resume": args.resume, "total_timesteps": total, "torch_threads": threads}))


# ------------------------ Weights & Biases (--track)
def start_tracking(args: Args, run_name: str) -> None:
    try:  # imported here only: training without --track must not need wandb
        import wandb  # noqa: PLC0415
    except ImportError:
        raise StopRun("--track needs Weights & Biases: pip install wandb") from None
    # Synced as written (else wandb waits 10 s); patched anew, as an earlier run in this process left its own root
    wandb.tensorboard.unpatch()
    wandb.tensorboard.patch(root_logdir=f"runs/{run_name}")
    run = {"project": args.wandb_project_name, "entity": args.wandb_entity, "name": run_name, "config": vars(args)}
    try:
        wandb.init(**run, sync_tensorboard=True, save_code=True)
    except wandb.Error as err:  # e.g. not logged in
        raise StopRun(f"--track cannot start a W&B run: {err} (WANDB_MODE=offline logs locally)") from None


# ------------------------ signals
class StopSignals:
    """Ctrl-C or SIGTERM (`kill`, preemption) ends the loop after its step, saved; a second raises KeyboardInterrupt."""

    def __enter__(self):
        self.signal, self.previous = None, {}
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.record)
        return self

    def record(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


# ======================== Part III: speed
class CudaGraphed:
    """fn(*args) as one CUDA graph. Data tensors (not log α, which requires grad) are copied into static ones; the
    first WARMUP calls run fn eagerly (real updates that compile fn and make the optimizer state) on a side stream,
    the next captures, later ones replay. Other arguments must stay the same objects; outputs are overwritten."""

    WARMUP = 3

    def __init__(self, fn):
        self.fn, self.calls, self.graph, self.static = fn, 0, None, None

    def __call__(self, *args):
        def is_data(x) -> bool:
            return isinstance(x, torch.Tensor) and not x.requires_grad

        if self.static is None:  # contiguous copies: a Batch's columns are strided views of the buffer's rows
            self.static = tree_map(lambda x: x.clone() if is_data(x) else x, args)
        tree_map(lambda static, x: static.copy_(x) if is_data(x) else None, self.static, args)
        self.calls += 1
        if self.calls <= self.WARMUP:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                outputs = self.fn(*self.static)
            torch.cuda.current_stream().wait_stream(stream)
            return outputs
        if self.graph is None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records the kernels without running them
                self.outputs = self.fn(*self.static)
            self.graph = graph  # only a capture that succeeded is ever replayed
        self.graph.replay()
        return self.outputs


def speed_up(args: Args, *names: str) -> list:
    """The named functions compiled (--compile) and/or as CUDA graphs (--cudagraphs); same results (test_speed.py)."""
    functions = [globals()[name] for name in names]
    functions = [torch.compile(fn) for fn in functions] if args.compile else functions
    return [CudaGraphed(fn) for fn in functions] if args.cudagraphs else functions


class FreeCoreThreads:
    """PyTorch's threads follow the cores other processes leave free (/proc/stat, read whenever losses are logged).
    Its default, a spinning thread per core, made two runs 5-8x slower each; some CPUs round by thread count."""

    @staticmethod
    def start(args: Args, device: torch.device) -> "FreeCoreThreads | None":
        """None where it does not apply: a GPU run, --torch-threads or OMP_NUM_THREADS given, not Linux."""
        chosen = args.torch_threads or "OMP_NUM_THREADS" in os.environ or device.type != "cpu"
        return None if chosen or not os.path.exists("/proc/stat") else FreeCoreThreads()

    def __init__(self):
        self.cpus, self.most = {f"cpu{i}" for i in os.sched_getaffinity(0)}, torch.get_num_threads()
        self.last = self.busy()
        torch.set_num_threads(1)  # until the first measurement: runs started together must not spin-wait

    def busy(self) -> tuple[float, float, float]:
        """Now: wall time, this process's CPU time, and the busy time of the cores it may use (seconds)."""
        with open("/proc/stat") as stat:  # per core: user nice system idle iowait irq softirq steal ... (ticks)
            rows = [row for row in map(str.split, stat) if row[0] in self.cpus]
        ticks = sum(int(t) for row in rows for t in row[1:4] + row[6:9])
        return time.perf_counter(), time.process_time(), ticks / os.sysconf("SC_CLK_TCK")

    def update(self) -> int:
        now = self.busy()
        wall, own, busy = (b - a for a, b in zip(self.last, now, strict=True))
        self.last = now
        others = max(0.0, busy - own) / max(wall, 1e-9)  # cores the other processes kept busy
        threads = max(1, min(self.most, round(len(self.cpus) - others)))
        torch.set_num_threads(threads)
        return threads


# ======================== Part IV: checks
class StopRun(Exception):
    """A user-facing problem: the run stops with this one-line message instead of a traceback."""


def validate_args(args: Args) -> None:
    checks = [
        (args.total_timesteps > 0, f"--total-timesteps must be positive (got {args.total_timesteps})"),
        (args.num_envs > 0, f"--num-envs must be positive (got {args.num_envs})"),
        (args.total_timesteps >= args.num_envs, "--total-timesteps must be at least --num-envs"),
        (args.batch_size > 0, f"--batch-size must be positive (got {args.batch_size})"),
        (args.buffer_size >= args.num_envs, "--buffer-size must be positive and at least --num-envs"),
        (args.batch_size <= args.buffer_size, "--batch-size must not exceed --buffer-size"),
        (0 <= args.learning_starts < args.total_timesteps, "--learning-starts must be in [0, --total-timesteps) so "
         f"that training happens (got {args.learning_starts} with --total-timesteps {args.total_timesteps})"),
        (0 < args.gamma <= 1, f"--gamma (γ) must be in (0, 1] (got {args.gamma})"),
        (0 < args.tau <= 1, f"--tau (τ) must be in (0, 1] (got {args.tau})"),
        (args.learning_rate > 0, f"--learning-rate must be positive (got {args.learning_rate})"),
        (args.exploration_noise >= 0, "--exploration-noise must not be negative"),
        (args.policy_noise >= 0, "--policy-noise (σ) must not be negative"),
        (args.noise_clip >= 0, "--noise-clip (c) must not be negative"),
        (args.policy_frequency >= 1, "--policy-frequency (d) must be at least 1"),
        (args.eval_frequency > 0 and args.eval_episodes > 0, "--eval-frequency and --eval-episodes must be positive"),
        (args.torch_threads is None or args.torch_threads >= 1, "--torch-threads must be at least 1"),
        (args.checkpoint_frequency >= 0, "--checkpoint-frequency must not be negative"),
        (not args.cudagraphs or (args.cuda and torch.cuda.is_available()),
         "--cudagraphs needs a CUDA GPU (and no --no-cuda); use --compile alone on the CPU"),
        (args.run_name is None or (args.run_name.strip("/") and ".." not in Path(args.run_name).parts),
         f"--run-name must be a relative folder name without '..' (got {args.run_name!r})"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise StopRun(message)


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """`gym.make` with one-line errors; with a render_mode it renders once, so a missing renderer fails up front."""
    try:
        # render_mode is passed only when needed: a user's env need not accept the keyword
        env = gym.make(env_id, **({"render_mode": render_mode} if render_mode else {}))
        if render_mode:  # Gymnasium 1.x films MuJoCo with a free camera (-1) left behind; "track" follows the agent
            if (renderer := getattr(env.unwrapped, "mujoco_renderer", None)) and renderer.camera_id == -1:
                cameras = [renderer.model.camera(i).name for i in range(renderer.model.ncam)]
                renderer.camera_id = cameras.index("track") if "track" in cameras else -1
            env.reset(seed=0)
            env.render()
    except Exception as err:
        # A rendering error: raised in OpenGL or MuJoCo's GL backends (loaded on import: any env can fail there)
        tb = traceback.extract_tb(err.__traceback__)
        frames = [Path(frame.filename) for frame in tb]
        in_gl = any({"OpenGL", "egl", "osmesa", "glfw"} & set(f.parts) or f.name == "gl_context.py" for f in frames)
        if in_gl or "MUJOCO_GL" in str(err):
            gl = os.environ.get("MUJOCO_GL", "unset")
            raise StopRun(f"cannot make env {env_id!r} with MUJOCO_GL={gl} ({type(err).__name__}: {err}); headless "
                          "MuJoCo renders with MUJOCO_GL=egl (libEGL, e.g. Debian's libegl1) or osmesa "
                          "(libOSMesa)") from None  # fmt: skip
        if isinstance(err, gym.error.Error | ImportError):
            raise StopRun(f"cannot make env {env_id!r}: {err}") from None
        _, installed, file = tb[-1].filename.rpartition("-packages/")  # in site- or dist-packages: not the user's
        if installed and isinstance(err, AssertionError | AttributeError):  # most often a release for another MuJoCo
            where = f"{type(err).__name__} in {file}:{tb[-1].lineno} ({str(err) or tb[-1].line})"
            raise StopRun(f"cannot make env {env_id!r}: {where}; likely a release made for another MuJoCo or "
                          "Gymnasium (docs/environments.md)") from None  # fmt: skip
        raise  # a bug in the env itself: keep its traceback
    act_space = env.action_space
    if not isinstance(act_space, gym.spaces.Box):
        raise StopRun(f"{env_id} has a {type(act_space).__name__} action space; TD3 needs a continuous Box")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        raise StopRun(f"{env_id} has an unbounded action space; wrap it in gymnasium.wrappers.RescaleAction")
    return flat_observations(env, env_id)


FLATTENED: set[str] = set()  # the env ids whose flattening was said


def flat_observations(env: gym.Env, env_id: str) -> gym.Env:
    """Observations as one vector: a Dict or Tuple of 1-d Boxes and scalars (nested or not) is flattened, said once."""
    space = env.observation_space
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return env
    if not isinstance(space, gym.spaces.Dict | gym.spaces.Tuple) or not vectors_only(space):
        raise StopRun(f"{env_id} has {space} observations; the networks take one vector (a 1-d Box, or a Dict or "
                      "Tuple of them): register a wrapped env (README: Your own environment)")  # fmt: skip
    if env_id not in FLATTENED:
        FLATTENED.add(env_id)
        parts = ", ".join(space.keys()) if isinstance(space, gym.spaces.Dict) else f"{len(space)} parts"
        print(f"{env_id}: {type(space).__name__} observations ({parts}) flattened into a Box of "
              f"{gym.spaces.flatdim(space)} (gymnasium.wrappers.FlattenObservation)")  # fmt: skip
    return gym.wrappers.FlattenObservation(env)


def vectors_only(space: gym.Space) -> bool:
    """A Box of at most one dimension, or a Dict or Tuple of only such Boxes (nested or not)."""
    if isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
        return all(map(vectors_only, space.values() if isinstance(space, gym.spaces.Dict) else space))
    return isinstance(space, gym.spaces.Box) and len(space.shape) <= 1


def check_actions(actions: np.ndarray, metrics: dict[str, torch.Tensor], global_step: int) -> None:
    """A diverged actor gives non-finite actions: stop, naming the losses that went first."""
    if not np.isfinite(actions).all():
        stop_if_non_finite({k: v.item() for k, v in metrics.items()} | {"actions": math.nan}, global_step)


def stop_if_non_finite(values: dict[str, float], global_step: int) -> None:
    if bad := [name for name, value in values.items() if not math.isfinite(value)]:
        raise StopRun(f"non-finite {', '.join(bad)} at step {global_step}: training diverged; lower the learning "
                      "rates or check the env's observations and rewards for NaN/inf")  # fmt: skip


if __name__ == "__main__":
    try:
        result = main(tyro.cli(Args))
    except StopRun as err:
        # A renderer that failed to start may fail again when Python frees it; its message would follow ours
        sys.unraisablehook = lambda unraisable: None
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:  # a second Ctrl-C while the run was saving
        sys.exit(130)
    # 128 + the signal (130 Ctrl-C, 143 SIGTERM), as shells report it: an interrupted run is not a finished one
    sys.exit(128 + result["signal"] if result.get("signal") else 130 if result.get("interrupted") else 0)
