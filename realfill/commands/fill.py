"""``realfill fill SCENE``: fine-tune, sample, rank; writes the run folder of DESIGN.md."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "fill"
HELP = "complete a scene's target: fine-tune on its references, sample, rank, write the run folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from realfill.cli import add_config_arguments

    parser.add_argument("scene", type=Path, metavar="SCENE", help="the scene folder (ref/, target/)")
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint (same config)")


def out_path(args: argparse.Namespace) -> Path | None:
    """Where the run writes, checked before plugins and weights load (the default depends on the config)."""
    return args.out


def run(args: argparse.Namespace, ctx) -> int:
    from realfill.cli import config_from_args
    from realfill.run import RESULT_FILE, fill

    config = config_from_args(args, ctx)
    run_dir = fill(args.scene, config, args.out, plugins=ctx.plugins, resume=args.resume, console=ctx.console)
    ctx.console.print(f"[green]done:[/] {run_dir / RESULT_FILE}", soft_wrap=True)
    ctx.out.print(str(run_dir))
    return 0
