"""``realfill fill``: the smoke preset writes the whole run folder and keeps the target's known pixels
exactly outside the feathered band; bad scenes give one line, exit 2, and touch no existing run folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realfill.cli import main
from tests.material import known_pixels_kept
from realfill.scene import load_scene, read_rgb


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, example_scene):
    run_dir = tmp_path_factory.mktemp("fill") / "run"
    assert main(["fill", str(example_scene), "--preset", "smoke", "--out", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow
def test_smoke_fill_writes_the_whole_run_folder(smoke_run, example_scene):
    for name in ("config.toml", "adapter/pytorch_lora_weights.safetensors", "train_log.jsonl", "ranking.json",
                 "result.png", "contact_sheet.png"):
        assert (smoke_run / name).is_file(), name
    config = tomllib.loads((smoke_run / "config.toml").read_text())
    assert config["backbone"]["name"] == "tiny-sd2" and config["train"]["batch_size"] == 16
    samples = sorted((smoke_run / "samples").glob("*.png"))
    assert [p.name for p in samples] == [f"{i:03d}.png" for i in range(config["sample"]["num_samples"])]
    ranking = json.loads((smoke_run / "ranking.json").read_text())
    assert sorted(r["file"] for r in ranking) == [p.name for p in samples]
    assert [r["rank"] for r in ranking] == list(range(1, len(samples) + 1))
    log = [json.loads(line) for line in (smoke_run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == config["train"]["steps"]
    scene = load_scene(example_scene)
    result = read_rgb(smoke_run / "result.png")
    assert np.array_equal(result, read_rgb(smoke_run / "samples" / ranking[0]["file"]))
    dilate, feather = config["sample"]["mask_dilate"], config["sample"]["feather"]
    for path in [smoke_run / "result.png", *samples]:
        image = read_rgb(path)
        assert image.shape == scene.target.shape
        assert known_pixels_kept(image, scene.target, scene.mask, dilate, feather), path
        assert not np.array_equal(image[scene.mask], scene.target[scene.mask])
    sheet = Image.open(smoke_run / "contact_sheet.png")
    assert sheet.width > 300 and sheet.height > 3 * 128


def test_fill_ends_with_the_comparison_against_the_baselines(smoke_run, example_scene):
    """The scene has a gt.png: comparison.json holds the run and telea, geometric and multi-homography on
    the same metrics, each value with its direction, the baselines' results beside it."""
    record = json.loads((smoke_run / "comparison.json").read_text())
    assert [m["method"] for m in record["methods"]] == ["this run (tiny-sd2)", "telea", "geometric", "multi-homography"]
    assert record["shown"] == ["psnr_masked", "ssim_masked", "vif_masked", "sharpness_masked"]
    for method in record["methods"]:
        assert set(method["values"]) == set(record["higher_is_better"]) >= set(record["shown"])
        assert (smoke_run / method["result"]).is_file()
    scene = load_scene(example_scene)
    from realfill_plugins.metrics.pixel import psnr

    run = record["methods"][0]["values"]["psnr_masked"]
    assert run == pytest.approx(psnr(read_rgb(smoke_run / "result.png"), scene.gt, scene.mask))
    geometric = record["methods"][2]["values"]["psnr_masked"]
    assert ("geometric" in record["run_beaten_on"].get("psnr_masked", [])) == (geometric > run)


def test_run_record_lets_evaluate_find_the_scene(smoke_run, example_scene, capsys):
    record = json.loads((smoke_run / "run.json").read_text())
    assert Path(record["scene"]) == example_scene.resolve() and "disclaimer" not in record  # tiny-sd2 has none
    capsys.readouterr()
    assert main(["evaluate", str(smoke_run), "--json"]) == 0  # no --scene needed
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert "psnr" in json.dumps(metrics)


