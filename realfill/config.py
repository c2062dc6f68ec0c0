"""The run config: fixed sections (train, sample, select) plus one config per component role.

Component sections are a pydantic union discriminated on ``name``, built from the registries at
run time, so a preset or a ``--set`` typo fails in one validation step with the bad key named.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from realfill.atomic import atomic_write_text
from realfill.components import SIDE_MAX, ComponentConfig, Seed, accept_old_spellings
from realfill.config_files import (COMPONENT_FIELDS, apply_override, base_data, load_preset, parse_override,
                                   preset_names, set_component)
from realfill.device import resolve_device
from realfill.errors import UserError
from realfill.optimizers import check_optimizer_installed
from realfill.plugins import get_plugins



#: the most samples a run holds (they are all in memory, at the target's size, before samples/ is written)
MAX_SAMPLES = 4096
#: training and sampling sides, whatever the backbone; validate_config then ties them to its native side
MAX_SIDE = SIDE_MAX
#: train.resolution at most this many times the backbone's native side (4x its pixels and memory); an
#: explicit sample.resolution twice that (inference holds no gradients)
TRAIN_SIDE_FACTOR, SAMPLE_SIDE_FACTOR = 2, 4
#: training steps (and step intervals): 10 million is beyond any run (the paper trains 2,000)
MAX_STEPS = 10_000_000


class Section(BaseModel):
    # allow_inf_nan=False: every float key is finite (inf and nan are refused in one line)
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


#: keys renamed, by section: old spelling -> new. A config file or run folder with the old one loads, and a
#: resumed folder keeps its spelling (:func:`dump_config`'s ``like``)
OLD_SPELLINGS: dict[str, dict[str, str]] = {"train": {"lr_unet": "lr_denoiser"}}


class TrainConfig(Section):
    """Fine-tuning (DESIGN.md: the paper's recipe is the default)."""

    steps: int = Field(2000, ge=0, le=MAX_STEPS)
    batch_size: int = Field(16, ge=1, le=1024)
    # the side of the square training crops; None: the backbone's native resolution (SD2 512, SDXL 1024)
    resolution: int | None = Field(None, ge=8, le=MAX_SIDE)
    # learning rates and weight decay at most 1: AdamW moves a weight by about lr a step (and decays it by
    # lr * weight_decay of itself), so above 1 the first step blows the weights up to inf/nan
    # the denoiser's (a UNet, a transformer); "lr_unet", its old spelling, is read as it
    lr_denoiser: float = Field(2e-4, gt=0, le=1)
    lr_text_encoder: float = Field(4e-5, gt=0, le=1)
    # diffusers' schedules; "constant" has no warmup (so warmup_steps > 0 with it is refused), its warmed-up
    # form is "constant_with_warmup"
    lr_schedule: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS)
    weight_decay: float = Field(1e-2, ge=0, le=1)
    adam_beta1: float = Field(0.9, ge=0, lt=1)  # torch's AdamW refuses others
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    # at least 1e-30: AdamW divides by sqrt(v) + eps in float32, where a subnormal eps is 0 and 0/0 is nan
    adam_epsilon: float = Field(1e-8, ge=1e-30, le=1)
    # at most 1e6: far above any gradient norm a run reaches (the paper clips at 1), so no clipping at all
    max_grad_norm: float = Field(1.0, gt=0, le=1e6)
    # the optimizer (realfill.optimizers): "adamw" (the paper's), "prodigy" (prodigyopt; its learning rates
    # are multipliers of its own estimate, 1.0 as its authors advise), "adamw-8bit" (torchao's AdamW8bit)
    optimizer: Literal["adamw", "prodigy", "adamw-8bit"] = "adamw"
    # micro-batches of batch_size per optimizer step: the step's batch is batch_size x this, its gradients
    # the same (docs/training.md), its activation memory that of one micro-batch
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    # keep the adapter of every checkpoint step (and the extra snapshot steps an ablation asks for) as
    # adapter/step-NNNNN/; `realfill sample --run R --step N` samples from one
    keep_adapters: bool = False
    # with keep_adapters, at most this many step-NNNNN/ snapshots (the oldest go first); unset: all
    checkpoints_total_limit: int | None = Field(None, ge=1, le=MAX_STEPS)
    prompt: str = "a photo of sks"
    prompt_dropout: float = Field(0.1, ge=0, le=1)
    full_mask_prob: float = Field(0.1, ge=0, le=1)
    crop_scale_min: float = Field(0.5, gt=0, le=1)
    checkpoint_every: int = Field(500, ge=0, le=MAX_STEPS)
    # every N steps, validation_images completions of the target with the current adapter, fixed seeds,
    # as validation/step-NNNNN.png (realfill.validation); 0: off. The GPU presets turn it on
    validation_steps: int = Field(0, ge=0, le=MAX_STEPS)
    validation_images: int = Field(4, ge=1, le=64)
    # the sampler's steps for a validation image; unset: sample.steps (the GPU presets take fewer: cheaper)
    validation_sample_steps: int | None = Field(None, ge=1, le=1000)
    log_every: int = Field(10, ge=1, le=MAX_STEPS)
    # autocast; "auto": for float32 weights bf16 where the device computes it natively (a CUDA GPU of compute
    # capability 8+, a CPU with AVX512-BF16 or AMX), else full float32; for float16 / bfloat16 weights
    # (backbone.dtype) the autocast of that dtype, the only one they train under (fp16 with loss scaling).
    # Unset: the weights' own (float32: "no"; float16: "fp16"; bfloat16: "bf16"). Trainable parameters stay
    # float32 in every mode.
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] | None = None
    # TF32 matmuls and convolutions on CUDA GPUs that have them (Ampere and newer), as the public recipe's
    # --allow_tf32; no effect on a CPU
    allow_tf32: bool = True
    gradient_checkpointing: bool = False
    # the convolutions' weights (SD UNet, VAEs) in channels-last memory order, which cuDNN's fastest
    # kernels take; "auto": on a CUDA GPU, off on a CPU (same arithmetic, other summation order)
    channels_last: bool | Literal["auto"] = "auto"
    # "sdpa": PyTorch's SDPA, its own choice of backend; "default": diffusers' plain processor where there is
    # one; "flash", "efficient", "cudnn", "math": every SDPA call of every model pinned to that backend, in
    # training and sampling. "auto" (realfill.attention.choose_attention): on a Hopper GPU under torch >= 2.11
    # every backend but cuDNN (a defence: NaN-gradient reports pytorch#196678, cudnn-frontend#1072); with
    # train.compile on a CPU, attention over at most 64 x 64 query-key pairs per head takes the plain matmuls, which inductor fuses (SmallMathAttnProcessor,
    # docs/benchmarks.md); elsewhere SDPA's own choice
    attention: Literal["auto", "sdpa", "default", "flash", "efficient", "cudnn", "math"] = "auto"
    threads: int | None = Field(None, ge=1, le=4096)
    # frozen text encoders leave the device for the CPU once the prompts are encoded (the trainer keeps the
    # encoded prompts) and come back for sampling: T5-XXL's 9.5 GB in bfloat16 for FLUX (docs/architecture.md).
    # Unset: on for a CUDA device. Only when no text encoder trains.
    offload_text_encoders: bool | None = None
    # torch.compile the denoiser, the text encoders that train and the VAE encoder: minutes to compile,
    # then faster steps (docs/benchmarks.md)
    compile: bool = False
    # keep freed CPU memory in the process (glibc mallopt) so steps stop page-faulting their activations
    # back in: 1.14-1.17x the CPU step rate here, same arithmetic (docs/benchmarks.md)
    tune_allocator: bool = True


    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data: Any) -> Any:
        return accept_old_spellings(data, OLD_SPELLINGS["train"])


