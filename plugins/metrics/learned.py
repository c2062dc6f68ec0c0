"""Learned metrics of the whole image (as the RealFill paper reports them): LPIPS, DreamSim, DINO, CLIP.

They run only when their weights are on this machine; nothing is downloaded. ``available()`` names every
place looked, and the evaluation reports the metric as skipped with that reason.

- ``lpips`` (lower is better): LPIPS v0.1 on AlexNet (Zhang et al. 2018). Needs torchvision's ImageNet
  AlexNet file ``alexnet-owt-7be5be79.pth`` (in ``metric.weights`` or ``$TORCH_HOME/hub/checkpoints``); the
  linear calibration layers ship with torchmetrics (``lpips_models/alex.pth``). AlexNet is built here
  with torchvision's layer layout, so torchvision itself is not needed.
- ``dino`` / ``clip`` (higher is better): cosine similarity of the image embeddings of DINO ViT-S/16
  (``facebook/dino-vits16``: the CLS token) and CLIP ViT-B/32 (``openai/clip-vit-base-patch32``: the
  projected image embedding), loaded with transformers from ``metric.weights`` (a folder written by
  ``save_pretrained``) or the local Hugging Face cache (``local_files_only``). Images are resized (shorter
  side) and centre-cropped to the model's input size and normalised with its mean and std.
- ``dreamsim`` (lower is better): needs the ``dreamsim`` package and its checkpoint folder
  (``metric.weights`` or ``~/.cache/dreamsim``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from realfill.components import ComponentConfig, Metric
from realfill.hookspecs import hookimpl
from realfill.weights import hub_cache_dir, hub_checkpoints_dir

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _to_float(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 255.0


class _LearnedMetric(Metric):
    """Loads its network once, on first use, from the first place that has it."""

    def __init__(self, config=None):
        super().__init__(config)
        self._model = None

    def places(self) -> list[Path | str]:
        raise NotImplementedError

    def find(self) -> Path | str | None:
        raise NotImplementedError

    def available(self) -> str | None:
        if self.find() is None:
            looked = "; ".join(str(p) for p in self.places())
            return f"weights not found (looked in: {looked}); give a local copy with --metric-weights {self.name}=PATH"
        return None


# -- LPIPS ----------------------------------------------------------------------------------------------

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


class _AlexNetFeatures(nn.Module):
    """torchvision's ``alexnet().features`` with the same indices, so its state dict loads as is."""

    taps = (1, 4, 7, 9, 11)  # the ReLU outputs LPIPS compares

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )

    def forward(self, x):
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


class LPIPS(_LearnedMetric):
    name = "lpips"
    summary = "LPIPS v0.1 (AlexNet) distance of the whole image; lower is better"
    needs = ("weights: torchvision AlexNet (alexnet-owt-7be5be79.pth via --metric-weights lpips=PATH or the torch hub cache)",)
    higher_is_better: ClassVar[bool] = False

    class Config(ComponentConfig):
        name: Literal["lpips"] = "lpips"
        weights: Path | None = None  # a folder or the file itself

    def places(self):
        places = []
        if self.config.weights is not None:
            places.append(Path(self.config.weights))
        places.append(hub_checkpoints_dir() / ALEXNET_FILE)
        return places

    def find(self):
        for place in self.places():
            candidate = place / ALEXNET_FILE if place.is_dir() else place
            if candidate.is_file():
                return candidate
        return None

    def _load(self):
        import torchmetrics.functional.image as tm_image

        backbone = _AlexNetFeatures()
        state = torch.load(self.find(), map_location="cpu", weights_only=True)
        backbone.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
        lin_file = Path(tm_image.__file__).parent / "lpips_models" / "alex.pth"
        lin = torch.load(lin_file, map_location="cpu", weights_only=True)
        weights = [lin[f"lin{i}.model.1.weight"] for i in range(5)]
        return backbone.eval(), weights

    def compute(self, result, gt, mask):
        if self._model is None:
            self._model = self._load()
        backbone, weights = self._model
        shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        a, b = [(_to_float(x) * 2 - 1 - shift) / scale for x in (result, gt)]
        with torch.no_grad():
            total = 0.0
            for fa, fb, w in zip(backbone(a), backbone(b), weights, strict=True):
                na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total += float(F.conv2d((na - nb) ** 2, w).mean())
        return {"lpips": total}


# -- DINO and CLIP (transformers) --------------------------------------------------------------------


