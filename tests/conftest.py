"""Fixtures: both scripts are tested by the same tests, parametrised over the module."""

import os
import shutil
import tempfile

import pytest
import torch

from tests.helpers import ALGORITHMS, SHORT_RUN


def pytest_configure(config):
    """The suite runs on every core through pytest-xdist (pyproject.toml): one worker process per core. Each worker,
    and every run it starts, then uses one torch thread, so the workers do not oversubscribe the cores (OpenMP's
    threads spin while they wait, and a few too many make a run several times slower). Each worker also compiles
    into an inductor cache of its own: two processes building the same kernel into one cache can load the other's
    half-written library ("file too short", seen in this suite; pytorch/torchdynamo#1347)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        cache = tempfile.mkdtemp(prefix=f"torchinductor-{worker}-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))


@pytest.fixture(params=list(ALGORITHMS), ids=list(ALGORITHMS))
def algo(request):
    """The td3_continuous or the sac_continuous module."""
    return ALGORITHMS[request.param]


@pytest.fixture
def train(monkeypatch, tmp_path):
    """train(algo, **flags) runs algo.main in a temporary working directory (runs/ lands there)."""
    monkeypatch.chdir(tmp_path)

    def run(module, **flags):
        return module.main(module.Args(**(SHORT_RUN | flags)))

    return run