class SampleConfig(Section):
    """Sampling (DESIGN.md: DDPM, 200 steps, guidance 1.0, 64 samples). ``auto`` is the backbone's own
    (``Backbone.sampling``; for the SD family the paper's DDPM, 200 steps, guidance 1.0; for FLUX
    flow-matching Euler, 50 steps, guidance 30); :func:`validate_config` puts the numbers in."""

    # "auto": the backbone's own sampler (DDPM for the SD family, as the paper; flow-matching Euler for FLUX),
    # kept as "auto" in the resolved config: the model's make_scheduler decides
    scheduler: Literal["ddpm", "ddim", "dpm", "euler", "auto"] = "auto"
    # at most 1000: no sampler takes more steps than the 1000 training timesteps
    steps: Annotated[int, Field(ge=1, le=1000)] | Literal["auto"] = "auto"
    # classifier-free guidance for the SD family (1.0: none); for a guidance-distilled model (FLUX) the
    # embedded guidance (FLUX Fill's default: 30)
    # at most 100: far above any published setting (SD 7.5, FLUX Fill 30); 1e300 overflows to black pixels
    guidance_scale: Annotated[float, Field(ge=0, le=100)] | Literal["auto"] = "auto"
    num_samples: int = Field(64, ge=1, le=MAX_SAMPLES)
    # samples drawn at once (each is seeded on its own: the batch changes speed, not samples); "auto": on a
    # CUDA GPU as many as its free memory holds, by the memory the first sample took; elsewhere 8
    batch_size: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] | Literal["auto"] = 8
    prompt: str | None = None  # None: the training prompt
    #: the longer side to sample at; None: the training scale, i.e. the target's short side maps to
    #: train.resolution as in training's full-size crops (a model trained from scratch knows only that scale)
    resolution: int | None = Field(None, ge=8, le=MAX_SIDE)
    mask_dilate: int = Field(8, ge=0, le=MAX_SIDE)  # pixels, at the target's size, grown before compositing
    feather: int = Field(8, ge=0, le=MAX_SIDE)  # pixels of the blend band


