"""Real-size figures (slow; CI's fast subset skips them): the published SD2-inpainting and SDXL-inpainting
architectures with random weights, one LoRA training step (our Trainer, batch 1) and one sampling step (one
UNet call, batch 1), each the fastest of two (shared machine), each case in a fresh process (benchmarks/real_size.py), at reduced resolutions on this
CPU, in fp32 and bf16 weights, with and without gradient checkpointing.

From them, the projected time of the paper's recipe on this CPU: 2,000 training steps at batch 16 and
512 px, 64 samples x 200 DDPM steps (plus one VAE encode and decode each). 512 px is measured in bf16; the
fp32 figure is its 256 px step times the bf16 growth from 256 to 512 px. Batch 16 is taken as 16 x batch 1
(a CPU runs batch 1 at full occupancy already). The paper: about one hour of
fine-tuning on one A100. No GPU is lent to this task: GPU figures are not measured.

    pytest benchmarks/test_real_size.py -m slow -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, report

SCRIPT = Path(__file__).resolve().parent / "real_size.py"
THREADS = int(os.environ.get("REALFILL_REAL_SIZE_THREADS", "1"))  # 2 contended threads stall badly
RESULTS = ROOT / ".benchmarks" / "real_size"
PAPER = {"steps": 2000, "batch": 16, "resolution": 512, "samples": 64, "sample_steps": 200}
CASES = {  # (resolution, dtype, gradient checkpointing)
    "sd2": [(256, "float32", False), (256, "bfloat16", False), (512, "bfloat16", False), (512, "bfloat16", True)],
    "sdxl": [(256, "bfloat16", False), (512, "bfloat16", False), (512, "bfloat16", True)],
}
MEMORY_NEEDED_GIB = {"sd2": 10, "sdxl": 14}


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def _run(kind: str, resolution: int, dtype: str, checkpointing: bool) -> dict:
    command = [sys.executable, str(SCRIPT), kind, "--resolution", str(resolution), "--dtype", dtype,
               "--threads", str(THREADS), "--train-steps", "2"] + (["--checkpointing"] if checkpointing else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REAL-SIZE ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("REAL-SIZE "))


def project(results: list[dict]) -> dict:
    """Paper-recipe hours on this CPU per weight dtype: the 512 px step measured where there is one, else
    the 256 px step times the 256->512 growth measured in another dtype; batch 16 = 16 x batch 1."""
    plain = {(r["resolution"], r["dtype"]): r for r in results if not r["gradient_checkpointing"]}
    grown = next(d for (res, d) in plain if res == 512)
    growth = {
        "train": min(plain[(512, grown)]["train_step_s"]) / min(plain[(256, grown)]["train_step_s"]),
        "sample": plain[(512, grown)]["sample_step_s"] / plain[(256, grown)]["sample_step_s"],
        "vae": plain[(512, grown)]["sample_vae_encode_decode_s"] / plain[(256, grown)]["sample_vae_encode_decode_s"],
    }
    out = {}
    for dtype in sorted({d for (_, d) in plain}):
        if (512, dtype) in plain:
            r, factor, how = plain[(512, dtype)], {"train": 1, "sample": 1, "vae": 1}, "measured at 512 px"
        else:
            r, factor, how = plain[(256, dtype)], growth, f"256 px x the {grown} growth to 512 px"
        train = min(r["train_step_s"]) * factor["train"] * PAPER["batch"]
        sample = r["sample_step_s"] * factor["sample"]
        vae = r["sample_vae_encode_decode_s"] * factor["vae"]
        out[dtype] = {
            "how": how,
            "train_step_512_b16_s": round(train, 1),
            "sample_step_512_b1_s": round(sample, 2),
            "train_hours": round(train * PAPER["steps"] / 3600, 1),
            "sample_hours": round((sample * PAPER["sample_steps"] + vae) * PAPER["samples"] / 3600, 1),
        }
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CASES))
def test_real_size_step_times_and_projection(kind):
    if _available_gib() < MEMORY_NEEDED_GIB[kind]:
        pytest.skip(f"{kind}: needs about {MEMORY_NEEDED_GIB[kind]} GiB free, {_available_gib():.1f} GiB available")
    results = [_run(kind, *case) for case in CASES[kind]]
    for r in results:
        assert all(x == x and abs(x) < 1e6 for x in r["loss"]), r  # finite losses: a real step ran
        report(f"{kind} {r['resolution']}px {r['dtype']}{' +ckpt' if r['gradient_checkpointing'] else ''}",
               f"train step (b1) {min(r['train_step_s']):.2f} s, sample step (b1) {r['sample_step_s']:.2f} s, "
               f"VAE enc+dec {r['sample_vae_encode_decode_s']:.2f} s, peak RSS {r['peak_rss_mib']} MiB, "
               f"LoRA params {r['lora_trainable_params']:,}, threads {r['threads']}")
    projections = project(results)
    for dtype, p in projections.items():
        report(f"{kind} projection {dtype}",
               f"({p['how']}) paper recipe on this CPU: train {p['train_step_512_b16_s']:.0f} s/step -> {p['train_hours']} h "
               f"for {PAPER['steps']} steps; sampling {p['sample_hours']} h for {PAPER['samples']} x "
               f"{PAPER['sample_steps']} steps (paper: about 1 h of fine-tuning on one A100)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{kind}.json").write_text(json.dumps({"cases": results, "projections": projections}, indent=1))
