"""Rewrite docs/terminal_single.txt and docs/terminal_batch.txt: the final screen of a real run of
the tiny model in a 120-column pseudo-terminal (read through the pyte emulator, the helper the pty
tests use), for one video and for a 5-prompt batch, and put them into README.md after their
`<!-- docs/terminal_*.txt -->` markers. The checkout's path is shown as ~/infinistar.

    python docs/make_terminal_captures.py
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from terminal_screen import run_on_terminal  # noqa: E402

BATCH = ("a red square moving right", "a blue circle moving up", "a green triangle moving left",
         "a yellow circle moving down", "a white square moving left")
COLUMNS = 120


def capture(args: list[str], folder: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
    env.update(TERM="xterm-256color", PYTHONPATH=str(ROOT))
    run = run_on_terminal([sys.executable, "-m", "infinistar_cli", "--device", "cpu", *args], env=env,
                          cwd=str(folder), cols=COLUMNS)
    if run.exit_code != 0:
        raise SystemExit("\n".join(run.screen))
    prompt = f"$ infinistar {' '.join(a if ' ' not in a else repr(a) for a in args)}"
    return "\n".join([prompt, *run.screen]).replace(str(ROOT), "~/infinistar") + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "one").mkdir()
        (folder / "five").mkdir()
        single = capture(["t2v", "a red square moving right", "--model", "tiny", "--seed", "5"], folder / "one")
        (folder / "five" / "shots.txt").write_text("".join(f"{prompt}\n" for prompt in BATCH))
        batch = capture(["t2v", "--prompt-file", "shots.txt", "--model", "tiny", "--seed", "5"], folder / "five")
    readme = ROOT / "README.md"
    for name, text in (("terminal_single.txt", single), ("terminal_batch.txt", batch)):
        path = Path(__file__).with_name(name)
        path.write_text(text, encoding="utf-8")
        print(path)
        block = re.compile(rf"(<!-- docs/{name} -->\n```text\n).*?(```)", re.S)
        readme.write_text(block.sub(lambda m: m[1] + text + m[2], readme.read_text(encoding="utf-8")),
                          encoding="utf-8")


if __name__ == "__main__":
    main()
