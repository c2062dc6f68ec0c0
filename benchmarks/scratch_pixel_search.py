"""The measurements behind the ``cpu`` preset (docs/cpu_backbone.md): one trial per call.

A trial is the ``cpu`` preset with ``--set`` overrides, trained by the shared loop (``realfill.training``)
on a scene (default: the bundled ``examples/motorcycle``), sampled with the shared sampler at chosen
steps, scored by masked PSNR against the ground truth next to OpenCV Telea's, and ranked by the preset's
ranker at the end. Times are CPU seconds of this process (``time.process_time``) and wall seconds, with the
load average beside them: on a shared machine the wall time is inflated by everyone else's work.

    python benchmarks/scratch_pixel_search.py --label base --eval-at 300,600 \\
        --set train.steps=600 --set backbone.block_out_channels=[32,64,64]

Each trial appends one JSON line to ``--log`` (default ``runs/scratch_pixel_search.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from realfill_plugins.baselines.telea import telea
from realfill.config import dump_config, resolve_config
from realfill.plugins import RealfillPlugins
from realfill.sampling import sample_completions
from realfill.scene import load_scene
from realfill.training import Trainer
from realfill_plugins.metrics.pixel import psnr
from realfill.device import model_compute

ROOT = Path(__file__).resolve().parents[1]


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def evaluate(model, scene, config, sample_resolution: int) -> dict:
    s = config.sample
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    samples = sample_completions(
        model, scene.target, scene.mask, prompt=s.prompt or config.train.prompt, resolution=sample_resolution,
        scheduler=s.scheduler, steps=s.steps, guidance_scale=s.guidance_scale, num_samples=s.num_samples,
        batch_size=s.batch_size, mask_dilate=s.mask_dilate, feather=s.feather, seed=config.seed,
    )
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    scores = [psnr(x, scene.gt, scene.mask) for x in samples]
    return {"samples": samples, "psnr_masked": scores, "sample_cpu_s": round(cpu, 2), "sample_wall_s": round(wall, 2)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default=str(ROOT / "examples" / "motorcycle"))
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--eval-at", default="", help="also sample at these steps, e.g. 300,600")
    parser.add_argument("--sample-resolution", type=int, default=None, help="default: train.resolution")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--label", default="")
    parser.add_argument("--log", default=str(ROOT / "runs" / "scratch_pixel_search.jsonl"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    plugins = RealfillPlugins()
    config = resolve_config(preset=args.preset, overrides=args.overrides, plugins=plugins)
    scene = load_scene(args.scene, max_references=config.max_references)
    telea_psnr = psnr(telea(scene).image, scene.gt, scene.mask)
    sample_resolution = args.sample_resolution or config.train.resolution

    wall0, cpu0 = time.perf_counter(), time.process_time()
    backbone = plugins.registry("backbone").create(config.backbone)
    model = backbone.load("cpu")
    adapter = plugins.registry("adapter").create(config.adapter)
    masking = plugins.registry("masking").create(config.masking)
    trainer = Trainer(model, adapter, masking, scene, config.train, seed=config.seed,
                      compute=model_compute(model, config.train))
    params = sum(p.numel() for p in model.denoiser.parameters())
    eval_at = sorted({int(x) for x in args.eval_at.split(",") if x} | {config.train.steps})
    curve, losses = [], []
    train_cpu = train_wall = 0.0
    last = None
    while True:
        if trainer.step in eval_at:
            trainer.finish()
            last = evaluate(model, scene, config, sample_resolution)
            curve.append({"step": trainer.step, "psnr_mean": round(float(np.mean(last["psnr_masked"])), 3),
                          "psnr_max": round(float(np.max(last["psnr_masked"])), 3),
                          "loss": round(float(np.mean(losses[-50:])), 5) if losses else None,
                          "load": load_average()})
            print(json.dumps({"label": args.label, **curve[-1]}), flush=True)
        if trainer.step >= config.train.steps:
            break
        c, w = time.process_time(), time.perf_counter()
        losses.append(trainer.train_step())
        train_cpu += time.process_time() - c
        train_wall += time.perf_counter() - w

    ranker = plugins.registry("ranker").create(config.ranker)
    c, w = time.process_time(), time.perf_counter()
    ranker.prepare(scene.references, scene.mask)
    scores = [r.score for r in ranker.score(last["samples"])]
    rank_cpu, rank_wall = time.process_time() - c, time.perf_counter() - w
    pick = int(np.argmax(scores))
    record = {
        "label": args.label,
        "scene": Path(args.scene).name,
        "overrides": args.overrides,
        "sample_resolution": sample_resolution,
        "threads": args.threads,
        "params": params,
        "train_cpu_s": round(train_cpu, 1),
        "train_wall_s": round(train_wall, 1),
        "sample_cpu_s": last["sample_cpu_s"],
        "sample_wall_s": last["sample_wall_s"],
        "rank_cpu_s": round(rank_cpu, 2),
        "rank_wall_s": round(rank_wall, 2),
        "total_wall_s": round(time.perf_counter() - wall0, 1),
        "total_cpu_s": round(time.process_time() - cpu0, 1),
        "load_end": load_average(),
        "telea_psnr_masked": round(telea_psnr, 3),
        "psnr_masked": [round(x, 3) for x in last["psnr_masked"]],
        "psnr_mean": round(float(np.mean(last["psnr_masked"])), 3),
        "picked": pick,
        "picked_psnr": round(last["psnr_masked"][pick], 3),
        "rank_scores": scores,
        "curve": curve,
        "machine": f"{platform.processor() or platform.machine()} x{os.cpu_count()}",
        "torch": torch.__version__,
        "config": dump_config(config),
    }
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as f:
        f.write(json.dumps(record) + "\n")
    summary = {k: record[k] for k in ("label", "params", "train_cpu_s", "train_wall_s", "sample_cpu_s", "rank_wall_s",
                                      "load_end", "telea_psnr_masked", "psnr_mean", "picked_psnr")}
    print(json.dumps(summary), flush=True)
    return record


if __name__ == "__main__":
    main()
