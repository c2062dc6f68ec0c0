"""``loftr``: kornia's LoFTR (detector-free dense matching), the matcher the RealFill paper ranks with.

Weights (``outdoor`` or ``indoor``) are looked for at the explicit config path (``ranker.weights``), then
in the torch hub cache under the name kornia downloads them to. No package ships them and nothing is
downloaded (``pretrained=None``). The backbone features of each reference are computed once per scene.
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from realfill.device import torch_device
from realfill.hookspecs import hookimpl
from realfill.ranking import CorrespondenceConfig, CorrespondenceRanker
from realfill.weights import find_weights, hub_checkpoints_dir, load_checkpoint, load_learned_weights

#: the file names kornia's LoFTR(pretrained=...) caches its checkpoints under
HUB_FILES = {"outdoor": "loftr_outdoor.ckpt", "indoor": "loftr_indoor.ckpt"}
HOW = ("download loftr_{variant}.ckpt (kornia's LoFTR weights) on a machine with network access and put it in "
       "the torch hub cache, or give its path with --set ranker.weights=PATH; or rank with --matcher sift")


class LoftrRanker(CorrespondenceRanker):
    name = "loftr"
    summary = "kornia LoFTR (outdoor/indoor), the paper's matcher, RANSAC-verified, on the filled region"
    needs = ("weights: LoFTR outdoor/indoor (ranker.weights or the torch hub cache)",)

    class Config(CorrespondenceConfig):
        name: Literal["loftr"] = "loftr"
        variant: Literal["outdoor", "indoor"] = "outdoor"
        #: a LoFTR checkpoint (a Lightning .ckpt with ``state_dict``, or a plain state dict)
        weights: str | None = None
        #: LoFTR's coarse matching threshold (kornia's default 0.2)
        match_threshold: float = Field(0.2, ge=0, le=1)
        device: str = "auto"

    def __init__(self, config=None):
        super().__init__(config)
        self._model = None

    def weight_file(self):
        variant = self.config.variant
        place = hub_checkpoints_dir() / HUB_FILES[variant]
        return find_weights(f"LoFTR ({variant})", "ranker.weights", self.config.weights, [place],
                            HOW.format(variant=variant))

    def load(self):
        if self._model is not None:
            return self._model
        from kornia.feature import LoFTR as LoFTR_  # heavy: kornia's feature models, only when this ranker loads
        from kornia.feature.loftr.loftr import default_cfg

        path = self.weight_file()
        state = load_checkpoint(path, "ranker.weights")
        state = state.get("state_dict", state)
        state = {k.removeprefix("matcher."): v for k, v in state.items()}
        config = copy.deepcopy(default_cfg)
        config["match_coarse"]["thr"] = self.config.match_threshold
        model = LoFTR_(pretrained=None, config=config)
        load_learned_weights(model, state, path, "ranker.weights")
        device = torch_device(self.config.device)
        self._model = (model.to(device).eval(), device)
        return self._model

    def extract(self, images, regions):
        model, device = self.load()
        gray = np.stack([img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) for img in images])
        batch = torch.from_numpy(gray)[:, None].to(device) / 255
        with torch.inference_mode():
            found = model.extract_features(batch)
        return [{k: v[i : i + 1] for k, v in found.items()} for i in range(len(images))]

    def match(self, candidate_features, reference_features):
        model, _ = self.load()
        with torch.inference_mode():
            out = model({"features0": candidate_features, "features1": reference_features})
        # LoFTR puts pixel centres at +0.5; the rest of the platform at integer coordinates
        xy0 = out["keypoints0"].float().cpu().numpy() - 0.5
        xy1 = out["keypoints1"].float().cpu().numpy() - 0.5
        return xy0, xy1


@hookimpl
def realfill_register_rankers(registry):
    registry.add(LoftrRanker)
