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
from realfill.config import resolve_config
from realfill.config_files import COMPONENT_FIELDS, dotted_keys, read_toml
from realfill.errors import UserError

DONE = "done.json"
ROW = "row.json"
ERROR = "error.json"
#: the flags that make axes, and the run-config field each sets
AXIS_FLAGS = {"backbone": "backbone.name", "adapter": "adapter.name", "masking": "masking.name", "ranker": "ranker.name"}
#: metrics shown in summaries first (the paper's table), when present

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


def read_sweep(path: Path) -> tuple[dict, list[Configuration]]:
    """A sweep file: optional ``preset``/``config``/``set`` for the base, then either ``[axes]`` (a
    cartesian product of dotted keys -> lists of values) or ``[[run]]`` tables (an explicit list; each
    holds dotted keys -> values and an optional ``label``)."""
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
            axes[AXIS_FLAGS.get(key, key)] = values
        return base, product_configurations(axes)
    configurations = []
    for index, run in enumerate(data["run"]):
        if not isinstance(run, dict):
            raise UserError(f"{path}: run #{index + 1} must be a table")
        run = dict(run)
        label = str(run.pop("label", "")) or None
        flat = {AXIS_FLAGS.get(k, k): v for k, v in dotted_keys(run).items()}
        overrides = [override_string(k, v) for k, v in flat.items()]
        configurations.append(Configuration(label or ",".join(f"{_short(k)}={v}" for k, v in flat.items()) or f"run{index + 1}", overrides))
    return base, configurations



# -- the plan ----------------------------------------------------------------------------------------


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
        return {"method": method, **{f: getattr(self.config, f).name for f in COMPONENT_FIELDS}}


@dataclass
class Plan:
    out: Path
    runs: list[RunSpec]
    base: dict

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
        for configuration in configurations:
            if configuration.baseline is not None and configuration.needs_config:
                config = resolve_config(
                    preset=preset, config_file=config_file, overrides=[*overrides, *configuration.overrides], plugins=plugins
                )
                data = config.model_dump(mode="json")
                run_key = _key({"scene": str(scene), "baseline": configuration.baseline,
                                **{k: data[k] for k in ("seed", "device", "max_references", "backbone", "sample",
                                                        "ranker", "select")}})
                train_key = sample_key = None
            elif configuration.baseline is not None:
                run_key = _key({"scene": str(scene), "baseline": configuration.baseline})
                config = train_key = sample_key = None
            else:
                config = resolve_config(
                    preset=preset, config_file=config_file, overrides=[*overrides, *configuration.overrides], plugins=plugins
                )
                data = config.model_dump(mode="json")
                train_key = _key({"scene": str(scene), **{k: data[k] for k in
                                  ("seed", "device", "max_references", "backbone", "adapter", "masking")},
                                  "train": training_payload(data["train"])})
                sample_key = _key({"train": train_key, "sample": data["sample"], **snapshot_stage(data["train"])})
                run_key = _key({"sample": sample_key, "ranker": data["ranker"], "select": data["select"]})
            if run_key in seen:  # two spellings of the same run: keep the first
                continue
            seen.add(run_key)
            run_dir = out / "runs" / _slug(scene_name) / f"{_slug(configuration.label)}-{run_key[:8]}"
            runs.append(RunSpec(scene, scene_name, configuration, config, train_key, sample_key, run_key, run_dir))
    base = {"preset": preset, "config": str(config_file) if config_file else None, "set": list(overrides)}
    return Plan(Path(out), runs, base)



# -- an axis over training steps, from one training's kept adapters ------------------------------------


def training_payload(train: dict) -> dict:
    """The train settings a training stage is keyed by. With ``keep_adapters`` it keeps the adapter of each
    step an ablation asks for, so ``steps`` is left out: ``--steps 500 --steps 1000`` trains once."""
    return {k: v for k, v in train.items() if k != "steps"} if train.get("keep_adapters") else train


def snapshot_stage(train: dict) -> dict:
    """What a sampling stage adds to its key when its adapter is a kept one: the step it was kept at."""
    return {"step": train["steps"]} if train.get("keep_adapters") else {}


def expand_scene_folders(paths: Iterable[Path]) -> list[Path]:
    """Each path as given, except a folder of scenes (no ``target/`` of its own, subfolders with one, as
    ``RealBench/``), which stands for its scenes in order (numeric names by number: 0, 1, ..., 10)."""
    scenes: list[Path] = []
    for path in map(Path, paths):
        inner = [p for p in path.iterdir() if (p / "target").is_dir()] if path.is_dir() and not (path / "target").is_dir() else []
        scenes += sorted(inner, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)) or [path]
    return scenes


# -- the folder's files ------------------------------------------------------------------------------


def _fresh(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def _write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")  # a finished marker is whole or absent

