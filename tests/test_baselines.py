"""Baselines on real photos: the geometric (homography) baseline recovers a hole that a reference shows,
Telea fills without references, all keep every known pixel; the multi-homography warp against the
single plane (a quality table); baselines as a registered role, validated by name on the command line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from realfill.baselines import run_image_baseline, untuned_config
from realfill.cli import main
from realfill.config import resolve_config
from realfill.scene import Scene, load_scene
from realfill_plugins.baselines.geometric import geometric
from realfill_plugins.baselines.multi_homography import multi_homography, sequential_homographies
from realfill_plugins.baselines.telea import telea
from realfill_plugins.metrics.pixel import psnr, ssim

ROOT = Path(__file__).resolve().parents[1]


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
    for baseline in (telea, geometric, multi_homography):
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

    with pytest.raises(UserError, match="known baselines: backbone-untuned, flux-kontext, flux2-klein, geometric, in-context, multi-homography, qwen-edit-plus, telea, tiny-flux-kontext, tiny-flux2-klein"):
        run_image_baseline("lama", load_scene(example_scene), tmp_path)
    with pytest.raises(UserError, match="not an image operation"):
        run_image_baseline("backbone-untuned", load_scene(example_scene), tmp_path)


@pytest.mark.parametrize("command", [["ablate", "--baselines-only"], ["fill", "--preset", "cpu"]])
def test_an_unknown_baseline_on_the_command_line_is_one_line_exit_2(command, example_scene, tmp_path, capsys):
    code = main([*command[:1], str(example_scene), *command[1:], "--baseline", "lama", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--baseline lama" in err and "backbone-untuned, flux-kontext, flux2-klein, geometric, in-context, multi-homography, qwen-edit-plus, telea, tiny-flux-kontext, tiny-flux2-klein" in err
    assert not (tmp_path / "out").exists()


def test_plugins_json_lists_the_baseline_role(capsys):
    import json

    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    listed = {c["name"]: c for c in data["components"]["baseline"]}
    assert {"telea", "geometric", "multi-homography", "backbone-untuned"} <= set(listed)
    assert listed["multi-homography"]["plugin"] == "realfill_plugins.baselines.multi_homography"


def test_untuned_backbone_is_the_same_run_with_zero_training_steps(plugins):
    try:
        config = resolve_config(preset="smoke", plugins=plugins)
    except Exception as exc:  # the backbone/ranker plugins may not be written yet
        pytest.skip(f"smoke preset does not validate yet: {exc}")
    untuned = untuned_config(config)
    assert untuned.train.steps == 0 and config.train.steps > 0
    assert untuned.sample == config.sample and untuned.backbone == config.backbone


def test_every_builtin_baseline_is_registered(plugins):
    registry = plugins.registry("baseline")
    assert set(registry.names()) == {"telea", "geometric", "multi-homography", "backbone-untuned", "in-context",
                                     "flux-kontext", "tiny-flux-kontext", "flux2-klein", "tiny-flux2-klein",
                                     "qwen-edit-plus"}
    assert [n for n in registry.names() if registry.get(n).kind == "pipeline"] == ["backbone-untuned"]
    assert [n for n in registry.names() if registry.get(n).kind == "model"] == ["in-context"]
    assert registry.get("backbone-untuned").overrides == ("train.steps=0",)
    assert not registry.get("telea").uses_references and registry.get("geometric").uses_references


def test_sequential_ransac_finds_two_planes_in_a_two_plane_scene():
    """Two real photos side by side, each moved by its own homography: the first plane is one of them,
    its inliers removed, the second plane is the other."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 200, (120, 2)).astype(np.float32)
    h1 = np.array([[1.0, 0.05, 10], [0.0, 1.0, 5], [0, 0, 1]])
    h2 = np.array([[0.9, 0.0, 40], [0.05, 0.95, -8], [1e-4, 0, 1]])
    left, right = pts[:70], pts[70:]
    project = lambda h, p: cv2.perspectiveTransform(p.reshape(-1, 1, 2), h).reshape(-1, 2).astype(np.float32)  # noqa: E731
    src = np.concatenate([left, right])
    dst = np.concatenate([project(h1, left), project(h2, right)])
    planes = sequential_homographies(src, dst, max_planes=4, min_inliers=12)
    assert [len(points) for _, points in planes] == [70, 50]
    np.testing.assert_allclose(planes[0][0] / planes[0][0][2, 2], h1, atol=1e-3)
    np.testing.assert_allclose(planes[1][0] / planes[1][0][2, 2], h2, atol=1e-3)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_heldout", ROOT / "examples" / "make_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("heldout")
    module.main(out)
    return out


#: masked PSNR (dB) and SSIM each warp must reach (measured: docs/evaluation.md, "multi-homography"); the
#: multi-plane warp must beat the single plane on both, on every scene
WARP_TABLE = {
    "motorcycle": {"geometric": (15.8, 0.48), "multi-homography": (16.2, 0.49)},
    "motorcycle-mirror": {"geometric": (16.3, 0.47), "multi-homography": (16.35, 0.48)},
    "motorcycle-box": {"geometric": (12.8, 0.14), "multi-homography": (17.2, 0.57)},
    "astronaut-view": {"geometric": (30.5, 0.95), "multi-homography": (31.6, 0.955)},
    "coffee-view": {"geometric": (29.3, 0.865), "multi-homography": (31.2, 0.88)},
}


@pytest.mark.parametrize("name", list(WARP_TABLE))
def test_multi_homography_beats_the_single_plane(name, example_scene, heldout):
    scene = load_scene(example_scene if name == "motorcycle" else heldout / name)
    scores = {}
    for baseline, fill in (("geometric", geometric), ("multi-homography", multi_homography)):
        image = fill(scene).image
        scores[baseline] = (psnr(image, scene.gt, scene.mask), ssim(image, scene.gt, scene.mask))
        floor = WARP_TABLE[name][baseline]
        assert scores[baseline][0] >= floor[0] and scores[baseline][1] >= floor[1], (baseline, scores[baseline])
    assert scores["multi-homography"][0] > scores["geometric"][0] and scores["multi-homography"][1] > scores["geometric"][1]
