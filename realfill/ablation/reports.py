"""The reports: ``results.csv``, ``results.json`` (rows and a per-configuration summary), ``report.md``
and ``chart.png`` (Pillow; matplotlib is not a dependency)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from realfill.ablation.plan import Plan, _write_json
from realfill.atomic import atomic_write_text, save_image
from realfill.components import BUILTIN_ROLES, Role
from realfill.evaluation import PROTOCOLS

#: metrics shown in summaries first (the paper's table), when present
KEY_METRICS = ("psnr_masked", "ssim_masked", "ms_ssim_masked", "sharpness_masked", "vif_masked", "lpips", "dreamsim", "dino", "clip", "psnr", "ssim", "ms_ssim")


# -- results -----------------------------------------------------------------------------------------


def metric_names(rows: list[dict]) -> list[str]:
    names = {k for r in rows for k in r.get("metrics", {})}
    return [m for m in KEY_METRICS if m in names] + sorted(names - set(KEY_METRICS))


def directions(rows: list[dict]) -> dict[str, bool]:
    """Each value's direction (True: higher is better), as the metrics declared it in the runs."""
    merged: dict[str, bool] = {}
    for row in rows:
        merged.update(row.get("higher_is_better") or {})
    return merged


def heading(name: str, higher_is_better: dict[str, bool]) -> str:
    """``psnr_masked ↑`` (higher is better), ``lpips ↓`` (lower is better), or the bare name if unknown."""
    if name not in higher_is_better:
        return name
    return f"{name} {'↑' if higher_is_better[name] else '↓'}"


def summarize(rows: list[dict]) -> list[dict]:
    """Per configuration: mean and sample std of each metric over its successful runs (scenes)."""
    summary = []
    for label in dict.fromkeys(r["configuration"] for r in rows):
        mine = [r for r in rows if r["configuration"] == label]
        ok = [r for r in mine if r["status"] == "ok"]
        entry = {"configuration": label, "runs": len(mine), "ok": len(ok), "metrics": {}}
        for name in metric_names(ok):
            values = [r["metrics"][name] for r in ok if r["metrics"].get(name) is not None
                      and math.isfinite(r["metrics"][name])]
            if values:
                std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                entry["metrics"][name] = {"mean": float(np.mean(values)), "std": std, "n": len(values)}
        picks = [r["selection"] for r in ok if r.get("selection")]
        if picks:
            entry["selection"] = {
                "runs": len(picks),
                "pick_beats_mean": sum(bool(p["pick_beats_mean"]) for p in picks),
                "pick_minus_mean": float(np.mean([p["pick_minus_mean"] for p in picks])),
                "pick_place": float(np.mean([p["pick_place"] for p in picks])),
                "samples": float(np.mean([p["samples"] for p in picks])),
            }
        summary.append(entry)
    return summary


def csv_fixed(roles: Iterable[Role] = BUILTIN_ROLES) -> list[str]:
    """results.csv's columns before the metrics: the run, one per role with a run-config field (the role
    table's, a plugin's included), then its status and times."""
    return ["scene", "configuration", "method", *(role.field for role in roles if role.field is not None), "status",
            "error", "train_s", "sample_s", "rank_s", "eval_s", "peak_rss_mb", "run_dir", "protocol",
            "scored_images"]


#: the built-in roles' columns (``csv_fixed(plan.roles)`` holds a plugin's roles too)
CSV_FIXED = csv_fixed()
#: seed selection (``realfill.evaluation.selection_stats``), masked PSNR of the pick and of the samples
CSV_SELECTION = ["pick_psnr_masked", "samples_mean_psnr_masked", "pick_beats_mean", "pick_place"]


def _selection_cells(row: dict) -> dict:
    s = row.get("selection") or {}
    return {"pick_psnr_masked": s.get("pick"), "samples_mean_psnr_masked": s.get("mean"),
            "pick_beats_mean": s.get("pick_beats_mean"), "pick_place": s.get("pick_place")}


