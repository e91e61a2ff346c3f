"""The speed paths compute what the eager reference computes: --compile (here, on the CPU) and --cudagraphs
(only where CUDA exists), step by step on fixed batches (tests/test_schedule.py trains a compiled run end to end)."""

import contextlib
import dataclasses
import math

import pytest
import torch
import torch._inductor.config

from tests.helpers import twin_critics

OBS_DIM, BATCH, STEPS = 5, 64, 5
ACT_DIM = 2


def train_steps(module, device: str, **speed_flags) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """STEPS updates (critic, actor, and for SAC the temperature), called as main() calls them, on batches laid
    out as the replay buffer's (column views of one row tensor) and random draws fixed by seeds. Returns each
    step's metrics and the final parameters."""
    args = module.Args(cuda=device == "cuda", **speed_flags)
    torch.manual_seed(0)
    actor = module.Actor(OBS_DIM, ACT_DIM).to(device)
    qf = twin_critics(module, OBS_DIM, ACT_DIM).to(device)
    actor_target, qf_target = module.copy.deepcopy(actor), module.copy.deepcopy(qf)
    adam = {"lr": 1e-3, "fused": True, "capturable": args.cudagraphs}
    actor_optimizer = torch.optim.Adam(actor.parameters(), **adam)
    q_optimizer = torch.optim.Adam(qf.parameters(), **adam)
    log_alpha = torch.zeros(1, device=device, requires_grad=True)
    alpha_optimizer = torch.optim.Adam([log_alpha], **adam)
    names = ["update_critic", "update_actor"] + (["update_alpha"] if module.ALGORITHM == "sac" else [])
    critic_step, actor_step, *alpha_step = module.speed_up(args, *names)

    history, initial_actor = [], module.copy.deepcopy(actor.state_dict())
    widths = [OBS_DIM, ACT_DIM, 1, OBS_DIM, 1]
    for step in range(STEPS):
        g = torch.Generator().manual_seed(100 + step)
        obs, actions = torch.randn(BATCH, OBS_DIM, generator=g), 2 * torch.rand(BATCH, ACT_DIM, generator=g) - 1
        reward_next_obs, done = torch.randn(BATCH, 1 + OBS_DIM, generator=g), torch.rand(BATCH, 1, generator=g) < 0.1
        rows = torch.cat([obs, actions, reward_next_obs, done], dim=1)
        batch = module.Batch(*rows.to(device).split(widths, dim=1))
        torch.manual_seed(step)  # the same target-policy noise / policy samples in every mode
        if module.ALGORITHM == "td3":
            metrics = critic_step(batch, actor_target, qf, qf_target, q_optimizer, args)
            metrics = metrics | actor_step(batch, actor, qf, actor_optimizer)
        else:
            alpha = log_alpha.exp().detach()
            metrics = critic_step(batch, actor, qf, qf_target, q_optimizer, alpha, args)
            actor_metrics, log_prob = actor_step(batch, actor, qf, actor_optimizer, alpha)
            metrics = metrics | actor_metrics | alpha_step[0](log_alpha, alpha_optimizer, log_prob, -2.0)
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


def test_training_flushes_subnormals_to_zero(algo, train):
    torch.set_flush_denormal(False)  # earlier tests' training runs left it on
    subnormal = torch.tensor([1e-39])  # below float32's smallest normal number, 1.2e-38
    try:
        assert (subnormal * 1.0).item() > 0
        train(algo, total_timesteps=1, learning_starts=0)
        assert (subnormal * 1.0).item() == 0, "subnormal arithmetic is many times slower on x86"
    finally:
        torch.set_flush_denormal(False)


