"""The sweep plan: configurations (repeated flags, a product or a sweep file) times scenes, each run
keyed by the settings its stages depend on, and where each stage and run lives under ``OUT``."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from realfill.atomic import atomic_write_text
from realfill.components import BUILTIN_ROLES, Role
from realfill.config import OLD_SPELLINGS, apply_flags, check_baseline_table, config_roles_of, defaulted_fields, resolve_config
from realfill.config_files import base_data, dotted_keys, read_toml
from realfill.errors import UserError
from realfill.fingerprint import FINGERPRINT_KEY, scene_key
from realfill.plugins import get_plugins
from realfill.scene import load_scene

DONE = "done.json"
ROW = "row.json"
ERROR = "error.json"
#: the run-config sections (beside the roles' fields) each stage's key holds, in pipeline order; a later
#: stage's key also holds the earlier one's key. A role's field joins the stage its ``Role.affects`` names
#: (``report`` roles join the run's key, beside ``rank``'s)
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("seed", "device", "max_references", "train"),
    "sample": ("sample",),
    "rank": ("select",),
}
#: the stage whose key a role of each ``Role.affects`` joins
KEY_OF_STAGE = {"train": "train", "sample": "sample", "rank": "rank", "report": "rank"}
#: what a model baseline's run key holds (it trains nothing: the backbone it samples untuned, the ranker)
MODEL_BASELINE_SECTIONS = ("seed", "device", "max_references", "backbone", "sample", "ranker", "select")


def axis_flags(roles: Iterable[Role] = BUILTIN_ROLES) -> dict[str, str]:
    """The axes a sweep file and ``realfill ablate`` take by a role's short name: ``{"ranker": "ranker.name"}``
    for every role of the table with a run-config field (a plugin's included)."""
    return {role.field: f"{role.field}.name" for role in roles if role.field is not None}


#: the built-in roles' axes (``axis_flags(plugins.roles)`` for a plugin's too)
AXIS_FLAGS = axis_flags()

# -- configurations ----------------------------------------------------------------------------------


@dataclass
class Configuration:
    """One column of the ablation: overrides on the base config, or a baseline run of its own (an image
    baseline; or, with ``needs_config``, a model baseline such as ``in-context`` that samples the
    configuration's backbone untuned)."""

    label: str
    overrides: list[str] = field(default_factory=list)
    baseline: str | None = None  # "telea" | "geometric" | "in-context": no training, no sampling stage
    needs_config: bool = False  # a model baseline: the run config (base + overrides) is resolved for it

    def as_dict(self) -> dict:
        return {"label": self.label, "overrides": list(self.overrides), "baseline": self.baseline}


def override_string(key: str, value: Any) -> str:
    """``("sample.steps", 4)`` -> ``"sample.steps=4"`` with the value as a TOML literal."""
    literal = tomli_w.dumps({"v": value}).strip().removeprefix("v = ")
    return f"{key}={literal}"


def product_configurations(axes: dict[str, list[Any]]) -> list[Configuration]:
    """The cartesian product of ``{dotted key: [values]}``; labels name the values of axes with 2+."""
    keys = list(axes)
    varying = [k for k in keys if len(axes[k]) > 1]
    configurations = []
    for values in itertools.product(*(axes[k] for k in keys)):
        chosen = dict(zip(keys, values, strict=True))
        label = ",".join(f"{_short(k)}={chosen[k]}" for k in varying) or "base"
        configurations.append(Configuration(label, [override_string(k, v) for k, v in chosen.items()]))
    return configurations


def _short(key: str) -> str:
    return key.removesuffix(".name")


def read_sweep(path: Path, roles: Iterable[Role] = BUILTIN_ROLES) -> tuple[dict, list[Configuration]]:
    """A sweep file: optional ``preset``/``config``/``set`` for the base, then either ``[axes]`` (a
    cartesian product of dotted keys -> lists of values) or ``[[run]]`` tables (an explicit list; each
    holds dotted keys -> values and an optional ``label``). A role's field (``ranker = [...]``) stands for
    its ``.name``, for every role of ``roles``."""
    short = axis_flags(roles)
    data = read_toml(path)
    unknown = set(data) - {"preset", "config", "set", "axes", "run"}
    if unknown:
        raise UserError(f"{path}: unknown sweep key(s) {', '.join(sorted(unknown))}; valid: preset, config, set, axes, run")
    if ("axes" in data) == ("run" in data):
        raise UserError(f"{path}: a sweep needs exactly one of [axes] (a product) or [[run]] (a list)")
    base = {k: data[k] for k in ("preset", "config", "set") if k in data}
    if "set" in base and not (isinstance(base["set"], list) and all(isinstance(s, str) for s in base["set"])):
        raise UserError(f"{path}: 'set' must be a list of \"key=value\" strings")
    if "axes" in data:
        axes = {}
        for key, values in dotted_keys(data["axes"]).items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise UserError(f"{path}: axes.{key} is an empty list")
            axes[short.get(key, key)] = values
        return base, product_configurations(axes)
    configurations = []
    for index, run in enumerate(data["run"]):
        if not isinstance(run, dict):
            raise UserError(f"{path}: run #{index + 1} must be a table")
        run = dict(run)
        label = str(run.pop("label", "")) or None
        flat = {short.get(k, k): v for k, v in dotted_keys(run).items()}
        overrides = [override_string(k, v) for k, v in flat.items()]
        configurations.append(Configuration(label or ",".join(f"{_short(k)}={v}" for k, v in flat.items()) or f"run{index + 1}", overrides))
    return base, configurations



# -- the plan ----------------------------------------------------------------------------------------


def stage_inputs(scene: Path, config, content: dict | None = None) -> dict[str, dict[str, Any]]:
    """What each stage's key is made from, by stage (``train``, ``sample``, ``rank``): the scene and the
    sections of :data:`STAGE_SECTIONS`, and each role's field in the stage its ``Role.affects`` names (a role
    that declares none: training). A role at its default (a plugin's role left as it is) is left out, so
    installing a role plugin changes no key. The sample key also holds the train key, the run key the sample
    key (:func:`build_plan`). Extend a stage's inputs here."""
    data = config.model_dump(mode="json")
    for section, renamed in OLD_SPELLINGS.items():  # keys as first spelt: a rename re-keys no stage
        old = {new: o for o, new in renamed.items()}
        data[section] = {old.get(key, key): value for key, value in data[section].items()}
    inputs: dict[str, dict[str, Any]] = {stage: {} for stage in STAGE_SECTIONS}
    inputs["train"]["scene"] = str(scene)
    inputs["train"].update(content or {})  # the scene's pixels (scene_content_key): a path is not its content
    for stage, sections in STAGE_SECTIONS.items():
        inputs[stage].update({k: data[k] for k in sections})
    # with train.keep_adapters one training serves every step an ablation asks for: the step keys the sampling
    inputs["train"]["train"] = training_payload(data["train"])
    inputs["sample"].update(snapshot_stage(data["train"]))
    skip = defaulted_fields(config)
    for role in config_roles_of(config):
        if role.field not in skip:
            inputs[KEY_OF_STAGE[role.affects]][role.field] = data[role.field]
    return inputs


def _key(payload: Any) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")[:80] or "run"


@dataclass
class RunSpec:
    scene: Path
    scene_name: str
    configuration: Configuration
    config: Any | None  # the validated RunConfig (None for image baselines)
    train_key: str | None
    sample_key: str | None
    run_key: str
    run_dir: Path
    #: each stage's key inputs (``stage_inputs``; a baseline: ``{"run": ...}``), for ``realfill ablate --plan``
    inputs: dict = field(default_factory=dict)
    baseline_settings: dict | None = None  # an image baseline's ``baselines.NAME`` table (it has no run config)

    @property
    def label(self) -> str:
        return self.configuration.label

    def components(self) -> dict[str, str]:
        if self.config is None:
            return {"method": self.configuration.baseline}
        if self.configuration.baseline is not None:  # a model baseline: the backbone it sampled, the ranker it chose with
            return {"method": self.configuration.baseline, "backbone": self.config.backbone.name,
                    "ranker": self.config.ranker.name}
        method = "backbone-untuned" if self.config.train.steps == 0 else "realfill"
        return {"method": method, **{role.field: getattr(self.config, role.field).name
                                     for role in config_roles_of(self.config)}}


@dataclass
class Plan:
    out: Path
    runs: list[RunSpec]
    base: dict
    #: the role table's roles with a run-config field (a plugin's included): the report's columns
    roles: tuple[Role, ...] = tuple(role for role in BUILTIN_ROLES if role.field is not None)

    def stages(self, kind: str) -> dict[str, RunSpec]:
        """The distinct stages of a kind, keyed by stage key, with one run that needs each."""
        stages: dict[str, RunSpec] = {}
        for run in self.runs:
            key = run.train_key if kind == "train" else run.sample_key
            if key is not None:
                stages.setdefault(key, run)
        return stages

    def snapshot_steps(self, train_key: str) -> list[int]:
        """The ``train.steps`` values that share one training (``train.keep_adapters``), ascending: it trains
        to the last and keeps the adapter at each of the others."""
        return sorted({r.config.train.steps for r in self.runs if r.train_key == train_key and r.config is not None})

    def stage_dir(self, kind: str, run: RunSpec) -> Path:
        key = run.train_key if kind == "train" else run.sample_key
        return self.out / "stages" / kind / f"{_slug(run.scene_name)}-{key}"


def build_plan(
    scenes: list[Path],
    configurations: list[Configuration],
    out: Path,
    *,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: Iterable[str] = (),
    plugins=None,
) -> Plan:
    plugins = plugins if plugins is not None else get_plugins()
    if not scenes:
        raise UserError("realfill ablate: give at least one SCENE folder")
    if not configurations:
        raise UserError("realfill ablate: nothing to run (no configurations)")
    names: dict[str, int] = {}
    scene_names = []
    for scene in scenes:
        if not Path(scene).is_dir():
            raise UserError(f"{scene}: no such scene folder (expected ref/ and target/ inside)")
        name = Path(scene).resolve().name
        names[name] = names.get(name, 0) + 1
        scene_names.append(name if names[name] == 1 else f"{name}-{names[name]}")
    runs = []
    seen: set[str] = set()
    for scene, scene_name in zip(scenes, scene_names, strict=True):
        scene = Path(scene).resolve()
        content = scene_content_key(scene)
        for configuration in configurations:
            settings = None
            if configuration.baseline is not None and configuration.needs_config:
                config = resolve_config(
                    preset=preset, config_file=config_file, overrides=[*overrides, *configuration.overrides], plugins=plugins
                )
                data = config.model_dump(mode="json")
                inputs = {"run": {"scene": str(scene), **content, "baseline": configuration.baseline,
                                  **{k: data[k] for k in MODEL_BASELINE_SECTIONS},
                                  **({"settings": own} if (own := (data.get("baselines") or {}).get(configuration.baseline))
                                     else {})}}
                run_key = _key(inputs["run"])
                train_key = sample_key = None
            elif configuration.baseline is not None:
                settings = image_baseline_settings(configuration.baseline, preset, config_file, overrides, plugins)
                inputs = {"run": {"scene": str(scene), **content, "baseline": configuration.baseline,
                                  **({"settings": settings} if settings else {})}}
                run_key = _key(inputs["run"])
                config = train_key = sample_key = None
            else:
                config = resolve_config(
                    preset=preset, config_file=config_file, overrides=[*overrides, *configuration.overrides], plugins=plugins
                )
                inputs = stage_inputs(scene, config, content)
                train_key = _key(inputs["train"])
                sample_key = _key({"train": train_key, **inputs["sample"]})
                run_key = _key({"sample": sample_key, **inputs["rank"]})
            if run_key in seen:  # two spellings of the same run: keep the first
                continue
            seen.add(run_key)
            run_dir = out / "runs" / _slug(scene_name) / f"{_slug(configuration.label)}-{run_key[:8]}"
            runs.append(RunSpec(scene, scene_name, configuration, config, train_key, sample_key, run_key, run_dir,
                                inputs, baseline_settings=settings if config is None else None))
    base = {"preset": preset, "config": str(config_file) if config_file else None, "set": list(overrides)}
    return Plan(Path(out), runs, base, plugins.config_roles)



def describe_plan(plan: Plan) -> list[str]:
    """``realfill ablate --plan``: each run, the stages it shares with which runs, and each distinct stage
    key's inputs (one line of JSON each), without running or writing anything."""
    number = {id(run): i + 1 for i, run in enumerate(plan.runs)}
    by_key: dict[tuple[str, str], list[int]] = {}
    for run in plan.runs:
        for kind, key in (("train", run.train_key), ("sample", run.sample_key)):
            if key is not None:
                by_key.setdefault((kind, key), []).append(number[id(run)])
    trainings = sum(kind == "train" for kind, _ in by_key)
    samplings = len(by_key) - trainings
    scenes = len({run.scene for run in plan.runs})
    lines = [f"plan: {len(plan.runs)} run{'s' * (len(plan.runs) != 1)} on {scenes} scene{'s' * (scenes != 1)}: "
             f"{trainings} training{'s' * (trainings != 1)}, {samplings} sampling{'s' * (samplings != 1)} "
             f"(into {plan.out}; nothing run, nothing written)"]
    for run in plan.runs:
        i = number[id(run)]
        lines.append(f"run {i}: {run.scene_name} · {run.label} -> {run.run_dir}")
        for kind, key in (("train", run.train_key), ("sample", run.sample_key)):
            if key is None:
                continue
            others = [str(j) for j in by_key[(kind, key)] if j != i]
            shared = f"shared with run{'s' * (len(others) > 1)} {', '.join(others)}" if others else "its own"
            lines.append(f"  {kind:<6} {key}  {shared}")
        if run.configuration.baseline is not None:
            lines.append(f"  baseline {run.configuration.baseline}: no training, no sampling")
        lines.append(f"  run    {run.run_key}")
    lines.append("stage keys' inputs (a key is a digest of these; the sample key holds the train key, the run key "
                 "the sample key):")
    done: set[tuple[str, str]] = set()
    for run in plan.runs:
        for kind, key, stage in (("train", run.train_key, "train"), ("sample", run.sample_key, "sample"),
                                 ("run", run.run_key, "rank" if "rank" in run.inputs else "run")):
            if key is None or (kind, key) in done:
                continue
            done.add((kind, key))
            lines.append(f"  {kind} {key}: {json.dumps(run.inputs.get(stage, {}), sort_keys=True, default=str)}")
    return lines


def image_baseline_settings(name: str, preset, config_file, overrides, plugins) -> dict | None:
    """An image baseline's ``baselines.NAME`` table from the base config (preset or file, then ``--set``),
    checked against its config: it applies in ``ablate`` as in ``fill``, and is part of the run's key."""
    data, source = base_data(preset=preset, config_file=config_file)
    source = apply_flags(data, source, overrides=list(overrides))
    table = data.get("baselines") or {}
    if not isinstance(table, dict):
        raise UserError(f"{source}: config key 'baselines': must be a table of baseline tables")
    settings = table.get(name)
    if settings is None:
        return None
    return check_baseline_table(name, settings, (plugins or get_plugins()).registry("baseline"), source)


# -- the scene's content in every key (what `fill --resume` compares: realfill.fingerprint) -------------


def scene_content_key(scene: Path) -> dict:
    """``{"scene_fingerprint": ...}``, a part of every stage key of ``scene``: the same path with other
    pixels (a scene replaced in place) makes other keys, so its work is redone, never reused. A folder that
    is not a scene is one line here, before anything runs."""
    missing = [f"{name}/" for name in ("ref", "target") if not (Path(scene) / name).is_dir()]
    if missing:
        raise UserError(f"{scene}: not a scene (no {' or '.join(missing)} inside); a scene folder holds ref/ (1-5 "
                        "reference photos) and target/ (target.png, mask.png, optionally gt.png)")
    # every reference counts (the run's max_references is checked by the run itself, in one line)
    every = max(5, len(list((Path(scene) / "ref").iterdir())))
    return {FINGERPRINT_KEY: scene_key(load_scene(scene, max_references=every))}


# -- an axis over training steps, from one training's kept adapters ------------------------------------


def training_payload(train: dict) -> dict:
    """The train settings a training stage is keyed by. With ``keep_adapters`` it keeps the adapter of each
    step an ablation asks for, so ``steps`` is left out: ``--steps 500 --steps 1000`` trains once."""
    return {k: v for k, v in train.items() if k != "steps"} if train.get("keep_adapters") else train


def snapshot_stage(train: dict) -> dict:
    """What a sampling stage adds to its key when its adapter is a kept one: the step it was kept at."""
    return {"step": train["steps"]} if train.get("keep_adapters") else {}


def expand_scene_folders(paths: Iterable[Path], left_out: list[Path] | None = None) -> list[Path]:
    """Each path as given, except a folder of scenes (no ``target/`` of its own, subfolders with one, as
    ``RealBench/``), which stands for its scenes in order (numeric names by number: 0, 1, ..., 10). Its
    subfolders without ``target/`` (empty ones, non-scenes, links back to it) are appended to ``left_out``,
    for the caller's note."""
    scenes: list[Path] = []
    for path in map(Path, paths):
        inner, others = [], []
        if path.is_dir() and not (path / "target").is_dir():
            for p in path.iterdir():
                if (p / "target").is_dir():
                    inner.append(p)
                elif p.is_dir():
                    others.append(p)
        scenes += sorted(inner, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)) or [path]
        if inner and left_out is not None:
            left_out += sorted(others)
    return scenes


# -- the folder's files ------------------------------------------------------------------------------


def _fresh(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def _write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")  # a finished marker is whole or absent

