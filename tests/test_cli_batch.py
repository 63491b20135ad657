"""Prompt files: formats, one model load per batch, reruns that skip finished outputs."""
import json
from pathlib import Path

from cli_fakes import error_line, invoke
from engine.media import video_io

TEMPLATE = "out/{index:02d}_{slug}.mp4"


def write(name: str, text: str) -> str:
    Path(name).write_text(text, encoding="utf-8")
    return name


def test_text_file_skips_comments_and_blanks_and_loads_once(fake):
    write("shots.txt", "# storyboard\n\na red fox\n  waves at dusk  \n# end\nrain on glass\n")
    result = invoke("t2v", "--prompt-file", "shots.txt", "--seed", "7", "-o", TEMPLATE)
    assert result.exit_code == 0, result.stderr
    assert [r.prompt for r in fake.requests] == ["a red fox", "waves at dusk", "rain on glass"]
    assert len(fake.loads) == 1
    assert sorted(p.name for p in Path("out").glob("*.mp4")) == [
        "01_a-red-fox.mp4", "02_waves-at-dusk.mp4", "03_rain-on-glass.mp4"]
    assert "[2/3]" in result.stderr and "done: 3 written, 0 skipped" in result.stderr


def test_rerun_skips_existing_outputs(fake):
    write("shots.txt", "a\nb\nc\n")
    assert invoke("t2v", "--prompt-file", "shots.txt", "-o", TEMPLATE).exit_code == 0
    stamp = Path("out/01_a.mp4").stat().st_mtime_ns
    again = invoke("t2v", "--prompt-file", "shots.txt", "-o", TEMPLATE)
    assert again.exit_code == 0 and len(fake.loads) == 1  # nothing to do: no second load
    assert again.stderr.count("skipping") == 3 and "nothing to do" in again.stderr
    Path("out/02_b.mp4").unlink()
    partial = invoke("t2v", "--prompt-file", "shots.txt", "-o", TEMPLATE, "--json")
    assert partial.exit_code == 0 and len(fake.loads) == 2
    records = [json.loads(line) for line in partial.stdout.splitlines()]
    assert [(r["status"], r["index"]) for r in records] == [("skipped", 1), ("skipped", 3), ("written", 2)]
    assert [r.prompt for r in fake.requests[3:]] == ["b"]
    assert Path("out/01_a.mp4").stat().st_mtime_ns == stamp


def test_jsonl_lines_carry_their_own_settings(fake):
    lines = [
        {"prompt": "a fox", "seed": 3, "output": "fox.mp4", "cfg": 4.5},
        {"prompt": "a cat", "seed": [1, 2], "negative_prompt": "blur", "seconds": 1},
        {"prompt": "a bird"},
    ]
    write("shots.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    result = invoke("t2v", "--prompt-file", "shots.jsonl", "--model", "tiny", "--seed", "9", "--json")
    assert result.exit_code == 0, result.stderr
    got = [(r.prompt, r.seed, r.cfg, r.negative_prompt, r.seconds) for r in fake.requests]
    assert got == [("a fox", 3, 4.5, "", None), ("a cat", 1, None, "blur", 1), ("a cat", 2, None, "blur", 1),
                   ("a bird", 9, None, "", None)]
    paths = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    assert paths == ["fox.mp4", "infinistar_a-cat_1.mp4", "infinistar_a-cat_2.mp4", "infinistar_a-bird_9.mp4"]
    assert video_io.read_metadata("fox.mp4")["cfg"] == 4.5


def test_jsonl_seconds_checked_against_released_preset(fake):
    write("shots.jsonl", '{"prompt": "a"}\n{"prompt": "b", "seconds": 10}\n')
    result = invoke("t2v", "--prompt-file", "shots.jsonl", "--res", "720p")
    assert result.exit_code == 2 and "shots.jsonl line 2" in error_line(result)
    assert fake.loads == []


def test_stdin_text_and_jsonl(fake):
    result = invoke("t2i", "--prompt-file", "-", "--seed", "1", input="# c\none\ntwo\n")
    assert result.exit_code == 0, result.stderr
    assert [r.prompt for r in fake.requests] == ["one", "two"] and all(r.mode == "t2i" for r in fake.requests)
    result = invoke("t2i", "--prompt-file", "-", input='{"prompt": "three", "seed": 5}\n')
    assert result.exit_code == 0, result.stderr
    assert Path("infinistar_three_5.png").is_file()


def test_malformed_lines_name_the_line(fake):
    cases = {
        '{"prompt": "ok"}\n\n{"prompt": "x",}\n': "line 3: invalid JSON",
        '{"prompt": "ok"}\n["x"]\n': "line 2: expected a JSON object",
        '{"prompt": "ok", "colour": 1}\n': "line 1: unknown key 'colour'",
        '{"seed": 1}\n': "line 1: missing \"prompt\"",
        '{"prompt": "  "}\n': "line 1: the prompt is empty",
        '{"prompt": "x", "seed": -4}\n': "line 1: seed must be an integer",
        '{"prompt": "x", "seed": "4"}\n': "line 1: 'seed' has the wrong type",
        '{"prompt": "x", "tau_video": 0}\n': "line 1: tau_video: 0 is not a number from 0.001 to 10",
        '{"prompt": "x", "seconds": 0}\n': "line 1: 'seconds' must be >= 1",
    }
    for text, message in cases.items():
        write("bad.jsonl", text)
        result = invoke("t2v", "--prompt-file", "bad.jsonl")
        assert result.exit_code == 1 and f"bad.jsonl {message}" in error_line(result), (text, result.stderr)
    assert fake.loads == []


def test_video_only_keys_rejected_for_images(fake):
    write("shots.jsonl", '{"prompt": "x", "seconds": 5}\n')
    result = invoke("t2i", "--prompt-file", "shots.jsonl")
    assert result.exit_code == 1 and "unknown key 'seconds'" in error_line(result)


def test_unusable_prompt_files(fake):
    write("empty.txt", "# only a comment\n\n")
    assert "has no prompts" in error_line(invoke("t2v", "--prompt-file", "empty.txt"))
    Path("latin1.txt").write_bytes(b"caf\xe9\n")
    assert "not UTF-8" in error_line(invoke("t2v", "--prompt-file", "latin1.txt"))
    Path("adir.txt").mkdir()
    result = invoke("t2v", "--prompt-file", "adir.txt")
    assert result.exit_code != 0 and "adir.txt" in error_line(result)


def test_duplicate_outputs_in_a_batch(fake):
    write("shots.txt", "same\nsame\n")
    result = invoke("t2v", "--prompt-file", "shots.txt", "--seed", "1")
    assert result.exit_code == 1
    assert "shots.txt line 2, seed 1 and shots.txt line 1, seed 1 would both write" in error_line(result)