def write_results(plan: Plan, rows: list[dict]) -> None:
    out = plan.out
    names = metric_names(rows)
    buffer = io.StringIO()
    fixed = csv_fixed(plan.roles)
    # a run made before a role's plugin was installed was made at the role's default (its row lacks the field)
    defaults = {role.field: role.default for role in plan.roles}
    writer = csv.DictWriter(buffer, fieldnames=fixed + names + CSV_SELECTION, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{k: row.get(k, defaults.get(k)) for k in fixed},
                         **{m: row["metrics"].get(m) for m in names},
                         **_selection_cells(row)})
    atomic_write_text(out / "results.csv", buffer.getvalue())
    summary = summarize(rows)
    _write_json(out / "results.json", {"rows": rows, "summary": summary, "higher_is_better": directions(rows)})
    chart = names[0] if names else None
    if chart:
        save_image(out / "chart.png", bar_chart(summary, [m for m in names if m in KEY_METRICS[:7]][:4] or names[:1]))
    atomic_write_text(out / "report.md", report_markdown(plan, rows, summary, chart is not None))
    table = realbench_table(rows, summary)
    _write_json(out / REALBENCH_JSON, table)
    atomic_write_text(out / REALBENCH_MD, realbench_markdown(table))
    write_html_report(plan, rows, table)


def _axis_values(overrides: list[str]) -> dict[str, str]:
    """``['ranker.name="sift"']`` -> ``{"ranker": "sift"}`` (TOML literals read back)."""
    import tomllib

    values = {}
    for item in overrides:
        key, _, literal = item.partition("=")
        try:
            value = tomllib.loads(f"v = {literal}")["v"]
        except tomllib.TOMLDecodeError:
            value = literal
        values[key.removesuffix(".name")] = str(value)
    return values


