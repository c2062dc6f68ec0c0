"""``realfill train SCENE --out DIR``: the fine-tuning stage alone (``DIR/adapter/``, ``train_log.jsonl``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from realfill.arguments import add_config_arguments, add_tracker_argument, config_from_args
from realfill.fingerprint import check_same_scene
from realfill.runfolder import RunLock
from realfill.scene import load_scene

NAME = "train"
HELP = "fine-tune on a scene only: writes config.toml, adapter/ and train_log.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, metavar="SCENE", help="the scene folder (ref/, target/)")
    add_config_arguments(parser)
    add_tracker_argument(parser)
    parser.add_argument("--resume", action="store_true", help="continue from DIR's last checkpoint (same config)")


def out_path(args: argparse.Namespace) -> Path | None:
    return args.out


def run(args: argparse.Namespace, ctx) -> int:
    # start-up time: the parser imports every command module; these import torch
    from realfill.run import check_device, check_run_dir, default_run_dir, prepare_run, train_stage

    from realfill.report import write_run_report
    from realfill.tracking import Trackers

    trackers = Trackers(args.trackers, ctx.plugins)  # unknown or not installed: one line, before anything runs
    config = config_from_args(args, ctx)
    scene = load_scene(args.scene, max_references=config.max_references)
    out = args.out if args.out is not None else default_run_dir(args.scene, config)
    compute = check_device(config, ctx.plugins)
    if args.resume:  # another scene's folder is refused before its lock is taken
        check_same_scene(out, scene)
    with RunLock(out, "train", console=ctx.console):
        check_run_dir(out, config, args.resume)
        model = prepare_run(scene, args.scene, config, out, plugins=ctx.plugins, console=ctx.console, compute=compute,
                            whole=False)
        with trackers.start(out, out.name, config.model_dump(mode="json")):
            train_stage(scene, config, out, plugins=ctx.plugins, resume=args.resume, console=ctx.console,
                        model=model, compute=compute)
        write_run_report(out)
    ctx.console.print(f"[green]trained:[/] {out / 'adapter'}", soft_wrap=True)
    ctx.out.print(str(out))
    return 0
