"""The benchmarked stages, built the same way for the timed run and for the fresh-process memory run
(``conftest.peak_memory``): each ``*_stage`` function builds everything and returns the callable to measure.

Scene: ``examples/motorcycle`` (skimage's stereo_motorcycle: three crops of the left view as references,
the right view as target with its right 35% to fill). Backbone: ``tiny-sd2`` (seeded random weights).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SCENE = ROOT / "examples" / "motorcycle"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))


def run_config(backbone: str = "tiny-sd2", adapter: dict | None = None, **train):
    from realfill.config import run_config_model
    from realfill.config_files import load_preset
    from realfill.plugins import RealfillPlugins

    plugins = RealfillPlugins(autoload=False)
    data = load_preset("smoke")
    data["backbone"] = {"name": backbone}
    data["adapter"] = adapter or {"name": "lora"}
    data["train"] = {**data["train"], "threads": None, **train}
    return plugins, run_config_model(plugins).model_validate(data)


def make_trainer(loop: str = "ours", resolution: int = 64, batch_size: int = 16, adapter: dict | None = None,
                 seed: int = 0, backbone: str = "tiny-sd2", compile: bool = False, tune_allocator: bool = True,
                 device: str = "cpu", **train):
    """A Trainer (``ours``) or the public recipe's ReferenceTrainer (``reference``) on the example scene, on
    ``device``; ``train`` sets other ``train.*`` keys (``mixed_precision``, ``attention``, ...). Both tune
    the CPU allocator (``train.tune_allocator``, process-wide) unless told not to."""
    from reference_loop import ReferenceTrainer

    from realfill.device import model_compute
    from realfill.scene import load_scene
    from realfill.training import Trainer

    plugins, config = run_config(backbone, adapter, resolution=resolution, batch_size=batch_size, compile=compile,
                                 tune_allocator=tune_allocator, **train)
    model = plugins.registry("backbone").create(config.backbone).load(device=device)
    cls = {"ours": Trainer, "reference": ReferenceTrainer}[loop]
    return cls(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking),
               load_scene(SCENE), config.train, seed=seed, compute=model_compute(model, config.train))


def train_stage(steps: int = 2, warmup: int = 0, **kwargs):
    trainer = make_trainer(**kwargs)
    for _ in range(warmup):
        trainer.train_step()

    def run():
        for _ in range(steps):
            trainer.train_step()

    return run


def make_sampler(num_samples: int = 16, batch_size: int = 16, resolution: int = 64, steps: int = 10,
                 backbone: str = "tiny-sd2", seed: int = 0):
    """A callable drawing ``num_samples`` completions of the example target ``batch_size`` at a time, as
    ``realfill sample`` does (the stock pipeline call per batch, per-sample seeds, composite)."""
    import torch

    from realfill.sampling import sample_completions
    from realfill.scene import load_scene

    plugins, config = run_config(backbone)
    model = plugins.registry("backbone").create(config.backbone).load()
    scene = load_scene(SCENE)

    def run():
        with torch.no_grad():
            return sample_completions(model, scene.target, scene.mask, prompt=config.train.prompt,
                                      resolution=resolution, scheduler="ddpm", steps=steps, num_samples=num_samples,
                                      batch_size=batch_size, seed=seed)

    return run


def sample_stage(**kwargs):
    return make_sampler(**kwargs)
