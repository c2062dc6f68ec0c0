"""The ``in-context`` baseline (references and target on one canvas, inpainted by the run's untuned backbone)
on the tiny twins and the bundled real scene: it completes the scene, keeps the known pixels, is the same for
the same seed; it ends ``realfill fill``'s table; and ``realfill ablate`` over a RealBench-laid-out folder
writes the paper's table (realbench.md/json) with it as a row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from realfill.baselines import BaselineContext, run_baseline
from realfill.cli import main
from realfill.config import resolve_config
from tests.material import known_pixels_kept
from realfill.scene import load_scene
from realfill_plugins.baselines.in_context import InContextBaseline, canvas_layout

FAST = ["sample.steps=1", "sample.num_samples=2", "sample.batch_size=2", "train.threads=1"]


def test_the_canvas_keeps_the_native_side_for_one_reference_and_shrinks_for_five():
    assert canvas_layout((512, 512), [(512, 512)], 512, 64) == (512, [512, 512])  # LeftRefill's 512x1024
    assert canvas_layout((1024, 1024), [(1024, 1024)], 1024, 16) == (1024, [1024, 1024])
    height, widths = canvas_layout((250, 370), [(200, 259)] * 5, 512, 64)
    assert height < 512 and height % 64 == 0 and all(w % 64 == 0 for w in widths)
    assert height * sum(widths) <= 2 * 512 * 512 < (height + 64) * sum(canvas_layout((250, 370), [(200, 259)] * 5, 512, 64)[1])
    assert widths[-1] > widths[0]  # each panel keeps its aspect ratio: the wider target is the wider panel
    assert canvas_layout((64, 4000), [(64, 64)], 64, 16)[0] == 16  # never below one size step


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-flux", "tiny-sdxl"])
def test_in_context_completes_the_scene_and_keeps_the_known_pixels(backbone, example_scene, plugins, tmp_path):
    config = resolve_config(preset="smoke", overrides=[f'backbone.name="{backbone}"', *FAST], plugins=plugins)
    scene = load_scene(example_scene)
    path = run_baseline("in-context", scene, tmp_path / "ic", plugins=plugins, config=config)
    result = np.asarray(Image.open(path).convert("RGB"))
    assert result.shape == scene.target.shape
    assert known_pixels_kept(result, scene.target, scene.mask, config.sample.mask_dilate, config.sample.feather)
    assert not np.array_equal(result[scene.mask], scene.target[scene.mask])  # the hole was filled
    record = json.loads((tmp_path / "ic" / "run.json").read_text())
    assert record["backbone"] == backbone and record["references"] == 3 and record["samples"] == 2
    height, width = record["canvas"]
    assert width == sum(record["panel_widths"]) and len(record["panel_widths"]) == 4
    assert height * width <= 2 * 64 * 64  # the tiny twins' native side is 64
    ranking = json.loads((tmp_path / "ic" / "ranking.json").read_text())  # ranked by the run's ranker
    assert sorted(r["file"] for r in ranking) == ["000.png", "001.png"] and ranking[0]["ranker"] == "sift"
    assert (tmp_path / "ic" / "samples" / ranking[0]["file"]).read_bytes() == path.read_bytes()


def test_in_context_is_the_same_for_the_same_seed(example_scene, plugins, tmp_path):
    config = resolve_config(preset="smoke", overrides=FAST, plugins=plugins)
    scene = load_scene(example_scene)
    baseline = InContextBaseline()
    first = BaselineContext(config, plugins, tmp_path / "a")
    once = baseline.complete(scene, first)
    again = baseline.complete(scene, BaselineContext(config, plugins, tmp_path / "b", _model=first.model()))
    assert np.array_equal(once.image, again.image)
    other = config.model_copy(update={"seed": 7})
    moved = baseline.complete(scene, BaselineContext(other, plugins, tmp_path / "c", _model=first.model()))
    assert not np.array_equal(moved.image[scene.mask], once.image[scene.mask])


@pytest.mark.slow
def test_fill_ends_with_a_table_holding_in_context(example_scene, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["fill", str(example_scene), "--preset", "smoke", "--baseline", "in-context", "--out", str(out),
                 "--steps", "2", "--samples", "2", *[a for s in FAST for a in ("--set", s)]])
    assert code == 0
    record = json.loads((out / "comparison.json").read_text())
    assert [m["method"] for m in record["methods"]] == ["this run (tiny-sd2)", "in-context"]
    assert record["methods"][1]["values"]["psnr_masked"] > 0
    assert (out / "baselines" / "in-context" / "ranking.json").is_file()
    assert "in-context" in capsys.readouterr().out  # the table, on stdout (issue 22: `> log` keeps it)


def _realbench_scene(root: Path, gt: np.ndarray, mask: np.ndarray, refs: list[np.ndarray]) -> None:
    (root / "ref").mkdir(parents=True)
    (root / "target").mkdir()
    for i, ref in enumerate(refs):
        Image.fromarray(ref).save(root / "ref" / f"{i}.jpg", quality=95)
    target = gt.copy()
    target[mask] = 255
    Image.fromarray(target).save(root / "target" / "target.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "target" / "mask.png")
    Image.fromarray(gt).save(root / "target" / "gt.png")


@pytest.mark.slow
def test_ablate_over_a_realbench_folder_writes_the_papers_table(tmp_path):
    """Two small real scenes laid out as RealBench (``RealBench/<id>/ref``, ``target/{target,mask,gt}.png``):
    an outpainting one (the astronaut, a reference shifted by 12 px) and an inpainting one (coffee)."""
    bench = tmp_path / "RealBench"
    astronaut = data.astronaut()[::4, ::4].copy()  # 128 x 128
    outpaint = np.zeros(astronaut.shape[:2], bool)
    outpaint[:, 96:] = True
    _realbench_scene(bench / "0", astronaut, outpaint, [np.roll(astronaut, -12, axis=1)])
    coffee = data.coffee()[::4, ::4].copy()  # 100 x 150
    hole = np.zeros(coffee.shape[:2], bool)
    hole[30:70, 50:100] = True
    _realbench_scene(bench / "1", coffee, hole, [coffee[:, 10:], coffee[5:, :]])
    out = tmp_path / "ablation"
    settings = ["train.steps=1", "train.batch_size=2", "train.resolution=32", "train.checkpoint_every=0", *FAST]
    code = main(["ablate", str(bench), "--preset", "smoke", "--baseline", "in-context", "--out", str(out), "--no-tui",
                 *[a for s in settings for a in ("--set", s)]])
    assert code == 0
    table = json.loads((out / "realbench.json").read_text())
    assert table["scenes"] == ["0", "1"]
    assert [c["heading"] for c in table["columns"]] == ["PSNR", "SSIM", "LPIPS", "DreamSim", "DINO", "CLIP"]
    assert {c["heading"]: c["region"] for c in table["columns"]}["PSNR"] == "inside the mask"
    rows = {m["configuration"]: m for m in table["methods"]}
    assert set(rows) == {"base", "in-context"} and rows["in-context"]["method"] == "in-context"
    for row in rows.values():
        assert row["scenes"] == 2 and row["n"]["PSNR"] == 2 and 0 < row["values"]["PSNR"] < 60
    assert table["paper"]["rows"][0]["values"]["PSNR"] == 14.78
    text = (out / "realbench.md").read_text()
    assert "PSNR ↑" in text and "LPIPS ↓" in text and "*paper: RealFill*" in text and "| in-context |" in text
    for name in ("lpips", "dino", "clip"):  # no weights on this machine: skipped with the reason
        if rows["base"]["values"][{"lpips": "LPIPS", "dino": "DINO", "clip": "CLIP"}[name]] is None:
            assert name in table["skipped"] and "Skipped:" in text


def test_a_model_baselines_run_asks_ray_for_a_gpu_where_the_runs_device_is_one():
    from realfill.ablation.executors import RayExecutor

    executor = RayExecutor.__new__(RayExecutor)  # stage_resources only: no cluster needed for an explicit device
    executor.resources = {}
    run = {"kind": "run", "baseline": "in-context", "config": {"device": "cuda"}}
    assert executor.stage_resources(run) == {"num_cpus": 1, "num_gpus": 1}
    assert executor.stage_resources({**run, "config": {"device": "cpu"}}) == {"num_cpus": 1}
    assert executor.stage_resources({"kind": "run", "baseline": "telea"}) == {"num_cpus": 1}  # an image baseline
