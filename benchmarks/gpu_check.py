"""The first GPU run, as one command (``scripts/gpu-check.sh`` calls this): the ``cuda``-marked tests, then the
real-size SD2, SDXL and FLUX.1 Fill architectures with random weights at their presets' settings, each against
the public recipe's per-step work and the chip's peak, then a bisect of whatever failed; one JSON file and a
markdown report for the GPU section of ``docs/benchmarks.md``.

1. ``pytest -m cuda``: tiny SD2 / SDXL trained and sampled in float16 and bfloat16 with no NaN, LoRA saved
   and read back by stock ``load_lora_weights`` with equal samples, ``full`` in half precision, the SDXL
   VAE's dtype at encode time; tiny-flux LoRA in bfloat16 with checkpointing, its samples and stock
   ``FluxFillPipeline.load_lora_weights``, and the real-width reduced FLUX at ``paper-flux``'s shapes
   (``tests/test_precision.py``, ``tests/test_lora_diffusers.py``, ``tests/test_flux_cuda.py``).
2. The chip's bf16 matrix rate, measured (8192-cube products), beside its datasheet peak (:data:`PEAK_TFLOPS`).
3. ``benchmarks/real_size.py`` per preset (``paper``: SD2 at 512 px, batch 16, float32 weights under bf16
   autocast where the GPU has bf16; ``paper-sdxl``: SDXL at 1024 px, its batch, bf16, gradient
   checkpointing; ``paper-flux``: FLUX.1 Fill at 512 px, batch 4, bf16, rank-64 LoRA, checkpointing),
   weights drawn on the GPU: seconds per training step, ours and the recipe's (``reference_loop.py``, the
   same batches and draws) and their ratio; seconds per sampling step (one denoiser call at the preset's
   sampling batch); each step's FLOPs (``torch.utils.flop_counter``) and the fraction of the chip's bf16
   peak they reach; the ten costliest kernels of one training and one sampling step (``torch.profiler``);
   peak CUDA memory; the minutes a scene would take with the preset's step and sample counts.
4. Where a preset failed: its reduced model (FLUX: 2 double + 2 single blocks, one T5 layer, real width; SD2
   and SDXL: the real model) at the preset's shapes, one step under each SDPA backend (flash, efficient,
   cudnn, math) with and without gradient checkpointing, in one process while the CUDA context survives (a
   fresh one after a fault that poisons it); then the first failing case again with
   ``CUDA_LAUNCH_BLOCKING=1`` under autograd's anomaly mode, naming the operator that faulted.

Every stage has a time limit inside one budget (``--budget``, 8 minutes of GPU time by default) and prints
its line and rewrites the report as it finishes, so a check cut short still says what it measured. It fails
loudly: a failed test, a NaN loss or an out-of-memory ends it with a non-zero exit and says which.
``--cpu-dry-run`` runs the same stages on the CPU with the tiny twins, so the script is tested in CI
(``REALFILL_GPU_CHECK_FAULT`` plants a fault to exercise the bisect there; ``benchmarks/real_size.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_precision.py", "tests/test_lora_diffusers.py", "tests/test_flux_cuda.py"]
#: the GPU presets, each measured at its own settings
PRESETS = ("paper", "paper-sdxl", "paper-flux", "paper-flux-24gb")
#: seconds each stage may take at most on the GPU (each also stops at the budget's end)
STAGE_CAPS = {"tests": 150, "matmul": 30, "paper": 60, "paper-sdxl": 80, "paper-flux": 110, "paper-flux-24gb": 110,
              "bisect": 150, "localize": 45}
#: dense bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets (the sparsity figures halved): H100 and
#: H200 SXM "1,979 teraFLOPS" BF16 with sparsity (H100 / H200 Tensor Core GPU datasheets), H100 PCIe 1,513,
#: A100 "312 TFLOPS" BF16 (A100 datasheet), L40S 733, L4 242, A10 250 with sparsity. Matched on the name
#: torch reports, first match wins.
PEAK_TFLOPS = (("H200 NVL", None), ("H200", 989.5), ("H100 PCIe", 756.5), ("H100 NVL", None), ("H100", 989.5),
               ("A100", 312.0), ("L40S", 366.5), ("L4", 121.0), ("A10", 125.0))
#: the bf16 matrix rate measured on the H200 lent to this project (the lender's notes on its machines:
#: 8192-cube bf16 products on random data, 769-798 TFLOP/s on 2026-10-28 and 2026-11-04; "about 790")
MEASURED_HERE_TFLOPS = {"H200": 790.0}
#: what torch says when the pinned SDPA backend has no kernel for these inputs on this device
UNAVAILABLE = ("no available kernel", "no viable backend for scaled_dot_product_attention")


def spec_peak(device_name: str) -> float | None:
    for key, peak in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


class Budget:
    """One deadline for the whole check; each stage gets its cap or what is left, whichever is less."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return (self.seconds or math.inf) - self.elapsed()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def timeout(self, stage: str, dry_run: bool) -> float | None:
        """The stage's limit in seconds; None for no limit (a dry run without ``--budget``: the CPU has no
        GPU time to save, and a shared CPU runs the tiny twins at any speed)."""
        if dry_run and self.seconds is None:
            return None
        return max(0.0, min(STAGE_CAPS.get(stage, 60), self.left()))

    def spent(self, stage: str, dry_run: bool) -> bool:
        """Whether too little is left to start ``stage`` (5 s: a process does not even import torch in less)."""
        timeout = self.timeout(stage, dry_run)
        return timeout is not None and timeout < 5