def test_contact_sheet_shows_the_top_correspondences(smoke_run):
    """On the sheet when they fit in one row, else in their own file that the sheet names."""
    pictures = sorted((smoke_run / "correspondences").glob("*.png"))
    assert pictures and pictures[0].name == "001.png"
    sheet = Image.open(smoke_run / "contact_sheet.png")
    extra = smoke_run / "contact_sheet_correspondences.png"
    if len(pictures) > 1:  # four pictures as wide as two targets each: two rows
        assert extra.is_file() and Image.open(extra).height >= 2 * 250
    assert sheet.height >= 4 * 250  # inputs, result beside baselines and gt, samples: target-sized tiles


def test_existing_run_folder_needs_resume(smoke_run, example_scene, capsys):
    before = _digest(smoke_run)
    assert main(["fill", str(example_scene), "--preset", "smoke", "--out", str(smoke_run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["fill", str(example_scene), "--preset", "smoke", "--steps", "3", "--out", str(smoke_run), "--resume"]) == 2
    assert _digest(smoke_run) == before


@pytest.mark.slow
def test_resume_of_a_finished_run_reuses_its_training(smoke_run, example_scene, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke_run, copy)
    log = (copy / "train_log.jsonl").read_text()
    assert main(["fill", str(example_scene), "--config", str(copy / "config.toml"), "--out", str(copy), "--resume"]) == 0
    assert (copy / "train_log.jsonl").read_text() == log  # no training again
    for sample in sorted((smoke_run / "samples").glob("*.png")):  # the same seed: the same samples
        assert np.array_equal(read_rgb(sample), read_rgb(copy / "samples" / sample.name))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _bad_scenes(example_scene: Path, root: Path) -> dict[str, tuple[Path, str]]:
    def scene(name):
        target = root / name
        shutil.copytree(example_scene, target)
        return target

    out = {}
    s = scene("no_refs")
    shutil.rmtree(s / "ref")
    (s / "ref").mkdir()
    out["no_refs"] = (s, "no reference images")
    s = scene("too_many")
    for i in range(4):
        shutil.copy(s / "ref" / "left_a.png", s / "ref" / f"extra_{i}.png")
    out["too_many"] = (s, "max_references")
    s = scene("mask_size")
    Image.open(s / "target" / "mask.png").resize((50, 40)).save(s / "target" / "mask.png")
    out["mask_size"] = (s, "same size")
    s = scene("empty_mask")
    size = Image.open(s / "target" / "mask.png").size
    Image.new("L", size, 0).save(s / "target" / "mask.png")
    out["empty_mask"] = (s, "nothing to fill")
    s = scene("full_mask")
    Image.new("L", size, 255).save(s / "target" / "mask.png")
    out["full_mask"] = (s, "whole target")
    s = scene("not_image")
    (s / "ref" / "left_b.png").write_text("this is not a picture")
    out["not_image"] = (s, "not a readable image")
    return out


def test_bad_scenes_exit_2_with_one_line_and_touch_nothing(example_scene, tmp_path, capsys):
    run_dir = tmp_path / "existing_run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text("seed = 0\n")
    (run_dir / "result.png").write_bytes(b"an earlier result")
    before = _digest(run_dir)
    for name, (scene, words) in _bad_scenes(example_scene, tmp_path / "scenes").items():
        code = main(["fill", str(scene), "--preset", "smoke", "--out", str(run_dir), "--resume"])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err, (name, err)
        assert _digest(run_dir) == before, name


def test_non_binary_mask_is_thresholded_and_said(example_scene, tmp_path, capsys):
    scene = tmp_path / "gray"
    shutil.copytree(example_scene, scene)
    mask = np.asarray(Image.open(scene / "target" / "mask.png").convert("L")).copy()
    mask[mask == 255] = 200
    Image.fromarray(mask).save(scene / "target" / "mask.png")
    assert main(["fill", str(scene), "--preset", "smoke", "--steps", "1", "--samples", "1",
                 "--set", "sample.steps=1", "--out", str(tmp_path / "run"), "--no-compare"]) == 0
    assert "thresholded" in capsys.readouterr().err
    assert (tmp_path / "run" / "result.png").is_file() and not (tmp_path / "run" / "comparison.json").exists()