class SelectConfig(Section):
    """Seed selection: how many ranked samples to keep (the paper keeps the top 25-75%)."""

    keep: int | None = Field(None, ge=1, le=MAX_SAMPLES)
    keep_fraction: float = Field(0.25, gt=0, le=1)


class RunConfigBase(Section):
    seed: Seed = 0  # 0 to 2**32 - 1 (components.SEED_MAX); sample i draws from seed + i
    device: str = "auto"
    max_references: int = Field(5, ge=1, le=1000)
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    select: SelectConfig = SelectConfig()
    #: each baseline's own settings, by name (``--set baselines.flux-kontext.model=PATH``), validated against
    #: that baseline's config in :func:`validate_config`; unset: every baseline's defaults
    baselines: dict[str, dict[str, Any]] | None = None


_model_cache: dict[tuple, type[RunConfigBase]] = {}


def _component_type(configs: list[type[ComponentConfig]], role: str) -> Any:
    if not configs:
        raise UserError(f"no {role} component is registered; is a plugin blocked or broken? (see `realfill plugins`)")
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[tuple(configs)], Field(discriminator="name")]  # noqa: UP007


def _component_field(role, configs: tuple[type[ComponentConfig], ...], plugins) -> tuple[Any, Any]:
    """(type, default) of a role's run-config field: required, or the role's default component."""
    if role.default is None:
        return _component_type(list(configs), role.name), ...
    default_config = plugins.registry(role.name).get(role.default).Config
    return _component_type(list(configs), role.name), Field(default_factory=lambda: default_config(name=role.default))


def run_config_model(plugins=None) -> type[RunConfigBase]:
    """The RunConfig class for the components registered in ``plugins`` (default: the global set)."""
    plugins = plugins or get_plugins()
    roles = {role.field: role for role in plugins.config_roles}
    configs = {f: tuple(c.Config for c in plugins.registry(role.name)) for f, role in roles.items()}
    key = tuple(configs.items())
    if key not in _model_cache:
        fields = {f: _component_field(roles[f], c, plugins) for f, c in configs.items()}
        model = create_model("RunConfig", __base__=RunConfigBase, **fields)
        model.model_rebuild()
        model.__realfill_roles__ = tuple(roles.values())  # the roles its component fields are (config_roles_of)
        _model_cache[key] = model
    return _model_cache[key]


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line naming the first bad key and, for unknown keys, the valid ones. An unknown key is named
    before any other error: a misspelt ``[trian]`` is the cause of whatever else is missing."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = list(err["loc"])
    # drop the discriminator tags pydantic inserts for union members
    cls: Any = model
    keys: list[str] = []
    owner: Any = None  # the model class that owns the last key (a union member once its tag is read)
    or_auto = False
    for part in loc:
        owner = cls
        fields = getattr(cls, "model_fields", None)
        if fields is not None and part in fields:
            keys.append(str(part))
            cls = _member_for(fields[part].annotation)
        elif isinstance(cls, dict) and part in cls:  # a union: tag -> member class
            cls = cls[part]
        elif cls == {}:  # a union of plain values (a number or "auto"): pydantic's member tag names no key
            or_auto, cls = True, None
        else:
            keys.append(str(part))
            cls = None
    key = ".".join(keys) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = owner if isinstance(owner, type) else _resolve(model, keys[:-1])
        valid = ", ".join(sorted(parent.model_fields)) if isinstance(parent, type) else "?"
        what = "section" if isinstance(err.get("input"), dict) else "key"
        return f"{source}: unknown config {what} '{key}'; valid keys there: {valid}"
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tags = err.get("ctx", {}).get("expected_tags", "")
        got = err.get("ctx", {}).get("tag", "")
        return f"{source}: unknown {keys[-1] if keys else 'component'} '{got}' at '{key}.name'; known: {tags}"
    return f"{source}: config key '{key}': {err['msg']}{' or auto' if or_auto else ''} (got {err.get('input')!r})"


