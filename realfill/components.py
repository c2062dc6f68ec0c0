"""Component base classes: the contracts each role's plugins implement.

A component is a class with a ``name`` (what users type), a one-line ``summary`` and a pydantic
``Config`` whose ``name`` field is a ``Literal`` of that name, so run configs validate as a union
discriminated on ``name``. Unknown config keys are rejected (``extra="forbid"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

ROLES = ("backbone", "adapter", "masking", "ranker", "metric", "baseline")


class ComponentConfig(BaseModel):
    """Base of every component config. Subclasses set ``name: Literal["their-name"] = "their-name"``."""

    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=())
    name: str


class Component:
    """Base of every component: ``role``, ``name``, ``summary``, ``Config`` and ``needs``."""

    role: ClassVar[str] = ""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: what it needs beyond the core install, e.g. ("weights: LoFTR outdoor",) or ("extra: ray",)
    needs: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig | None = None):
        self.config = config if config is not None else self.Config(name=self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class Backbone(Component):
    """Loads an inpainting diffusion model and exposes what training and sampling need.

    ``load(device, dtype)`` returns an :class:`realfill.diffusion.InpaintModel`.
    """

    role = "backbone"
    #: a plain warning the run folder and contact sheet must carry (e.g. "not the paper's prior"); None if none
    disclaimer: ClassVar[str | None] = None
    #: the side (pixels) the weights were trained at: ``train.resolution`` when a config leaves it unset
    native_resolution: ClassVar[int] = 512
    #: how long a real run would take on a CPU, for the message that stops a GPU config on a machine without
    #: one (``device = "cuda"``); None where there is no such figure
    cpu_estimate: ClassVar[str | None] = None

    def load(self, device: Any = "cpu", dtype: Any = None):  # -> InpaintModel
        raise NotImplementedError


class Adapter(Component):
    """Decides which parameters train, and saves and loads them."""

    role = "adapter"

    def apply(self, model) -> list[dict]:
        """Prepare ``model`` (an InpaintModel) for training; return optimizer param groups with ``lr``."""
        raise NotImplementedError

    def save(self, model, directory) -> None:
        raise NotImplementedError

    def load(self, model, directory) -> None:
        raise NotImplementedError


class MaskingStrategy(Component):
    """Makes the training masks for a batch (1 = region the model must fill)."""

    role = "masking"

    def make_masks(self, batch_size: int, height: int, width: int, *, is_target, target_masks, generator):
        """Return a float tensor ``[B, 1, H, W]`` of 0/1.

        :param is_target: bool tensor ``[B]``, True where the batch item is a crop of the target.
        :param target_masks: float tensor ``[B, 1, H, W]``: the target's own mask cropped like each item
            (zeros for references).
        :param generator: a seeded ``torch.Generator``; all randomness comes from it.
        """
        raise NotImplementedError


@dataclass
class RankScore:
    """A ranker's verdict on one candidate: the score (higher is better) and how it was reached."""

    score: float
    matches: int = 0
    inliers: int | None = None
    per_reference: list[dict] = field(default_factory=list)
    #: for drawing: per reference, (candidate_xy [N,2], reference_xy [N,2]) numpy arrays
    correspondences: list[tuple[Any, Any]] = field(default_factory=list, repr=False)

    def details(self) -> dict:
        return {"matches": self.matches, "inliers": self.inliers, "per_reference": self.per_reference}


class Ranker(Component):
    """Scores candidates by feature correspondences between the filled region and the references."""

    role = "ranker"

    def prepare(self, references: list, mask) -> None:
        """Extract the references' features once per scene. ``references``: HxWx3 uint8 RGB arrays;
        ``mask``: HxW bool array of the target's region to fill."""
        raise NotImplementedError

    def score(self, candidates: list) -> list[RankScore]:
        """Score candidates (HxWx3 uint8 RGB arrays, the target's size) against the prepared references."""
        raise NotImplementedError


class Metric(Component):
    """An image-quality metric between a result and the ground truth, inside the mask and/or overall."""

    role = "metric"
    higher_is_better: ClassVar[bool] = True

    def available(self) -> str | None:
        """None when the metric can run here; otherwise the reason it is skipped (e.g. missing weights)."""
        return None

    def compute(self, result, gt, mask) -> dict[str, float]:
        """``result``/``gt``: HxWx3 uint8 RGB; ``mask``: HxW bool. Returns named values,
        e.g. ``{"psnr_masked": ..., "psnr": ...}``."""
        raise NotImplementedError


@dataclass
class BaselineResult:
    """An image baseline's completion: HxWx3 uint8 RGB at the target's size, the known pixels the
    target's; ``details`` (JSON-able) say how it was made and land in the baseline's ``run.json``."""

    image: Any
    details: dict = field(default_factory=dict)


class Baseline(Component):
    """A completion made without RealFill, evaluated in the same harness (ablations, ``realfill fill``'s
    comparison). Two kinds:

    - ``kind = "image"``: ``complete(scene)`` makes the fill directly (Telea, warping the references).
    - ``kind = "pipeline"``: the fill pipeline itself with ``overrides`` on the run config (e.g. the
      backbone without fine-tuning: ``("train.steps=0",)``); ``complete`` is not called.
    """

    role = "baseline"
    kind: ClassVar[str] = "image"
    #: whether it looks at the references (Telea does not)
    uses_references: ClassVar[bool] = True
    #: for ``kind = "pipeline"``: ``key=value`` overrides on the run config
    overrides: ClassVar[tuple[str, ...]] = ()

    def complete(self, scene) -> BaselineResult:
        """``scene``: a :class:`realfill.scene.Scene` (references, target, mask; its ``gt`` must not be used).
        Raises :class:`realfill.errors.MissingWeightsError` when its weights are not on this machine: the
        comparison and ``realfill ablate`` then report it as skipped, with that message, and go on."""
        raise NotImplementedError
