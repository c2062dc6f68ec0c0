"""A run's result against the baselines on the same scene: what ``realfill fill`` ends with when the scene
has a ground truth, so that a user sees where a baseline wins (``comparison.json`` in the run folder, a
Rich table on the terminal; ``--no-compare`` skips it).

Each image or model baseline runs into ``RUN/baselines/NAME/`` (``result.png``, ``run.json``; a model
baseline such as ``in-context`` samples the run's backbone untuned, so it adds ``samples/`` and
``ranking.json``), every method is
evaluated with the same metrics, and the contact sheet is drawn again with the baselines beside the
result. The table shows the values inside the mask (the paper's convention) with each one's direction;
``comparison.json`` holds every value, inside the mask and over the whole image. A baseline whose weights
are not on this machine (its ``complete`` raises :class:`MissingWeightsError`) is skipped: the table's caption
and ``skipped_baselines`` say so and why, and the run completes. A baseline whose ``complete`` raises
anything else (``SystemExit`` included: a third-party plugin's bug) costs only its own row: the row holds
its ``error``, ``failed_baselines`` names the plugin that registered it, a warning says so, and the other
rows and ``comparison.json`` are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from realfill.baselines import RUNNABLE_KINDS, check_baselines, run_baseline
from realfill.console import print_table
from realfill.contact_sheet import ranked_from_run, write_contact_sheets
from realfill.errors import MissingWeightsError, UserError
from realfill.evaluation import build_metrics, evaluate_images
from realfill.scene import load_scene, read_rgb

COMPARISON_FILE = "comparison.json"
BASELINES_DIR = "baselines"
#: the baselines a fill is compared with unless ``--baseline`` says otherwise (docs/evaluation.md: the
#: multi-homography warp beat the single plane on all five measured scenes; both are shown)
DEFAULT_BASELINES = ("telea", "geometric", "multi-homography")
#: weight-free metrics, so the comparison runs on any machine
DEFAULT_METRICS = ("psnr", "ssim", "vif", "sharpness")
#: the values the table shows (comparison.json has them all)
SHOWN_VALUES = ("psnr_masked", "ssim_masked", "vif_masked", "sharpness_masked")


def check_comparison_baselines(names: Sequence[str], plugins) -> None:
    """Refuse, before a run starts, a name that is not a registered image or model baseline (one line, exit 2)."""
    check_baselines(names, plugins)
    for name in names:
        if plugins.registry("baseline").get(name).kind not in RUNNABLE_KINDS:
            raise UserError(f"--baseline {name}: a run of the fill pipeline, not an image baseline; compare with it "
                            "through `realfill ablate --baseline " + name + "`")


def compare_run(run_dir: Path, scene, *, plugins, baselines: Sequence[str] = DEFAULT_BASELINES,
                metrics: Sequence[str] = DEFAULT_METRICS, run_label: str = "this run", run_seconds: float | None = None,
                notice: str | None = None, config=None) -> dict | None:
    """Evaluate ``RUN/result.png`` and each baseline against the scene's ground truth; write and return
    ``RUN/comparison.json`` (None when the scene has no ground truth). ``config``: the run's, for model
    baselines (``in-context``), which sample its backbone untuned."""
    if scene.gt is None:
        return None
    run_dir = Path(run_dir)
    measures = build_metrics(plugins, list(metrics))
    result = read_rgb(run_dir / "result.png")
    evaluation = evaluate_images(result, scene.gt, scene.mask, measures)
    methods = [{"method": run_label, "kind": "run", "result": "result.png", "seconds": run_seconds,
                "values": evaluation.as_dict()["values"]}]
    directions = dict(evaluation.higher_is_better)
    images = {}
    skipped_baselines = {}
    failed_baselines: dict[str, dict] = {}
    for name in baselines:
        start = time.perf_counter()
        try:
            path = run_baseline(name, scene, run_dir / BASELINES_DIR / name, plugins=plugins, config=config)
        except MissingWeightsError as exc:  # no local weights: the table says so, the run still completes
            skipped_baselines[name] = str(exc)
            continue
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken (third-party) baseline costs only its row
            error = baseline_error(exc)
            failed_baselines[name] = {"plugin": plugins.registry("baseline").plugin_of(name), "error": error}
            methods.append({"method": name, "kind": "baseline", "result": None,
                            "seconds": round(time.perf_counter() - start, 2), "values": {}, "error": error})
            continue
        seconds = round(time.perf_counter() - start, 2)
        images[name] = read_rgb(path)
        scored = evaluate_images(images[name], scene.gt, scene.mask, measures)
        directions.update(scored.higher_is_better)
        methods.append({"method": name, "kind": "baseline", "result": str(path.relative_to(run_dir)),
                        "seconds": seconds, "values": scored.as_dict()["values"]})
    record = {
        "scene": str(Path(scene.root).resolve()),
        "shown": [v for v in SHOWN_VALUES if v in directions],
        "higher_is_better": directions,
        "methods": methods,
        "best": _best(methods, directions),
        "run_beaten_on": _beaten(methods, directions),
        "skipped": dict(evaluation.skipped),
        "skipped_baselines": skipped_baselines,
        "failed_baselines": failed_baselines,
        "notice": notice,
    }
    if (run_dir / "ranking.json").is_file():  # the sheet again, the baselines beside the result
        ranked, pictures = ranked_from_run(run_dir)
        if ranked:
            write_contact_sheets(run_dir, scene.references, scene.masked_target(), ranked, scene.gt,
                                 correspondences=pictures, notice=notice,
                                 result_label=f"{ranked[0][0]}\n{scores_label(methods[0]['values'])}",
                                 baselines=[(f"baseline {m['method']}\n{scores_label(m['values'])}", images[m["method"]])
                                            for m in methods[1:] if m["method"] in images])
    path = run_dir / COMPARISON_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return record


def baseline_error(exc: BaseException) -> str:
    """A baseline's failure in one line (``SystemExit(0)``: it tried to end the whole process)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}): the baseline tried to end the process"
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0] if text else type(exc).__name__


