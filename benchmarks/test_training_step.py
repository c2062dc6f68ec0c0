"""Training-step throughput: our loop against the public recipe's per-step work (benchmarks/reference_loop.py),
timed in the same run, interleaved, on ``tiny-sd2`` with the paper's LoRA (UNet and text encoder train,
dropout 0.1), batch 16, at 64 and 128 px, on one thread and on every core (``ALL_CORES``: what ``realfill
fill`` uses unless ``train.threads`` says otherwise). Two of our loops: ``eager`` (the default) and
``compiled`` (``train.compile = true``: the loss region with the denoiser, the training text encoder and the
VAE encoder through torch.compile, and, by ``train.attention = "auto"``, attention over few query-key pairs
by plain matmuls that inductor fuses; its compile time is reported apart). Target: ours >= 1.3x the reference's
images per second on the CPU, i.e. the compiled loop on every core (one thread and the eager loop are
reported beside it, without a target; docs/benchmarks.md has why).

Same result: the eager loop gives the reference's losses on the same seed (tests/test_reference_loop.py);
the compiled loop gives the eager loop's losses (checked here, first two steps). Peak memory of the
eager loops: a fresh process, two steps, one thread.

    pytest benchmarks/test_training_step.py -s --benchmark-columns=median,rounds
"""

from __future__ import annotations

import time

import pytest
import torch
from _stages import make_trainer
from conftest import ALL_CORES, THREADS, meets_target, peak_memory, report, torch_threads

TARGET = 1.3
BATCH = 16
RESOLUTIONS = [64, pytest.param(128, marks=pytest.mark.slow)]
THREAD_COUNTS = sorted({1, ALL_CORES})


def _seeded(trainer):
    """A train step with the global RNG (LoRA dropout) reseeded from the step number, so two trainers on
    the same seed draw the same dropout masks however their steps are interleaved."""

    def step():
        torch.manual_seed(1000 + trainer.step)
        return trainer.train_step()

    return step


@pytest.mark.calibration("compute")
@pytest.mark.parametrize("threads", THREAD_COUNTS)
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_training_step_eager_vs_reference(resolution, threads, ratio, benchmark):
    ours = make_trainer("ours", resolution=resolution, batch_size=BATCH)
    reference = make_trainer("reference", resolution=resolution, batch_size=BATCH)
    with torch_threads(threads):
        result = ratio(_seeded(reference), _seeded(ours), rounds=7, warmup_rounds=1)

    ours_ips, reference_ips = BATCH / result.candidate_median_s, BATCH / result.baseline_median_s
    benchmark.extra_info.update({"threads": threads, "images_per_s_ours": round(ours_ips, 2),
                                 "images_per_s_reference": round(reference_ips, 2)})
    memory_line = ""
    if threads == THREADS:
        memory = {loop: peak_memory("_stages", "train_stage", loop=loop, resolution=resolution, batch_size=BATCH)
                  for loop in ("ours", "reference")}
        benchmark.extra_info.update({f"{key}_{loop}": round(memory[loop][key]) for loop in memory
                                     for key in ("peak_rss_mib", "added_peak_rss_mib")})
        memory_line = (f"; peak RSS ours {memory['ours']['peak_rss_mib']:.0f} MiB "
                       f"(+{memory['ours']['added_peak_rss_mib']:.0f} by 2 steps), reference "
                       f"{memory['reference']['peak_rss_mib']:.0f} MiB "
                       f"(+{memory['reference']['added_peak_rss_mib']:.0f})")
    report(f"train eager {resolution}px b{BATCH} {threads}t",
           f"ours {ours_ips:.1f} img/s, reference {reference_ips:.1f} img/s, speedup {result.speedup:.2f}x "
           f"(no target: the compiled loop carries it){memory_line}; "
           f"load {result.load_before:.1f}->{result.load_after:.1f}")


