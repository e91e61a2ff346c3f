"""The speed paths compute what the eager reference computes: --compile (here, on the CPU) and --cudagraphs
(only where CUDA exists), step by step on fixed batches, and a compiled training run end to end."""

import math

import pytest
import torch
import torch._inductor.config

from tests.helpers import read_scalars

OBS_DIM, BATCH, STEPS = 5, 64, 5
ACT_DIM = 2


def train_steps(module, device: str, **speed_flags) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """STEPS updates (critic, actor, and for SAC the temperature), wired as main() wires them, on batches
    and random draws fixed by seeds. Returns each step's metrics and the final parameters."""
    args = module.Args(cuda=device == "cuda", **speed_flags)
    torch.manual_seed(0)
    actor = module.Actor(OBS_DIM, ACT_DIM).to(device)
    qf = module.TwinQNetwork(OBS_DIM, ACT_DIM).to(device)
    actor_target, qf_target = module.copy.deepcopy(actor), module.copy.deepcopy(qf)
    adam = {"lr": 1e-3, "fused": True, "capturable": args.cudagraphs}
    actor_optimizer = torch.optim.Adam(actor.parameters(), **adam)
    q_optimizer = torch.optim.Adam(qf.parameters(), **adam)
    log_alpha = torch.zeros(1, device=device, requires_grad=True)
    alpha_optimizer = torch.optim.Adam([log_alpha], **adam)
    speed_up = module.speed_up(args)
    if module.ALGORITHM == "td3":
        critic_step = speed_up(
            lambda *b: module.update_critic(module.Batch(*b), actor_target, qf, qf_target, q_optimizer, args)
        )
        actor_step = speed_up(lambda *b: module.update_actor(module.Batch(*b), actor, qf, actor_optimizer))
    else:
        critic_step = speed_up(
            lambda a, *b: module.update_critic(module.Batch(*b), actor, qf, qf_target, q_optimizer, a, args)
        )
        actor_step = speed_up(lambda a, *b: module.update_actor(module.Batch(*b), actor, qf, actor_optimizer, a))
        alpha_step = speed_up(lambda log_prob: module.update_alpha(log_alpha, alpha_optimizer, log_prob, -2.0))

    history, initial_actor = [], module.copy.deepcopy(actor.state_dict())
    for step in range(STEPS):
        g = torch.Generator().manual_seed(100 + step)
        batch = [torch.randn(BATCH, OBS_DIM, generator=g), torch.rand(BATCH, ACT_DIM, generator=g)]
        batch += [torch.randn(BATCH, 1, generator=g), torch.randn(BATCH, OBS_DIM, generator=g)]
        batch = [x.to(device) for x in [*batch, (torch.rand(BATCH, 1, generator=g) < 0.1).float()]]
        torch.manual_seed(step)  # the same target-policy noise / policy samples in every mode
        if module.ALGORITHM == "td3":
            metrics = critic_step(*batch) | actor_step(*batch)
        else:
            alpha = log_alpha.exp().detach()
            metrics = critic_step(alpha, *batch)
            actor_metrics, log_prob = actor_step(alpha, *batch)
            metrics = metrics | actor_metrics | alpha_step(log_prob)
        history.append({k: v.item() for k, v in metrics.items()})
    assert any(not torch.equal(v, initial_actor[k]) for k, v in actor.state_dict().items()), "training moved nothing"
    params = {f"actor.{k}": v for k, v in actor.state_dict().items()} | {
        f"qf.{k}": v for k, v in qf.state_dict().items()
    }
    return history, {k: v.detach().cpu() for k, v in params.items()} | {"log_alpha": log_alpha.detach().cpu()}


def assert_same_training(reference, other):
    (ref_history, ref_params), (history, params) = reference, other
    for ref_metrics, metrics in zip(ref_history, history, strict=True):
        assert metrics.keys() == ref_metrics.keys()
        for name, value in metrics.items():
            assert math.isclose(value, ref_metrics[name], rel_tol=1e-4, abs_tol=1e-5), name
    assert params.keys() == ref_params.keys()
    for name, value in params.items():
        torch.testing.assert_close(value, ref_params[name], rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_steps_match_eager(algo):
    with torch._inductor.config.patch(fallback_random=True):  # compiled code draws eager's random numbers
        eager = train_steps(algo, "cpu")
        compiled = train_steps(algo, "cpu", compile=True)
    assert_same_training(eager, compiled)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("compile_too", [False, True], ids=["graphs", "compiled+graphs"])
def test_cudagraphed_steps_match_eager(algo, compile_too):
    assert STEPS > algo.CudaGraphed.WARMUP + 1, "some steps must be graph replays"
    with torch._inductor.config.patch(fallback_random=True):
        eager = train_steps(algo, "cuda")
        graphed = train_steps(algo, "cuda", cudagraphs=True, compile=compile_too)
    assert_same_training(eager, graphed)


def test_cudagraphs_refused_without_a_gpu(algo, train):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(algo.StopRun, match="--cudagraphs needs a CUDA GPU"):
        train(algo, cudagraphs=True)


def test_compiled_training_run(algo, train, tmp_path):
    result = train(algo, compile=True)
    losses = read_scalars(tmp_path / "runs" / result["run_name"])
    assert result["global_step"] == 600 and not result["interrupted"]
    assert losses["losses/qf_loss"] and all(math.isfinite(v) for _, v in losses["losses/qf_loss"])


def test_training_flushes_subnormals_to_zero(algo, train):
    torch.set_flush_denormal(False)  # earlier tests' training runs left it on
    subnormal = torch.tensor([1e-39])  # below float32's smallest normal number, 1.2e-38
    try:
        assert (subnormal * 1.0).item() > 0
        train(algo, total_timesteps=1, learning_starts=0)
        assert (subnormal * 1.0).item() == 0, "subnormal arithmetic is many times slower on x86"
    finally:
        torch.set_flush_denormal(False)
