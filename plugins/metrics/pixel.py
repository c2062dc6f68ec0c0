"""Low-level metrics: PSNR, SSIM and MS-SSIM, inside the mask (as the RealFill paper reports them) and
over the whole image. Images are compared as RGB in [0, 1] (data range 1), in float64.

What "inside the mask" means, per metric:

- ``psnr_masked``: the mean squared error over the masked pixels only (all three channels).
- ``ssim_masked``: the SSIM map (Gaussian window, sigma 1.5, radius 5, K1 0.01, K2 0.03, population
  covariance, symmetric padding; Wang et al. 2004) averaged over the masked pixels only. The whole-image
  ``ssim`` is the same map averaged over all pixels but a 5-pixel border, exactly as scikit-image's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` does.
- ``ms_ssim_masked``: MS-SSIM (Wang et al. 2003: five scales, 2x2 average pooling, exponents 0.0448,
  0.2856, 0.3001, 0.2363, 0.1333) of the mask's bounding box. When the box is too small for five scales
  (the coarsest must be at least 11 pixels a side), the coarser scales are dropped and the remaining
  exponents rescaled to sum to 1.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import get_gaussian_kernel1d

from realfill.components import ComponentConfig, Metric
from realfill.hookspecs import hookimpl

SIGMA = 1.5
RADIUS = int(3.5 * SIGMA + 0.5)  # scipy's gaussian_filter truncate=3.5 -> an 11-tap window
K1, K2 = 0.01, 0.03
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float64 in [0, 1]."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].to(torch.float64) / 255.0


def _symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """scipy.ndimage's 'reflect' mode (d c b a | a b c d), which torch's F.pad does not offer."""
    h, w = x.shape[-2:]
    rows = torch.cat([torch.arange(pad - 1, -1, -1), torch.arange(h), torch.arange(h - 1, h - 1 - pad, -1)])
    cols = torch.cat([torch.arange(pad - 1, -1, -1), torch.arange(w), torch.arange(w - 1, w - 1 - pad, -1)])
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    return x[..., rows, :][..., cols]


def _blur(x: torch.Tensor) -> torch.Tensor:
    kernel = get_gaussian_kernel1d(2 * RADIUS + 1, SIGMA, dtype=x.dtype).reshape(-1)
    c = x.shape[1]
    x = _symmetric_pad(x, RADIUS)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def ssim_maps(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSIM map and the contrast-structure map, both Bx3xHxW, for images in [0, 1]."""
    c1, c2 = K1**2, K2**2
    mu_a, mu_b = _blur(a), _blur(b)
    var_a = _blur(a * a) - mu_a * mu_a
    var_b = _blur(b * b) - mu_b * mu_b
    cov = _blur(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a * mu_a + mu_b * mu_b + c1)
    return luminance * cs, cs


def _interior_mean(x: torch.Tensor) -> float:
    return float(x[..., RADIUS:-RADIUS, RADIUS:-RADIUS].mean())


def psnr(result: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    a, b = to_tensor(result), to_tensor(gt)
    squared = (a - b) ** 2
    if mask is not None:
        squared = squared[..., torch.from_numpy(mask)]
    mse = float(squared.mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(result: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    full, _ = ssim_maps(to_tensor(result), to_tensor(gt))
    if mask is None:
        return _interior_mean(full)
    return float(full[..., torch.from_numpy(mask)].mean())


def ms_ssim(result: np.ndarray, gt: np.ndarray, betas: tuple[float, ...] = MS_SSIM_BETAS) -> float:
    """MS-SSIM of two images; fewer scales (exponents rescaled) when the image is small."""
    a, b = to_tensor(result), to_tensor(gt)
    side = min(a.shape[-2:])
    scales = 1
    while scales < len(betas) and side // 2**scales >= 2 * RADIUS + 1:
        scales += 1
    if side < 2 * RADIUS + 1:
        raise ValueError(f"MS-SSIM needs at least {2 * RADIUS + 1} pixels a side, got {side}")
    weights = torch.tensor(betas[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    values = []
    for scale in range(scales):
        full, cs = ssim_maps(a, b)
        values.append(_interior_mean(full if scale == scales - 1 else cs))
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    stack = torch.tensor(values, dtype=torch.float64).clamp(min=0)  # negative cs would make a complex power
    return float(torch.prod(stack**weights))


def bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


class PSNR(Metric):
    name = "psnr"
    summary = "PSNR (dB) over the masked pixels (psnr_masked) and over the whole image (psnr)"

    class Config(ComponentConfig):
        name: Literal["psnr"] = "psnr"

    def compute(self, result, gt, mask):
        return {"psnr_masked": psnr(result, gt, mask), "psnr": psnr(result, gt)}


class SSIM(Metric):
    name = "ssim"
    summary = "SSIM map (Gaussian 11x11, sigma 1.5) averaged over the masked pixels and over the image"

    class Config(ComponentConfig):
        name: Literal["ssim"] = "ssim"

    def compute(self, result, gt, mask):
        full, _ = ssim_maps(to_tensor(result), to_tensor(gt))
        return {"ssim_masked": float(full[..., torch.from_numpy(mask)].mean()), "ssim": _interior_mean(full)}


class MSSSIM(Metric):
    name = "ms-ssim"
    summary = "MS-SSIM (5 scales) of the mask's bounding box (ms_ssim_masked) and of the whole image"

    class Config(ComponentConfig):
        name: Literal["ms-ssim"] = "ms-ssim"

    def compute(self, result, gt, mask):
        rows, cols = bounding_box(mask)
        values = {"ms_ssim": ms_ssim(result, gt)}
        box_result, box_gt = result[rows, cols], gt[rows, cols]
        if min(box_result.shape[:2]) >= 2 * RADIUS + 1:
            values["ms_ssim_masked"] = ms_ssim(box_result, box_gt)
        else:
            values["ms_ssim_masked"] = math.nan  # the box is thinner than one SSIM window
        return dict(sorted(values.items(), reverse=True))


@hookimpl
def realfill_register_metrics(registry):
    registry.add(PSNR)
    registry.add(SSIM)
    registry.add(MSSSIM)
