"""`python tests/fake_cli.py ARGS...`: the real CLI with the fake engine of cli_fakes, in its own
process, so that tests can drive it in a pseudo-terminal or send it signals. FAKE_EVENT_DELAY
(seconds) slows the fake's progress events down enough for the live display to draw them;
FAKE_STORY_HOLD=N makes story segment N wait (until a signal ends the process)."""
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine  # noqa: E402
from cli_fakes import FakeEngine, FakePipeline  # noqa: E402
from engine.request import Event  # noqa: E402
from infinistar_cli.main import cli  # noqa: E402


class StoryPipeline(FakePipeline):
    def run_story(self, requests, on_event=None):
        hold = int(os.environ.get("FAKE_STORY_HOLD", "0"))
        for number, request in enumerate(requests, start=1):
            if on_event:
                on_event(Event("segment", number, len(requests), message=request.prompt))
            if number == hold:
                time.sleep(300)
            result = self.run(request, on_event)
            yield dataclasses.replace(result, metadata={**result.metadata, "segment": number,
                                                        "prompt": request.prompt, "seed": request.seed})


class StoryEngine(FakeEngine):
    def load(self, *args, **kwargs):
        pipeline = super().load(*args, **kwargs)
        return StoryPipeline(**{f.name: getattr(pipeline, f.name) for f in dataclasses.fields(pipeline)})


engine.load_pipeline = StoryEngine(event_delay=float(os.environ.get("FAKE_EVENT_DELAY", "0"))).load
cli(prog_name="infinistar")
