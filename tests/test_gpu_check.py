"""benchmarks/gpu_check.py --smoke: every GPU path of the check, run on the CPU so it cannot rot."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_smoke_runs_every_case_and_writes_one_json(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gpu_check: ok" in done.stderr
    report = json.loads(out.read_text())
    assert report["ok"] and report["smoke"] and report["parity"]["ok"]
    assert report["parity"]["frames_max_level_diff_vs_cpu"] == 0
    cases = {c["case"]: c for c in report["cases"]}
    assert {(c["offload"], c["weights"]) for c in cases.values() if "offload" in c} == {
        (o, w) for o in ("none", "model", "blocks") for w in ("bf16", "int8", "fp8")}
    assert cases["720p 5s compiled"]["compile"] and not cases["720p 5s"]["compile"]
    assert cases["480p 10s"]["frames"] == 33 and cases["720p 5s"]["frames"] == 17
    for case in cases.values():
        assert set(case["stage_seconds"]) == {"encode_text", "sample", "decode", "write"}
        assert case["steps"] > 0 and case["steps_per_second"] > 0 and case["sdpa_kernel"]
        assert set(case["peak_memory"]) == {"encode", "sample", "decode"}
        assert all(p["measured_bytes"] > 0 and p["estimated_bytes"] > 0 for p in case["peak_memory"].values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_full_mode_without_a_gpu_is_a_one_line_refusal(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--smoke" in done.stderr
    assert not (tmp_path / "x.json").exists()
