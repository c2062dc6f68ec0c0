"""Resuming an ablation: the second identical command against the first, as a ratio timed in the same run.

The issue's target: a second identical ``realfill ablate`` finishes in a small fraction of the first one's
time. The case is the smoke preset (2 rankers x 2 scenes) when the fill pipeline is installed, else the
image baselines (telea, geometric) over the same 2 scenes. Run:
``pytest benchmarks/test_ablate_resume.py --benchmark-only``.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import pytest
from conftest import median_seconds, meets_target
from rich.console import Console

from realfill.ablation import Configuration, LocalExecutor, build_plan, run_ablation
from realfill.plugins import RealfillPlugins
from realfill.tui import PlainReporter

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["train.steps=2", "train.batch_size=2", "train.resolution=32", "train.checkpoint_every=0",
         "sample.steps=2", "sample.num_samples=2", "sample.batch_size=2"]
TARGET_RATIO = 0.2


def _case(tmp: Path, plugins):
    scenes = [ROOT / "examples" / "motorcycle", tmp / "motorcycle-copy"]
    shutil.copytree(scenes[0], scenes[1])
    try:
        import realfill.run  # noqa: F401

        smoke = "tiny-sd2" in plugins.registry("backbone") and {"sift", "lightglue"} <= set(plugins.registry("ranker").names())
    except ImportError:
        smoke = False
    if smoke:
        configs = [Configuration("sift", ['ranker.name="sift"']), Configuration("lightglue", ['ranker.name="lightglue"'])]
        return "smoke 2 rankers x 2 scenes", lambda out: build_plan(scenes, configs, out, preset="smoke", overrides=SMOKE, plugins=plugins)
    configs = [Configuration("telea", baseline="telea"), Configuration("geometric", baseline="geometric")]
    return "baselines 2 x 2 scenes", lambda out: build_plan(scenes, configs, out, plugins=plugins)


@pytest.mark.calibration("ratio")  # milliseconds of file checks: judged by resumed / first, its name's promise
def test_resumed_ablation_is_a_small_fraction_of_the_first(benchmark, tmp_path):
    plugins = RealfillPlugins(autoload=False)
    name, make_plan = _case(tmp_path, plugins)
    quiet = PlainReporter(Console(file=io.StringIO()))
    firsts, resumes = [], []

    def fresh_then_resume(round_dir=[0]):  # noqa: B006 - a counter across rounds
        round_dir[0] += 1
        plan = make_plan(tmp_path / f"round{round_dir[0]}")
        start = time.perf_counter()
        run_ablation(plan, LocalExecutor(), quiet, metrics=["psnr", "ssim"])
        firsts.append(time.perf_counter() - start)
        return plan

    def resume(plan):
        start = time.perf_counter()
        outcome = run_ablation(plan, LocalExecutor(), quiet, metrics=["psnr", "ssim"])
        resumes.append(time.perf_counter() - start)
        assert outcome.ran["run"] == 0 and outcome.skipped["run"] == len(plan.runs)

    benchmark.pedantic(resume, setup=lambda: ((fresh_then_resume(),), {}), rounds=3, iterations=1)
    ratio = median_seconds(benchmark, resumes) / sorted(firsts)[len(firsts) // 2]
    benchmark.extra_info.update(case=name, first_median_s=sorted(firsts)[len(firsts) // 2], ratio=ratio)
    assert meets_target(ratio, TARGET_RATIO, lower_is_better=True), f"{name}: resumed/first = {ratio:.3f}"
