"""Fixtures of the NN tests: torch limited to 2 threads (the machine is shared)."""

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)
