"""Fixtures shared by several test files (helpers that are not fixtures live in cli_fakes.py,
golden_utils.py and media_fakes.py and are imported where used)."""
import os

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module's tests and its module-scoped fixtures: tiny tensors on a busy
    shared machine stall with several threads (up to 100x slower), and no result checked here depends
    on the count. Module-scoped so that a module's expensive fixtures (the tiny pipeline, golden runs)
    are computed under it too; restored when the module ends."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(one_thread):
    """The real tiny model on the CPU (loaded once per session, media_fakes.tiny_pipeline)."""
    from media_fakes import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No INFINISTAR_* variables and no user config file leak in; the cwd is a fresh directory."""
    for name in list(os.environ):
        if name.startswith("INFINISTAR_") or name.startswith("_INFINISTAR"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def fake(monkeypatch, clean_env):
    """The fake engine (cli_fakes.FakeEngine) behind `engine.load_pipeline`, the one seam the CLI uses."""
    import engine
    from cli_fakes import FakeEngine

    fake_engine = FakeEngine()
    monkeypatch.setattr(engine, "load_pipeline", fake_engine.load)
    return fake_engine
