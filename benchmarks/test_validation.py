"""The cost of validation strips (``train.validation_steps``): one training step with a validation strip
against one without, timed in the same run, interleaved, on a tiny twin of the ``paper`` preset (``tiny-sd2``,
the paper's LoRA, batch 16, 64 px; the strip at the preset's settings: 4 completions of 50 sampler steps).

A strip comes every ``validation_steps`` steps, so its share of the training time is
``(ratio - 1) / validation_steps``. Target: under 5% at the ``paper`` preset's cadence (every 500 steps).
On a GPU the step is relatively dearer than sampling than on this CPU twin (docs/benchmarks.md: 0.62 s a
step against 0.067 s a sampling step at batch 8 on an H200), so the share there is smaller still.

    pytest benchmarks/test_validation.py -s --benchmark-columns=median,rounds
"""

from __future__ import annotations

import sys

import pytest
import torch
from _stages import SCENE, run_config
from conftest import ROOT, THREADS, meets_target, report, torch_threads

#: the share of training time the strips may take at the paper preset's cadence
TARGET_SHARE = 0.05


def _paper_cadence() -> dict:
    from realfill.config_files import load_preset

    train = load_preset("paper")["train"]
    return {key: train[key] for key in ("validation_steps", "validation_images", "validation_sample_steps")}


@pytest.mark.calibration("ratio")  # judged by its in-run cost (a strip against a step), not a saved median
@pytest.mark.parametrize("threads", [THREADS])
def test_training_step_with_a_validation_strip_vs_without(threads, ratio, benchmark):
    if str(ROOT) not in sys.path:  # the test helpers live under tests/, not in the installed package
        sys.path.insert(0, str(ROOT))
    from tests.material import known_pixels_kept
    from realfill.scene import load_scene
    from realfill.device import model_compute
    from realfill.training import Trainer

    cadence = _paper_cadence()
    plugins, config = run_config("tiny-sd2", resolution=64, batch_size=16, **cadence)
    scene = load_scene(SCENE)

    def trainer():
        model = plugins.registry("backbone").create(config.backbone).load(device="cpu")
        return Trainer(model, plugins.registry("adapter").create(config.adapter),
                       plugins.registry("masking").create(config.masking), scene, config.train, seed=config.seed,
                       compute=model_compute(model, config.train))

    plain, validated = trainer(), trainer()
    strips = []

    def step_and_strip():
        validated.train_step()
        strips.append(validated.sample_validation(scene, config))

    with torch_threads(threads):
        result = ratio(plain.train_step, step_and_strip, rounds=5, warmup_rounds=1)
    # the strip is real: the preset's number of completions at the target's size, the known pixels kept
    assert len(strips[-1]) == cadence["validation_images"] and strips[-1][0].shape == scene.target.shape
    assert known_pixels_kept(strips[-1][0], scene.target, scene.mask, config.sample.mask_dilate, config.sample.feather)
    cost = result.candidate_median_s / result.baseline_median_s  # (step + strip) / step
    share = (cost - 1) / cadence["validation_steps"]
    benchmark.extra_info.update({"threads": threads, "step_s": round(result.baseline_median_s, 4),
                                 "step_and_strip_s": round(result.candidate_median_s, 4),
                                 "cost_ratio": round(cost, 3), "share_at_paper_cadence": round(share, 5)})
    report(f"validation strip {threads}t",
           f"step {result.baseline_median_s * 1000:.0f} ms, step + strip {result.candidate_median_s * 1000:.0f} ms: "
           f"ratio {cost:.2f}; every {cadence['validation_steps']} steps that is {share:.2%} of the training time "
           f"(target < {TARGET_SHARE:.0%}); torch {torch.__version__}; load {result.load_before:.1f}->"
           f"{result.load_after:.1f}")
    assert meets_target(share, TARGET_SHARE, lower_is_better=True), f"{share:.2%} of the training time"