def write_html_report(plan: Plan, rows: list[dict], realbench: dict | None = None) -> None:
    """``report.html`` (realfill.report): the runs table, thumbnails, the RealBench table, a grid per axis."""
    from realfill.report import write_ablation_report

    specs = {spec.run_key: spec for spec in plan.runs}
    runs, taken = [], {}
    for row in rows:
        spec = specs.get(row.get("run_key"))
        chosen = _axis_values(spec.configuration.overrides) if spec is not None else {}
        for key, value in chosen.items():
            taken.setdefault(key, [])
            if value not in taken[key]:
                taken[key].append(value)
        runs.append({
            "run_dir": plan.out / row["run_dir"],
            "sample_dir": plan.stage_dir("sample", spec) if spec is not None and spec.sample_key else None,
            "train_dir": plan.stage_dir("train", spec) if spec is not None and spec.train_key else None,
            "axes": chosen,
        })
    components = [k for k in ("method", "backbone", "adapter", "masking", "ranker") if any(k in r for r in rows)]
    write_ablation_report(plan.out, rows, runs, axes=taken, components=components, metrics=metric_names(rows),
                          better=directions(rows), realbench=realbench)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_markdown(plan: Plan, rows: list[dict], summary: list[dict], chart: bool) -> str:
    names = metric_names(rows)
    better = directions(rows)
    lines = ["# Ablation report", "", f"{len(rows)} runs: {len({r['scene'] for r in rows})} scenes x "
             f"{len(summary)} configurations. Base: {json.dumps(plan.base)}.", "",
             "## Summary (mean ± std over scenes)", "",
             "↑: higher is better, ↓: lower is better. Masked PSNR and SSIM reward a blurred fill; read them "
             "beside sharpness_masked (1 = as much fine detail as the ground truth).", ""]
    header = ["configuration", "ok/runs", *(heading(n, better) for n in names)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in summary:
        cells = [entry["configuration"], f"{entry['ok']}/{entry['runs']}"]
        for name in names:
            m = entry["metrics"].get(name)
            if m is None:
                cells.append("—")
            else:  # one scene has no spread
                cells.append(f"{m['mean']:.4f} ± {m['std']:.4f}" if m["n"] > 1 else f"{m['mean']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    skipped = {k: v for r in rows for k, v in r.get("skipped_metrics", {}).items()}
    if skipped:
        lines += ["", "Metrics skipped: " + "; ".join(f"{k} ({v})" for k, v in sorted(skipped.items()))]
    if chart:
        lines += ["", "![chart](chart.png)"]
    selections = [e for e in summary if e.get("selection")]
    if selections:
        lines += ["", "## Seed selection (masked PSNR of the ranker's pick against the samples it chose from)", "",
                  "A ranker that helps puts its pick above the samples' mean in more than half of the runs; "
                  "one that ranks at random, in about half.", "",
                  "| configuration | pick > mean | pick − mean (dB) | pick's place | samples |", "|---|---|---|---|---|"]
        for entry in selections:
            sel = entry["selection"]
            lines.append(f"| {entry['configuration']} | {sel['pick_beats_mean']}/{sel['runs']} | "
                         f"{sel['pick_minus_mean']:+.2f} | {sel['pick_place']:.1f} | {sel['samples']:.0f} |")
    lines += ["", "## Runs", "", "| scene | configuration | status | train s | sample s | rank s | peak MiB | contact sheet |",
              "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {(row.get('error') or '')[:120]}"
        sheet = f"{row['run_dir']}/contact_sheet.png"
        link = f"![{row['scene']} {row['configuration']}]({sheet})" if (plan.out / sheet).is_file() else "—"
        lines.append(f"| {row['scene']} | {row['configuration']} | {status} | {_fmt(row.get('train_s'), 1)} | "
                     f"{_fmt(row.get('sample_s'), 1)} | {_fmt(row.get('rank_s'), 1)} | {_fmt(row.get('peak_rss_mb'), 0)} | {link} |")
    return "\n".join(lines) + "\n"


# -- the RealBench table (the RealFill paper's Table 1) ---------------------------------------------------

REALBENCH_MD = "realbench.md"
REALBENCH_JSON = "realbench.json"
#: the paper's columns: (heading, our value, higher is better, the region it is computed on here)
REALBENCH_COLUMNS = (
    ("PSNR", "psnr_masked", True, "inside the mask"),
    ("SSIM", "ssim_masked", True, "inside the mask"),
    ("LPIPS", "lpips", False, "whole image"),
    ("DreamSim", "dreamsim", False, "whole image"),
    ("DINO", "dino", True, "whole image"),
    ("CLIP", "clip", True, "whole image"),
)
REALBENCH_SOURCE = ("Tang et al., \"RealFill: Reference-Driven Generation for Authentic Image Completion\", "
                    "SIGGRAPH 2024, arXiv 2309.16668, Table 1: RealBench, 33 "
                    "scenes; the baselines' DreamSim/DINO/CLIP values are not quoted here")
#: the paper's own numbers, as quoted (None: not quoted)
REALBENCH_PAPER = (
    ("RealFill", (14.78, 0.424, 0.431, 0.077, 0.948, 0.962)),
    ("SD Inpaint", (10.63, 0.282, 0.605, None, None, None)),
    ("Paint-by-Example", (10.13, 0.244, 0.642, None, None, None)),
    ("TransFill", (13.28, 0.404, 0.542, None, None, None)),
)
REALBENCH_PROTOCOL = (
    "Each value is the mean over the scenes a method completed. The paper computes its low-level metrics "
    "inside the mask only (its Table 1 groups PSNR, SSIM and LPIPS as low-level; DreamSim, DINO and CLIP are "
    "computed on the whole image). Here PSNR "
    "and SSIM are inside the mask (`psnr_masked`, `ssim_masked`: the MSE and the SSIM map averaged over the "
    "masked pixels) and LPIPS is over the whole image (the `lpips` metric has no masked value), so the LPIPS "
    "column is not the paper's protocol and reads lower (better) than a masked one would: the known pixels "
    "match the ground truth.")
#: what the table says after the protocol's own sentence: the others, and how to ask for them
REALBENCH_OTHER_PROTOCOLS = (
    "Other protocols move these numbers: eric15342335/realfill averages the metrics over 16 samples and "
    "resizes to 512x512 (up to 0.6 dB of PSNR on these scenes). `realfill ablate --protocol NAME` scores "
    "another way: pick (the default), samples-mean, samples-mean-512.")


def protocol_text(rows: list[dict]) -> str:
    """The table's protocol paragraph: the regions, which images were scored and at what size (the rows'
    ``--protocol``), and the other protocols."""
    used = sorted({r.get("protocol") or "pick" for r in rows if r.get("status") == "ok"}) or ["pick"]
    scored = "; ".join(f"`{name}`: {PROTOCOLS[name]}" if len(used) > 1 else PROTOCOLS[name]
                       for name in used if name in PROTOCOLS)
    return f"{REALBENCH_PROTOCOL} Images scored ({', '.join(used)}): {scored}. {REALBENCH_OTHER_PROTOCOLS}"


def realbench_table(rows: list[dict], summary: list[dict]) -> dict:
    """The paper's table over this ablation: one row per configuration (its method, the mean of each of the
    six values over the scenes, n), the paper's rows quoted, and the metrics skipped with their reasons."""
    methods = []
    method_of = {r["configuration"]: r.get("method") for r in rows}
    for entry in summary:
        values, counts = {}, {}
        for heading_, key, _, _ in REALBENCH_COLUMNS:
            stats = entry["metrics"].get(key)
            values[heading_] = None if stats is None else stats["mean"]
            counts[heading_] = 0 if stats is None else stats["n"]
        mine = [r for r in rows if r["configuration"] == entry["configuration"]]
        unscored = {r["scene"]: _why_unscored(r) for r in mine if r["status"] != "ok" or not r.get("metrics")}
        methods.append({"configuration": entry["configuration"], "method": method_of.get(entry["configuration"]),
                        "scenes": entry["runs"] - len(unscored), "runs": entry["runs"], "values": values, "n": counts,
                        "unscored": unscored})
    skipped = {k: v for r in rows for k, v in r.get("skipped_metrics", {}).items()
               if k in {key for _, key, _, _ in REALBENCH_COLUMNS}}
    return {
        "columns": [{"heading": h, "value": key, "higher_is_better": up, "region": region}
                    for h, key, up, region in REALBENCH_COLUMNS],
        "scenes": sorted({r["scene"] for r in rows}),
        "methods": methods,
        "paper": {"source": REALBENCH_SOURCE,
                  "rows": [{"method": name, "values": dict(zip((c[0] for c in REALBENCH_COLUMNS), numbers, strict=True))}
                           for name, numbers in REALBENCH_PAPER]},
        "skipped": skipped,
        "protocol": protocol_text(rows),
    }


def _why_unscored(row: dict) -> str:
    """Why a run adds nothing to the table's means: it failed, or it has no values (no ground truth...)."""
    if row["status"] != "ok":
        return f"{row['status']}: {(row.get('error') or '?').splitlines()[0][:100]}"
    reasons = sorted(set((row.get("skipped_metrics") or {}).values()))
    return "; ".join(reasons) or "no metric values"


def _cell(heading_: str, value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if heading_ == "PSNR" else f"{value:.3f}"


def realbench_markdown(table: dict) -> str:
    """``realbench.md``: the table as the paper lays it out, the best of this ablation's rows in bold."""
    columns = table["columns"]
    best = {}
    for c in columns:
        scored = [(m["values"][c["heading"]], m["configuration"]) for m in table["methods"]
                  if m["values"][c["heading"]] is not None]
        if scored:
            best[c["heading"]] = (max if c["higher_is_better"] else min)(scored)[1]
    head = ["method", *(f"{c['heading']} {'↑' if c['higher_is_better'] else '↓'}" for c in columns), "scenes"]
    lines = ["# The RealBench table", "",
             f"{len(table['scenes'])} scenes: {', '.join(table['scenes'])}.", "",
             "Columns (↑ higher is better, ↓ lower is better; where each is computed): "
             + ", ".join(f"{c['heading']} {'↑' if c['higher_is_better'] else '↓'} ({c['region']})" for c in columns) + ".",
             "", table["protocol"], "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in table["methods"]:
        label = m["configuration"] if m["method"] in (None, m["configuration"]) else f"{m['configuration']} ({m['method']})"
        cells = [label]
        for c in columns:
            text = _cell(c["heading"], m["values"][c["heading"]])
            cells.append(f"**{text}**" if best.get(c["heading"]) == m["configuration"] and len(table["methods"]) > 1 else text)
        unscored = m.get("unscored") or {}
        why = f" ({'; '.join(f'{scene}: {reason}' for scene, reason in unscored.items())})" if unscored else ""
        cells.append(f"{m['scenes']}/{m['runs']}{why}")
        lines.append("| " + " | ".join(cells) + " |")
    for row in table["paper"]["rows"]:
        cells = [f"*paper: {row['method']}*", *(_cell(c["heading"], row["values"][c["heading"]]) for c in columns), "33"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Paper rows (italic): {table['paper']['source']}."]
    if table["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in sorted(table["skipped"].items()))]
    return "\n".join(lines) + "\n"


# -- pictures (Pillow; matplotlib is not a dependency) ------------------------------------------------


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def bar_chart(summary: list[dict], metrics: list[str], panel: tuple[int, int] = (360, 260)) -> Image.Image:
    """One panel per metric: a bar per configuration at its mean, with a ±std whisker."""
    pw, ph = panel
    legend_h = 16 * len(summary) + 10
    image = Image.new("RGB", (pw * len(metrics), ph + legend_h), "white")
    draw = ImageDraw.Draw(image)
    for index, metric in enumerate(metrics):
        x0 = index * pw
        left, right, top, bottom = x0 + 50, x0 + pw - 12, 24, ph - 20
        draw.text((x0 + 50, 6), metric, fill="black")
        stats = [e["metrics"].get(metric) for e in summary]
        highs = [s["mean"] + s["std"] for s in stats if s]
        lows = [min(0.0, s["mean"] - s["std"]) for s in stats if s]
        if not highs:
            continue
        vmax, vmin = max(highs) * 1.1 or 1.0, min(lows)
        span = (vmax - vmin) or 1.0

        def y(v: float, bottom=bottom, top=top, vmin=vmin, span=span) -> float:
            return bottom - (v - vmin) / span * (bottom - top)

        draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
        for tick in np.linspace(vmin, vmax, 5):
            draw.line([(left - 4, y(tick)), (left, y(tick))], fill="black")
            draw.text((x0 + 4, y(tick) - 6), f"{tick:.3g}", fill="black")
        slot = (right - left) / max(1, len(stats))
        for j, s in enumerate(stats):
            if not s:
                continue
            bx0, bx1 = left + j * slot + slot * 0.15, left + (j + 1) * slot - slot * 0.15
            draw.rectangle([bx0, y(s["mean"]), bx1, y(max(vmin, 0.0))], fill=PALETTE[j % len(PALETTE)])
            cx = (bx0 + bx1) / 2
            draw.line([(cx, y(s["mean"] + s["std"])), (cx, y(s["mean"] - s["std"]))], fill="black", width=2)
            draw.text((bx0, y(s["mean"]) - 12), f"{s['mean']:.3g}", fill="black")
    for j, entry in enumerate(summary):
        ly = ph + 4 + 16 * j
        draw.rectangle([10, ly, 22, ly + 12], fill=PALETTE[j % len(PALETTE)])
        draw.text((28, ly), entry["configuration"], fill="black")
    return image
