"""Metrics against independent implementations (scikit-image, scipy) on real photos, to 1e-4; the learned
metrics' loading paths on tiny random-weight networks of the real architectures (the real weights are
not on this machine, so their values are not checked here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from realfill_plugins.metrics import learned, pixel


@pytest.fixture(scope="module")
def pair():
    """A real photo and a degraded copy (noise + blur + shift of part of it), with an outpainting mask."""
    gt = data.astronaut()[60:316, 80:352]  # 256 x 272
    rng = np.random.default_rng(0)
    noisy = gt.astype(np.float64) + rng.normal(0, 18, gt.shape)
    noisy[:, 150:] = np.roll(noisy[:, 150:], 3, axis=0)
    result = np.clip(noisy, 0, 255).astype(np.uint8)
    mask = np.zeros(gt.shape[:2], bool)
    mask[:, 172:] = True
    return result, gt, mask


def skimage_ssim(result, gt):
    return structural_similarity(
        gt, result, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        channel_axis=2, full=True,
    )


def test_psnr_matches_skimage(pair, plugins):
    result, gt, mask = pair
    values = plugins.registry("metric").create(plugins.registry("metric").get("psnr").Config()).compute(result, gt, mask)
    assert values["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, result, data_range=255), abs=1e-4)
    assert values["psnr_masked"] == pytest.approx(
        peak_signal_noise_ratio(gt[mask], result[mask], data_range=255), abs=1e-4
    )
    assert values["psnr_masked"] != pytest.approx(values["psnr"], abs=0.05)  # the mask really selects


def test_psnr_of_identical_images_is_infinite():
    image = data.coffee()
    assert pixel.psnr(image, image) == math.inf


def test_ssim_matches_skimage(pair, plugins):
    result, gt, mask = pair
    values = plugins.registry("metric").create(plugins.registry("metric").get("ssim").Config()).compute(result, gt, mask)
    mean, full = skimage_ssim(result, gt)
    assert values["ssim"] == pytest.approx(mean, abs=1e-4)
    assert values["ssim_masked"] == pytest.approx(full[mask].mean(), abs=1e-4)
    assert 0.1 < values["ssim_masked"] < 0.9


def _scipy_ms_ssim(a, b, betas=pixel.MS_SSIM_BETAS):
    """MS-SSIM written independently with scipy: per scale the contrast-structure mean (SSIM at the last
    scale) over the window-valid interior, 2x2 mean pooling between scales."""
    a, b = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    c1, c2, r = 0.01**2, 0.03**2, 5
    values = []
    for scale in range(len(betas)):
        def blur(x):
            return np.stack([gaussian_filter(x[..., c], 1.5, truncate=3.5, mode="reflect") for c in range(3)], -1)

        mu_a, mu_b = blur(a), blur(b)
        va, vb, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
        cs = (2 * cov + c2) / (va + vb + c2)
        ssim = cs * (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
        values.append((ssim if scale == len(betas) - 1 else cs)[r:-r, r:-r].mean())
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        a = a[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3))
        b = b[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3))
    return float(np.prod(np.array(values) ** np.array(betas)))


def test_ms_ssim_matches_an_independent_implementation(pair, plugins):
    result, gt, mask = pair
    values = plugins.registry("metric").create(plugins.registry("metric").get("ms-ssim").Config()).compute(result, gt, mask)
    assert values["ms_ssim"] == pytest.approx(_scipy_ms_ssim(result, gt), abs=1e-4)
    # the mask's box (256 x 100) has room for 4 scales (100 / 8 >= 11): the exponents are rescaled
    betas = np.array(pixel.MS_SSIM_BETAS[:4]) / sum(pixel.MS_SSIM_BETAS[:4])
    assert values["ms_ssim_masked"] == pytest.approx(
        _scipy_ms_ssim(result[:, 172:], gt[:, 172:], tuple(betas)), abs=1e-4
    )


def test_ssim_single_scale_is_skimage_at_the_last_scale():
    gt = data.chelsea()[:64, :64]
    result = np.roll(gt, 2, axis=1)
    assert pixel.ms_ssim(result, gt, betas=(1.0,)) == pytest.approx(skimage_ssim(result, gt)[0], abs=1e-4)


def test_metrics_order_results_sensibly(pair):
    """A worse degradation scores worse on every pixel metric, inside the mask and out."""
    result, gt, mask = pair
    worse = np.clip(result.astype(int) + np.random.default_rng(1).normal(0, 30, gt.shape), 0, 255).astype(np.uint8)
    for metric in (pixel.PSNR(), pixel.SSIM(), pixel.MSSSIM()):
        good, bad = metric.compute(result, gt, mask), metric.compute(worse, gt, mask)
        assert all(good[k] > bad[k] for k in good), (metric.name, good, bad)


def test_thin_mask_box_gives_nan_ms_ssim_not_an_error(pair):
    result, gt, _ = pair
    mask = np.zeros(gt.shape[:2], bool)
    mask[:, 100:105] = True
    values = pixel.MSSSIM().compute(result, gt, mask)
    assert math.isnan(values["ms_ssim_masked"]) and 0 < values["ms_ssim"] < 1


# -- learned metrics: skipped with the reason when the weights are absent ------------------------------


@pytest.mark.parametrize("name", ["lpips", "dreamsim", "dino", "clip"])
def test_learned_metrics_are_registered_and_say_why_they_cannot_run(name, plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    metric_class = plugins.registry("metric").get(name)
    metric = metric_class(metric_class.Config(weights=tmp_path / "nothing-here"))
    reason = metric.available()
    assert reason, f"{name} claims to be available with no weights"
    if name != "dreamsim" or "not installed" not in reason:
        assert str(tmp_path / "nothing-here") in reason


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    small = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64)
    ViTModel(ViTConfig(**small)).save_pretrained(root / "dino")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**small, projection_dim=16)).save_pretrained(root / "clip")
    alexnet = learned._AlexNetFeatures()
    torch.save({f"features.{k}": v for k, v in alexnet.features.state_dict().items()}, root / learned.ALEXNET_FILE)
    return root


@pytest.mark.parametrize("name,sub", [("dino", "dino"), ("clip", "clip"), ("lpips", ".")])
def test_learned_metrics_load_local_weights_and_compare(name, sub, tiny_weights, plugins):
    """Random-weight networks of the real architectures: identical images are at the metric's optimum,
    different photos are not. (Values of the real networks need their weights.)"""
    metric_class = plugins.registry("metric").get(name)
    metric = metric_class(metric_class.Config(weights=tiny_weights / sub))
    assert metric.available() is None
    a, b = data.astronaut()[:200, :240], data.coffee()[:200, :240]
    same, different = metric.compute(a, a, None)[name], metric.compute(a, b, None)[name]
    if metric_class.higher_is_better:
        assert same == pytest.approx(1.0, abs=1e-5) and different < 0.999
    else:
        assert same == pytest.approx(0.0, abs=1e-6) and different > 1e-3


# -- metrics that do not reward blur (issue 15) --------------------------------------------------------


def _reference_vifp(result: np.ndarray, gt: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """Sheikh & Bovik's pixel-domain VIF (their vifvec.m, 'valid' filtering), in float64 with scipy, on
    8-bit grey levels; the mean over the RGB channels."""
    from scipy.signal import convolve2d

    values = []
    for c in range(3):
        ref, dist = gt[..., c].astype(np.float64), result[..., c].astype(np.float64)
        num = den = 0.0
        for scale in range(1, 5):
            n = 2 ** (4 - scale + 1) + 1
            x = np.arange(n) - (n - 1) / 2
            window = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (n / 5) ** 2))
            window /= window.sum()
            if scale > 1:
                ref = convolve2d(ref, window, mode="valid")[::2, ::2]
                dist = convolve2d(dist, window, mode="valid")[::2, ::2]
            mu1, mu2 = convolve2d(ref, window, mode="valid"), convolve2d(dist, window, mode="valid")
            s1 = np.maximum(convolve2d(ref * ref, window, mode="valid") - mu1 * mu1, 0)
            s2 = np.maximum(convolve2d(dist * dist, window, mode="valid") - mu2 * mu2, 0)
            s12 = convolve2d(ref * dist, window, mode="valid") - mu1 * mu2
            g = s12 / (s1 + 1e-10)
            sv = s2 - g * s12
            g[s1 < 1e-10], sv[s1 < 1e-10], s1[s1 < 1e-10] = 0, s2[s1 < 1e-10], 0
            g[s2 < 1e-10], sv[s2 < 1e-10] = 0, 0
            sv[g < 0], g[g < 0] = s2[g < 0], 0
            sv = np.maximum(sv, 1e-10)
            num += np.log10(1 + g * g * s1 / (sv + sigma_nsq)).sum()
            den += np.log10(1 + s1 / sigma_nsq).sum()
        values.append(num / den)
    return float(np.mean(values))


def test_vif_is_the_reference_vifp_on_8_bit_grey_levels(pair):
    """torchmetrics' VIF on 0-255 images is Sheikh & Bovik's VIF-p (their noise variance 2 is in grey
    levels: fed 0-1 images, the same code would measure something else); the box of the mask for
    vif_masked."""
    from realfill_plugins.metrics.vif import VIF

    result, gt, mask = pair
    values = VIF().compute(result, gt, mask)
    assert values["vif"] == pytest.approx(_reference_vifp(result, gt), abs=2e-4)
    assert values["vif_masked"] == pytest.approx(_reference_vifp(result[:, 172:], gt[:, 172:]), abs=2e-4)
    assert VIF().compute(gt, gt, mask)["vif"] == pytest.approx(1.0, abs=1e-5)
    assert 0 < values["vif"] < 0.9


def test_vif_masked_is_nan_when_the_box_is_smaller_than_its_window(pair):
    from realfill_plugins.metrics.vif import VIF

    result, gt, _ = pair
    mask = np.zeros(gt.shape[:2], bool)
    mask[100:130, 100:180] = True  # 30 rows: under VIF's 41
    values = VIF().compute(result, gt, mask)
    assert math.isnan(values["vif_masked"]) and 0 < values["vif"] < 1


def test_sharpness_is_one_for_the_ground_truth_and_falls_with_blur_and_with_noise(pair):
    from realfill_plugins.metrics.sharpness import Sharpness, energy_ratio

    _, gt, mask = pair
    blurred, noisy = gt.copy(), gt.astype(np.float64)
    blurred[mask] = gaussian_filter(gt.astype(np.float64), (2, 2, 0))[mask].round().astype(np.uint8)
    noisy[mask] += np.random.default_rng(0).normal(0, 25, noisy.shape)[mask]
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    metric = Sharpness()
    assert metric.compute(gt, gt, mask) == {"sharpness_masked": 1.0, "sharpness": 1.0}
    assert energy_ratio(blurred, gt, mask) < 0.1 < 2 < energy_ratio(noisy, gt, mask)  # less detail; more
    for degraded in (blurred, noisy):
        values = metric.compute(degraded, gt, mask)
        assert values["sharpness_masked"] < 0.5 and values["sharpness_masked"] < values["sharpness"] < 1


@pytest.fixture(scope="module")
def geometric_fills(example_scene):
    """The geometric baseline's fill on two real stereo scenes (the bundled one and skimage's pair at
    256 px): its warp is misregistered by the parallax, as every warp of another viewpoint is."""
    from realfill_plugins.baselines.geometric import geometric
    from realfill.scene import load_scene
    from tests.material import stereo_motorcycle_scene

    return [(scene, geometric(scene).image) for scene in (load_scene(example_scene), stereo_motorcycle_scene())]


def test_a_fill_blurred_in_the_hole_wins_on_psnr_and_loses_on_the_blur_aware_metrics(geometric_fills):
    """The issue's measurement: the sharp warp blurred (sigma 2) inside the hole gains masked PSNR on both
    real stereo scenes, and scores worse on sharpness (far worse) and on VIF (inside the mask)."""
    from realfill_plugins.metrics.sharpness import Sharpness
    from realfill_plugins.metrics.vif import VIF

    for scene, sharp in geometric_fills:
        blurred = sharp.copy()
        blurred[scene.mask] = gaussian_filter(sharp.astype(np.float64), (2, 2, 0))[scene.mask].round().astype(np.uint8)
        assert pixel.psnr(blurred, scene.gt, scene.mask) > pixel.psnr(sharp, scene.gt, scene.mask) + 0.4, scene.name
        s_sharp, s_blur = Sharpness().compute(sharp, scene.gt, scene.mask), Sharpness().compute(blurred, scene.gt, scene.mask)
        assert s_blur["sharpness_masked"] < 0.1 < 0.4 < s_sharp["sharpness_masked"], scene.name
        assert s_blur["sharpness"] < s_sharp["sharpness"], scene.name
        v_sharp, v_blur = VIF().compute(sharp, scene.gt, scene.mask), VIF().compute(blurred, scene.gt, scene.mask)
        assert v_blur["vif_masked"] < v_sharp["vif_masked"], scene.name


def test_every_metric_value_states_its_direction(example_scene, plugins):
    from realfill.evaluation import build_metrics, evaluate_images
    from realfill.scene import load_scene

    scene = load_scene(example_scene)
    evaluation = evaluate_images(scene.target, scene.gt, scene.mask, build_metrics(plugins, ["psnr", "vif", "sharpness"]))
    assert set(evaluation.higher_is_better) == set(evaluation.values) >= {"psnr_masked", "vif_masked", "sharpness_masked"}
    assert all(evaluation.higher_is_better.values())
