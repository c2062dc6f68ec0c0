"""Baselines on real photos: the geometric (homography) baseline recovers a hole that a reference shows,
Telea fills without references, and both keep every known pixel."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from realfill import baselines
from realfill.baselines import geometric, run_image_baseline, telea, untuned_config
from realfill.config import resolve_config
from realfill.scene import Scene, load_scene
from realfill_plugins.metrics.pixel import psnr


def synthetic_scene(tmp_path: Path) -> Scene:
    """Target = a real photo with its right third masked; the reference = the same photo seen under a
    known homography (a rotated, scaled, slightly tilted view), so the hole is recoverable exactly."""
    gt = data.astronaut()[::2, ::2].copy()  # 256 x 256
    h, w = gt.shape[:2]
    homography = np.array([[0.9, -0.12, 40.0], [0.1, 0.92, 20.0], [1e-4, -5e-5, 1.0]])
    reference = cv2.warpPerspective(gt, homography, (w + 60, h + 40), flags=cv2.INTER_CUBIC)
    mask = np.zeros((h, w), bool)
    mask[:, int(w * 0.66):] = True
    target = gt.copy()
    target[mask] = 0
    return Scene(tmp_path, "synthetic", [reference], [tmp_path / "ref.png"], target, mask, gt)


def test_geometric_recovers_a_hole_seen_by_a_reference(tmp_path):
    scene = synthetic_scene(tmp_path)
    warped, classical = geometric(scene), telea(scene)
    assert warped.details["warped_coverage"] > 0.9
    assert warped.details["per_reference"][0]["inliers"] >= 50
    good = psnr(warped.image, scene.gt, scene.mask)
    assert good > 24.0, good
    assert good > psnr(classical.image, scene.gt, scene.mask) + 8.0


def test_baselines_keep_the_known_pixels(example_scene):
    scene = load_scene(example_scene)
    for baseline in (telea, geometric):
        image = baseline(scene).image
        assert image.shape == scene.target.shape and image.dtype == np.uint8
        assert np.array_equal(image[~scene.mask], scene.target[~scene.mask])
        assert not np.array_equal(image[scene.mask], scene.target[scene.mask])  # the hole was filled


def test_geometric_beats_telea_on_the_real_stereo_scene(example_scene):
    """The motorcycle scene: references are crops of the left view of a real stereo pair."""
    scene = load_scene(example_scene)
    warped, classical = geometric(scene), telea(scene)
    assert warped.details["warped_coverage"] > 0.5
    assert psnr(warped.image, scene.gt, scene.mask) > psnr(classical.image, scene.gt, scene.mask) + 1.5


def test_geometric_falls_back_to_telea_without_correspondences(tmp_path):
    scene = synthetic_scene(tmp_path)
    flat = np.full_like(scene.references[0], 128)
    scene.references = [flat]
    result = geometric(scene)
    assert "why_no_warp" in result.details and result.details["warped_coverage"] == 0
    assert np.array_equal(result.image, telea(scene).image)


def test_run_image_baseline_writes_a_run_folder_evaluate_reads(example_scene, tmp_path, plugins):
    from realfill.evaluation import build_metrics, evaluate_run

    path = run_image_baseline("telea", load_scene(example_scene), tmp_path / "telea")
    assert path.is_file()
    record = evaluate_run(tmp_path / "telea", build_metrics(plugins, ["psnr"]))
    assert record["values"]["psnr_masked"] == pytest.approx(
        psnr(telea(load_scene(example_scene)).image, load_scene(example_scene).gt, load_scene(example_scene).mask)
    )


def test_unknown_baseline_lists_the_known_ones(example_scene, tmp_path):
    from realfill.errors import UserError

    with pytest.raises(UserError, match="known baselines: telea, geometric, backbone-untuned"):
        run_image_baseline("lama", load_scene(example_scene), tmp_path)


def test_untuned_backbone_is_the_same_run_with_zero_training_steps(plugins):
    try:
        config = resolve_config(preset="smoke", plugins=plugins)
    except Exception as exc:  # the backbone/ranker plugins may not be written yet
        pytest.skip(f"smoke preset does not validate yet: {exc}")
    untuned = untuned_config(config)
    assert untuned.train.steps == 0 and config.train.steps > 0
    assert untuned.sample == config.sample and untuned.backbone == config.backbone


def test_every_baseline_name_is_known():
    assert set(baselines.BASELINE_NAMES) == {"telea", "geometric", "backbone-untuned"}
