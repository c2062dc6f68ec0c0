"""The first GPU run, as one command (``scripts/gpu-check.sh`` calls this): the ``cuda``-marked tests, then the
real-size SD2 and SDXL architectures with random weights at their presets' settings, then one JSON file and
a markdown table for the GPU section of ``docs/benchmarks.md``.

1. ``pytest -m cuda``: tiny SD2 / SDXL trained and sampled in float16 and bfloat16 with no NaN, LoRA saved
   and read back by stock ``load_lora_weights`` with equal samples, ``full`` in half precision, the SDXL
   VAE's dtype at encode time (``tests/test_precision.py``, ``tests/test_lora_diffusers.py``).
2. ``benchmarks/real_size.py`` per preset (``paper``: SD2 at 512 px, batch 16, float32 weights under bf16
   autocast where the GPU has bf16; ``paper-sdxl``: SDXL at 1024 px, its batch, bf16, gradient
   checkpointing; ``paper-flux``: FLUX.1 Fill at 512 px, batch 4, bf16, rank-64 LoRA, checkpointing):
   seconds per training step, seconds per sampling step (one denoiser call at the preset's sampling
   batch), peak CUDA memory, and the minutes a scene would take with the preset's step and sample counts.

It fails loudly: a failed test, a NaN loss or an out-of-memory ends it with a non-zero exit and says which.
``--cpu-dry-run`` runs the same stages on the CPU with the tiny twins, so the script is tested in CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_precision.py", "tests/test_lora_diffusers.py"]
#: the GPU presets, each measured at its own settings
PRESETS = ("paper", "paper-sdxl", "paper-flux")


def preset_case(preset: str, dry_run: bool) -> dict:
    """What ``real_size.py`` measures for ``preset``, with the counts that make a scene's projection."""
    from realfill.config import resolve_config

    config = resolve_config(preset=preset, overrides=["device=cpu"])  # the settings only: nothing loads
    kind = {"sd2-inpaint": "sd2", "sdxl-inpaint": "sdxl", "flux-fill": "flux"}[config.backbone.name]
    dtype = config.backbone.dtype
    precision = config.train.mixed_precision or {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[dtype]
    if precision == "auto":  # what the GPU will take: float32 weights under bf16 autocast where it has bf16
        import torch

        from realfill.device import native_bf16

        precision = "bf16" if torch.cuda.is_available() and native_bf16(torch.device("cuda")) else "no"
    case = {"preset": preset, "kind": kind, "resolution": config.train.resolution, "dtype": dtype,
            "mixed_precision": precision, "checkpointing": config.train.gradient_checkpointing,
            "batch": config.train.batch_size, "sample_batch": config.sample.batch_size,
            "train_steps_per_scene": config.train.steps, "samples_per_scene": config.sample.num_samples,
            "sampling_steps": config.sample.steps, "lora_rank": config.adapter.rank, "lora_alpha": config.adapter.alpha,
            "train_text_encoder": config.adapter.train_text_encoder}
    if dry_run:  # the tiny twin, small: the mechanics of the measurement, not its figures
        case.update(kind=f"tiny-{kind}", resolution=64, batch=2, sample_batch=2)
    return case


def run_tests(device: str, out: Path, dry_run: bool) -> dict:
    report = out / "gpu-check-tests.xml"
    env = {**os.environ, "REALFILL_CUDA_TEST_DEVICE": device}
    args = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
            *TESTS]
    if dry_run:  # one case of each kind, to stay within the dry run's two minutes
        args += ["-k", "(tiny-sd2 and lora and float16) or vae_encodes or (lora_weights and tiny-sd2)"]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if report.is_file():
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {key: int(suite.get(key, 0)) for key in counts}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    result = {"passed": passed, "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"],
              "seconds": round(seconds, 1), "returncode": proc.returncode}
    if proc.returncode != 0:
        result["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return result


def measure(case: dict, device: str) -> dict:
    args = [sys.executable, str(ROOT / "benchmarks" / "real_size.py"), case["kind"], "--resolution",
            str(case["resolution"]), "--dtype", case["dtype"], "--batch", str(case["batch"]), "--sample-batch",
            str(case["sample_batch"]), "--device", device, "--mixed-precision", case["mixed_precision"],
            "--rank", str(case["lora_rank"]), "--alpha", str(case["lora_alpha"])]
    if not case["train_text_encoder"]:
        args.append("--no-text-encoder")
    # three steps on the GPU (the first warms up); the dry run: two, on one thread (tiny tensors)
    args += ["--train-steps", "3"] if device != "cpu" else ["--train-steps", "2", "--threads", "1"]
    if case["checkpointing"]:
        args.append("--checkpointing")
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("REAL-SIZE ")), None)
    if proc.returncode != 0 or line is None:
        text = proc.stdout + proc.stderr
        why = "out of memory" if "out of memory" in text.lower() else f"exit {proc.returncode}"
        return {**case, "error": why, "output_tail": text[-3000:], "seconds": round(time.perf_counter() - start, 1)}
    figures = json.loads(line.removeprefix("REAL-SIZE "))
    steps = figures["train_step_s"]
    train_step = min(steps[1:]) if len(steps) > 1 else steps[0]  # the first step warms up
    batches = math.ceil(case["samples_per_scene"] / case["sample_batch"])
    # the preset's scene: its training steps, then its samples in batches, each batch one UNet call per step
    # and one VAE encode + decode per sample (measured at batch 1)
    minutes = (case["train_steps_per_scene"] * train_step + batches * case["sampling_steps"] * figures["sample_step_s"]
               + case["samples_per_scene"] * figures["sample_vae_encode_decode_s"]) / 60
    result = {**case, "train_step_s": round(train_step, 3), "sample_step_s": figures["sample_step_s"],
              "vae_encode_decode_s": figures["sample_vae_encode_decode_s"], "losses": figures["loss"],
              "lora_trainable_params": figures["lora_trainable_params"],
              "cuda_train_max_allocated_mib": figures.get("cuda_max_allocated_mib"),
              "cuda_sampling_max_allocated_mib": figures.get("cuda_sampling_max_allocated_mib"),
              "peak_rss_mib": figures["peak_rss_mib"], "minutes_per_scene": round(minutes, 1),
              "seconds": round(time.perf_counter() - start, 1)}
    if not all(math.isfinite(x) for x in figures["loss"]):
        result["error"] = f"non-finite training loss {figures['loss']}"
    return result


