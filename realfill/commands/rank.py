"""``realfill rank``: rank a folder of candidate completions of a scene, or re-rank a run without sampling again.

``--samples DIR`` is either any folder of images (samples from another tool too) or a run folder
(``DIR/samples/`` inside): then the fill run's rank stage (:func:`realfill.run.rank_stage`) rewrites
``DIR/ranking.json``, ``result.png``, ``contact_sheet.png`` and ``correspondences/``. Candidates must have the target's size (a wrong size is an error naming the file:
resizing would move the hole away from the mask).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from rich.table import Table

from realfill.atomic import save_image
from realfill.config import SelectConfig, apply_flags, format_validation_error
from realfill.config_files import base_data, parse_override
from realfill.console import print_table
from realfill.errors import UserError
from realfill.fingerprint import check_same_scene
from realfill.runfolder import RunLock
from realfill.scene import list_images, load_scene, read_rgb

NAME = "rank"
HELP = "rank candidate images (any folder, or a run's samples) by correspondences with the references"

#: the preset whose ranker ranks a plain folder when no --config/--preset says otherwise (warp: CPU, no weights)
DEFAULT_PRESET = "cpu"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 1]")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, metavar="SCENE", help="the scene folder (ref/, target/)")
    parser.add_argument("--samples", type=Path, required=True, metavar="DIR",
                        help="a folder of candidate images, or a run folder (ranks DIR/samples, rewrites its ranking)")
    parser.add_argument("--matcher", "--ranker", dest="ranker", metavar="NAME",
                        help="ranker component (default: the run's, else the cpu preset's: warp)")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--keep", type=_positive_int, metavar="K", help="keep the K best (select.keep)")
    keep.add_argument("--keep-fraction", type=_fraction, metavar="F",
                      help="keep the best fraction F in (0, 1] (select.keep_fraction)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON array on stdout: one object per candidate (file, score, rank, kept, ...)")
    parser.add_argument("--pictures", type=int, default=4, metavar="N",
                        help="correspondence pictures for the N best, written with --out (default 4; a run "
                        "folder gets the 4 its fill stage writes)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write ranking.json, result.png and correspondences/ here (default: a run folder is "
                        "rewritten in place; nothing is written for a plain folder without --out)")
    group = parser.add_argument_group("run config")
    group.add_argument("--preset", help="take the ranker and select settings from this preset")
    group.add_argument("--config", type=Path, help="take them from this config.toml (default: RUN/config.toml)")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set ranker.ratio=0.75 --set ranker.geometric_check=none")


#: the config keys ranking reads; a --set outside them would be silently ignored, so it is refused
RANK_KEYS = ("ranker", "select", "max_references")


class _RankSettings:
    """The part of a run config that ranking reads: the ranker, the select section, max_references."""

    def __init__(self, ranker, select, max_references: int):
        self.ranker, self.select, self.max_references = ranker, select, max_references


def _resolve(args: argparse.Namespace, ctx, run_dir: Path | None) -> _RankSettings:
    """Preset or config file <- --matcher <- --keep/--keep-fraction <- --set, validated for ranking only
    (ranking must not need the backbone or training sections to be valid or their plugins installed)."""
    if args.config is not None and args.preset is not None:
        raise UserError("--config and --preset exclude each other: a saved config already holds its preset")
    config_file, preset = args.config, args.preset
    if config_file is None and preset is None:
        if run_dir is not None and (run_dir / "config.toml").is_file():
            config_file = run_dir / "config.toml"
        else:
            preset = DEFAULT_PRESET
    data, source = base_data(preset=preset, config_file=config_file)
    select = data.setdefault("select", {})
    if not isinstance(select, dict):
        raise UserError(f"{source}: 'select' must be a section")
    if args.keep_fraction is not None:
        select.pop("keep", None)  # the fraction asked for wins over a K saved in the config
    for item in args.overrides:
        if parse_override(item)[0][0] not in RANK_KEYS:
            raise UserError(f"--set {item}: ranking reads only {', '.join(k + '.*' for k in RANK_KEYS[:2])} "
                            "and max_references")
    source = apply_flags(data, source, components={"ranker": args.ranker},
                         sections={"select": {"keep": args.keep, "keep_fraction": args.keep_fraction}},
                         overrides=args.overrides)
    section = data.get("ranker")
    if not isinstance(section, dict) or "name" not in section:
        raise UserError(f"{source}: no [ranker] section with a name; choose one with --matcher NAME")
    registry = ctx.plugins.registry("ranker")
    if section["name"] not in registry:
        raise UserError(f"{source}: {registry.unknown_message(str(section['name']))}")
    model = create_model(
        "RankConfig",
        __config__=ConfigDict(extra="ignore"),
        ranker=(registry.get(section["name"]).Config, ...),
        select=(SelectConfig, SelectConfig()),
        max_references=(int, 5),
    )
    try:
        valid: BaseModel = model.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, model, source)) from None
    if valid.max_references < 1:
        raise UserError(f"{source}: max_references must be at least 1")
    return _RankSettings(valid.ranker, valid.select, valid.max_references)


def _render(ranking: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify in (("rank", "right"), ("file", "left"), ("score", "right"), ("matches", "right"),
                            ("inliers", "right"), ("kept", "left")):
        table.add_column(column, justify=justify)
    for entry in ranking:
        inliers = entry["details"].get("inliers")
        table.add_row(str(entry["rank"]), entry["file"], f"{entry['score']:g}", str(entry["details"]["matches"]),
                      "-" if inliers is None else str(inliers), "yes" if entry["kept"] else "")
    return table


def _rank_and_write(args, ctx, scene, config, ranker, run_dir, out_dir, paths, candidates, names) -> list[dict]:
    # start-up time: the parser imports every command module; these import torch
    from realfill.seed_selection import rank_candidates
    if run_dir is not None and args.out is None:
        # a run folder: the same stage `realfill fill` runs (ranking.json, result.png, correspondences/,
        # contact_sheet.png), on the samples already there
        from realfill.run import rank_stage  # start-up time, as above

        ranking = rank_stage(scene, config, run_dir, paths, plugins=ctx.plugins)
        ctx.console.print(f"rewrote {run_dir / 'ranking.json'}, result.png, contact_sheet.png and correspondences/")
    else:
        ranking = rank_candidates(ranker, scene, candidates, names, run_dir=out_dir, keep=config.select.keep,
                                  keep_fraction=config.select.keep_fraction, pictures=args.pictures)
        if out_dir is not None:
            save_image(out_dir / "result.png", candidates[names.index(ranking[0]["file"])])
            ctx.plugins.ranking_done(run_dir=out_dir, ranking=ranking)
            ctx.console.print(f"wrote {out_dir / 'ranking.json'}, {out_dir / 'result.png'} "
                              f"and {min(args.pictures, len(ranking))} pictures in {out_dir / 'correspondences'}")
    return ranking


def out_path(args: argparse.Namespace) -> Path | None:
    """Where rank writes: --out, else a run folder given as --samples (rewritten in place)."""
    if args.out is not None:
        return args.out
    return args.samples if (args.samples / "samples").is_dir() else None


def run(args: argparse.Namespace, ctx) -> int:
    # start-up time: the parser imports every command module; these import torch
    from realfill.run import keep_note
    folder = args.samples
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder of samples")
    run_dir = folder if (folder / "samples").is_dir() else None
    image_dir = folder / "samples" if run_dir is not None else folder
    paths = list_images(image_dir)
    if not paths:
        raise UserError(f"{image_dir}: no candidate images (.png/.jpg) to rank")
    if args.pictures < 0:
        raise UserError(f"--pictures {args.pictures}: must be 0 or more")

    config = _resolve(args, ctx, run_dir)
    scene = load_scene(args.scene, max_references=config.max_references)
    if run_dir is not None:  # a run folder's samples are its scene's: ranking them against another is refused
        check_same_scene(run_dir, scene, hint=f"rank its samples as a plain folder (--samples {image_dir} "
                         "--out DIR) or choose the run of this scene")
    if args.out is not None and (args.out / "run.json").is_file():
        check_same_scene(args.out, scene, hint="choose another --out")
    candidates = [read_rgb(p) for p in paths]
    names = [p.relative_to(image_dir).as_posix() for p in paths]
    ranker = ctx.plugins.registry("ranker").create(config.ranker)
    out_dir = args.out
    if hasattr(ranker, "load"):
        ranker.load()  # missing weights: one line before any progress

    writes_to = out_dir if out_dir is not None else run_dir  # None: a plain folder, nothing written
    lock = (RunLock(writes_to, "rank", console=ctx.console, resume_hint="free space, then run the same command again")
            if writes_to is not None else contextlib.nullcontext())
    with lock:
        from realfill.seed_selection import check_candidate_sizes

        check_candidate_sizes(scene, candidates, [str(p) for p in paths])  # the file with its folder, up front
        if note := keep_note(config.select.keep, len(paths)):
            ctx.console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
        ctx.console.print(f"ranking {len(paths)} candidates of {scene.name} with {ranker.name} "
                          f"against {len(scene.references)} references")
        ranking = _rank_and_write(args, ctx, scene, config, ranker, run_dir, out_dir, paths, candidates, names)

    if args.json:
        rows = [{"file": e["file"], "score": e["score"], "rank": e["rank"], "kept": e["kept"],
                 "matches": e["details"]["matches"], "inliers": e["details"]["inliers"]} for e in ranking]
        print(json.dumps(rows, indent=1))
    else:
        print_table(ctx.out, _render(ranking, f"{scene.name}: {len(ranking)} candidates ranked by {ranker.name}"))
    return 0
