"""`python tests/fake_cli.py ARGS...`: the real CLI with the fake engine of cli_fakes, in its own
process, so that tests can drive it in a pseudo-terminal. FAKE_EVENT_DELAY (seconds) slows the
fake's progress events down enough for the live display to draw them."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine  # noqa: E402
from cli_fakes import FakeEngine  # noqa: E402
from infinistar_cli.main import cli  # noqa: E402

engine.load_pipeline = FakeEngine(event_delay=float(os.environ.get("FAKE_EVENT_DELAY", "0"))).load
cli(prog_name="infinistar")
