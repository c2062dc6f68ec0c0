"""``realfill fill``'s comparison with the baselines, on a run folder made by ``realfill rank`` from real
candidates: the sharp geometric warp blurred at two strengths (a smear, as the from-scratch model makes).
The blurred fill wins masked PSNR over the sharp warp it was made from and loses on sharpness, and the
comparison says so."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from scipy.ndimage import gaussian_filter

from realfill.cli import main
from realfill.comparison import COMPARISON_FILE, compare_run, markdown_table, render_comparison
from realfill.scene import load_scene
from realfill_plugins.baselines.geometric import geometric
from tests.conftest import record_scene


@pytest.fixture(scope="module")
def blurred_run(tmp_path_factory, example_scene):
    run = tmp_path_factory.mktemp("compare") / "run"
    (run / "samples").mkdir(parents=True)
    scene = load_scene(example_scene)
    sharp = geometric(scene).image
    for index, sigma in enumerate((2.0, 3.0)):
        blurred = sharp.copy()
        blurred[scene.mask] = gaussian_filter(sharp.astype(np.float64), (sigma, sigma, 0))[scene.mask].round().astype(np.uint8)
        Image.fromarray(blurred).save(run / "samples" / f"{index:03d}.png")
    record_scene(run, example_scene)
    assert main(["rank", str(example_scene), "--samples", str(run)]) == 0
    return run, scene


@pytest.mark.slow
def test_comparison_json_says_where_a_baseline_wins(blurred_run, plugins):
    run, scene = blurred_run
    record = compare_run(run, scene, plugins=plugins, run_label="blurred warp")
    assert json.loads((run / COMPARISON_FILE).read_text()) == record
    by = {m["method"]: m["values"] for m in record["methods"]}
    assert list(by) == ["blurred warp", "telea", "geometric", "multi-homography"]
    assert all(record["higher_is_better"][k] for k in record["shown"])
    assert by["blurred warp"]["psnr_masked"] > by["geometric"]["psnr_masked"]  # PSNR rewards the blur
    assert by["blurred warp"]["sharpness_masked"] < 0.1 < 0.5 < by["geometric"]["sharpness_masked"]
    assert "geometric" in record["run_beaten_on"]["sharpness_masked"]
    assert "geometric" not in record["run_beaten_on"].get("psnr_masked", [])
    assert record["best"]["sharpness_masked"] in ("geometric", "multi-homography")
    for name in ("telea", "geometric", "multi-homography"):
        assert (run / "baselines" / name / "result.png").is_file()
    sheet = Image.open(run / "contact_sheet.png")  # drawn again, the baselines beside the result
    assert sheet.width >= 5 * scene.target.shape[1]

    console = Console(record=True, width=140)
    console.print(render_comparison(record))
    text = console.export_text()
    assert "sharpness_masked ↑" in text and "a baseline beats this run on" in text and "geometric" in text
    assert markdown_table(record).count("\n") == 2 + 4


def test_fill_refuses_an_unknown_or_pipeline_baseline_before_running(example_scene, tmp_path, capsys):
    code = main(["fill", str(example_scene), "--preset", "cpu", "--baseline", "backbone-untuned", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "not an image baseline" in err and not (tmp_path / "r").exists()


def test_no_comparison_without_ground_truth(blurred_run, tmp_path, plugins):
    run, scene = blurred_run
    scene = copy.copy(scene)  # the fixture's scene stays whole
    scene.gt = None
    copy_dir = tmp_path / "run"
    shutil.copytree(run, copy_dir)
    (copy_dir / COMPARISON_FILE).unlink(missing_ok=True)
    assert compare_run(copy_dir, scene, plugins=plugins) is None and not (copy_dir / COMPARISON_FILE).exists()
