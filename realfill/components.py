"""Component base classes: the contracts each role's plugins implement.

The roles themselves are declared once, in :data:`BUILTIN_ROLES` at the end of this file: the plugin
manager, the hook specifications, the run config, the command line and ``registry.toml`` all read it.
A plugin adds a role by returning a :class:`Role` from ``realfill_add_roles``.

A component is a class with a ``name`` (what users type), a one-line ``summary`` and a pydantic
``Config`` whose ``name`` field is a ``Literal`` of that name, so run configs validate as a union
discriminated on ``name``. Unknown config keys are rejected (``extra="forbid"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

#: a seed any generator takes: numpy's and most libraries' are 32-bit, torch's 64-bit; the run adds at
#: most ``sample.num_samples - 1`` to ``seed`` for torch, so no sum overflows (docs/method.md "Bounds")
SEED_MAX = 2**32 - 1
#: the type of every seed key (the run's and a component's own, e.g. a tiny backbone's weights)
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
#: the most pixels any side, distance or kernel of a config may be (an RGB image of 8192 x 8192 is 200 MB);
#: ``realfill.config.MAX_SIDE`` for the run's sides, the ceiling of every component's pixel keys
SIDE_MAX = 8192
#: a length in pixels: a side, a margin, a dilation, a blend band (docs/method.md "Bounds")
Pixels = Annotated[int, Field(ge=0, le=SIDE_MAX)]
#: the most denoising steps a sampler or an editor takes: no sampler takes more than the 1000 training
#: timesteps of the models here (as ``sample.steps``)
STEPS_MAX = 1000
#: the most guidance (classifier-free or embedded): far above any published setting (SD 7.5, FLUX Fill 30);
#: 1e300 overflows to black pixels (as ``sample.guidance_scale``)
GUIDANCE_MAX = 100.0
#: intra-op threads, as ``train.threads``
THREADS_MAX = 4096


class ComponentConfig(BaseModel):
    """Base of every component config. Subclasses set ``name: Literal["their-name"] = "their-name"``."""

    # allow_inf_nan=False: every float key of every component is finite (inf and nan refused in one line)
    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=(), allow_inf_nan=False)
    name: str


def accept_old_spellings(data: Any, renamed: dict[str, str]) -> Any:
    """``data`` (a config section, before validation) with each old key of ``renamed`` (old -> new) under its
    new name, in its place; both spellings at once is an error naming them. For a pydantic
    ``model_validator(mode="before")``: older config files and run folders keep loading after a rename."""
    if not isinstance(data, dict) or not any(old in data for old in renamed):
        return data
    for old, new in renamed.items():
        if old in data and new in data:
            raise ValueError(f"'{old}' is the old spelling of '{new}': give one of them")
    return {renamed.get(key, key): value for key, value in data.items()}


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


@dataclass(frozen=True)
class SamplingDefaults:
    """A backbone's own number of sampling steps and guidance: what ``sample.steps`` and
    ``sample.guidance_scale`` left ``auto`` become when the run config is resolved, so config.toml holds the
    numbers used. (``sample.scheduler = "auto"`` stays in the config as written, portable across backbones:
    it is the sampler the model's ``make_scheduler("auto")`` builds, its ``default_scheduler``.)"""

    steps: int = 200
    #: classifier-free guidance (1.0: none), or the embedded guidance of a guidance-distilled model
    guidance_scale: float = 1.0


class Backbone(Component):
    """Loads an inpainting diffusion model and exposes what training and sampling need.

    ``load(device, dtype)`` returns an :class:`realfill.diffusion.InpaintModel`. The class attributes are
    read without loading anything (to resolve a run config, to stop a GPU config on a CPU machine).
    """

    role = "backbone"
    #: a plain warning the run folder and contact sheet must carry (e.g. "not the paper's prior"); None if none
    disclaimer: ClassVar[str | None] = None
    #: the side (pixels) the weights were trained at: ``train.resolution`` when a config leaves it unset
    native_resolution: ClassVar[int] = 512
    #: the sampling steps and guidance a config's ``auto`` takes (default: the paper's 200 steps, guidance 1.0)
    sampling: ClassVar[SamplingDefaults] = SamplingDefaults()
    #: how long a real run would take on a CPU, for the message that stops a GPU config on a machine without
    #: one (``device = "cuda"``); None where there is no such figure
    cpu_estimate: ClassVar[str | None] = None
    #: whether ``load`` returns a model around a diffusers pipeline (``model.pipeline``), which an adapter
    #: such as ``lora`` saves its weights through; False for a bare model (``scratch-pixel``)
    diffusers_pipeline: ClassVar[bool] = True
    #: ``train.resolution`` must be a multiple of this many pixels (FLUX: 16, one 2x2-packed token of its 8x
    #: latents); 1: any side
    resolution_step: ClassVar[int] = 1

    def load(self, device: Any = "cpu", dtype: Any = None):  # -> InpaintModel
        raise NotImplementedError


class Adapter(Component):
    """Decides which parameters train, and saves and loads them."""

    role = "adapter"

    @classmethod
    def check_backbone(cls, backbone: type[Backbone]) -> str | None:
        """Why this adapter cannot train ``backbone`` (its class: nothing is loaded), or None where it can;
        read with the config (``realfill.config.validate_config``), so a pair that cannot run is refused
        before any file is written."""
        return None

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
    - ``kind = "model"``: ``complete(scene, context)`` makes it with the run's own backbone, untuned
      (``in-context``); ``context`` is a :class:`realfill.baselines.BaselineContext` (``config``,
      ``plugins``, ``out_dir``, ``model()``, ``ranker()``).
    - ``kind = "pipeline"``: the fill pipeline itself with ``overrides`` on the run config (e.g. the
      backbone without fine-tuning: ``("train.steps=0",)``); ``complete`` is not called.
    """

    role = "baseline"
    kind: ClassVar[str] = "image"
    #: whether it looks at the references (Telea does not)
    uses_references: ClassVar[bool] = True
    #: for ``kind = "pipeline"``: ``key=value`` overrides on the run config
    overrides: ClassVar[tuple[str, ...]] = ()

    def complete(self, scene, context=None) -> BaselineResult:
        """``scene``: a :class:`realfill.scene.Scene` (references, target, mask; its ``gt`` must not be used);
        ``context``: for ``kind = "model"`` only (image baselines may omit the parameter). Raises
        :class:`realfill.errors.MissingWeightsError` when its weights are not on this machine: the comparison
        and ``realfill ablate`` then report it as skipped, with that message, and go on."""
        raise NotImplementedError


class Tracker(Component):
    """An experiment tracker: receives a run's scalars (loss, learning rates, step time), its validation
    images and its final metrics, and writes them where its tool reads them (TensorBoard's event files,
    an MLflow store). Report only: no stage's output depends on which trackers ran.

    The core drives one per ``--tracker NAME`` (:mod:`realfill.tracking`): ``start`` once, then any number
    of ``log_scalars`` / ``log_image`` / ``log_table``, then ``finish``. A tracker that raises is reported
    as a warning and the run goes on."""

    role = "tracker"
    #: the module whose absence makes it unavailable, and the extra that installs it
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = "tracking"

    def start(self, directory, run_name: str, config: dict) -> None:
        """Begin a run named ``run_name`` whose files go under ``directory`` (a run or ablation folder);
        ``config`` is the run config as plain data (hyper-parameters)."""
        raise NotImplementedError

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_image(self, tag: str, image, step: int) -> None:
        """``image``: HxWx3 uint8 RGB."""
        raise NotImplementedError

    def log_table(self, tag: str, rows: list[dict], step: int) -> None:
        """A table (e.g. the result against the baselines): one dict per row, the same keys in each."""
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


# -- the role table ----------------------------------------------------------------------------------


#: the stages a role's choice can affect, in pipeline order: a later stage's key holds the earlier one's, so
#: two runs that differ only in a ``rank`` role share their training and sampling; ``report``: no stage at all
#: (metrics, baselines, trackers)
STAGES: tuple[str, ...] = ("train", "sample", "rank", "report")
#: a role that does not say which stage it affects is taken to affect training: the safe choice (never merged)
DEFAULT_STAGE = "train"


def _plural_of(word: str) -> str:
    """An English plural for a role that does not give its own: ``postprocess`` -> ``postprocesses``."""
    if word.endswith(("s", "x", "z", "sh", "ch")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


@dataclass(frozen=True)
class Role:
    """One component role, declared once. Everything else (the register hook's spec, the registry, the
    run-config field, the command-line flags, the ablation's stage keys and axes, the report's columns, the
    inventory) is derived from it."""

    #: what the registry and messages call it: ``ranker``
    name: str
    #: the class every component of the role derives from (its ``role`` attribute is ``name``)
    base: type[Component]
    #: the register hook plugins implement: ``realfill_register_rankers(registry)``
    hook: str
    #: for the hook's docstring: what its implementations add, e.g. ``rankers (seed selection ...)``
    adds: str
    #: the run-config field that names the chosen component; None: the role does not enter the run config
    field: str | None = None
    #: the command-line flags of ``fill``, ``train``, ``sample``, ``config`` (one value) and ``ablate`` (an
    #: axis); empty: ``--FIELD``. Only for roles with a ``field``.
    flags: tuple[str, ...] = ()
    #: the flag's help text
    help: str = ""
    #: the component a run config that omits the field gets; None: the field is required (presets give it)
    default: str | None = None
    #: which stage the chosen component affects (one of :data:`STAGES`); None: not declared, taken as
    #: :data:`DEFAULT_STAGE` (see :attr:`affects`)
    stage: str | None = None
    #: what messages call several of them (``rankers``, ``masking strategies``); empty: an English plural of
    #: ``name`` (``postprocess`` -> ``postprocesses``)
    plural: str = ""

    def __post_init__(self) -> None:
        if self.stage is not None and self.stage not in STAGES:
            raise ValueError(f"role '{self.name}': stage {self.stage!r} is not one of {', '.join(STAGES)}")

    @property
    def cli_flags(self) -> tuple[str, ...]:
        if self.field is None:
            return ()
        return self.flags or (f"--{self.field.replace('_', '-')}",)

    @property
    def affects(self) -> str:
        """The stage the role's choice affects: the declared one, else training (never merged)."""
        return self.stage or DEFAULT_STAGE

    @property
    def plural_name(self) -> str:
        return self.plural or _plural_of(self.name)


BUILTIN_ROLES: tuple[Role, ...] = (
    Role("backbone", Backbone, "realfill_register_backbones", "backbone components (inpainting diffusion models)",
         field="backbone", help="backbone component name", stage="train", plural="backbones"),
    Role("adapter", Adapter, "realfill_register_adapters",
         "adapter components (which parameters train, and how they are saved)",
         field="adapter", help="adapter component name", stage="train", plural="adapters"),
    Role("masking", MaskingStrategy, "realfill_register_masking",
         "masking strategies (the training masks of a batch)", field="masking", help="masking strategy name",
         stage="train", plural="masking strategies"),
    Role("ranker", Ranker, "realfill_register_rankers", "rankers (seed selection by feature correspondences)",
         field="ranker", flags=("--matcher", "--ranker"), help="ranker component name", stage="rank",
         plural="rankers"),
    Role("metric", Metric, "realfill_register_metrics", "evaluation metrics (result against ground truth)",
         stage="report", plural="metrics"),
    Role("baseline", Baseline, "realfill_register_baselines",
         "baselines (completions made without RealFill, evaluated beside it; an image baseline implements "
         "``complete(scene)``, a pipeline baseline sets ``overrides``)", stage="report", plural="baselines"),
    # report only (no stage's output depends on it), and repeatable: not a run-config field; chosen with
    # --tracker NAME (repeatable) on fill, train and ablate (realfill.tracking)
    Role("tracker", Tracker, "realfill_register_trackers",
         "experiment trackers (TensorBoard, MLflow, ...: a run's scalars, validation images and metrics)",
         stage="report", plural="trackers"),
)

#: the built-in roles' names, in table order
ROLES: tuple[str, ...] = tuple(role.name for role in BUILTIN_ROLES)
