"""``scripts/gpu-check.sh``, the first GPU run as one command, cannot rot before a GPU appears: its CPU dry run
goes through every stage (the cuda-marked tests, sent to the CPU; the real-size measurement, on the tiny
twins; the JSON and the markdown table), and without CUDA the real check says so in one line, exit 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check itself runs here")
def test_without_cuda_the_check_is_one_line_exit_2():
    proc = subprocess.run(["bash", "scripts/gpu-check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sees no CUDA GPU" in lines[0] and "--cpu-dry-run" in lines[0], proc.stderr


def test_the_cpu_dry_run_runs_every_stage_and_writes_its_report(tmp_path):
    proc = subprocess.run(["bash", "scripts/gpu-check.sh", "--cpu-dry-run", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["dry_run"] is True
    assert report["tests"]["passed"] >= 3 and report["tests"]["failed"] == 0 and report["tests"]["skipped"] == 0
    rows = {row["preset"]: row for row in report["real_size"]}
    assert set(rows) == {"paper", "paper-sdxl", "paper-flux"}
    assert rows["paper-sdxl"]["checkpointing"] and rows["paper-sdxl"]["dtype"] == "bfloat16"
    assert rows["paper-flux"]["kind"] == "tiny-flux" and rows["paper-flux"]["lora_rank"] == 64
    for row in rows.values():
        assert "error" not in row and row["train_step_s"] > 0 and row["sample_step_s"] > 0
        assert all(loss == loss for loss in row["losses"])  # finite: NaN != NaN
        assert row["minutes_per_scene"] > 0
    table = (tmp_path / "gpu-check.md").read_text()
    for preset, kind in (("paper", "tiny-sd2"), ("paper-sdxl", "tiny-sdxl"), ("paper-flux", "tiny-flux")):
        assert f"| `{preset}` | {kind} |" in table