class FakeCudaGraphs:
    """Stand-ins for torch.cuda's streams and graphs, so that CudaGraphed's logic runs on the CPU: a capture runs
    the function once (a real one only records its kernels) and a replay does nothing. Every compilation of a
    speed_up function is logged with the CudaGraphed call it happened in and whether a capture was running."""

    def __init__(self, module, monkeypatch):
        self.compiles, self.captures, self.capturing, self.call = [], 0, False, None
        fake = self

        class Stream:
            def wait_stream(self, other):
                pass

        class Graph:
            def replay(self):
                pass

        @contextlib.contextmanager
        def graph(_):
            fake.capturing, fake.captures = True, fake.captures + 1
            try:
                yield
            finally:
                fake.capturing = False

        def counting_compile(fn):
            def backend(graph_module, example_inputs):
                fake.compiles.append((fn.__name__, fake.call, fake.capturing))
                return graph_module.forward

            return real_compile(fn, backend=backend)

        def tracked_call(graphed, *args):
            fake.call = graphed.calls + 1
            return real_call(graphed, *args)

        real_compile, real_call, real_validate = torch.compile, module.CudaGraphed.__call__, module.validate_args
        monkeypatch.setattr(torch, "compile", counting_compile)
        monkeypatch.setattr(module.CudaGraphed, "__call__", tracked_call)
        monkeypatch.setattr(module, "validate_args", lambda a: real_validate(dataclasses.replace(a, cudagraphs=False)))
        for name, value in [("Stream", Stream), ("CUDAGraph", Graph), ("graph", graph)]:
            monkeypatch.setattr(torch.cuda, name, value)
        monkeypatch.setattr(torch.cuda, "current_stream", Stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda _: contextlib.nullcontext())


def test_compiled_graphed_updates_compile_once_on_the_replay_buffers_batches(algo, train, monkeypatch):
    """Through main(), whose batches are strided column views of the replay buffer's rows: each update (and the
    acting policy) is compiled during its first warm-up call only, never again in later warm-ups, and never
    while its graph is being captured (a compilation there would autotune kernels mid-capture on a GPU)."""
    fake = FakeCudaGraphs(algo, monkeypatch)
    train(algo, compile=True, cudagraphs=True, total_timesteps=340)  # 40 updates: warm-up, capture, replays
    functions = {"explore", "update_critic", "update_actor"} | ({"update_alpha"} if algo.ALGORITHM == "sac" else set())
    assert {name for name, _, _ in fake.compiles} == functions
    assert fake.captures == len(functions)
    assert [c for c in fake.compiles if c[1] != 1 or c[2]] == [], "recompiled after the first call"


def test_a_failed_capture_is_never_replayed(algo, monkeypatch):
    fake = FakeCudaGraphs(algo, monkeypatch)
    seen = []

    def fn(x):
        seen.append(x)
        if len(seen) == algo.CudaGraphed.WARMUP + 1:
            raise RuntimeError("operation not permitted when stream is capturing")
        return x * 2

    graphed = algo.CudaGraphed(fn)
    for i in range(algo.CudaGraphed.WARMUP):
        graphed(torch.full((2,), float(i)))
    with pytest.raises(RuntimeError, match="capturing"):
        graphed(torch.ones(2))
    assert graphed.graph is None, "a broken capture must not be kept"
    graphed(torch.ones(2))
    assert graphed.graph is not None and fake.captures == 2
    assert all(x is seen[0] for x in seen), "warm-up and capture run on the same static tensor"


def test_graphed_calls_copy_data_and_pass_parameters_as_they_are(algo, monkeypatch):
    """A batch column (a strided view) is copied into a contiguous static tensor; a tensor that requires grad,
    like SAC's log α, is a parameter: the graph must update it, not a copy of it."""
    FakeCudaGraphs(algo, monkeypatch)
    seen = []
    graphed = algo.CudaGraphed(lambda parameter, data: seen.append((parameter, data)) or data)
    parameter, column = torch.zeros(2, requires_grad=True), torch.arange(8.0).reshape(4, 2)[:, 0]
    for _ in range(algo.CudaGraphed.WARMUP + 1):
        graphed(parameter, column)
    assert all(p is parameter for p, _ in seen)
    assert all(d is seen[0][1] and d is not column and d.is_contiguous() for _, d in seen)
    torch.testing.assert_close(seen[0][1], column)
