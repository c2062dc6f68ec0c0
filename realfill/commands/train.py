"""``realfill train SCENE --out DIR``: the fine-tuning stage alone (``DIR/adapter/``, ``train_log.jsonl``)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "train"
HELP = "fine-tune on a scene only: writes config.toml, adapter/ and train_log.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from realfill.cli import add_config_arguments

    parser.add_argument("scene", type=Path, metavar="SCENE", help="the scene folder (ref/, target/)")
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from DIR's last checkpoint (same config)")


def out_path(args: argparse.Namespace) -> Path | None:
    return args.out


def run(args: argparse.Namespace, ctx) -> int:
    from realfill.cli import config_from_args
    from realfill.config import write_config
    from realfill.fingerprint import check_same_scene
    from realfill.run import CONFIG_FILE, check_run_dir, default_run_dir, load_backbone, train_stage, write_run_record
    from realfill.runfolder import RunLock
    from realfill.scene import load_scene

    config = config_from_args(args, ctx)
    scene = load_scene(args.scene, max_references=config.max_references)
    out = args.out if args.out is not None else default_run_dir(args.scene, config)
    if args.resume:  # another scene's folder is refused before its lock is taken
        check_same_scene(out, scene)
    with RunLock(out, "train", console=ctx.console):
        check_run_dir(out, config, args.resume)
        ctx.plugins.adapters.create(config.adapter)
        ctx.plugins.masking.create(config.masking)
        model = load_backbone(config, ctx.plugins)
        out.mkdir(parents=True, exist_ok=True)
        write_config(config, out / CONFIG_FILE)
        write_run_record(out, args.scene, config, ctx.plugins, scene)  # the scene --resume compares
        train_stage(scene, config, out, plugins=ctx.plugins, resume=args.resume, console=ctx.console, model=model)
    ctx.console.print(f"[green]trained:[/] {out / 'adapter'}", soft_wrap=True)
    ctx.out.print(str(out))
    return 0
