"""``scripts/gpu-check.sh``, the GPU check as one command, cannot rot before a GPU appears: its CPU dry run goes
through every stage (the cuda-marked tests, sent to the CPU; the chip's matrix rate; per preset, on the tiny
twins, our step and the public recipe's side by side, their FLOPs and kernel tables; the JSON and the
markdown report), a planted fault shows the bisect and its localisation, a spent budget still leaves a
report, and without CUDA the real check says so in one line, exit 2. The figures of a dry run mean nothing;
these tests check that each is measured and reported, not its value."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _check(out: Path, *args: str, fault: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REALFILL_GPU_CHECK_FAULT"}
    if fault:
        env["REALFILL_GPU_CHECK_FAULT"] = fault
    return subprocess.run(["bash", "scripts/gpu-check.sh", "--cpu-dry-run", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check itself runs here")
def test_without_cuda_the_check_is_one_line_exit_2():
    proc = subprocess.run(["bash", "scripts/gpu-check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sees no CUDA GPU" in lines[0] and "--cpu-dry-run" in lines[0], proc.stderr


@pytest.mark.slow
def test_the_cpu_dry_run_runs_every_stage_and_writes_its_report(tmp_path):
    proc = _check(tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["dry_run"] is True and "bisect" not in report
    assert report["tests"]["passed"] >= 4 and report["tests"]["failed"] == 0 and report["tests"]["skipped"] == 0
    assert report["matmul"]["tflops"] > 0 and report["peaks_tflops"]["measured"] == report["matmul"]["tflops"]
    assert set(report["stages"]) >= {"tests", "matmul", "paper", "paper-sdxl", "paper-flux", "paper-flux-24gb"}
    rows = {row["preset"]: row for row in report["real_size"]}
    assert set(rows) == {"paper", "paper-sdxl", "paper-flux", "paper-flux-24gb"}
    assert rows["paper-flux-24gb"]["quantize"] == "int8-weight-only" and rows["paper-flux"]["quantize"] == "none"
    # paper stores bf16 weights; the recipe it is measured against keeps SD2's in float32
    assert (rows["paper"]["dtype"], rows["paper"]["reference_dtype"]) == ("bfloat16", "float32")
    assert rows["paper-flux"]["reference_dtype"] == rows["paper-flux"]["dtype"]
    assert rows["paper-sdxl"]["checkpointing"] and rows["paper-sdxl"]["dtype"] == "bfloat16"
    assert rows["paper-flux"]["kind"] == "tiny-flux" and rows["paper-flux"]["lora_rank"] == 64
    for row in rows.values():
        assert "error" not in row and row["train_step_s"] > 0 and row["sample_step_s"] > 0
        assert row["minutes_per_scene"] > 0
        assert all(loss == loss for loss in row["losses"] + row["reference_losses"])  # finite: NaN != NaN
        # the recipe on the same batches and draws: its first loss is ours to bf16 / float tolerance
        assert row["reference_losses"][0] == pytest.approx(row["losses"][0], rel=0.05)
        assert row["reference_train_step_s"] > 0
        assert row["speedup_vs_recipe"] == pytest.approx(row["reference_train_step_s"] / row["train_step_s"], rel=0.02)
        assert row["train_step_flops"] > row["sample_step_flops"] > 0  # a training step is more work
        assert row["train_peak_fraction_measured"] > 0 and row["train_peak_fraction_spec"] is None  # no CPU peak
        for key in ("train_step_kernels", "sample_step_kernels"):
            kernels = row[key]["kernels"]
            assert 1 <= len(kernels) <= 10 and all(k["self_ms"] > 0 and k["calls"] >= 1 for k in kernels)
            assert [k["self_ms"] for k in kernels] == sorted((k["self_ms"] for k in kernels), reverse=True)
            assert "Self CPU" in row[key]["table"]
    table = (tmp_path / "gpu-check.md").read_text()
    for preset, kind in (("paper", "tiny-sd2"), ("paper-sdxl", "tiny-sdxl"), ("paper-flux", "tiny-flux"),
                         ("paper-flux-24gb", "tiny-flux")):
        assert f"| `{preset}` | {kind} |" in table
        assert f"### `{preset}`: the ten costliest kernels" in table
    assert "train step: ours / recipe (ratio)" in table and "% of peak" in table and "Bisect" not in table


@pytest.mark.slow
def test_a_failing_stage_is_bisected_by_attention_backend_and_checkpointing_and_localised(tmp_path):
    """A fault planted in the backward pass under gradient checkpointing (``REALFILL_GPU_CHECK_FAULT``, with
    CUDA's illegal-memory-access text): the preset fails in its training stage; the bisect reruns the model
    under each SDPA backend with and without checkpointing and finds exactly the checkpointing cases failing,
    each in a fresh process (the text says the CUDA context is poisoned); the CPU has no efficient or cuDNN
    kernels, which the report says instead of calling them failures; the localisation names the failing
    backward node's forward call and the last operator."""
    proc = _check(tmp_path, "--skip-tests", "--presets", "paper-flux", fault="train:checkpointing")
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    assert "gpu-check: paper-flux: FAILED in train" in proc.stdout
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    found = report["bisect"]["paper-flux"]
    assert found["stage"] == "train"
    status = {(c["attention"], c["checkpointing"]): c["status"] for c in found["cases"]}
    assert len(status) == 8
    assert status["math", True] == status["flash", True] == "FAIL"
    assert status["math", False] == status["flash", False] == "pass"
    assert {status[a, c] for a in ("efficient", "cudnn") for c in (True, False)} == {"unavailable"}
    assert found["processes"] >= 3  # a fresh process after each poisoning failure
    loc = found["localize"]
    assert loc["failed"] and "illegal memory access" in loc["error"] and loc["CUDA_LAUNCH_BLOCKING"] == "1"
    assert loc["case"] == {"attention": "flash", "checkpointing": True} and loc["last_op"].startswith("aten.")
    assert any("transformer_flux.py" in f for f in loc["forward_frames"])  # anomaly mode: the forward call
    assert any("fail" in f for f in loc["frames"])
    table = (tmp_path / "gpu-check.md").read_text()
    assert "### Bisect: `paper-flux` failed" in table and "| math | off | pass |" in table
    assert "Localised with CUDA_LAUNCH_BLOCKING=1" in table


@pytest.mark.slow
def test_a_spent_budget_still_writes_the_report_and_fails(tmp_path):
    proc = _check(tmp_path, "--budget", "1", timeout=300)
    assert proc.returncode == 1
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert "budget" in report["tests"]["error"] and "budget" in report["matmul"]["error"]
    assert all(row["error"].startswith("not run") for row in report["real_size"]) and "bisect" not in report
    assert "not run: the check's time budget was spent" in (tmp_path / "gpu-check.md").read_text()