def failed_lines(record: dict) -> list[str]:
    """``failed NAME (plugin P): ERROR`` for each baseline that raised."""
    return [f"failed {name} (plugin {info['plugin']}): {info['error']}"
            for name, info in record.get("failed_baselines", {}).items()]


def scores_label(values: dict) -> str:
    """``PSNR 15.86 · SSIM 0.482 · sharp 0.65`` (inside the mask) for a contact-sheet tile."""
    parts = [(name, values.get(key)) for name, key in (("PSNR", "psnr_masked"), ("SSIM", "ssim_masked"),
                                                       ("sharp", "sharpness_masked"))]
    return " · ".join(f"{name} {value:.2f}" if name == "PSNR" else f"{name} {value:.3f}"
                      for name, value in parts if value is not None)


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _best(methods: list[dict], directions: dict[str, bool]) -> dict[str, str]:
    best = {}
    for key, higher in directions.items():
        scored = [(m["values"].get(key), m["method"]) for m in methods if m["values"].get(key) is not None]
        if scored:
            best[key] = (max if higher else min)(scored)[1]
    return best


def _beaten(methods: list[dict], directions: dict[str, bool]) -> dict[str, list[str]]:
    """Per value: the baselines that score better than the run."""
    run = methods[0]["values"]
    beaten = {}
    for key, higher in directions.items():
        if run.get(key) is None:
            continue
        winners = [m["method"] for m in methods[1:] if m["values"].get(key) is not None
                   and _better(m["values"][key], run[key], higher)]
        if winners:
            beaten[key] = winners
    return beaten


def render_comparison(record: dict, title: str = "the result against the baselines (inside the mask)") -> Table:
    """A compact table: one row per method, one column per shown value with its direction; the best in bold."""
    shown = record["shown"]
    table = Table(title=title, title_justify="left")
    table.add_column("method")
    for key in shown:
        table.add_column(f"{key} {'↑' if record['higher_is_better'][key] else '↓'}", justify="right")
    table.add_column("seconds", justify="right")
    for method in record["methods"]:
        cells = [method["method"]]
        for key in shown:
            value = method["values"].get(key)
            text = "—" if value is None else (f"{value:.2f}" if key.startswith("psnr") else f"{value:.3f}")
            cells.append(f"[bold green]{text}[/]" if record["best"].get(key) == method["method"] else text)
        cells.append("—" if method.get("seconds") is None else f"{method['seconds']:.1f}")
        table.add_row(*cells)
    lines = []
    beaten = {k: v for k, v in record["run_beaten_on"].items() if k in shown}
    if beaten:
        lines.append("a baseline beats this run on " + "; ".join(f"{k} ({', '.join(v)})" for k, v in beaten.items()))
    else:
        lines.append("this run beats every baseline on every value shown")
    lines += [escape(f"skipped {name}: {reason}") for name, reason in record.get("skipped_baselines", {}).items()]
    lines += [escape(line) for line in failed_lines(record)]
    if record.get("notice"):
        lines.append(record["notice"])
    table.caption = "\n".join(lines)
    table.caption_justify = "left"
    return table


def markdown_table(record: dict) -> str:
    """The same table as Markdown (for the README and docs), values inside the mask."""
    shown = record["shown"]
    head = ["method", *(f"{k} {'↑' if record['higher_is_better'][k] else '↓'}" for k in shown), "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in record["methods"]:
        cells = [method["method"]]
        for key in shown:
            value = method["values"].get(key)
            text = "—" if value is None else (f"{value:.2f}" if key.startswith("psnr") else f"{value:.3f}")
            cells.append(f"**{text}**" if record["best"].get(key) == method["method"] else text)
        cells.append("—" if method.get("seconds") is None else f"{method['seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"\nskipped {name}: {reason}" for name, reason in record.get("skipped_baselines", {}).items()]
    lines += [f"\n{line}" for line in failed_lines(record)]
    return "\n".join(lines) + "\n"


def report_comparison(run_dir: Path, scene_path: Path, config, *, plugins, baselines: Sequence[str] = DEFAULT_BASELINES,
                      console=None, seconds: float | None = None, table_console=None) -> dict | None:
    """``realfill fill``'s last step: compare the run with the baselines, write ``comparison.json``, print the
    table. Nothing when the scene has no ground truth."""
    scene = load_scene(scene_path, max_references=config.max_references)
    if scene.gt is None:
        return None
    notice = plugins.registry("backbone").get(config.backbone.name).disclaimer
    record = compare_run(run_dir, scene, plugins=plugins, baselines=baselines, run_label=f"this run ({config.backbone.name})",
                         run_seconds=None if seconds is None else round(seconds, 1), notice=notice, config=config)
    if console is not None and record is not None:
        for name, info in record["failed_baselines"].items():
            problem = (f"baseline {name!r} (plugin {info['plugin']}) failed: {info['error']}; its row says so, "
                       "the other rows are kept")
            console.print(f"[yellow]warning:[/] {escape(problem)}", soft_wrap=True)
        # the table is the run's result: on ``table_console`` (fill: stdout, so `> log` keeps it), method
        # names whole at any width
        print_table(table_console or console, render_comparison(record))
        console.print(f"comparison: {Path(run_dir) / COMPARISON_FILE}", soft_wrap=True)
    return record