def markdown(report: dict) -> str:
    lines = [f"GPU check ({report['date']}): {report['device']}, torch {report['torch']}, CUDA {report['cuda']}"
             f"{' (CPU dry run: tiny twins, figures meaningless)' if report['dry_run'] else ''}.", "",
             f"`pytest -m cuda`: {report['tests']['passed']} passed, {report['tests']['failed']} failed, "
             f"{report['tests']['skipped']} skipped in {report['tests']['seconds']} s.", "",
             "| preset | model | px | weights / autocast | grad. ckpt | batch | train step | sampling step "
             "(batch) | peak CUDA memory, train / sample | minutes per scene |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["real_size"]:
        if "error" in row:
            lines.append(f"| `{row['preset']}` | {row['kind']} | {row['resolution']} | {row['dtype']} / "
                         f"{row['mixed_precision']} | {'yes' if row['checkpointing'] else 'no'} | {row['batch']} | "
                         f"**failed: {row['error']}** | | | |")
            continue
        memory = " / ".join(f"{v / 1024:.1f} GiB" if v is not None else "-"
                            for v in (row["cuda_train_max_allocated_mib"], row["cuda_sampling_max_allocated_mib"]))
        lines.append(f"| `{row['preset']}` | {row['kind']} | {row['resolution']} | {row['dtype']} / "
                     f"{row['mixed_precision']} | {'yes' if row['checkpointing'] else 'no'} | {row['batch']} | "
                     f"{row['train_step_s']:.2f} s | {row['sample_step_s']:.3f} s ({row['sample_batch']}) | {memory} "
                     f"| {row['minutes_per_scene']:.0f} ({row['train_steps_per_scene']} steps, "
                     f"{row['samples_per_scene']} x {row['sampling_steps']} sampling steps) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same stages on the CPU, tiny models")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "runs" / "gpu-check"),
                        help="where gpu-check.json and gpu-check.md go (default $OUT, else runs/gpu-check)")
    parser.add_argument("--skip-tests", action="store_true", help="the real-size measurements only")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        from realfill.device import cuda_seen

        print(f"gpu-check: torch {torch.__version__} sees {cuda_seen()}; run it on a machine with a CUDA GPU, or "
              f"`scripts/gpu-check.sh --cpu-dry-run` for the same script on the CPU", file=sys.stderr)
        return 2
    device = "cpu" if args.cpu_dry_run else "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d"), "dry_run": args.cpu_dry_run, "torch": torch.__version__,
              "cuda": torch.version.cuda, "python": platform.python_version(),
              "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"}
    if device == "cuda":
        report["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        report["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    report["tests"] = ({"passed": 0, "failed": 0, "skipped": 0, "seconds": 0, "returncode": 0} if args.skip_tests
                       else run_tests(device, args.out, args.cpu_dry_run))
    print(f"gpu-check: tests {report['tests']['passed']} passed, {report['tests']['failed']} failed, "
          f"{report['tests']['skipped']} skipped", flush=True)
    report["real_size"] = []
    for preset in PRESETS:
        row = measure(preset_case(preset, args.cpu_dry_run), device)
        report["real_size"].append(row)
        print(f"gpu-check: {preset}: " + (f"FAILED ({row['error']})" if "error" in row else
              f"train step {row['train_step_s']} s, sampling step {row['sample_step_s']} s, "
              f"{row['minutes_per_scene']} min per scene"), flush=True)
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(report))
    print(f"gpu-check: wrote {args.out / 'gpu-check.json'} and {args.out / 'gpu-check.md'}")
    failed = report["tests"]["returncode"] != 0 or any("error" in row for row in report["real_size"])
    if failed:
        for row in report["real_size"]:
            if "error" in row:
                print(f"gpu-check: {row['preset']} FAILED: {row['error']}\n{row['output_tail']}", file=sys.stderr)
        if report["tests"]["returncode"] != 0:
            print(f"gpu-check: the cuda tests FAILED\n{report['tests'].get('output_tail', '')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
