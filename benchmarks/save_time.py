"""Size and duration of sac_continuous's training-state save (--resume) for Hopper-v5's shapes, at 100k and 1M
stored transitions, written into a temporary folder of the current directory.

    python benchmarks/save_time.py
"""

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sac_continuous as sac

torch.manual_seed(0)
obs_dim, act_dim = 11, 3
actor, qf = sac.Actor(obs_dim, act_dim), sac.nn.ModuleList([sac.QNetwork(obs_dim, act_dim) for _ in range(2)])
qf_target = copy.deepcopy(qf)
adam = {"lr": 3e-4, "fused": True}
actor_opt, q_opt = torch.optim.Adam(actor.parameters(), **adam), torch.optim.Adam(qf.parameters(), **adam)
log_alpha = torch.zeros(1, requires_grad=True)
alpha_opt = torch.optim.Adam([log_alpha], **adam)
rb = sac.ReplayBuffer(1_000_000, obs_dim, act_dim, torch.device("cpu"), torch.device("cpu"))
rb.rows.normal_()
args = sac.Args(env_id="Hopper-v5")
rb.size = 1000
batch = rb.sample(256)
rb.size = 1000
sac.update_critic(batch, actor, qf, qf_target, q_opt, torch.ones(1), args)
_, log_prob = sac.update_actor(batch, actor, qf, actor_opt, torch.ones(1))
sac.update_alpha(log_alpha, alpha_opt, log_prob, -3.0)
learner = {
    "actor": actor,
    "qf": qf,
    "qf_target": qf_target,
    "actor_optimizer": actor_opt,
    "q_optimizer": q_opt,
    "log_alpha": log_alpha,
    "replay_buffer": rb,
    "alpha_optimizer": alpha_opt,
}
warm_up = sac.gym.spaces.Box(-1.0, 1.0, (1, act_dim), seed=1)
folder = Path(tempfile.mkdtemp(dir="."))
for size in (100_000, 1_000_000):
    rb.size, rb.pos = size, size % rb.capacity
    state = {
        "args": sac.asdict(args),
        "run_name": "x",
        "spaces": {},
        "loop": {"global_step": size},
        "random": sac.random_states(warm_up),
    }
    times = []
    for _ in range(3):
        start = time.perf_counter()
        sac.save_training_state(folder / "training_state.pt", state, learner)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    torch.load(folder / "training_state.pt", weights_only=True)
    load = time.perf_counter() - start
    mb = (folder / "training_state.pt").stat().st_size / 1e6
    print(
        f"{size:>9,} transitions: {mb:6.1f} MB, save {min(times):.2f}-{max(times):.2f} s (3 saves), load {load:.2f} s"
    )
(folder / "training_state.pt").unlink()
folder.rmdir()
