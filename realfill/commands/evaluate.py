"""``realfill evaluate``: metrics of a run's result (or any result image) against the scene's gt.png."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from realfill.console import print_table
from realfill.errors import UserError
from realfill.scene import load_scene

NAME = "evaluate"
HELP = "PSNR/SSIM/MS-SSIM inside the mask and overall, and the learned metrics whose weights are here"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="RUN_DIR|SCENE",
                        help="a run folder (writes RUN_DIR/metrics.json), or with --result the scene folder")
    parser.add_argument("--result", type=Path, metavar="IMG", help="evaluate this image against SCENE's gt.png")
    parser.add_argument("--scene", type=Path, help="the run's scene, when the run folder does not record it")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME",
                        help="only these metrics (repeatable; default: every registered metric)")
    parser.add_argument("--metric-weights", action="append", default=[], metavar="NAME=PATH",
                        help="local weights for a learned metric, e.g. --metric-weights dino=/models/dino-vits16")
    parser.add_argument("--protocol", default="pick", metavar="NAME",
                        help="which images of a run folder are scored, at what size: pick (the ranked pick at the "
                        "target's size; default), samples-mean (every sample, averaged), samples-mean-512 (every "
                        "sample, averaged, resized to 512x512 as eric15342335/realfill does)")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")


def render(record: dict) -> Table:
    table = Table(title=f"metrics of {record['result']}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("better")
    for key, value in record["values"].items():
        shown = record.get("non_finite", {}).get(key) if value is None else f"{value:.4f}"
        table.add_row(key, shown, "higher" if record["higher_is_better"].get(key, True) else "lower")
    for name, reason in record["skipped"].items():
        table.add_row(name, "skipped", reason, style="dim")
    selection = record.get("selection")
    if selection:
        table.add_row("seed selection", f"{selection['pick_minus_mean']:+.2f} dB",
                      f"the pick's {selection['metric']} {selection['pick']:.2f} against the mean {selection['mean']:.2f} "
                      f"of {selection['samples']} samples (place {selection['pick_place']} of {selection['samples']})")
    return table


def run(args: argparse.Namespace, ctx) -> int:
    # start-up time: the parser imports every command module; these import torch
    from realfill.evaluation import build_metrics, check_protocol, evaluate_result, evaluate_run, parse_metric_weights
    metrics = build_metrics(ctx.plugins, args.metric, parse_metric_weights(args.metric_weights))
    check_protocol(args.protocol)
    if args.result is not None and args.protocol != "pick":
        raise UserError(f"--protocol {args.protocol}: scores a run folder's samples; --result is one image")
    if args.result is not None:
        if args.scene is not None:
            raise UserError("--result takes the scene as its positional argument; drop --scene")
        if not args.result.is_file():
            raise UserError(f"{args.result}: no such result image")
        scene = load_scene(args.path)
        evaluation = evaluate_result(args.result, scene, metrics)
        record = {"result": str(args.result), "scene": str(scene.root), **evaluation.as_dict()}
    else:
        record = evaluate_run(args.path, metrics, scene_path=args.scene, protocol=args.protocol)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print_table(ctx.out, render(record))
    return 0
