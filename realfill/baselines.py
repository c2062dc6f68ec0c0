"""The baselines' harness: a baseline is a component of the ``baseline`` role (``realfill_register_baselines``;
the built-ins are in ``realfill_plugins.baselines``: ``telea``, ``geometric``, ``multi-homography`` and
``backbone-untuned``), and this module runs one into a folder that ``realfill evaluate`` reads.

An image baseline (``kind = "image"``) makes its fill from the scene; a model baseline (``kind = "model"``,
e.g. ``in-context``) makes it with the run's own backbone, untuned, through a :class:`BaselineContext`
(the run's config, the plugins, its folder; the model loads on first use); a pipeline baseline
(``kind = "pipeline"``, e.g. ``backbone-untuned``) is the fill pipeline with its ``overrides`` on the run
config (:func:`untuned_config`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from realfill.atomic import atomic_write_text, save_image
from realfill.components import BaselineResult
from realfill.device import Compute, resolve_compute
from realfill.errors import UserError
from realfill.evaluation import RUN_RECORD
from realfill.fingerprint import FINGERPRINT_KEY, scene_fingerprint
from realfill.plugins import get_plugins
from realfill.scene import Scene

__all__ = ["BaselineContext", "BaselineResult", "RUNNABLE_KINDS", "baseline_names", "check_baselines",
           "image_baseline_names", "run_baseline", "run_image_baseline", "untuned_config"]

#: the kinds this harness runs into a folder (a pipeline baseline is a run of the fill pipeline instead)
RUNNABLE_KINDS = ("image", "model")


@dataclass
class BaselineContext:
    """What a ``kind = "model"`` baseline's ``complete(scene, context)`` gets besides the scene: the run's
    config (its backbone, device, sampling, ranker and seed), the plugins, and the baseline's own folder
    (for its samples and ``ranking.json``). :meth:`model` loads the run's backbone untuned, on the run's
    device, through the backbone registry, once."""

    config: Any
    plugins: Any
    out_dir: Path
    #: the run's device, precision and threads, when the caller resolved them (else resolved here, once)
    compute: Compute | None = None
    _model: Any = field(default=None, repr=False)

    def model(self):
        if self._model is None:
            if self.compute is None:
                backbone = self.plugins.registry("backbone").get(self.config.backbone.name)
                self.compute = resolve_compute(self.config, backbone).apply()
            backbone = self.plugins.registry("backbone").create(self.config.backbone)
            self._model = backbone.load(device=self.compute.device)
        return self._model

    def ranker(self):
        """The run's ranker, its weights loaded."""
        ranker = self.plugins.registry("ranker").create(self.config.ranker)
        if hasattr(ranker, "load"):
            ranker.load()
        return ranker


def _plugins(plugins):
    if plugins is None:
        plugins = get_plugins()
    return plugins


def baseline_names(plugins=None) -> list[str]:
    return _plugins(plugins).registry("baseline").names()


def image_baseline_names(plugins=None) -> list[str]:
    return [cls.name for cls in _plugins(plugins).registry("baseline") if cls.kind == "image"]


def check_baselines(names, plugins=None, flag: str = "--baseline") -> None:
    """Refuse an unknown baseline name in one line that lists the registered ones."""
    registry = _plugins(plugins).registry("baseline")
    for name in names:
        if name not in registry:
            raise UserError(f"{flag} {name}: unknown baseline; known baselines: {', '.join(registry.names())}")
    twice = [name for name in dict.fromkeys(names) if list(names).count(name) > 1]
    if twice:  # two rows of one method would read as two methods
        raise UserError(f"{flag} {twice[0]}: given twice; name each baseline once")


def untuned_config(config):
    """The run config of "the backbone without fine-tuning": the same run with zero training steps."""
    return config.model_copy(update={"train": config.train.model_copy(update={"steps": 0})})


def make_baseline(name: str, plugins=None, settings: dict | None = None):
    """The baseline ``name`` with ``settings`` (the run config's ``baselines.NAME`` table) over its defaults."""
    registry = _plugins(plugins).registry("baseline")
    cls = registry.get(name)  # unknown names raise with the known ones
    if cls.kind not in RUNNABLE_KINDS:
        runnable = ", ".join(c.name for c in registry if c.kind in RUNNABLE_KINDS)
        raise UserError(f"baseline '{name}' is a run of the fill pipeline, not an image operation; "
                        f"baselines that complete on their own: {runnable}")
    return cls(cls.Config(**{**(settings or {}), "name": name}))


def run_baseline(name: str, scene: Scene, out_dir: Path, plugins=None, config=None,
                 settings: dict | None = None) -> Path:
    """Run an image or model baseline into ``out_dir`` (result.png, and run.json naming the scene, for
    ``realfill evaluate OUT_DIR``; a model baseline adds its samples and ``ranking.json``); returns the
    result path. A model baseline needs the run's ``config``; its ``baselines.NAME`` table, where given,
    sets the baseline's own keys (``settings``, where given, are that table: an image baseline of an ablation
    has no run config of its own)."""
    plugins = _plugins(plugins)
    if settings is None and config is not None:
        settings = (config.baselines or {}).get(name)
    baseline = make_baseline(name, plugins, settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if baseline.kind == "model":
        if config is None:
            raise UserError(f"baseline '{name}' samples the run's own backbone: it needs a run config "
                            "(realfill fill's comparison or realfill ablate give it)")
        result = baseline.complete(scene, BaselineContext(config, plugins, out_dir))
    else:
        result = baseline.complete(scene)
    path = out_dir / "result.png"
    save_image(path, Image.fromarray(result.image))
    record = {"scene": str(Path(scene.root).resolve()), FINGERPRINT_KEY: scene_fingerprint(scene), "baseline": name,
              "settings": baseline.config.model_dump(mode="json"), **result.details}
    atomic_write_text(out_dir / RUN_RECORD, json.dumps(record, indent=2) + "\n")
    return path


def run_image_baseline(name: str, scene: Scene, out_dir: Path, plugins=None) -> Path:
    """:func:`run_baseline` for a baseline that needs no run config (the name the harness had first)."""
    return run_baseline(name, scene, out_dir, plugins=plugins)
