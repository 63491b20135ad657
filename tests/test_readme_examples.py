"""The README shows what the tool does today: the names its examples say they write, its tiny
examples, and the terminal captures (docs/terminal_*.txt) it embeds."""
import importlib.util
import os
import re
import shlex
from pathlib import Path

from cli_fakes import invoke
from terminal_screen import SPINNER

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CAPTURES = ("terminal_single.txt", "terminal_batch.txt")
PATH_LINE = re.compile(r"infinistar_[a-z0-9-]+_\d+\.mp4")


def readme_commands() -> list[str]:
    """Every `infinistar ...` command in the README's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):  # `pip install . && infinistar t2v ...`
                if part.strip().startswith("infinistar "):
                    commands.append(part.strip())
    return commands


def run_example(command: str):
    result = invoke(*shlex.split(command, comments=True)[1:])
    assert result.exit_code == 0, (command, result.stderr)
    return result


def test_names_the_readme_says_are_written(fake):
    claims = [(c, re.search(r"# writes (\S+)", c)[1]) for c in readme_commands() if "# writes " in c]
    assert len(claims) >= 2
    written = set()
    for command, name in claims:
        assert run_example(command).stdout.splitlines() == [name], command
        written.add(name)
    shown = [shlex.split(c, comments=True)[2] for c in readme_commands() if c.startswith("infinistar info ")]
    assert shown and set(shown) <= written  # `info` is shown on a file an example writes


def test_tiny_examples_write_what_they_say(fake):
    tiny = [c for c in readme_commands() if "--model tiny" in c and " -o " in c]
    assert len(tiny) >= 2
    for command in tiny:
        args = shlex.split(command, comments=True)
        assert run_example(command).stdout.splitlines() == [args[args.index("-o") + 1]], command


def load_capture_script():
    spec = importlib.util.spec_from_file_location("captures", ROOT / "docs" / "make_terminal_captures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_terminal_captures_are_in_the_readme_and_name_what_the_tool_writes(fake, clean_env):
    batch_prompts = load_capture_script().BATCH
    for name, outputs in zip(CAPTURES, (1, 5)):
        folder = clean_env / name.split(".")[0]  # each capture was taken in a folder of its own
        folder.mkdir()
        (folder / "shots.txt").write_text("".join(f"{p}\n" for p in batch_prompts))
        os.chdir(folder)
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        assert f"<!-- docs/{name} -->\n```text\n{text}```" in README, f"run: python docs/make_terminal_captures.py ({name})"
        lines = text.splitlines()
        assert lines[0].startswith("$ infinistar ") and lines[1].startswith("model tiny (built in, ")
        assert not SPINNER.search(text) and "━" not in text
        paths = [line for line in lines if PATH_LINE.fullmatch(line)]  # stdout, each under its summary
        summaries = [line for line in lines if line.startswith("✓ ")]
        assert len(paths) == len(summaries) == outputs
        for k, (summary, path) in enumerate(zip(summaries, paths), start=1):
            label = f"[{k}/{outputs}] " if outputs > 1 else ""
            assert summary.startswith(f"✓ {label}wrote {path}  17 frames 48×64, seed 5, "), summary
        if outputs > 1:
            assert re.fullmatch(r"done: 5 written, 0 skipped in \d+\.\d s", lines[-1])
        # The same command today writes the same names (the fake engine: names are the CLI's).
        assert run_example(lines[0][2:]).stdout.splitlines() == paths
