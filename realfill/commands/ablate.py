"""``realfill ablate``: configurations x scenes, stages shared, resumable, locally or on Ray."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from realfill.arguments import add_tracker_argument, config_roles
from realfill.errors import UserError
from realfill.runfolder import RunLock

NAME = "ablate"
HELP = "run an ablation (repeated flags make axes; or --sweep FILE.toml) with shared stages and a report"

#: flag dest -> config key, beside one per role in the run config (``FIELD.name``); a flag given N times is
#: an axis with N values
AXES = {
    "steps": "train.steps",
    "samples": "sample.num_samples",
    "seed": "seed",
}


def axes_of(args: argparse.Namespace) -> dict[str, str]:
    """flag dest -> config key: the component roles' (the role table's, as the parser got it), then AXES."""
    return {**{role.field: f"{role.field}.name" for role in args.component_roles}, **AXES}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenes", nargs="+", type=Path, metavar="SCENE",
                        help="scene folders (RealBench layout), or a folder of them (e.g. RealBench/: its scenes)")
    base = parser.add_argument_group("base config (every run)")
    base.add_argument("--preset", help="a named preset: paper (default), smoke, cpu, ...")
    base.add_argument("--config", type=Path, help="a config.toml to start from")
    base.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key in every run, e.g. --set train.steps=2")
    axes = parser.add_argument_group("axes (repeat a flag to add values; runs are the cartesian product)")
    roles = config_roles(parser)
    for role in roles:
        axes.add_argument(*role.cli_flags, dest=role.field, action="append", default=[])
    parser.set_defaults(component_roles=roles)
    axes.add_argument("--steps", type=int, action="append", default=[], help="train.steps")
    axes.add_argument("--samples", type=int, action="append", default=[], help="sample.num_samples")
    axes.add_argument("--seed", type=int, action="append", default=[])
    axes.add_argument("--sweep", type=Path, metavar="FILE.toml",
                      help="the configurations from a file: [axes] (a product) or [[run]] (a list)")
    axes.add_argument("--baseline", action="append", default=[], metavar="NAME",
                      help="add a baseline beside every table (repeatable): telea, geometric, multi-homography, "
                      "backbone-untuned, in-context, or one a plugin registers (realfill plugins)")
    axes.add_argument("--baselines-only", action="store_true",
                      help="run only the baselines that are not the fill pipeline (telea, geometric: no backbone needed; "
                      "in-context: the backbone, untuned): no fine-tuning")
    run = parser.add_argument_group("running")
    run.add_argument("--out", type=Path, default=Path("runs/ablation"), help="the ablation folder (default runs/ablation)")
    run.add_argument("--executor", choices=("local", "ray"), default="local")
    run.add_argument("--address", help="Ray cluster address (default: start a local one)")
    run.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    run.add_argument("--ray-gpus", type=int, help="GPUs of the local Ray instance (default: those it finds)")
    run.add_argument("--ray-resources", action="append", default=[], metavar="STAGE.KEY=VALUE",
                     help="override what a stage asks Ray for (STAGE train, sample or rank; KEY num_cpus, "
                     "num_gpus or memory), e.g. train.num_gpus=1 (default: training and sampling one GPU where "
                     "the run's device is a GPU, every stage one CPU)")
    run.add_argument("--plan", action="store_true",
                     help="print the plan (each run, the stages it shares with which, the stage keys' inputs) and "
                     "exit: nothing runs, no folder is made")
    run.add_argument("--no-tui", action="store_true", help="plain lines instead of the live terminal UI")
    add_tracker_argument(run)
    run.add_argument("--metric", action="append", default=[], metavar="NAME", help="only these metrics (repeatable)")
    run.add_argument("--protocol", default="pick", metavar="NAME",
                     help="which images are scored, at what size: pick (each run's ranked pick at the target's "
                     "size; default), samples-mean (every sample, averaged), samples-mean-512 (every sample, "
                     "averaged, resized to 512x512 as eric15342335/realfill does)")
    run.add_argument("--metric-weights", action="append", default=[], metavar="NAME=PATH",
                     help="local weights for a learned metric, e.g. dino=/models/dino-vits16")


def configurations_from_args(args, plugins):
    # start-up time: the parser imports every command module; these import torch
    from realfill.ablation import Configuration, product_configurations, read_sweep
    from realfill.baselines import check_baselines

    check_baselines(args.baseline, plugins)
    registry = plugins.registry("baseline")
    image_baselines = [name for name in args.baseline if registry.get(name).kind == "image"]
    model_baselines = [name for name in args.baseline if registry.get(name).kind == "model"]

    all_axes = axes_of(args)
    axes = {key: getattr(args, dest) for dest, key in all_axes.items() if getattr(args, dest)}
    base = {"preset": args.preset, "config": args.config, "set": list(args.overrides)}
    if args.sweep is not None:
        if axes:
            raise UserError(f"--sweep {args.sweep}: give the axes in the sweep file or as flags, not both")
        sweep_base, configurations = read_sweep(args.sweep, plugins.roles)
        if sweep_base.get("preset") and not args.preset and not args.config:
            base["preset"] = sweep_base["preset"]
        if sweep_base.get("config") and not args.preset and not args.config:
            base["config"] = (args.sweep.parent / sweep_base["config"]).resolve()
        base["set"] = [*sweep_base.get("set", []), *base["set"]]
    else:
        flags = {role.field: role.cli_flags[0] for role in args.component_roles}
        for dest in all_axes:
            values = getattr(args, dest)
            if len(values) != len(set(values)):
                raise UserError(f"{flags.get(dest, '--' + dest)}: a value is given twice ({', '.join(map(str, values))})")
        configurations = product_configurations(axes) if axes else [Configuration("base")]
    if base["preset"] and base["config"]:
        raise UserError("--config and --preset exclude each other: a saved config already holds its preset")
    if args.baselines_only:
        own = [name for name in args.baseline if name in image_baselines or name in model_baselines]
        if not own or axes or args.sweep or len(own) != len(args.baseline):
            raise UserError("--baselines-only: give only image baselines (--baseline telea, --baseline geometric) "
                            "or model baselines (--baseline in-context), and no axes or sweep")
        return base, [Configuration(name, baseline=name, needs_config=name in model_baselines) for name in own]
    extra = []
    for name in args.baseline:  # a pipeline baseline: the same runs with its overrides
        if name in image_baselines:
            continue
        for c in configurations:
            label = name if len(configurations) == 1 else f"{c.label},{name.removeprefix('backbone-')}"
            if name in model_baselines:  # the run's backbone, untuned: the configuration's settings, its own run
                extra.append(Configuration(label, list(c.overrides), baseline=name, needs_config=True))
            else:
                extra.append(Configuration(label, [*c.overrides, *registry.get(name).overrides]))
    extra += [Configuration(name, baseline=name) for name in image_baselines]
    return base, configurations + extra


def _quiet_libraries() -> None:
    try:
        from transformers.utils import logging as hf_logging  # start-up time (seconds)

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from diffusers.utils import logging as diffusers_logging  # start-up time (seconds)

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def out_path(args: argparse.Namespace) -> Path | None:
    return None if args.plan else args.out


def run(args: argparse.Namespace, ctx) -> int:
    # start-up time: the parser imports every command module; these import torch
    from rich.markup import escape

    from realfill.ablation import (LocalExecutor, RayExecutor, build_plan, describe_plan, expand_scene_folders,
                                   parse_ray_resources, run_ablation)
    from realfill.ablation.executors import BASELINE_FAILED
    from realfill.evaluation import check_protocol, parse_metric_weights
    from realfill.tui import make_reporter

    if args.address and args.executor != "ray":
        raise UserError("--address is for --executor ray")
    from realfill.tracking import check_trackers

    check_trackers(args.trackers, ctx.plugins)  # unknown or not installed: one line, before anything runs
    base, configurations = configurations_from_args(args, ctx.plugins)
    weights = parse_metric_weights(args.metric_weights)
    check_protocol(args.protocol)
    for name in [*args.metric, *weights]:
        ctx.plugins.registry("metric").get(name)  # unknown names fail before anything runs
    if (args.ray_gpus is not None or args.ray_resources) and args.executor != "ray":
        raise UserError("--ray-gpus and --ray-resources are for --executor ray")
    resources = parse_ray_resources(args.ray_resources)
    left_out: list[Path] = []
    scenes = expand_scene_folders(args.scenes, left_out)
    # every scene is read (its content is in the stage keys) before the folder is locked: a folder that is not
    # a scene is one line, and the ablation folder is not touched
    plan = build_plan(scenes, configurations, args.out, preset=base["preset"], config_file=base["config"],
                      overrides=base["set"], plugins=ctx.plugins)
    if left_out:
        ctx.console.print(f"[yellow]note:[/] left out {len(left_out)} subfolder{'s' if len(left_out) > 1 else ''} "
                          f"without target/ (not scenes): {', '.join(str(p) for p in left_out)}", soft_wrap=True)
    for scene in dict.fromkeys(run.scene for run in plan.runs):
        if not os.path.lexists(scene / "target" / "gt.png"):
            ctx.console.print(f"[yellow]note:[/] {scene} has no ground truth (target/gt.png): its runs are made, "
                              "but their metric cells stay empty", soft_wrap=True)
    if args.plan:  # before the lock: it makes the folder
        for line in describe_plan(plan):
            ctx.out.print(line, soft_wrap=True, markup=False, highlight=False)
        return 0
    with RunLock(args.out, "ablate", console=ctx.console,
                 resume_hint="free space, then run the same command again (finished stages are kept)"):
        _quiet_libraries()  # their per-load progress bars and notices would break the live display
        executor = (RayExecutor(args.address, args.ray_cpus, args.ray_gpus, resources) if args.executor == "ray"
                    else LocalExecutor())
        blocked = sorted(getattr(ctx.plugins, "blocked", ()) or ())
        try:
            with make_reporter(ctx.console, ctx.plugins, tui=not args.no_tui) as reporter:
                outcome = run_ablation(plan, executor, reporter, metrics=args.metric, metric_weights=weights,
                                       blocked=blocked, plugins=ctx.plugins, protocol=args.protocol,
                                       trackers=args.trackers)
        finally:
            if hasattr(executor, "close"):
                executor.close()
    for row in outcome.rows:
        if row["status"] == BASELINE_FAILED:
            ctx.console.print(f"[yellow]warning:[/] {escape(row['scene'] + ': ' + str(row['error']))}; its row says so, "
                              "the other rows are kept", soft_wrap=True)
    ctx.console.print(f"results: {plan.out / 'results.csv'}, {plan.out / 'report.md'}, "
                      f"{plan.out / 'report.html'}", soft_wrap=True)
    return 1 if outcome.failed else 0