def _member_for(annotation: Any) -> Any:
    """A model class, or for a discriminated union a dict tag -> member class."""
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if getattr(annotation, "__metadata__", None) is not None:  # Annotated[Union[...], Field]
        return _member_for(annotation.__origin__)
    if args:
        members = {}
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel) and "name" in arg.model_fields:
                members[arg.model_fields["name"].default] = arg
        return members
    return None


def _resolve(model: type[BaseModel], keys: list[str]) -> Any:
    cls: Any = model
    for key in keys:
        if isinstance(cls, dict):
            return None
        cls = _member_for(cls.model_fields[key].annotation)
        if isinstance(cls, dict):  # member chosen by the config's name; resolved by caller's data
            return cls
    return cls


def validate_config(data: dict, source: str, plugins=None) -> RunConfigBase:
    plugins = plugins or get_plugins()
    model = run_config_model(plugins)
    for role in plugins.config_roles:  # friendlier than pydantic's union message
        section = data.get(role.field)
        if isinstance(section, dict) and "name" in section:
            registry = plugins.registry(role.name)
            if section["name"] not in registry:
                raise UserError(f"{source}: {registry.unknown_message(str(section['name']))}")
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, model, source)) from None
    check_baseline_settings(config, plugins, source)
    if config.train.lr_schedule == "constant" and config.train.warmup_steps > 0:  # diffusers would ignore it
        raise UserError(f"{source}: config key 'train.warmup_steps': {config.train.warmup_steps} with "
                        "train.lr_schedule='constant', which has no warmup; set train.lr_schedule="
                        "constant_with_warmup, or train.warmup_steps=0")
    check_optimizer_installed(config.train.optimizer)
    backbone = plugins.registry("backbone").get(config.backbone.name)
    check = getattr(plugins.registry("adapter").get(config.adapter.name), "check_backbone", None)
    why = check(backbone) if check is not None else None
    if why:  # a pair that cannot train: refused here, not once the run folder is made and the model loaded
        raise UserError(f"{source}: config key 'adapter.name': {why}")
    resolve_backbone_defaults(config, backbone)
    check_sides(config, backbone.native_resolution, source)
    step = backbone.resolution_step
    if config.train.resolution % step:  # a crop the backbone cannot pack stops here, not in the first step
        raise UserError(f"{source}: config key 'train.resolution': {config.train.resolution} is not a multiple of "
                        f"{step}, the pixels of one of backbone '{backbone.name}''s latent tokens; use "
                        f"{max(step, config.train.resolution // step * step)}")
    timesteps = getattr(config.backbone, "num_train_timesteps", None)  # a backbone trained from scratch
    if timesteps is not None and config.sample.steps > timesteps:
        raise UserError(f"{source}: config key 'sample.steps': {config.sample.steps} is more than the "
                        f"{timesteps} backbone.num_train_timesteps the samplers can step through")
    return config


def check_baseline_settings(config: RunConfigBase, plugins, source: str) -> None:
    """``baselines.NAME.KEY``: NAME a registered baseline, its keys and values those of its config (one line
    naming the first bad one)."""
    registry = plugins.registry("baseline")
    for name, settings in (config.baselines or {}).items():
        if name not in registry:
            raise UserError(f"{source}: config key 'baselines.{name}': {registry.unknown_message(name)}")
        check_baseline_table(name, settings, registry, source)


