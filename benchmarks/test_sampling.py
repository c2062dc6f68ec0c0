"""Sampling throughput: N=16 completions drawn in one batch against one at a time (the public inference
script loops 16 single generations), timed in the same run, interleaved, on ``tiny-sd2`` at 64 px with
DDPM. Target: batched >= 1.5x. Sample ``i`` is seeded ``seed + i`` in both, so both paths must give the
same images (checked here). Peak memory of each path: a fresh process.

    pytest benchmarks/test_sampling.py -s --benchmark-columns=median,rounds
"""

from __future__ import annotations

import numpy as np
import pytest
from _stages import make_sampler
from conftest import meets_target, peak_memory, report

TARGET = 1.5
N = 16
STEPS = 20


@pytest.mark.calibration("compute")
@pytest.mark.parametrize("resolution", [64, pytest.param(128, marks=pytest.mark.slow)])
def test_batched_sampling_vs_one_at_a_time(resolution, ratio, benchmark, bench_threads):
    batched = make_sampler(num_samples=N, batch_size=N, resolution=resolution, steps=STEPS)
    single = make_sampler(num_samples=N, batch_size=1, resolution=resolution, steps=STEPS)
    a, b = batched(), single()
    assert len(a) == len(b) == N
    for i, (x, y) in enumerate(zip(a, b)):  # the same samples, whatever the batch size (uint8 rounding aside)
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1, f"sample {i} depends on the batch size"

    result = ratio(single, batched, rounds=5, warmup_rounds=0)
    memory = {name: peak_memory("_stages", "sample_stage", num_samples=N, batch_size=size, resolution=resolution,
                                steps=STEPS) for name, size in (("batched", N), ("single", 1))}
    benchmark.extra_info.update({
        "samples": N, "steps": STEPS, "resolution": resolution,
        "samples_per_s_batched": round(N / result.candidate_median_s, 2),
        "samples_per_s_single": round(N / result.baseline_median_s, 2),
        "peak_rss_mib_batched": round(memory["batched"]["peak_rss_mib"]),
        "peak_rss_mib_single": round(memory["single"]["peak_rss_mib"]),
        "added_peak_rss_mib_batched": round(memory["batched"]["added_peak_rss_mib"]),
        "added_peak_rss_mib_single": round(memory["single"]["added_peak_rss_mib"]),
    })
    report(f"sample {resolution}px N{N} x {STEPS} steps",
           f"batched {N / result.candidate_median_s:.2f} samples/s, one at a time "
           f"{N / result.baseline_median_s:.2f} samples/s, speedup {result.speedup:.2f}x (target {TARGET}x); "
           f"peak RSS batched {memory['batched']['peak_rss_mib']:.0f} MiB, single "
           f"{memory['single']['peak_rss_mib']:.0f} MiB; load {result.load_before:.1f}->{result.load_after:.1f}")
    assert meets_target(result.speedup, TARGET), result.speedup
