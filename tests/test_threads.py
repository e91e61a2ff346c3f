"""The default --torch-threads on the CPU (`FreeCoreThreads`, Part III): PyTorch's threads follow the cores that
other processes leave free. A run's numbers then stay those of its seed only where the thread count changes no
number. That depends on the CPU: MKL's matrix products on the AMD EPYC VMs here round alike with one thread and
two, on CI's VM of 2026-12-07 they did not (the training test below failed there). So the training test first
asks the CPU, with one forward and backward pass of the real networks, and runs where the answer is yes."""

import platform

import pytest
import torch

from tests.helpers import read_scalars


def all_tensors(checkpoint: dict) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, value in checkpoint.items():
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, dict) and name not in ("args", "spaces"):
            tensors |= {f"{name}.{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)}
    return tensors


def cpu_name() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return names[0] if names else platform.processor() or "this CPU"


def gradients_with(algo, threads: int) -> list[torch.Tensor]:
    """Weight gradients of one critic and one actor on a batch of 256 Pendulum-v1 sized inputs, on `threads`."""
    torch.manual_seed(0)
    qf, actor = algo.QNetwork(3, 1), algo.Actor(3, 1)
    obs, actions = torch.randn(256, 3), torch.rand(256, 1) * 2 - 1
    torch.set_num_threads(threads)
    outputs = actor(obs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    loss = qf(obs, actions).square().mean() + sum(output.square().mean() for output in outputs)
    loss.backward()
    return [p.grad for p in [*qf.parameters(), *actor.parameters()]]


def rounds_by_thread_count(algo) -> bool:
    before = torch.get_num_threads()
    try:
        one, two = gradients_with(algo, 1), gradients_with(algo, 2)
    finally:
        torch.set_num_threads(before)
    return any(not torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_the_thread_count_changes_no_number(algo, train, tmp_path):
    """Same seed, one thread and two: every weight identical after 300 updates of batch 256 (as in real runs),
    on a CPU whose matrix products round alike with one thread and two."""
    if rounds_by_thread_count(algo):
        pytest.skip(f"on {cpu_name()} one thread and two round the matrix products differently, so runs differ")
    before = torch.get_num_threads()
    weights = {}
    try:
        for threads in (1, 2):
            flags = {"torch_threads": threads, "batch_size": 256, "save_model": True, "run_name": f"t{threads}"}
            train(algo, **flags)
            path = tmp_path / "runs" / f"t{threads}" / f"{algo.__name__}.pt"
            weights[threads] = all_tensors(torch.load(path, weights_only=True))
    finally:
        torch.set_num_threads(before)
    assert len(weights[1]) >= 8 and weights[1].keys() == weights[2].keys()
    differ = [name for name in weights[1] if not torch.equal(weights[1][name], weights[2][name])]
    assert not differ, f"one thread and two give different {differ}"


def fake_machine(monkeypatch, algo, cores: int, default_threads: int, readings: list):
    """A FreeCoreThreads on `cores` cores whose /proc/stat readings are `readings`, each (wall s, own CPU s, busy
    s of the cores); torch.set_num_threads is recorded, not called."""
    monkeypatch.setattr(algo.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(algo.torch, "get_num_threads", lambda: default_threads)
    calls = []
    monkeypatch.setattr(algo.torch, "set_num_threads", calls.append)
    monkeypatch.setattr(algo.FreeCoreThreads, "busy", lambda self: readings.pop(0))
    return algo.FreeCoreThreads(), calls


@pytest.mark.parametrize(
    ("cores", "default", "own", "busy", "expected"),
    [
        (2, 2, 2.0, 2.0, 2),  # alone: all cores
        (2, 2, 1.0, 2.0, 1),  # another run keeps one core busy
        (2, 2, 1.0, 3.0, 1),  # two other processes: never fewer than one thread
        (4, 4, 1.0, 2.0, 3),  # one of four cores taken
        (16, 8, 1.0, 1.1, 8),  # never more than PyTorch's own default
        (2, 2, 1.9, 2.1, 2),  # a little background load (a shell, TensorBoard) does not count
    ],
)
def test_threads_follow_the_cores_other_processes_leave_free(monkeypatch, algo, cores, default, own, busy, expected):
    threads, calls = fake_machine(monkeypatch, algo, cores, default, [(0.0, 0.0, 0.0), (1.0, own, busy)])
    assert calls == [1], "one thread until the first measurement"
    assert threads.update() == expected
    assert calls == [1, expected]


def test_each_update_measures_the_time_since_the_last(monkeypatch, algo):
    readings = [(0.0, 0.0, 0.0), (1.0, 1.0, 2.0), (3.0, 3.0, 4.0)]  # busy beside another run, then alone
    threads, _ = fake_machine(monkeypatch, algo, 2, 2, readings)
    assert [threads.update(), threads.update()] == [1, 2]


@pytest.mark.parametrize(
    ("flags", "omp", "device", "applies"),
    [({}, None, "cpu", True), ({"torch_threads": 2}, None, "cpu", False), ({}, "1", "cpu", False),
     ({}, None, "cuda", False)],
)  # fmt: skip
def test_only_where_nobody_chose_the_threads(monkeypatch, algo, flags, omp, device, applies):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    if omp:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    before = torch.get_num_threads()
    try:
        threads = algo.FreeCoreThreads.start(algo.Args(**flags), torch.device(device))
    finally:
        torch.set_num_threads(before)
    assert (threads is not None) == applies


def test_a_default_run_logs_its_thread_count(monkeypatch, algo, train, tmp_path):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the test workers set it (tests/conftest.py)
    before = torch.get_num_threads()
    try:
        train(algo, run_name="auto")
        assert torch.get_num_threads() == before, "the run leaves PyTorch's own thread count behind"
    finally:
        torch.set_num_threads(before)
    logged = [value for _, value in read_scalars(tmp_path / "runs" / "auto")["charts/torch_threads"]]
    assert logged and all(1 <= value <= before for value in logged)


def test_a_run_leaves_pytorchs_own_thread_count_behind(monkeypatch, algo, train):
    """Beside a busy machine the run drops to one thread; when it ends, the process has PyTorch's count again."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    clock = iter(range(10**6))
    monkeypatch.setattr(algo.FreeCoreThreads, "busy", lambda self: (t := next(clock), t / 2, 4.0 * t))  # all busy
    chosen = []
    update = algo.FreeCoreThreads.update
    monkeypatch.setattr(algo.FreeCoreThreads, "update", lambda self: chosen.append(update(self)) or chosen[-1])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        train(algo)
        assert chosen and set(chosen) == {1}, "a busy machine leaves one thread"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
