"""TD3: Twin Delayed Deep Deterministic policy gradient, in one readable file.

Paper: Fujimoto, van Hoof & Meger (2018), "Addressing Function Approximation Error in
Actor-Critic Methods", https://arxiv.org/abs/1802.09477 (Algorithm 1).

Run:   python td3_continuous.py --env-id Hopper-v5
Help:  python td3_continuous.py --help

Shapes: B batch, N parallel envs, O observation dim, A action dim. Rewards, termination
flags and Q-values are [B, 1]; the twin critic returns both critics at once as [2, B, 1].

Notation (the blog's, after Spinning Up's pseudocode): the actor μ_θ(s), the critics Q_φ1 and Q_φ2, their
target copies μ_θ' and Q_φ'1, Q_φ'2, and the smoothed target action ã' = clip(μ_θ'(s') + clip(σ ε, -c, c)).

Interrupting and resuming: Ctrl-C or SIGTERM ends the current step, saves the whole training state and stops;
--resume continues the run from it. Envs cannot be saved: a resumed run restarts them from a fresh reset, and
the episodes that were running are cut off (their transitions are stored, none of them as terminal).

Deliberate departures from the paper (marked `# NOTE:` in the code):
- 256-256 networks, learning rate 3e-4 and 25k random warm-up steps, as in the authors'
  updated reference code (github.com/sfujim/TD3); the paper used 400-300 units and 1e-3.
- Everything works in the normalized action space [-1, 1]^A, as the paper assumes: the actor's tanh
  output, both noises, the replay buffer and the critics' input. Only `to_env_actions` maps an action
  per dimension onto the env's Box (bias + scale * a) for env.step, so each noise scale is a fraction of
  that dimension's half-range. The authors' code gives the critics max_action * tanh(·), in the env's
  units: an action dimension in [200, 260] would enter their first layer as a large constant.
- With --num-envs N, each vector step (N transitions) is followed by one gradient step.
- Evaluation episodes of an env without a time limit are cut off after 1,000 steps.
"""

import copy
import itertools
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
EVAL_SEED_OFFSET = 10_000  # the evaluation env is seeded with seed + EVAL_SEED_OFFSET
EVAL_MAX_EPISODE_STEPS = 1_000  # an evaluation episode of an env without a time limit is cut off here
RENDERING_HELP = (
    "headless MuJoCo renders with MUJOCO_GL=egl (needs libEGL, e.g. Debian's libegl1) or MUJOCO_GL=osmesa "
    "(needs libOSMesa); videos also need moviepy (in requirements.txt)"
)
LOG_EVERY = 100  # gradient updates between metric logs (the only time losses are read)


@dataclass
class Args:
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
    """save a checkpoint to runs/<run_name>/<exp_name>.pt at every evaluation, at the end and on Ctrl-C"""
    run_name: str | None = None
    """folder under runs/ (and videos/) for this run; default <env>__<exp_name>__<seed>__<unix time>"""
    checkpoint: str | None = None
    """evaluate this saved checkpoint (uses --eval-episodes, --seed, --capture-video) instead of training"""
    resume: str | None = None
    """continue the run in this folder under runs/ (or this training-state file), with its own flags"""
    checkpoint_frequency: int = 100_000
    """save everything --resume needs every this many env steps, on Ctrl-C/SIGTERM and at the end (0: never)"""
    track: bool = False
    """sync TensorBoard logs, hyperparameters and --capture-video videos to Weights & Biases (`pip install wandb`)"""
    wandb_project_name: str = "td3-sac"
    """Weights & Biases project of --track runs"""
    wandb_entity: str | None = None
    """Weights & Biases team or user that owns --track runs; None: your W&B default entity"""

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

    # Speed
    host_buffer: bool = False
    """keep the replay buffer in host memory (for large observations) instead of on the training device"""
    compile: bool = False
    """torch.compile the updates and the acting policy (pays off on a GPU; on our 2-core CPU it is slower)"""
    cudagraphs: bool = False
    """capture every update and the acting policy as CUDA graphs and replay them (GPU only; best with --compile)"""
    torch_threads: int | None = None
    """PyTorch's CPU threads (default: PyTorch's, one per core); 1 when several runs share the cores"""


class StopRun(Exception):
    """A user-facing problem: the run stops with this one-line message instead of a traceback."""


