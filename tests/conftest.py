"""Fixtures: both scripts are tested by the same tests, parametrised over the module."""

import pytest

from tests.helpers import ALGORITHMS, SHORT_RUN


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
