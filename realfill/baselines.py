"""The baselines' harness: a baseline is a component of the ``baseline`` role (``realfill_register_baselines``;
the built-ins are in ``realfill_plugins.baselines``: ``telea``, ``geometric``, ``multi-homography`` and
``backbone-untuned``), and this module runs one into a folder that ``realfill evaluate`` reads.

An image baseline (``kind = "image"``) makes its fill from the scene; a pipeline baseline
(``kind = "pipeline"``, e.g. ``backbone-untuned``) is the fill pipeline with its ``overrides`` on the run
config (:func:`untuned_config`).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from realfill.atomic import atomic_write_text, save_image
from realfill.components import BaselineResult
from realfill.errors import UserError
from realfill.evaluation import RUN_RECORD
from realfill.plugins import get_plugins
from realfill.scene import Scene

__all__ = ["BaselineResult", "baseline_names", "check_baselines", "image_baseline_names", "run_image_baseline",
           "untuned_config"]


def _plugins(plugins):
    if plugins is None:
        plugins = get_plugins()
    return plugins


def baseline_names(plugins=None) -> list[str]:
    return _plugins(plugins).baselines.names()


def image_baseline_names(plugins=None) -> list[str]:
    return [cls.name for cls in _plugins(plugins).baselines if cls.kind == "image"]


def check_baselines(names, plugins=None, flag: str = "--baseline") -> None:
    """Refuse an unknown baseline name in one line that lists the registered ones."""
    registry = _plugins(plugins).baselines
    for name in names:
        if name not in registry:
            raise UserError(f"{flag} {name}: unknown baseline; known baselines: {', '.join(registry.names())}")


def untuned_config(config):
    """The run config of "the backbone without fine-tuning": the same run with zero training steps."""
    return config.model_copy(update={"train": config.train.model_copy(update={"steps": 0})})


def make_baseline(name: str, plugins=None):
    registry = _plugins(plugins).baselines
    cls = registry.get(name)  # unknown names raise with the known ones
    if cls.kind != "image":
        images = ", ".join(image_baseline_names(plugins))
        raise UserError(f"baseline '{name}' is a run of the fill pipeline, not an image operation; "
                        f"image baselines: {images}")
    return cls(cls.Config())


def run_image_baseline(name: str, scene: Scene, out_dir: Path, plugins=None) -> Path:
    """Run an image baseline into ``out_dir`` (result.png, and run.json naming the scene, for
    ``realfill evaluate OUT_DIR``); returns the result path."""
    result = make_baseline(name, plugins).complete(scene)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "result.png"
    save_image(path, Image.fromarray(result.image))
    record = {"scene": str(Path(scene.root).resolve()), "baseline": name, **result.details}
    atomic_write_text(out_dir / RUN_RECORD, json.dumps(record, indent=2) + "\n")
    return path