def check_baseline_table(name: str, settings: Any, registry, source: str) -> dict:
    """One ``baselines.NAME`` table against baseline NAME's config; returns it (a table's ``name`` is its
    baseline: another one there is refused, not silently overwritten; a device this machine lacks is refused
    here, not after the run's training, sampling and ranking, where the baseline would first load its model)."""
    if not isinstance(settings, dict):
        raise UserError(f"{source}: config key 'baselines.{name}': must be a table of that baseline's keys")
    if "name" in settings and settings["name"] != name:
        raise UserError(f"{source}: config key 'baselines.{name}.name': {settings['name']!r} is another baseline; "
                        f"a table's name is its own ('{name}'): set that baseline's keys as "
                        f"baselines.{settings['name']}.KEY")
    try:
        baseline_config = registry.get(name).Config(**{**settings, "name": name})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"])
        raise UserError(f"{source}: config key 'baselines.{name}.{key}': {err['msg']} "
                        f"(got {err.get('input')!r})") from None
    if "device" in settings and isinstance(getattr(baseline_config, "device", None), str):
        try:
            resolve_device(baseline_config.device)
        except UserError as exc:
            why = str(exc).split("; ")[0].removeprefix("device: ")
            raise UserError(f"{source}: config key 'baselines.{name}.device': {why}; "
                            f"--set baselines.{name}.device=auto runs it where torch can") from None
    return settings


def resolve_backbone_defaults(config: RunConfigBase, backbone) -> None:
    """Where a config leaves a value to the backbone, the backbone's class says it (no weights are needed):
    ``train.resolution`` unset is its ``native_resolution``; ``sample.steps`` and ``sample.guidance_scale``
    ``auto`` are its ``sampling`` defaults. The one place these are decided."""
    if config.train.resolution is None:
        config.train.resolution = backbone.native_resolution
    if config.sample.steps == "auto":
        config.sample.steps = backbone.sampling.steps
    if config.sample.guidance_scale == "auto":
        config.sample.guidance_scale = backbone.sampling.guidance_scale


def check_sides(config: RunConfigBase, native: int, source: str) -> None:
    """The rule for resolutions (docs/method.md "Bounds"): ``train.resolution`` at most
    :data:`TRAIN_SIDE_FACTOR` x the backbone's native side (4x the pixels, and the memory, its weights
    were trained at), an explicit ``sample.resolution`` at most :data:`SAMPLE_SIDE_FACTOR` x (sampling holds
    no gradients; a wide target samples its long side above the training side); both at most MAX_SIDE."""
    for key, value, factor in (("train.resolution", config.train.resolution, TRAIN_SIDE_FACTOR),
                               ("sample.resolution", config.sample.resolution, SAMPLE_SIDE_FACTOR)):
        if value is not None and value > factor * native:
            raise UserError(f"{source}: config key '{key}': {value} is more than {factor}x the native {native} px "
                            f"of backbone '{config.backbone.name}' (at most {min(factor * native, MAX_SIDE)})")


def apply_flags(
    data: dict,
    source: str,
    *,
    components: dict[str, str | None] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
    overrides: list[str] = (),
    component_fields=COMPONENT_FIELDS,
) -> str:
    """Layer the command line on ``data`` in place: component flags <- section flags <- ``--set`` overrides
    (a None flag is one not given). Returns ``source`` as messages should now name it."""
    for field, name in (components or {}).items():
        if name is not None:
            set_component(data, field, name)
    for section, values in (sections or {}).items():
        for key, value in values.items():
            if value is not None:
                apply_override(data, [section, key], value, component_fields)
    for item in overrides:
        path, value = parse_override(item)
        apply_override(data, path, value, component_fields)
    return f"{source} with --set" if overrides else source


def resolve_config(
    *,
    preset: str | None = None,
    config_file: Path | None = None,
    components: dict[str, str | None] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
    overrides: list[str] = (),
    plugins=None,
) -> RunConfigBase:
    """Preset (or a saved config file) <- component flags <- section flags <- ``--set`` overrides."""
    plugins = plugins or get_plugins()
    data, source = base_data(preset=preset, config_file=config_file)
    before = dict(data.get("train") or {})
    source = apply_flags(data, source, components=components, sections=sections, overrides=overrides,
                         component_fields={role.field for role in plugins.config_roles})
    given = {".".join(parse_override(item)[0]) for item in overrides}
    given |= {f"{section}.{key}" for section, values in (sections or {}).items()
              for key, value in values.items() if value is not None}
    resolve_optimizer_rates(data, before, given)
    return validate_config(data, source, plugins)