class _EmbeddingSimilarity(_LearnedMetric):
    repo_id: ClassVar[str] = ""
    mean: ClassVar[tuple] = IMAGENET_MEAN
    std: ClassVar[tuple] = IMAGENET_STD

    def places(self):
        places: list[Path | str] = []
        if self.config.weights is not None:
            places.append(Path(self.config.weights))
        places.append(f"{self.repo_id} in the Hugging Face cache ({hub_cache_dir()})")
        return places

    def find(self):
        if self.config.weights is not None and (Path(self.config.weights) / "config.json").is_file():
            return Path(self.config.weights)
        from huggingface_hub import try_to_load_from_cache  # on use: its module adds 0.3 s to every start-up

        cached = try_to_load_from_cache(self.repo_id, "config.json")
        if isinstance(cached, str):
            return self.repo_id
        return None

    def _model_class(self):
        raise NotImplementedError

    def _embed(self, model, pixels) -> torch.Tensor:
        raise NotImplementedError

    def _preprocess(self, image: np.ndarray, size: int) -> torch.Tensor:
        x = _to_float(image)
        h, w = x.shape[-2:]
        factor = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * factor)), max(size, round(w * factor))), mode="bicubic",
                          align_corners=False, antialias=True)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size].clamp(0, 1)
        return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)

    def compute(self, result, gt, mask):
        if self._model is None:
            self._model = self._model_class().from_pretrained(self.find(), local_files_only=True).eval()
        size = self._model.config.image_size
        with torch.no_grad():
            a = self._embed(self._model, self._preprocess(result, size))
            b = self._embed(self._model, self._preprocess(gt, size))
        return {self.name: float(F.cosine_similarity(a, b).item())}


class DINO(_EmbeddingSimilarity):
    name = "dino"
    summary = "cosine similarity of DINO ViT-S/16 CLS embeddings of the whole image; higher is better"
    needs = ("weights: facebook/dino-vits16 (--metric-weights dino=FOLDER or the Hugging Face cache)",)
    repo_id = "facebook/dino-vits16"

    class Config(ComponentConfig):
        name: Literal["dino"] = "dino"
        weights: Path | None = None

    def _model_class(self):
        from transformers import ViTModel

        return ViTModel

    def _embed(self, model, pixels):
        return model(pixel_values=pixels).last_hidden_state[:, 0]


class CLIP(_EmbeddingSimilarity):
    name = "clip"
    summary = "cosine similarity of CLIP ViT-B/32 image embeddings of the whole image; higher is better"
    needs = ("weights: openai/clip-vit-base-patch32 (--metric-weights clip=FOLDER or the Hugging Face cache)",)
    repo_id = "openai/clip-vit-base-patch32"
    mean, std = CLIP_MEAN, CLIP_STD

    class Config(ComponentConfig):
        name: Literal["clip"] = "clip"
        weights: Path | None = None

    def _model_class(self):
        from transformers import CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection

    def _embed(self, model, pixels):
        return model(pixel_values=pixels).image_embeds


# -- DreamSim ----------------------------------------------------------------------------------------


class DreamSim(_LearnedMetric):
    name = "dreamsim"
    summary = "DreamSim perceptual distance of the whole image; lower is better"
    needs = ("package: dreamsim", "weights: DreamSim checkpoints (--metric-weights dreamsim=FOLDER or ~/.cache/dreamsim)")
    higher_is_better: ClassVar[bool] = False

    class Config(ComponentConfig):
        name: Literal["dreamsim"] = "dreamsim"
        weights: Path | None = None

    def places(self):
        places = [Path(self.config.weights)] if self.config.weights is not None else []
        return places + [Path("~/.cache/dreamsim").expanduser()]

    def find(self):
        for place in self.places():
            if place.is_dir() and any(place.rglob("*.pth")):
                return place
        return None

    def available(self):
        if importlib.util.find_spec("dreamsim") is None:
            return "the dreamsim package is not installed (pip install dreamsim) and its weights are needed too"
        return super().available()

    def compute(self, result, gt, mask):
        if self._model is None:
            from dreamsim import dreamsim

            self._model = dreamsim(pretrained=True, cache_dir=str(self.find()), device="cpu")
        model, preprocess = self._model
        from PIL import Image

        with torch.no_grad():
            distance = model(preprocess(Image.fromarray(result)), preprocess(Image.fromarray(gt)))
        return {"dreamsim": float(distance)}


@hookimpl
def realfill_register_metrics(registry):
    for metric in (LPIPS, DreamSim, DINO, CLIP):
        registry.add(metric)