@pytest.mark.calibration("compute")
@pytest.mark.parametrize("threads", THREAD_COUNTS)
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_training_step_compiled_vs_reference(resolution, threads, ratio, benchmark):
    compiled = make_trainer("ours", resolution=resolution, batch_size=BATCH, compile=True)
    eager = make_trainer("ours", resolution=resolution, batch_size=BATCH)
    reference = make_trainer("reference", resolution=resolution, batch_size=BATCH)

    with torch_threads(threads):
        start = time.perf_counter()
        compiled_losses = [_seeded(compiled)() for _ in range(2)]  # compiles (forward and backward graphs)
        first_two_s = time.perf_counter() - start
        start = time.perf_counter()
        eager_losses = [_seeded(eager)() for _ in range(2)]
        eager_two_s = time.perf_counter() - start
        # the same result, to inductor float reordering (tests/test_reference_loop.py)
        assert compiled_losses == pytest.approx(eager_losses, rel=1e-3, abs=1e-6)
        result = ratio(_seeded(reference), _seeded(compiled), rounds=7, warmup_rounds=1)

    compile_s = first_two_s - eager_two_s
    saved_per_step = result.baseline_median_s - result.candidate_median_s
    gated = threads == ALL_CORES
    benchmark.extra_info.update({
        "threads": threads,
        "images_per_s_ours_compiled": round(BATCH / result.candidate_median_s, 2),
        "images_per_s_reference": round(BATCH / result.baseline_median_s, 2),
        "compile_s": round(compile_s, 1),
    })
    report(f"train compiled {resolution}px b{BATCH} {threads}t",
           f"ours {BATCH / result.candidate_median_s:.1f} img/s, reference {BATCH / result.baseline_median_s:.1f} "
           f"img/s, speedup {result.speedup:.2f}x ({f'target {TARGET}x' if gated else 'reported, no target'}); "
           f"compile {compile_s:.0f} s (inductor's cache may hold it), repaid after "
           f"{compile_s / saved_per_step:.0f} steps if positive; load {result.load_before:.1f}->{result.load_after:.1f}")
    if gated:
        assert meets_target(result.speedup, TARGET), result.speedup


#: bf16 autocast and SDPA attention, each against fp32 with diffusers' plain attention processor
VARIANTS = {"sdpa": ("no", "sdpa"), "bf16": ("bf16", "default"), "bf16+sdpa": ("bf16", "sdpa")}


@pytest.mark.slow
@pytest.mark.calibration("compute")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_step_precision_and_attention(variant, ratio, benchmark):
    """What bf16 autocast (``train.mixed_precision``) and SDPA attention (``train.attention``) buy our eager
    loop against fp32 with the plain attention processor: 64 px, batch 16, on the GPU where torch sees one,
    else on every CPU core. Reported, no target (a CPU computes bf16 natively only with AVX512-BF16 or AMX,
    and tiny-sd2's attention is a small part of its step). The variant's first two losses stay with fp32's: to
    1e-4 for SDPA, to 5e-2 for bf16."""
    from realfill.device import native_bf16

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision, attention = VARIANTS[variant]
    fp32 = make_trainer("ours", batch_size=BATCH, device=device, mixed_precision="no", attention="default")
    other = make_trainer("ours", batch_size=BATCH, device=device, mixed_precision=precision, attention=attention)
    with torch_threads(ALL_CORES):
        fp32_losses = [_seeded(fp32)() for _ in range(2)]
        other_losses = [_seeded(other)() for _ in range(2)]
        assert other_losses == pytest.approx(fp32_losses, rel=1e-4 if precision == "no" else 5e-2)
        result = ratio(_seeded(fp32), _seeded(other), rounds=7, warmup_rounds=1)
    native = native_bf16(torch.device(device))
    benchmark.extra_info.update({"device": device, "native_bf16": native,
                                 "images_per_s_fp32_default_attention": round(BATCH / result.baseline_median_s, 2),
                                 f"images_per_s_{variant}": round(BATCH / result.candidate_median_s, 2)})
    report(f"train {variant} vs fp32 64px b{BATCH} {device}",
           f"{variant} {BATCH / result.candidate_median_s:.1f} img/s, fp32 with the plain attention processor "
           f"{BATCH / result.baseline_median_s:.1f} img/s: {result.speedup:.2f}x (no target; native bf16: "
           f"{'yes' if native else 'no'}); load {result.load_before:.1f}->{result.load_after:.1f}")


@pytest.mark.slow
def test_tuned_allocator_vs_default():
    """``train.tune_allocator`` (glibc mallopt: no mmap for blocks under 32 MiB, no heap trimming) against
    glibc's defaults, for our eager loop and the reference: process-wide, so each side runs in fresh
    processes (alternating, three each), 2 warm-up steps then 10 timed. No target: it reports the gain
    behind the default (fresh processes on a shared machine vary too much for one)."""
    import statistics

    seconds = {(loop, tuned): [] for loop in ("ours", "reference") for tuned in (True, False)}
    for _ in range(3):
        for loop, tuned in seconds:
            run = peak_memory("_stages", "train_stage", steps=10, warmup=2, loop=loop, batch_size=BATCH,
                              tune_allocator=tuned)
            seconds[loop, tuned].append(run["seconds"])
    median = {key: statistics.median(values) for key, values in seconds.items()}
    for loop in ("ours", "reference"):
        gain = median[loop, False] / median[loop, True]
        report(f"allocator {loop} 64px b{BATCH}",
               f"tuned {10 * BATCH / median[loop, True]:.1f} img/s, glibc default "
               f"{10 * BATCH / median[loop, False]:.1f} img/s: {gain:.2f}x")