def config_roles_of(config: BaseModel) -> tuple:
    """The roles (:class:`realfill.components.Role`) whose components ``config`` names, in table order."""
    return getattr(type(config), "__realfill_roles__", ())


def at_default(config: BaseModel, role) -> bool:
    """Whether ``config``'s field of ``role`` is the role's default component with its default settings (what a
    config that omits the field gets). A role without a default is never at it."""
    if role.default is None or role.field is None:
        return False
    info = type(config).model_fields.get(role.field)
    if info is None or info.default_factory is None:
        return False
    return getattr(config, role.field) == info.default_factory()


def defaulted_fields(config: BaseModel) -> set[str]:
    """The role fields of ``config`` at their role's default: a role a plugin added, left as it is, is invisible
    to run names, stage keys and a run folder made before the plugin was installed."""
    return {role.field for role in config_roles_of(config) if at_default(config, role)}


def dump_config(config: BaseModel, like: str | None = None) -> str:
    """The config as TOML. With ``like`` (a run folder's saved config.toml), a role field at its default that
    ``like`` does not hold is left out, and a renamed key (:data:`OLD_SPELLINGS`) keeps the spelling ``like``
    has: a folder made before a role plugin was installed, or before the rename, keeps its bytes."""
    data = config.model_dump(mode="json", exclude_none=True)
    if like is not None:
        try:
            saved = tomllib.loads(like)
        except tomllib.TOMLDecodeError:
            saved = {}
        for field in defaulted_fields(config) - set(saved):
            data.pop(field, None)
        for section, renamed in OLD_SPELLINGS.items():  # the folder's spelling of a renamed key, in its place
            old = {new: o for o, new in renamed.items() if o in (saved.get(section) or {})}
            if old and isinstance(data.get(section), dict):
                data[section] = {old.get(key, key): value for key, value in data[section].items()}
    return tomli_w.dumps(data)


#: the learning rates an optimizer that estimates its own step size takes as multipliers (its authors' advice)
OWN_STEP_SIZE_RATES = {"prodigy": 1.0}


def resolve_optimizer_rates(data: dict, before: dict, given: set[str] = frozenset()) -> None:
    """Switching ``train.optimizer`` to one that estimates its own step size (Prodigy) sets the learning
    rates it multiplies that estimate by to 1.0, unless the same command sets them too: the preset's AdamW
    rates (2e-4) would make Prodigy's steps 5,000 times smaller than its authors intend."""
    train = data.get("train")
    if not isinstance(train, dict):
        return
    name = train.get("optimizer")
    if name not in OWN_STEP_SIZE_RATES or before.get("optimizer") == name:
        return
    for key in ("lr_denoiser", "lr_text_encoder"):
        spellings = {key, *(old for old, new in OLD_SPELLINGS.get("train", {}).items() if new == key)}
        if not any(f"train.{k}" in given for k in spellings):  # ``given``: the dotted keys this command's flags set
            for old in spellings - {key}:  # an older file's spelling gives way to the rate set here
                train.pop(old, None)
            train[key] = OWN_STEP_SIZE_RATES[name]


def write_config(config: BaseModel, path: Path) -> None:
    """Write ``config.toml``; over an existing one, a role field at its default that it lacks stays out."""
    path = Path(path)
    try:
        like = path.read_text() if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        like = None
    atomic_write_text(path, dump_config(config, like))


def run_name(config: RunConfigBase) -> str:
    """A run named after its settings, e.g. ``tiny-sd2+lora+lama-boxes+sift-s30-r64-n4-seed0``; a role at its
    default (a plugin's role left as it is) is left out, so installing a role plugin renames no run."""
    skip = defaulted_fields(config)
    fields = [role.field for role in config_roles_of(config) if role.field not in skip] or list(COMPONENT_FIELDS)
    parts = "+".join(getattr(config, f).name for f in fields)
    return f"{parts}-s{config.train.steps}-r{config.train.resolution}-n{config.sample.num_samples}-seed{config.seed}"


__all__ = [
    "RunConfigBase",
    "TrainConfig",
    "SampleConfig",
    "SelectConfig",
    "resolve_config",
    "validate_config",
    "run_config_model",
    "write_config",
    "dump_config",
    "run_name",
    "preset_names",
    "load_preset",
]
