"""Fixtures shared by several test files."""
import pytest


@pytest.fixture
def one_thread():
    """One torch thread for the test: small ops on a busy shared machine stall with several, and the
    results checked here don't depend on the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