def _run(args: list[str], timeout: float | None, env: dict | None = None) -> tuple[int | None, str, str, float]:
    """A child process with a limit: (exit code or None if it ran out of time, stdout, stderr, seconds)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as expired:
        text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
        return None, text(expired.stdout), text(expired.stderr), time.perf_counter() - start


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
            "train_text_encoder": config.adapter.train_text_encoder,
            "quantize": getattr(config.backbone, "quantize", "none")}
    if dry_run:  # the tiny twin, small: the mechanics of the measurement, not its figures
        case.update(kind=f"tiny-{kind}", resolution=64, batch=2, sample_batch=2)
    return case


def run_tests(device: str, out: Path, dry_run: bool, timeout: float | None) -> dict:
    report = out / "gpu-check-tests.xml"
    report.unlink(missing_ok=True)
    env = {"REALFILL_CUDA_TEST_DEVICE": device}
    args = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
            *TESTS]
    if dry_run:  # one case of each kind, to stay within the dry run's minutes
        args += ["-k", "(tiny-sd2 and lora and float16) or vae_encodes or (lora_weights and tiny-sd2) "
                       "or tiny_flux_lora_trains"]
    code, stdout, stderr, seconds = _run(args, timeout, env)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if report.is_file():
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {key: int(suite.get(key, 0)) for key in counts}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    result = {"passed": passed, "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"],
              "seconds": round(seconds, 1), "returncode": code if code is not None else "timeout"}
    if code != 0:
        result["output_tail"] = (stdout + stderr)[-3000:]
        if code is None:
            result["error"] = f"out of time after {seconds:.0f} s (its limit)"
    return result


def matmul_rate(device: str) -> dict:
    """The chip's bf16 matrix rate on random data: ten 8192-cube products after three warm-ups, timed by
    CUDA events (KINDS.md's method); on the CPU a 512-cube product (meaningless, for the dry run)."""
    import torch

    n, reps = (8192, 10) if device == "cuda" else (512, 3)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(reps):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = begin.elapsed_time(end) / 1000
    else:
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = time.perf_counter() - start
    del a, b
    if device == "cuda":
        torch.cuda.empty_cache()  # the children measure peak memory on a device this process shares
    return {"n": n, "products": reps, "tflops": round(2 * n**3 * reps / seconds / 1e12, 1 if device == "cuda" else 4)}


def _real_size_args(case: dict, device: str, kind: str | None = None) -> list[str]:
    args = [sys.executable, str(ROOT / "benchmarks" / "real_size.py"), kind or case["kind"], "--resolution",
            str(case["resolution"]), "--dtype", case["dtype"], "--batch", str(case["batch"]), "--sample-batch",
            str(case["sample_batch"]), "--device", device, "--mixed-precision", case["mixed_precision"],
            "--rank", str(case["lora_rank"]), "--alpha", str(case["lora_alpha"])]
    if not case["train_text_encoder"]:
        args.append("--no-text-encoder")
    if case.get("quantize", "none") != "none":
        args += ["--quantize", case["quantize"]]
    if device == "cpu":
        args += ["--threads", "1"]  # tiny tensors: one thread is fastest on a shared machine
    return args


def _fraction(flops: int | None, seconds: float | None, peak: float | None) -> float | None:
    if not flops or not seconds or not peak:
        return None
    return round(flops / seconds / 1e12 / peak, 4)


def measure(case: dict, device: str, timeout: float | None, peaks: dict) -> dict:
    """One preset: a fresh ``real_size.py`` process with the recipe's step, FLOPs and kernel tables."""
    # three steps each (the first warms up); the dry run: two
    args = _real_size_args(case, device) + ["--train-steps", "3" if device != "cpu" else "2", "--reference",
                                            "--flops", "--profile"]
    if case["kind"].endswith("sd2"):  # the public RealFill recipe trains SD2 in float32 weights under autocast
        args += ["--reference-dtype", "float32"]
    if case["checkpointing"]:
        args.append("--checkpointing")
    code, stdout, stderr, seconds = _run(args, timeout)
    line = next((l for l in stdout.splitlines() if l.startswith("REAL-SIZE ")), None)
    if code != 0 or line is None:
        text = stdout + stderr
        stages = [l.split("stage ", 1)[1].strip() for l in stderr.splitlines() if l.startswith("real-size: stage ")]
        why = ("out of time" if code is None else "out of memory" if "out of memory" in text.lower()
               else f"exit {code}")
        return {**case, "error": why, "failed_stage": stages[-1] if stages else "build", "output_tail": text[-3000:],
                "seconds": round(seconds, 1)}
    figures = json.loads(line.removeprefix("REAL-SIZE "))
    best = lambda steps: min(steps[1:]) if len(steps) > 1 else steps[0]  # noqa: E731 (the first step warms up)
    train_step, reference_step = best(figures["train_step_s"]), best(figures["reference_train_step_s"])
    batches = math.ceil(case["samples_per_scene"] / case["sample_batch"])
    # the preset's scene: its training steps, then its samples in batches, each batch one denoiser call per
    # step and one VAE encode + decode per sample (measured at batch 1)
    minutes = (case["train_steps_per_scene"] * train_step + batches * case["sampling_steps"] * figures["sample_step_s"]
               + case["samples_per_scene"] * figures["sample_vae_encode_decode_s"]) / 60
    result = {**case, "train_step_s": round(train_step, 4), "reference_train_step_s": round(reference_step, 4),
              "speedup_vs_recipe": round(reference_step / train_step, 2),
              "sample_step_s": figures["sample_step_s"], "vae_encode_decode_s": figures["sample_vae_encode_decode_s"],
              "losses": figures["loss"], "reference_losses": figures["reference_loss"],
              "reference_dtype": figures.get("reference_dtype"),
              "train_step_flops": figures["train_step_flops"], "sample_step_flops": figures["sample_step_flops"],
              "lora_trainable_params": figures["lora_trainable_params"], "build_s": figures["build_s"],
              "cuda_train_max_allocated_mib": figures.get("cuda_max_allocated_mib"),
              "cuda_sampling_max_allocated_mib": figures.get("cuda_sampling_max_allocated_mib"),
              "peak_rss_mib": figures["peak_rss_mib"], "minutes_per_scene": round(minutes, 1),
              "train_step_kernels": figures["train_step_kernels"], "sample_step_kernels": figures["sample_step_kernels"],
              "seconds": round(seconds, 1)}
    for name, peak in peaks.items():  # the fraction of each peak the step reached
        result[f"train_peak_fraction_{name}"] = _fraction(figures["train_step_flops"], train_step, peak)
        result[f"sample_peak_fraction_{name}"] = _fraction(figures["sample_step_flops"], figures["sample_step_s"], peak)
    if not all(math.isfinite(x) for x in figures["loss"] + figures["reference_loss"]):
        result["error"] = f"non-finite training loss {figures['loss']} (recipe: {figures['reference_loss']})"
        result["failed_stage"] = "train"
    return result


def _reduced(case: dict) -> tuple[list[str], str]:
    """The ``real_size.py`` arguments of the preset's reduced model, and its name in the report."""
    if case["kind"] == "flux":
        return ["--double-layers", "2", "--single-layers", "2", "--t5-layers", "1"], \
            "FLUX.1 Fill at its real width, 2 double + 2 single blocks, 1 T5 layer"
    return [], f"{case['kind']} (the whole model)"


def bisect_failure(case: dict, device: str, budget: Budget, dry_run: bool) -> dict:
    """The failed preset's reduced model at its shapes, one step per SDPA backend x gradient checkpointing,
    then the first failing case localised (the module docstring, step 4)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_size import ATTENTION_BACKENDS, poisons_context

    stage = "sample" if case.get("failed_stage") == "sample" else "train"
    extra, model = _reduced(case)
    pending = [{"attention": a, "checkpointing": c} for c in (case["checkpointing"], not case["checkpointing"])
               for a in ATTENTION_BACKENDS]
    out = {"model": model, "stage": stage, "cases": [], "processes": 0}
    while pending:  # one process while the CUDA context lives; a fresh one after a fault that poisons it
        timeout = budget.timeout("bisect", dry_run)
        if budget.spent("bisect", dry_run):
            out["cut"] = f"out of time with {len(pending)} cases left"
            break
        args = (_real_size_args(case, device) + extra
                + ["--bisect", json.dumps(pending), "--bisect-stage", stage])
        code, stdout, stderr, _ = _run(args, timeout)
        out["processes"] += 1
        done = [json.loads(l.removeprefix("BISECT ")) for l in stdout.splitlines() if l.startswith("BISECT ")]
        for row in done:
            if not row["passed"] and any(t in row.get("error", "").lower() for t in UNAVAILABLE):
                row["status"] = "unavailable"  # this backend has no kernel for these inputs on this device
            else:
                row["status"] = "pass" if row["passed"] else "FAIL"
            out["cases"].append(row)
            print(f"gpu-check: bisect {model}: attention {row['attention']}, checkpointing "
                  f"{'on' if row['checkpointing'] else 'off'}: {row['status']}"
                  + (f" ({row['error'][:160]})" if row.get("error") else ""), flush=True)
        pending = pending[len(done):]
        if pending and code not in (0, 3):  # died without saying which case: count it against the next one
            why = "out of time" if code is None else f"exit {code}"
            row = {**pending.pop(0), "passed": False, "status": "FAIL", "error": f"the process died ({why}): "
                   + (stdout + stderr)[-300:].replace("\n", " ")}
            out["cases"].append(row)
            print(f"gpu-check: bisect: attention {row['attention']}, checkpointing {row['checkpointing']}: FAIL "
                  f"({why})", flush=True)
            if code is None:
                break
    failing = [c for c in out["cases"] if c["status"] == "FAIL"]
    if failing and not budget.spent("localize", dry_run):  # the first failing case again, each kernel launch waited for, under anomaly mode
        first = failing[0]
        timeout = budget.timeout("localize", dry_run)
        args = _real_size_args(case, device) + extra + ["--localize"]
        if first["attention"] != "auto":
            args += ["--attention", first["attention"]]
        if first["checkpointing"]:
            args.append("--checkpointing")
        code, stdout, stderr, seconds = _run(args, timeout, {"CUDA_LAUNCH_BLOCKING": "1", "TORCH_SHOW_CPP_STACKTRACES": "1"})
        line = next((l for l in stdout.splitlines() if l.startswith("LOCALIZE ")), None)
        found = json.loads(line.removeprefix("LOCALIZE ")) if line else {
            "failed": True, "error": "out of time" if code is None else f"the process died (exit {code})"}
        # anomaly mode prints the forward call of the failing backward node to stderr: keep its frames
        forward = [re.sub(r'File ".*/([^/]+)", line (\d+), in (.*)', r"\1:\2 \3", l.strip())
                   for l in stderr.splitlines() if l.strip().startswith("File ")][-8:]
        out["localize"] = {**found, "case": {k: first[k] for k in ("attention", "checkpointing")},
                           "CUDA_LAUNCH_BLOCKING": "1", "forward_frames": forward, "seconds": round(seconds, 1),
                           "poisons_context": poisons_context(found.get("error", ""))}
        print(f"gpu-check: localised (CUDA_LAUNCH_BLOCKING=1, attention {first['attention']}, checkpointing "
              f"{'on' if first['checkpointing'] else 'off'}): last operator {found.get('last_op')}: "
              f"{found.get('error', 'did not fail this time')}", flush=True)
    return out


def _kernel_md(title: str, table: dict) -> list[str]:
    lines = [f"{title} (by {table['by']} time):", "", "| kernel | self ms | calls | share |", "| --- | --- | --- | --- |"]
    for k in table["kernels"]:
        lines.append(f"| `{k['name'][:90]}` | {k['self_ms']:.2f} | {k['calls']} | {k['share']:.0%} |")
    return lines + [""]


def markdown(report: dict) -> str:
    tests = report.get("tests")
    lines = [f"GPU check ({report['date']}): {report['device']}, torch {report['torch']}, CUDA {report['cuda']}"
             f"{' (CPU dry run: tiny twins, figures meaningless)' if report['dry_run'] else ''}.", ""]
    if tests:
        lines += [f"`pytest -m cuda`: {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped "
                  f"in {tests['seconds']} s{' (' + tests['error'] + ')' if tests.get('error') else ''}.", ""]
    peaks = report.get("peaks_tflops", {})
    if peaks:
        lines += ["bf16 peaks the FLOPs are set against (TFLOP/s): " + ", ".join(
            f"{name} {value}" if value else f"{name} unknown" for name, value in peaks.items()) + ".", ""]
    lines += ["| preset | model | px | weights / autocast | grad. ckpt | batch | train step: ours / recipe (ratio) "
              "| train TFLOP, % of peak (spec / measured) | sampling step (batch), TFLOP, % of peak "
              "| peak CUDA memory, train / sample | minutes per scene |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    pct = lambda x: f"{x:.1%}" if x is not None else "-"  # noqa: E731
    for row in report["real_size"]:
        settings = (f"| `{row['preset']}` | {row['kind']} | {row['resolution']} | {row['dtype']} / "
                    f"{row['mixed_precision']} | {'yes' if row['checkpointing'] else 'no'} | {row['batch']} |")
        if "error" in row and "train_step_s" not in row:
            what = row["error"] if row.get("failed_stage") == "none" else f"failed in {row.get('failed_stage')}: {row['error']}"
            lines.append(f"{settings} **{what}** | | | | |")
            continue
        memory = " / ".join(f"{v / 1024:.1f} GiB" if v is not None else "-"
                            for v in (row["cuda_train_max_allocated_mib"], row["cuda_sampling_max_allocated_mib"]))
        lines.append(
            f"{settings} {row['train_step_s']:.3f} s / {row['reference_train_step_s']:.3f} s "
            f"({row['speedup_vs_recipe']:.2f}x) | {row['train_step_flops'] / 1e12:.3g}, "
            f"{pct(row.get('train_peak_fraction_spec'))} / {pct(row.get('train_peak_fraction_measured'))} | "
            f"{row['sample_step_s']:.4f} s ({row['sample_batch']}), {row['sample_step_flops'] / 1e12:.3g}, "
            f"{pct(row.get('sample_peak_fraction_spec'))} / {pct(row.get('sample_peak_fraction_measured'))} | "
            f"{memory} | {row['minutes_per_scene']:.1f} ({row['train_steps_per_scene']} steps, "
            f"{row['samples_per_scene']} x {row['sampling_steps']} sampling steps) |"
            + (f" **{row['error']}**" if "error" in row else ""))
    lines.append("")
    for row in report["real_size"]:
        if "train_step_kernels" in row:
            lines += [f"### `{row['preset']}`: the ten costliest kernels", ""]
            lines += _kernel_md("One training step", row["train_step_kernels"])
            lines += _kernel_md("One sampling step", row["sample_step_kernels"])
    for preset, found in report.get("bisect", {}).items():
        lines += [f"### Bisect: `{preset}` failed; {found['model']}, {found['stage']} step, "
                  f"{found['processes']} process(es)", "", "| SDPA backend | grad. ckpt | result | seconds | error |",
                  "| --- | --- | --- | --- | --- |"]
        for c in found["cases"]:
            lines.append(f"| {c['attention']} | {'on' if c['checkpointing'] else 'off'} | {c['status']} | "
                         f"{c.get('seconds', '-')} | {c.get('error', '')[:160]} |")
        if found.get("cut"):
            lines.append(f"\n(cut: {found['cut']})")
        loc = found.get("localize")
        if loc:
            lines += ["", f"Localised with CUDA_LAUNCH_BLOCKING=1 and anomaly mode (attention "
                          f"{loc['case']['attention']}, checkpointing {'on' if loc['case']['checkpointing'] else 'off'}): "
                          f"{loc.get('error', 'did not fail again')}; last operator dispatched: "
                          f"`{loc.get('last_op')}`.", ""]
            frames = loc.get("frames", []) + loc.get("forward_frames", [])
            if frames:
                lines += ["```", *frames, "```"]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same stages on the CPU, tiny models")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "runs" / "gpu-check"),
                        help="where gpu-check.json and gpu-check.md go (default $OUT, else runs/gpu-check)")
    parser.add_argument("--skip-tests", action="store_true", help="the real-size measurements only")
    parser.add_argument("--presets", default=",".join(PRESETS), help="which presets (comma-separated)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole check, tests included (default: 480 on a GPU, none in a dry run)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    device = "cpu" if args.cpu_dry_run else "cuda"
    if not args.cpu_dry_run and not torch.cuda.is_available():
        from realfill.device import cuda_seen

        print(f"gpu-check: torch {torch.__version__} sees {cuda_seen()}; run it on a machine with a CUDA GPU, or "
              f"`scripts/gpu-check.sh --cpu-dry-run` for the same script on the CPU", file=sys.stderr)
        return 2
    budget = Budget(args.budget if args.budget is not None or args.cpu_dry_run else 480.0)
    args.out.mkdir(parents=True, exist_ok=True)
    # the CPU work first (settings from the presets), so that the GPU's time goes to the GPU stages
    cases = [preset_case(p, args.cpu_dry_run) for p in args.presets.split(",")]
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    report = {"date": time.strftime("%Y-%m-%d"), "dry_run": args.cpu_dry_run, "torch": torch.__version__,
              "cuda": torch.version.cuda, "python": platform.python_version(), "device": name,
              "budget_s": args.budget, "stages": {}, "real_size": []}
    if device == "cuda":
        report["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        report["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)

    def save(stage: str | None = None, seconds: float | None = None) -> None:
        if stage:
            report["stages"][stage] = {"seconds": round(seconds, 1), "at_s": round(budget.elapsed(), 1)}
        (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "gpu-check.md").write_text(markdown(report))

    if not args.skip_tests and budget.spent("tests", args.cpu_dry_run):
        report["tests"] = {"passed": 0, "failed": 0, "skipped": 0, "seconds": 0, "returncode": "not run",
                           "error": "not run: the check's time budget was spent"}
        print("gpu-check: tests not run (the time budget was spent)", flush=True)
    elif not args.skip_tests:
        report["tests"] = run_tests(device, args.out, args.cpu_dry_run, budget.timeout("tests", args.cpu_dry_run))
        t = report["tests"]
        print(f"gpu-check: tests {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped in "
              f"{t['seconds']} s{' (' + t['error'] + ')' if t.get('error') else ''}", flush=True)
        save("tests", t["seconds"])

    start = time.perf_counter()
    if budget.spent("matmul", args.cpu_dry_run):
        report["matmul"] = {"error": "not run: the check's time budget was spent"}
    else:  # in this process: a fresh one would cost seconds of start-up for 20 ms of products
        report["matmul"] = matmul_rate(device)
    here = next((v for k, v in MEASURED_HERE_TFLOPS.items() if k.lower() in name.lower()), None)
    report["peaks_tflops"] = {"spec": spec_peak(name) if device == "cuda" else None,
                              "measured": report["matmul"].get("tflops"), "device_readme": here}
    print(f"gpu-check: bf16 matrix rate {report['matmul'].get('tflops')} TFLOP/s measured; datasheet peak "
          f"{report['peaks_tflops']['spec']}", flush=True)
    save("matmul", time.perf_counter() - start)

    peaks = {k: v for k, v in report["peaks_tflops"].items()}
    for case in cases:
        if budget.spent(case["preset"], args.cpu_dry_run):
            row = {**case, "error": "not run: the check's time budget was spent", "failed_stage": "none"}
        else:
            row = measure(case, device, budget.timeout(case["preset"], args.cpu_dry_run), peaks)
        report["real_size"].append(row)
        print(f"gpu-check: {case['preset']}: " + (
            f"FAILED in {row.get('failed_stage')} ({row['error']})" if "error" in row else
            f"train step {row['train_step_s']} s (recipe {row['reference_train_step_s']} s, "
            f"{row['speedup_vs_recipe']}x), {row['train_step_flops'] / 1e12:.3g} TFLOP, sampling step {row['sample_step_s']} s, "
            f"{row['minutes_per_scene']} min per scene"), flush=True)
        save(case["preset"], row.get("seconds", 0))

    for row in report["real_size"]:
        if "error" in row and row.get("failed_stage") != "none":
            start = time.perf_counter()
            report.setdefault("bisect", {})[row["preset"]] = bisect_failure(row, device, budget, args.cpu_dry_run)
            save(f"bisect {row['preset']}", time.perf_counter() - start)
    save()
    print(f"gpu-check: wrote {args.out / 'gpu-check.json'} and {args.out / 'gpu-check.md'} "
          f"({budget.elapsed():.0f} s)")
    failed = report.get("tests", {}).get("returncode", 0) != 0 or "error" in report["matmul"] or any("error" in r for r in report["real_size"])
    if failed:
        for row in report["real_size"]:
            if "error" in row:
                print(f"gpu-check: {row['preset']} FAILED: {row['error']}\n{row.get('output_tail', '')}", file=sys.stderr)
        if report.get("tests", {}).get("returncode", 0) != 0:
            print(f"gpu-check: the cuda tests FAILED\n{report['tests'].get('output_tail', '')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
