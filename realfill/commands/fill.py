"""``realfill fill SCENE``: fine-tune, sample, rank; writes the run folder of DESIGN.md."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from realfill.arguments import add_config_arguments, add_tracker_argument, config_from_args

NAME = "fill"
HELP = "complete a scene's target: fine-tune on its references, sample, rank, write the run folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, metavar="SCENE", help="the scene folder (ref/, target/)")
    add_config_arguments(parser)
    add_tracker_argument(parser)
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

    from realfill.report import REPORT_FILE, write_run_report
    from realfill.tracking import Trackers

    baselines = args.baseline or list(DEFAULT_BASELINES)
    check_comparison_baselines(baselines, ctx.plugins)  # a bad name fails before anything runs
    config = config_from_args(args, ctx)
    start = time.perf_counter()
    with Trackers(args.trackers, ctx.plugins) as trackers:  # unknown or not installed: one line, before any run
        run_dir = fill(args.scene, config, args.out, plugins=ctx.plugins, resume=args.resume, console=ctx.console,
                       trackers=trackers)
        record = None
        if not args.no_compare:
            record = report_comparison(run_dir, args.scene, config, plugins=ctx.plugins, baselines=baselines,
                                       console=ctx.console, seconds=time.perf_counter() - start,
                                       table_console=ctx.out)
        trackers.log_comparison(record, step=config.train.steps)
    write_run_report(run_dir)
    ctx.console.print(f"report: {run_dir / REPORT_FILE}", soft_wrap=True)
    ctx.console.print(f"[green]done:[/] {run_dir / RESULT_FILE}", soft_wrap=True)
    ctx.out.print(str(run_dir))
    return 0
