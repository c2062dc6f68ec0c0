"""``realfill fill SCENE``: fine-tune, sample, rank; writes the run folder of DESIGN.md."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from realfill.arguments import add_config_arguments, config_from_args

NAME = "fill"
HELP = "complete a scene's target: fine-tune on its references, sample, rank, write the run folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, metavar="SCENE", help="the scene folder (ref/, target/)")
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint (same config)")
    compare = parser.add_argument_group("comparison (scenes with target/gt.png)")
    compare.add_argument("--baseline", action="append", default=[], metavar="NAME",
                         help="compare the result with this baseline (repeatable; default: telea, geometric, "
                         "multi-homography; in-context samples the run's backbone untuned)")
    compare.add_argument("--no-compare", action="store_true",
                         help="skip the comparison with the baselines (comparison.json)")


def out_path(args: argparse.Namespace) -> Path | None:
    """Where the run writes, checked before plugins and weights load (the default depends on the config)."""
    return args.out


def run(args: argparse.Namespace, ctx) -> int:
    # start-up time: the parser imports every command module; these import torch
    from realfill.run import RESULT_FILE, fill
    from realfill.comparison import DEFAULT_BASELINES, check_comparison_baselines, report_comparison

    baselines = args.baseline or list(DEFAULT_BASELINES)
    check_comparison_baselines(baselines, ctx.plugins)  # a bad name fails before anything runs
    config = config_from_args(args, ctx)
    start = time.perf_counter()
    run_dir = fill(args.scene, config, args.out, plugins=ctx.plugins, resume=args.resume, console=ctx.console)
    if not args.no_compare:
        report_comparison(run_dir, args.scene, config, plugins=ctx.plugins, baselines=baselines, console=ctx.console,
                          seconds=time.perf_counter() - start, table_console=ctx.out)
    ctx.console.print(f"[green]done:[/] {run_dir / RESULT_FILE}", soft_wrap=True)
    ctx.out.print(str(run_dir))
    return 0
