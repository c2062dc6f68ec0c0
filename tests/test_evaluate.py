"""``realfill evaluate``: a run folder or a result image against the scene's gt; skipped metrics say why."""

from __future__ import annotations

import json
import shutil
from typing import Literal

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from realfill.cli import main
from realfill.components import ComponentConfig, Metric
from realfill.evaluation import build_metrics, evaluate_images
from realfill.scene import load_scene
from tests.conftest import record_scene


@pytest.fixture
def result_image(example_scene, tmp_path):
    """A plausible result: the ground truth with noise inside the hole, known pixels untouched."""
    scene = load_scene(example_scene)
    rng = np.random.default_rng(0)
    image = scene.gt.astype(np.int16)
    image[scene.mask] += rng.integers(-25, 26, size=image[scene.mask].shape, dtype=np.int16)
    image = np.clip(image, 0, 255).astype(np.uint8)
    path = tmp_path / "result.png"
    Image.fromarray(image).save(path)
    return path, image, scene


@pytest.mark.slow
def test_evaluate_result_json(result_image, example_scene, capsys):
    path, image, scene = result_image
    assert main(["evaluate", str(example_scene), "--result", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    expected = peak_signal_noise_ratio(scene.gt[scene.mask], image[scene.mask], data_range=255)
    assert record["values"]["psnr_masked"] == pytest.approx(expected, abs=1e-4)
    assert record["values"]["psnr"] > record["values"]["psnr_masked"]  # known pixels are exact
    assert set(record["values"]) >= {"psnr", "psnr_masked", "ssim", "ssim_masked", "ms_ssim", "ms_ssim_masked",
                                     "vif", "vif_masked", "sharpness", "sharpness_masked"}
    assert set(record["higher_is_better"]) == set(record["values"])  # every value states its direction
    assert record["higher_is_better"]["sharpness_masked"] is True
    assert 0 < record["values"]["sharpness_masked"] < 1  # the noise added fine detail: r > 1
    for name in ("lpips", "dreamsim", "dino", "clip"):  # no weights on this machine
        assert name in record["skipped"] and record["skipped"][name]


def test_evaluate_run_folder_writes_metrics_json(result_image, example_scene, tmp_path, capsys):
    path, _, _ = result_image
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(path, run_dir / "result.png")
    record_scene(run_dir, example_scene)
    assert main(["evaluate", str(run_dir), "--metric", "psnr", "--metric", "ssim"]) == 0
    record = json.loads((run_dir / "metrics.json").read_text())
    assert set(record["values"]) == {"psnr", "psnr_masked", "ssim", "ssim_masked"}
    assert "psnr_masked" in capsys.readouterr().out


def test_identical_images_give_infinite_psnr_as_null_in_json(example_scene):
    scene = load_scene(example_scene)
    record = evaluate_images(scene.gt, scene.gt, scene.mask, build_metrics_for("psnr")).as_dict()
    assert record["values"]["psnr"] is None and record["non_finite"]["psnr"] == "inf"


def build_metrics_for(*names):
    from realfill.plugins import RealfillPlugins

    return build_metrics(RealfillPlugins(autoload=False), list(names))


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["evaluate", "nowhere"], "nowhere: no such run folder"),
        (["evaluate", "{scene}", "--result", "missing.png"], "missing.png: no such result image"),
        (["evaluate", "{scene}", "--result", "{img}", "--metric", "psnrr"], "unknown metric 'psnrr' (did you mean 'psnr'?)"),
        (["evaluate", "{scene}", "--result", "{img}", "--metric-weights", "dino"], "expected NAME=PATH"),
        (["evaluate", "{scene}", "--result", "{img}", "--metric-weights", "psnr=/x"], "metric 'psnr' takes no weights"),
        (["evaluate", "{run}"], "the run does not record its scene"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, fragment, result_image, example_scene, tmp_path, capsys):
    path, _, _ = result_image
    run_dir = tmp_path / "bare-run"
    run_dir.mkdir()
    shutil.copy(path, run_dir / "result.png")
    argv = [a.format(scene=example_scene, img=path, run=run_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_a_wrong_sized_result_is_a_user_error(example_scene, tmp_path, capsys):
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "small.png")
    assert main(["evaluate", str(example_scene), "--result", str(tmp_path / "small.png")]) == 2
    assert "result is 10x10 but the ground truth is 370x250" in capsys.readouterr().err


def test_a_failing_metric_is_reported_and_the_others_go_on(example_scene):
    class Broken(Metric):
        name = "broken"

        class Config(ComponentConfig):
            name: Literal["broken"] = "broken"

        def compute(self, result, gt, mask):
            raise RuntimeError("boom")

    scene = load_scene(example_scene)
    evaluation = evaluate_images(scene.gt, scene.gt, scene.mask, [Broken(), *build_metrics_for("ssim")])
    assert evaluation.skipped == {"broken": "failed: RuntimeError: boom"}
    assert evaluation.values["ssim_masked"] == pytest.approx(1.0)


def _run_with_samples(scene, tmp_path, samples: dict[str, np.ndarray], order: list[str]):
    """A run folder as ``realfill fill`` leaves it: samples/, ranking.json best first, result.png = the pick."""
    from realfill.seed_selection import write_ranking

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    for name, image in samples.items():
        Image.fromarray(image).save(run / "samples" / name)
    write_ranking(run / "ranking.json", [{"file": name, "score": -rank, "rank": rank}
                                         for rank, name in enumerate(order, start=1)])
    shutil.copy(run / "samples" / order[0], run / "result.png")
    record_scene(run, scene.root)
    return run


def test_seed_selection_compares_the_pick_with_the_samples_it_was_chosen_from(example_scene, tmp_path, capsys):
    scene = load_scene(example_scene)
    rng = np.random.default_rng(0)
    samples = {}
    for index, noise in enumerate((5, 40, 80)):  # the closer to the truth, the higher the masked PSNR
        image = scene.gt.astype(np.int16)
        image[scene.mask] += rng.integers(-noise, noise + 1, size=image[scene.mask].shape, dtype=np.int16)
        samples[f"{index:03d}.png"] = np.clip(image, 0, 255).astype(np.uint8)
    truth = {name: peak_signal_noise_ratio(scene.gt[scene.mask], image[scene.mask]) for name, image in samples.items()}

    good = _run_with_samples(scene, tmp_path / "good", samples, ["000.png", "002.png", "001.png"])
    assert main(["evaluate", str(good), "--scene", str(example_scene), "--metric", "psnr", "--json"]) == 0
    selection = json.loads(capsys.readouterr().out)["selection"]
    assert selection["pick"] == pytest.approx(truth["000.png"])
    assert selection["mean"] == pytest.approx(np.mean(list(truth.values())))
    assert selection["pick_beats_mean"] and selection["pick_place"] == 1 and selection["samples"] == 3
    assert selection["by_rank"] == pytest.approx([truth["000.png"], truth["002.png"], truth["001.png"]])

    bad = _run_with_samples(scene, tmp_path / "bad", samples, ["002.png", "001.png", "000.png"])
    assert main(["evaluate", str(bad), "--scene", str(example_scene), "--metric", "psnr", "--json"]) == 0
    selection = json.loads(capsys.readouterr().out)["selection"]
    assert not selection["pick_beats_mean"] and selection["pick_place"] == 3
    assert selection["pick_minus_mean"] < -3.0

    # without the psnr metric there is nothing to judge the pick by
    assert main(["evaluate", str(bad), "--scene", str(example_scene), "--metric", "ssim", "--json"]) == 0
    assert "selection" not in json.loads(capsys.readouterr().out)
