"""`python tests/failing_cli.py ARGS`: the CLI with a pipeline whose run() fails for prompts
containing "FAIL" (an output that breaks at run time, after planning; test_cli_ranks)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.generate.pipeline import Pipeline  # noqa: E402
from infinistar_cli.main import cli  # noqa: E402

_run = Pipeline.run


def failing_run(self, request, *args, **kwargs):
    if "FAIL" in request.prompt:
        raise RuntimeError(f"injected failure for {request.prompt!r}")
    return _run(self, request, *args, **kwargs)


Pipeline.run = failing_run

if __name__ == "__main__":
    cli(prog_name="infinistar")