def validate_args(args: Args) -> None:
    """Reject nonsense flags before any training work starts."""
    checks = [
        (args.total_timesteps > 0, f"--total-timesteps must be positive (got {args.total_timesteps})"),
        (args.num_envs > 0, f"--num-envs must be positive (got {args.num_envs})"),
        (args.total_timesteps >= args.num_envs, "--total-timesteps must be at least --num-envs"),
        (args.batch_size > 0, f"--batch-size must be positive (got {args.batch_size})"),
        (args.buffer_size >= args.num_envs, "--buffer-size must be positive and at least --num-envs"),
        (args.batch_size <= args.buffer_size, "--batch-size must not exceed --buffer-size"),
        (
            0 <= args.learning_starts < args.total_timesteps,
            f"--learning-starts must be in [0, --total-timesteps) so that training happens "
            f"(got {args.learning_starts} with --total-timesteps {args.total_timesteps})",
        ),
        (0 < args.gamma <= 1, f"--gamma (γ) must be in (0, 1] (got {args.gamma})"),
        (0 < args.tau <= 1, f"--tau (τ) must be in (0, 1] (got {args.tau})"),
        (args.learning_rate > 0, f"--learning-rate must be positive (got {args.learning_rate})"),
        (args.exploration_noise >= 0, "--exploration-noise must not be negative"),
        (args.policy_noise >= 0, "--policy-noise (σ) must not be negative"),
        (args.noise_clip >= 0, "--noise-clip (c) must not be negative"),
        (args.policy_frequency >= 1, "--policy-frequency (d) must be at least 1"),
        (args.eval_frequency > 0, "--eval-frequency must be positive"),
        (args.eval_episodes > 0, "--eval-episodes must be positive"),
        (args.torch_threads is None or args.torch_threads >= 1, "--torch-threads must be at least 1"),
        (args.checkpoint_frequency >= 0, "--checkpoint-frequency must not be negative"),
        (
            not args.cudagraphs or (args.cuda and torch.cuda.is_available()),
            "--cudagraphs needs a CUDA GPU (and no --no-cuda); use --compile alone on the CPU",
        ),
        (
            args.run_name is None or (args.run_name.strip("/") and ".." not in Path(args.run_name).parts),
            f"--run-name must be a relative folder name without '..' (got {args.run_name!r})",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise StopRun(message)


# ----------------------------------------------------------------------------- environments
def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """`gym.make` with a one-line error for unknown ids and spaces this script cannot handle."""
    try:
        # render_mode is passed only when needed: a user's env need not accept the keyword
        env = gym.make(env_id, **({"render_mode": render_mode} if render_mode else {}))
    except Exception as err:
        if is_rendering_error(err):
            gl = os.environ.get("MUJOCO_GL", "unset")
            raise StopRun(
                f"cannot make env {env_id!r} with MUJOCO_GL={gl} ({type(err).__name__}: {err}); {RENDERING_HELP}"
            ) from None
        if isinstance(err, gym.error.Error | ImportError):
            raise StopRun(f"cannot make env {env_id!r}: {err}") from None
        raise  # a bug in the env itself: keep its traceback
    act_space, obs_space = env.action_space, env.observation_space
    if not isinstance(act_space, gym.spaces.Box):
        raise StopRun(f"{env_id} has a {type(act_space).__name__} action space; TD3 needs a continuous Box")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        raise StopRun(f"{env_id} has an unbounded action space; wrap it in gymnasium.wrappers.RescaleAction")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise StopRun(f"{env_id} observations are not a flat Box; wrap it in gymnasium.wrappers.FlattenObservation")
    return env


def is_rendering_error(err: BaseException) -> bool:
    """Whether err came from OpenGL or MuJoCo's GL backends (egl, osmesa, glfw), not from the env itself.
    MuJoCo loads the backend MUJOCO_GL names when it is imported, so even an env made without rendering
    fails there when the backend's library is missing."""
    gl_modules = {"OpenGL", "egl", "osmesa", "glfw"}
    frames = [Path(frame.f_code.co_filename) for frame, _ in traceback.walk_tb(err.__traceback__)]
    return "MUJOCO_GL" in str(err) or any(gl_modules & set(f.parts) or f.name == "gl_context.py" for f in frames)


def make_vector_env(args: Args) -> gym.vector.SyncVectorEnv:
    # SAME_STEP autoreset: when an episode ends, step() already returns the next episode's first
    # observation and keeps the true last one in infos["final_obs"], so every step is a real transition.
    return gym.vector.SyncVectorEnv(
        [lambda: make_env(args.env_id)] * args.num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )


def follow_the_agent(env: gym.Env) -> None:
    """Videos of a MuJoCo env are filmed by its model's camera named "track", which follows the agent, if it has
    one. NOTE: Gymnasium 1.x films them with a free camera that stays where the agent started: HalfCheetah, Hopper,
    Walker2d and Ant walk out of the picture within seconds."""
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if renderer is None or renderer.camera_id != -1:  # not MuJoCo, or a camera chosen already (-1: the free one)
        return
    cameras = [renderer.model.camera(i).name for i in range(renderer.model.ncam)]
    if "track" in cameras:
        renderer.camera_id = cameras.index("track")


def make_eval_env(env_id: str, episodes: int, video_folder: str | None) -> gym.Env:
    """A separate env for deterministic evaluation; records each evaluation's first episode if asked. Its
    episodes end at the env's time limit, or after EVAL_MAX_EPISODE_STEPS if it has none."""
    env = make_env(env_id, render_mode="rgb_array" if video_folder else None)
    if env.spec is None or env.spec.max_episode_steps is None:  # NOTE: else an evaluation might never end
        env = gym.wrappers.TimeLimit(env, max_episode_steps=EVAL_MAX_EPISODE_STEPS)
    if video_folder is None:
        return env
    follow_the_agent(env)
    try:  # render once now, so a missing renderer fails before training rather than at the first evaluation
        env.reset(seed=0)
        env.render()
        return gym.wrappers.RecordVideo(env, video_folder, episode_trigger=lambda ep: ep % episodes == 0)
    except Exception as err:
        if not is_rendering_error(err):
            raise
        raise StopRun(
            f"--capture-video cannot render {env_id} ({type(err).__name__}: {err}); {RENDERING_HELP}"
        ) from None


def stop_if_non_finite(values: dict[str, float], global_step: int) -> None:
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        raise StopRun(
            f"non-finite {', '.join(bad)} at step {global_step}: training diverged; "
            "lower the learning rates or check the env's observations and rewards for NaN/inf"
        )


def to_env_actions(actions: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """Normalized actions in [-1, 1]^A mapped per dimension onto the env's Box: bias + scale * a, with
    scale = (high - low) / 2 and bias = (high + low) / 2. The only place that knows the env's units; clipping
    in the Box's own dtype guarantees low <= a <= high despite rounding."""
    # NOTE: the env's units appear only here; actor, critics and replay buffer use the normalized action
    scale, bias = (space.high - space.low) / 2, (space.high + space.low) / 2
    return np.clip((bias + scale * actions).astype(space.dtype), space.low, space.high)


# ----------------------------------------------------------------------------- replay buffer
class Batch(NamedTuple):
    obs: torch.Tensor  # [B, O]
    actions: torch.Tensor  # [B, A]
    rewards: torch.Tensor  # [B, 1]
    next_obs: torch.Tensor  # [B, O]  the true next observation, also after a time-limit truncation
    terminations: torch.Tensor  # [B, 1]  1.0 only if the episode really ended (not on truncation)


class ReplayBuffer:
    """Ring buffer of preallocated float32 tensors: O(1) add of N transitions, uniform sampling.

    A transition is one row [obs | action | reward | next_obs | terminated] of a single [capacity, 2O+A+2]
    tensor (PERF: one copy per add and one gather per sample); `data` holds column views of it by name."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device, storage: torch.device):
        self.capacity, self.device, self.storage = capacity, device, storage
        self.pos, self.size = 0, 0
        self.widths = [obs_dim, act_dim, 1, obs_dim, 1]  # in Batch._fields order
        self.rows = torch.zeros(capacity, sum(self.widths), dtype=torch.float32, device=storage)
        self.data = dict(zip(Batch._fields, self.rows.split(self.widths, dim=1), strict=True))

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
        """For --resume: a host copy of the filled rows (always rows[:size]; a view would save the whole
        preallocated tensor) and the next write position."""
        return {"rows": self.rows[: self.size].to("cpu", copy=True), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.pos = len(state["rows"]), state["pos"]
        self.rows[: self.size] = state["rows"].to(self.storage)


# ----------------------------------------------------------------------------- networks
# NOTE: 256-256 hidden units in both networks, as in the authors' updated code (the paper: 400-300)
class TwinQNetwork(nn.Module):
    """Two independent critics Q1, Q2 (obs [B, O], normalized action [B, A] in [-1, 1]^A -> [2, B, 1]).

    Layer weights of both critics are stored side by side ([2, in, out]), so one batched matmul
    per layer evaluates both. This computes exactly what two separate MLPs would.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        sizes = [obs_dim + act_dim, hidden, hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1 / math.sqrt(fan_in)  # the same init as nn.Linear
            self.weights.append(nn.Parameter(torch.empty(2, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(2, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, critics: int = 2, frozen: bool = False) -> torch.Tensor:
        """Q-values of the first `critics` critics: [critics, B, 1]. With frozen=True the weights act as
        constants: gradients still reach obs and actions, but no weight gradients are computed."""
        x = torch.cat([obs, actions], dim=-1).expand(critics, -1, -1)  # [critics, B, O + A]
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            # PERF: the actor step needs dQ/da only; frozen weights skip dQ/dθ, a third of the critics' matmuls there
            w, b = (weight.detach(), bias.detach()) if frozen else (weight, bias)
            x = torch.baddbmm(b[:critics], x, w[:critics])
            if i < len(self.weights) - 1:
                x = F.relu(x)
        return x


class Actor(nn.Module):
    """Deterministic policy μ(s): obs [B, O] -> normalized action [B, A] in [-1, 1]^A (`to_env_actions`
    maps it onto the env's Box)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, act_dim)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))  # [B, A]


# ----------------------------------------------------------------------------- losses and updates
def explore(actor: Actor, obs: torch.Tensor, args: Args) -> torch.Tensor:
    """Behaviour action: μ(s) + N(0, exploration_noise²), clipped to [-1, 1]^A, [N, A]. In normalized units the
    noise std is a fraction of each dimension's half-range; the clipped action is what the env gets and the
    replay buffer stores."""
    action = actor(obs)
    return (action + torch.randn_like(action) * args.exploration_noise).clamp(-1.0, 1.0)


def target_actions(actor_target: Actor, next_obs: torch.Tensor, args: Args) -> torch.Tensor:
    """Target policy smoothing (paper Sec. 5.3): ã' = clip(μ'(s') + clip(N(0, σ²), -c, c), -1, 1), [B, A]. In
    normalized units σ and c are fractions of each dimension's half-range, and the Box is [-1, 1]^A."""
    action = actor_target(next_obs)  # [B, A]
    noise = (torch.randn_like(action) * args.policy_noise).clamp(-args.noise_clip, args.noise_clip)
    return (action + noise).clamp(-1.0, 1.0)


def critic_loss(
    batch: Batch, actor_target: Actor, qf: TwinQNetwork, qf_target: TwinQNetwork, args: Args
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped double-Q TD loss (paper Sec. 4.2). The TD target is built without gradients
    (torch.no_grad): only the online critics qf receive gradients from this loss."""
    with torch.no_grad():
        next_q = qf_target(batch.next_obs, target_actions(actor_target, batch.next_obs, args))  # [2, B, 1]
        min_next_q = next_q.min(dim=0).values  # [B, 1]: the smaller estimate counters overestimation
        # Bootstrap unless the episode truly terminated: a time-limit truncation keeps its future value
        td_target = batch.rewards + args.gamma * (1 - batch.terminations) * min_next_q  # [B, 1]
    q = qf(batch.obs, batch.actions)  # [2, B, 1]
    per_critic = F.mse_loss(q, td_target.expand_as(q), reduction="none").mean(dim=(1, 2))  # [2]
    metrics = {"qf1_values": q[0].mean(), "qf2_values": q[1].mean(), "qf1_loss": per_critic[0]}
    metrics["qf2_loss"] = per_critic[1]
    return per_critic.sum(), metrics


def actor_loss(batch: Batch, actor: Actor, qf: TwinQNetwork) -> torch.Tensor:
    """Deterministic policy gradient: maximise Q1(s, μ(s)) (paper Algorithm 1: Q1 only). Gradients flow
    through the frozen critic into the actor: the critic's weights get no gradient and do not change."""
    return -qf(batch.obs, actor(batch.obs), critics=1, frozen=True).mean()


def update_critic(batch, actor_target, qf, qf_target, q_optimizer, args) -> dict[str, torch.Tensor]:
    loss, metrics = critic_loss(batch, actor_target, qf, qf_target, args)
    q_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    q_optimizer.step()
    metrics["qf_loss"] = loss.detach()
    return {k: v.detach() for k, v in metrics.items()}


def update_actor(batch, actor, qf, actor_optimizer) -> dict[str, torch.Tensor]:
    loss = actor_loss(batch, actor, qf)
    actor_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    actor_optimizer.step()
    return {"actor_loss": loss.detach()}


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """θ' ← τ θ + (1 - τ) θ', which is θ'.lerp_(θ, τ) for every parameter."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)  # PERF: one fused op


# ----------------------------------------------------------------------------- speed: compiled and graphed steps
class CudaGraphed:
    """Calls fn(*args) by replaying one captured CUDA graph: all its kernels, forward, backward and optimizer
    step, are launched at once instead of one by one from Python. The data tensors in args (a Batch counts as
    its five tensors; tensors that require grad, like log α, are parameters) are first copied into static
    tensors made on the first call; the first WARMUP calls run fn eagerly on those, on a side stream (real
    updates; they also compile fn and allocate the optimizer state that the graph then updates in place); the
    next call captures the graph on the same static tensors, so a compiled fn meets the memory layout it was
    compiled for, and every later call copies and replays. Other arguments (networks, optimizers, parameters,
    flags) must be the same objects on every call. The outputs are overwritten on every call."""

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


def speed_up(fn, args: Args):
    """fn compiled (--compile) and/or replayed as a CUDA graph (--cudagraphs). The results are the eager
    reference's; tests/test_speed.py checks it."""
    fn = torch.compile(fn) if args.compile else fn
    return CudaGraphed(fn) if args.cudagraphs else fn


# ----------------------------------------------------------------------------- evaluation and checkpoints
@torch.no_grad()
def evaluate(policy, env: gym.Env, episodes: int, seed: int, device: torch.device) -> list[float]:
    """Returns of `episodes` episodes of the deterministic policy. The first reset is seeded, so every
    evaluation of a run starts from the same initial states."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        done, episode_return = False, 0.0
        while not done:
            action = policy(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0]
            obs, reward, terminated, truncated, _ = env.step(to_env_actions(action.cpu().numpy(), env.action_space))
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    return returns


def save_checkpoint(path: Path, args: Args, global_step: int, spaces: dict, weights: dict):
    """Weights, args and the env's spaces, written atomically: a temporary file, then a rename."""
    checkpoint = {"algorithm": ALGORITHM, "args": asdict(args), "global_step": global_step, "spaces": spaces}
    checkpoint.update(weights)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def load_actor(path: str, device: torch.device) -> tuple[Actor, dict]:
    """The actor of a checkpoint written by save_checkpoint, ready to act (eval mode)."""
    if not Path(path).is_file():
        raise StopRun(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    if checkpoint.get("algorithm") != ALGORITHM:
        raise StopRun(f"{path} is a {checkpoint.get('algorithm')!r} checkpoint; load it with its own script")
    spaces = checkpoint["spaces"]
    actor = Actor(spaces["obs_dim"], len(spaces["action_low"]))
    # Checkpoints from before the actor worked in [-1, 1]^A also hold the Box as buffers: the same map as
    # to_env_actions, whose bounds are in "spaces" (and checked against the env), so they are dropped
    old_buffers = ("action_low", "action_high", "action_scale", "action_bias")
    actor.load_state_dict({k: v for k, v in checkpoint["actor"].items() if k not in old_buffers})
    return actor.to(device).eval(), checkpoint


def evaluate_checkpoint(args: Args, device: torch.device) -> dict:
    actor, checkpoint = load_actor(args.checkpoint, device)
    env_id = checkpoint["args"]["env_id"]
    video_folder = f"videos/{Path(args.checkpoint).parent.name}-eval" if args.capture_video else None
    env = make_eval_env(env_id, args.eval_episodes, video_folder)
    spaces = checkpoint["spaces"]
    same_bounds = np.allclose(env.action_space.low, spaces["action_low"]) and np.allclose(
        env.action_space.high, spaces["action_high"]
    )
    if env.observation_space.shape != (spaces["obs_dim"],) or not same_bounds:
        raise StopRun(f"{env_id} no longer has the observation and action spaces the checkpoint was trained on")
    returns = evaluate(actor, env, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, device)
    env.close()
    print(
        f"{env_id} ({args.checkpoint}, step {checkpoint['global_step']}): "
        f"eval return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes"
    )
    return {"eval_returns": returns}


# ----------------------------------------------------------------------------- resuming: the whole training state
TRAINING_STATE, TRAINING_STATE_FORMAT = "training_state.pt", 1
MAY_CHANGE_ON_RESUME = {"resume", "total_timesteps", "torch_threads"}


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
    """Everything --resume needs, written atomically: `state` (flags, counters, random states) and the state of
    every network, optimizer, tensor and the replay buffer in `learner`, in host memory."""
    saved = {name: x.detach().cpu() if isinstance(x, torch.Tensor) else x.state_dict() for name, x in learner.items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state | {"format": TRAINING_STATE_FORMAT, "algorithm": ALGORITHM, "learner": saved}, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def load_learner(learner: dict, saved: dict) -> None:
    for name, x in learner.items():
        x.copy_(saved[name]) if isinstance(x, torch.Tensor) else x.load_state_dict(saved[name])


def load_training_state(args: Args) -> tuple[dict, Args]:
    """The saved state of --resume (a run folder or its training-state file), and the run's own flags with a
    raised --total-timesteps. Every check happens here, before anything is written."""
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
                          "may change")  # fmt: skip
    total = args.total_timesteps if args.total_timesteps != defaults["total_timesteps"] else saved["total_timesteps"]
    if total < state["loop"]["global_step"]:
        raise StopRun(f"--resume: --total-timesteps {total} is below the {state['loop']['global_step']} steps done")
    changed = {name: getattr(args, name) for name in MAY_CHANGE_ON_RESUME} | {"total_timesteps": total}
    return state, Args(**(saved | changed))


# ----------------------------------------------------------------------------- Weights & Biases (--track)
def start_tracking(args: Args, run_name: str) -> None:
    """Start a W&B run that mirrors everything the SummaryWriter logs, with the flags as its config."""
    try:  # imported here only: training without --track must not need wandb
        import wandb  # noqa: PLC0415
    except ImportError:
        raise StopRun("--track needs Weights & Biases: pip install wandb") from None
    # Every SummaryWriter created from now on is mirrored to W&B. Told the logs' root folder, wandb syncs them as
    # they are written; left to infer it, it waits 10 s first (also at the end of a short run). Patched anew on
    # every call: an earlier run in this process (tests, a notebook) leaves its own root patched in
    wandb.tensorboard.unpatch()
    wandb.tensorboard.patch(root_logdir=f"runs/{run_name}")
    try:
        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            name=run_name,
            config=vars(args),
            sync_tensorboard=True,
            save_code=True,
        )
    except wandb.Error as err:  # e.g. not logged in
        raise StopRun(f"--track cannot start a W&B run: {err} (WANDB_MODE=offline logs locally)") from None


def finish_tracking(video_folder: str | None, failed: bool) -> None:
    """Upload the evaluation videos (all written once the eval env is closed) and end the W&B run."""
    import wandb  # noqa: PLC0415

    # wandb.init's monitor_gym hook expects pre-1.0 Gym recorders and breaks Gymnasium's RecordVideo.close,
    # so the videos are logged here instead: rl-video-episode-<n>.mp4, n the first episode of an evaluation
    if video_folder:
        videos = sorted(Path(video_folder).glob("*.mp4"), key=lambda path: int(path.stem.rpartition("-")[2]))
        for evaluation, path in enumerate(videos, start=1):
            wandb.log({"videos/eval": wandb.Video(str(path), caption=f"evaluation {evaluation}")})
    wandb.finish(exit_code=1 if failed else 0)


# ----------------------------------------------------------------------------- training
class StopSignals:
    """While active, Ctrl-C (SIGINT) and SIGTERM (`kill`, a batch system's stop or preemption) only record the
    signal: the loop ends its step, saves everything --resume needs and stops. A second signal raises
    KeyboardInterrupt at once. The previous handlers are restored on exit."""

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


class Progress:
    """The console status line: rewritten in place on a terminal, a new line every 30 s in a log file."""

    def __init__(self, total: int):
        self.total, self.last_print, self.interactive = total, -math.inf, sys.stdout.isatty()

    def __call__(self, global_step: int, sps: float, recent_return: float | None, last_eval: float | None):
        now = time.monotonic()
        if not self.interactive and now - self.last_print < 30:
            return
        self.last_print = now
        eta = time.strftime("%H:%M:%S", time.gmtime((self.total - global_step) / max(sps, 1e-9)))
        line = f"step {global_step:>9,}/{self.total:,}  {sps:6.0f} steps/s  ETA {eta}"
        if recent_return is not None:
            line += f"  return(last 10) {recent_return:9.1f}"
        if last_eval is not None:
            line += f"  eval {last_eval:9.1f}"
        print(line, end="\r" if self.interactive else "\n", flush=True)


def main(args: Args) -> dict:
    """Train (or, with --checkpoint, evaluate). Ctrl-C and SIGTERM end the run cleanly at the end of a step."""
    with StopSignals() as stop:  # from the start: an interrupt during setup ends cleanly too
        return train(args, stop)


def train(args: Args, stop: StopSignals) -> dict:
    resumed, args = load_training_state(args) if args.resume else (None, args)  # checks come before any write
    validate_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    # PERF: flush subnormal floats (|x| < 1.2e-38) to zero on the CPU. Adam's first moment of a dead ReLU unit
    # decays by β1 every step through that range, where x86 arithmetic is many times slower
    torch.set_flush_denormal(True)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    if args.torch_deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS is deterministic only with this
    torch.use_deterministic_algorithms(args.torch_deterministic)
    if args.capture_video and not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless default; must be set before MuJoCo is imported
    if args.checkpoint:
        return evaluate_checkpoint(args, device)

    envs = make_vector_env(args)
    env_name = args.env_id.replace(":", "-").replace("/", "-")
    default_name = f"{env_name}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_name = resumed["run_name"] if resumed else args.run_name or default_name
    video_folder = f"videos/{run_name}" if args.capture_video else None
    eval_env = make_eval_env(args.env_id, args.eval_episodes, video_folder)
    action_space = envs.single_action_space
    obs_dim, act_dim = envs.single_observation_space.shape[0], action_space.shape[0]
    spaces = {"obs_dim": obs_dim, "action_low": action_space.low.tolist(), "action_high": action_space.high.tolist()}
    if resumed and resumed["spaces"] != spaces:
        envs.close()
        eval_env.close()
        raise StopRun(f"--resume: {args.env_id} no longer has the observation and action spaces of the run")

    actor = Actor(obs_dim, act_dim).to(device)
    qf = TwinQNetwork(obs_dim, act_dim).to(device)
    actor_target, qf_target = copy.deepcopy(actor), copy.deepcopy(qf)
    # PERF: fused Adam, one kernel per step (capturable: the step count stays on the GPU, for CUDA graphs)
    adam = {"lr": args.learning_rate, "fused": True, "capturable": args.cudagraphs}
    actor_optimizer = torch.optim.Adam(actor.parameters(), **adam)
    q_optimizer = torch.optim.Adam(qf.parameters(), **adam)
    storage = torch.device("cpu") if args.host_buffer else device
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device, storage)

    if args.track:
        start_tracking(args, run_name)
    # On --resume the logs continue in the same folder; whatever was logged after the saved step is dropped
    writer = SummaryWriter(f"runs/{run_name}", purge_step=resumed["loop"]["global_step"] + 1 if resumed else None)
    if not resumed:
        table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    # What --resume restores: every network, optimizer and learned tensor, and the replay buffer
    learner = {"actor": actor, "qf": qf, "actor_target": actor_target, "qf_target": qf_target,
               "actor_optimizer": actor_optimizer, "q_optimizer": q_optimizer, "replay_buffer": rb}  # fmt: skip
    checkpoint_path, state_path = Path(f"runs/{run_name}/{args.exp_name}.pt"), Path(f"runs/{run_name}/{TRAINING_STATE}")
    eval_returns: list[float] = []

    def checkpoint(global_step: int) -> None:
        if args.save_model:
            nets = {"actor": actor, "qf": qf, "actor_target": actor_target, "qf_target": qf_target}
            weights = {name: net.state_dict() for name, net in nets.items()}
            save_checkpoint(checkpoint_path, args, global_step, spaces, weights)

    def save_state() -> None:  # everything --resume needs, as of the end of the current step
        if args.checkpoint_frequency:
            loop = {"global_step": global_step, "updates": updates, "next_eval": next_eval, "last_eval": last_eval,
                    "recent_returns": [float(r) for r in recent_returns], "eval_returns": eval_returns}  # fmt: skip
            state = {"args": asdict(args) | {"resume": None}, "run_name": run_name, "spaces": spaces, "loop": loop}
            save_training_state(state_path, state | {"random": random_states(random_actions)}, learner)

    def close(failed: bool) -> None:
        envs.close()
        eval_env.close()  # writes the last evaluation video
        writer.close()
        if args.track:
            finish_tracking(video_folder, failed)

    def evaluate_and_log(global_step: int) -> None:
        returns = evaluate(actor, eval_env, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, device)
        eval_returns.append(float(np.mean(returns)))
        writer.add_scalar("eval/episodic_return", eval_returns[-1], global_step)
        writer.add_scalar("eval/episodic_return_std", float(np.std(returns)), global_step)

    # What the loop calls every step; the speed layer may swap in compiled or CUDA-graphed versions
    act, critic_step, actor_step = explore, update_critic, update_actor
    # PERF: the speed layer, --compile and --cudagraphs. Delete these lines and the same maths runs eagerly.
    if args.compile or args.cudagraphs:
        act, critic_step, actor_step = (speed_up(f, args) for f in (act, critic_step, actor_step))

    random_actions = gym.spaces.Box(-1.0, 1.0, (args.num_envs, act_dim), seed=args.seed)  # for the warm-up
    episode_returns, episode_lengths = np.zeros(args.num_envs), np.zeros(args.num_envs, dtype=int)
    recent_returns: deque[float] = deque(maxlen=10)
    global_step, updates, next_eval, last_eval, interrupted, hard_stop = 0, 0, args.eval_frequency, 0, False, False
    if resumed:
        load_learner(learner, resumed["learner"])
        set_random_states(resumed["random"], random_actions)
        counters = ("global_step", "updates", "next_eval", "last_eval")
        global_step, updates, next_eval, last_eval = (resumed["loop"][k] for k in counters)
        recent_returns.extend(resumed["loop"]["recent_returns"])
        eval_returns.extend(resumed["loop"]["eval_returns"])
    # Envs cannot be saved: a resumed run starts them from a fresh reset, the running episodes cut off
    obs, _ = envs.reset(seed=args.seed + global_step)
    metrics: dict[str, torch.Tensor] = {}
    actor_metrics: dict[str, torch.Tensor] = {}
    window_start, window_step, progress = time.perf_counter(), global_step, Progress(args.total_timesteps)
    try:
        while global_step < args.total_timesteps and stop.signal is None:
            # Act: uniformly random during warm-up, then the actor plus exploration noise
            if global_step < args.learning_starts:
                actions = random_actions.sample()  # [N, A], uniform on [-1, 1]^A, so uniform on the Box
            else:
                with torch.no_grad():
                    obs_tensor = torch.as_tensor(obs, dtype=torch.float32, device=device)
                    # [N, A] in [-1, 1]^A; the one host sync per step
                    actions = act(actor, obs_tensor, args).cpu().numpy()
                if not np.isfinite(actions).all():  # a diverged actor: name the losses that went first
                    latest = {k: v.item() for k, v in (metrics | actor_metrics).items()}
                    stop_if_non_finite(latest | {"actions": math.nan}, global_step)
            next_obs, rewards, terminations, truncations, infos = envs.step(to_env_actions(actions, envs.action_space))
            global_step += args.num_envs

            episode_returns += rewards
            episode_lengths += 1
            for i in np.flatnonzero(terminations | truncations):
                writer.add_scalar("charts/episodic_return", episode_returns[i], global_step)
                writer.add_scalar("charts/episodic_length", episode_lengths[i], global_step)
                recent_returns.append(episode_returns[i])
                episode_returns[i], episode_lengths[i] = 0.0, 0

            # Store only real transitions: an env that just finished returns its reset observation in
            # next_obs, so the transition's true next observation comes from infos["final_obs"]
            real_next_obs = next_obs.copy()
            for i in np.flatnonzero(infos.get("_final_obs", [])):
                real_next_obs[i] = infos["final_obs"][i]
            rb.add(obs, actions, rewards, real_next_obs, terminations)
            obs = next_obs

            # Learn (paper Algorithm 1): a critic step every vector step; actor and targets every d steps.
            # NOTE: one gradient step per vector step, so with --num-envs N one per N transitions
            if global_step >= args.learning_starts:
                batch = rb.sample(args.batch_size)
                metrics = critic_step(batch, actor_target, qf, qf_target, q_optimizer, args)
                updates += 1
                if updates == 1:  # steps/s measures training, not the faster random warm-up
                    window_start, window_step = time.perf_counter(), global_step
                if updates % args.policy_frequency == 0:
                    actor_metrics = actor_step(batch, actor, qf, actor_optimizer)
                    soft_update(qf_target, qf, args.tau)
                    soft_update(actor_target, actor, args.tau)

                if updates % LOG_EVERY == 0:  # the only place losses leave the device
                    values = {k: v.item() for k, v in (metrics | actor_metrics).items()}
                    for name, value in values.items():
                        writer.add_scalar(f"losses/{name}", value, global_step)
                    sps = (global_step - window_step) / (time.perf_counter() - window_start)
                    writer.add_scalar("charts/SPS", sps, global_step)
                    window_start, window_step = time.perf_counter(), global_step
                    stop_if_non_finite(values, global_step)
                    recent = float(np.mean(recent_returns)) if recent_returns else None
                    progress(global_step, sps, recent, eval_returns[-1] if eval_returns else None)

            pause_start = time.perf_counter()
            if global_step >= next_eval:
                evaluate_and_log(global_step)
                checkpoint(global_step)
                next_eval, last_eval = next_eval + args.eval_frequency, global_step
            if args.checkpoint_frequency and global_step % args.checkpoint_frequency < args.num_envs:
                save_state()
            window_start += time.perf_counter() - pause_start  # steps/s counts training time only
    except KeyboardInterrupt:  # a second Ctrl-C, or one raised inside an env: mid-step, so no training state
        interrupted = hard_stop = True
    except BaseException:  # a diverged run (StopRun) or a bug: keep the logs so far, release the envs
        close(failed=True)
        raise

    interrupted = interrupted or stop.signal is not None
    if progress.interactive:
        print()
    if not interrupted and last_eval < global_step:  # a final evaluation, unless one just ran
        evaluate_and_log(global_step)
    checkpoint(global_step)
    if not hard_stop:
        save_state()
    close(failed=False)
    final = f"final eval return {eval_returns[-1]:.1f}" if eval_returns else "no evaluation yet"
    status = f"interrupted at step {global_step:,}" if interrupted else f"finished {global_step:,} steps"
    saved = f"; checkpoint {checkpoint_path}" if args.save_model else ""
    saved += f"; resume with --resume runs/{run_name}" if interrupted and state_path.exists() else ""
    print(f"{ALGORITHM} {args.env_id}: {status}, {final}; logs runs/{run_name}{saved}")
    return {"run_name": run_name, "global_step": global_step, "eval_returns": eval_returns, "interrupted": interrupted,
            "signal": stop.signal, "actor": actor, "qf": qf, "replay_buffer": rb}  # fmt: skip


if __name__ == "__main__":
    try:
        result = main(tyro.cli(Args))
    except StopRun as err:
        # NOTE: a renderer that failed to start may fail again when Python frees it; its message would follow ours
        sys.unraisablehook = lambda unraisable: None
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:  # a second Ctrl-C while the run was saving
        sys.exit(130)
    # 128 + the signal (130 Ctrl-C, 143 SIGTERM), as shells report it: an interrupted run is not a finished one
    sys.exit(128 + result["signal"] if result.get("signal") else 130 if result.get("interrupted") else 0)
