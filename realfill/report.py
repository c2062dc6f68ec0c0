"""``report.html``: one self-contained page per run folder and per ablation folder, for a browser opened on
the file itself (no server, no network). CSS and the sorting script are inline; pictures are RELATIVE links
to the folder's own files, so the folder can be copied or served as it is. The scene's inputs live outside
a run folder, so small copies of them go to ``report_files/`` beside the page.

- a run: the inputs, the result beside the ground truth and the baselines (``comparison.json``), the metrics
  table, the ranked samples, the validation strips, the loss curve (inline SVG from ``train_log.jsonl``);
- an ablation: the table of runs (every column sortable), each run's result and best samples as thumbnails,
  the RealBench-style table, and one grid per axis (one row per value) so a reader sees what an axis changes.

Jinja2 (a dependency of torch) renders it, autoescaping every value.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from PIL import Image

from realfill.atomic import atomic_write_text, save_image
from realfill.comparison import COMPARISON_FILE
from realfill.evaluation import RUN_RECORD
from realfill.layout import TRAIN_LOG
from realfill.validation import validation_strips

REPORT_FILE = "report.html"
FILES_DIR = "report_files"
#: the longer side of the copies of a scene's inputs in report_files/
INPUT_SIDE = 512
#: best samples shown per run in an ablation's report
BEST_SHOWN = 3

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222;background:#fff}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.t,th.t{text-align:left}table.sortable th{cursor:pointer;user-select:none}
th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}td.best{font-weight:bold;background:#eef8ee}
figure{display:inline-block;margin:4px;vertical-align:top;text-align:center}
figure img{max-height:220px;max-width:420px;border:1px solid #ccc;display:block}
figure.small img{max-height:110px;max-width:200px}figcaption{font-size:12px;color:#555;max-width:420px}
.strip img{max-width:100%;border:1px solid #ccc}.note{color:#8a5a00}.muted{color:#777}
.grid td{text-align:left;vertical-align:top}.wide{overflow-x:auto}.each .strip img{max-height:160px;width:auto}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, column){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var ascending = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(ascending ? 'asc' : 'desc');
      function key(row){
        var cell = row.cells[column], raw = cell.getAttribute('data-sort');
        var text = raw !== null ? raw : cell.textContent.trim(), number = parseFloat(text);
        return isNaN(number) ? text.toLowerCase() : number;
      }
      rows.sort(function(a, b){
        var x = key(a), y = key(b), missing = (typeof x === 'string') - (typeof y === 'string');
        if (missing && (x === '' || y === '' || x === '—' || y === '—')) return missing;
        var order = x < y ? -1 : x > y ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach(function(row){body.appendChild(row);});
    });
  });
});
"""

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ css|safe }}</style></head>
<body><h1>{{ title }}</h1>{% block body %}{% endblock %}<script>{{ js|safe }}</script></body></html>
"""

_MACROS = """
{% macro fig(src, caption, cls='') %}<figure class="{{ cls }}"><a href="{{ src|urlencode }}"><img src="{{ src|urlencode }}" alt="{{ caption }}"
 loading="eager"></a><figcaption>{{ caption }}</figcaption></figure>{% endmacro %}
{% macro value(v) %}{% if v is none %}—{% elif v is number %}{{ '%.4g' % v }}{% else %}{{ v }}{% endif %}{% endmacro %}
"""

_RUN = _MACROS + """{% extends "base" %}{% block body %}
<p class="muted">{{ subtitle }}</p>
{% for note in notes %}<p class="note">{{ note }}</p>{% endfor %}
{% if inputs %}<h2>Inputs</h2>{% for src, caption in inputs %}{{ fig(src, caption) }}{% endfor %}{% endif %}
<h2>Result, ground truth and baselines</h2>
{% for src, caption in results %}{{ fig(src, caption) }}{% endfor %}
{% if metrics %}<h2>Metrics</h2>
<table class="sortable" id="metrics"><thead><tr><th class="t">method</th>{% for h in metrics.headings %}<th>{{ h }}</th>{% endfor %}
</tr></thead><tbody>{% for row in metrics.rows %}<tr><td class="t">{{ row.method }}</td>
{% for cell in row.cells %}<td data-sort="{{ cell.sort }}"{% if cell.best %} class="best"{% endif %}>{{ value(cell.value) }}</td>{% endfor %}
</tr>{% endfor %}</tbody></table><p class="muted">↑ higher is better, ↓ lower; best in bold. Every value: comparison.json</p>{% endif %}
{% if samples %}<h2>Ranked samples</h2>{% for src, caption in samples %}{{ fig(src, caption, 'small') }}{% endfor %}{% endif %}
{% if strips %}<h2>Validation strips</h2><p class="muted">the same seeds at every step (train.validation_steps)</p>
{% for src, caption in strips %}<figure class="strip"><img src="{{ src|urlencode }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure><br>{% endfor %}{% endif %}
{% if curve %}<h2>Training loss</h2>{{ curve | safe }}{% endif %}
{% endblock %}
"""

_ABLATION = _MACROS + """{% extends "base" %}{% block body %}
<p class="muted">{{ subtitle }}</p>
<h2>Runs</h2><p class="muted">click a column to sort by it (↑ higher is better, ↓ lower)</p>
<div class="wide"><table class="sortable" id="runs"><thead><tr>{% for h in runs.headings %}<th{% if loop.index <= runs.text_columns %} class="t"{% endif %}>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in runs.rows %}<tr>{% for cell in row %}<td data-sort="{{ cell.sort }}"{% if loop.index <= runs.text_columns %} class="t"{% endif %}>{{ value(cell.value) }}</td>{% endfor %}</tr>{% endfor %}</tbody></table></div>
{% if realbench %}<h2>RealBench table</h2>
<table id="realbench"><thead><tr><th class="t">method</th>{% for h in realbench.headings %}<th>{{ h }}</th>{% endfor %}<th>scenes</th></tr></thead><tbody>
{% for row in realbench.rows %}<tr><td class="t">{{ row.label }}</td>{% for cell in row.cells %}<td{% if cell.best %} class="best"{% endif %}>{{ value(cell.value) }}</td>{% endfor %}<td>{{ row.scenes }}</td></tr>{% endfor %}
</tbody></table><p class="muted">{{ realbench.note }}</p>{% endif %}
{% for grid in grids %}<h2>Axis: {{ grid.axis }}</h2><table class="grid"><thead><tr><th class="t">{{ grid.axis }}</th>{% for scene in grid.scenes %}<th class="t">{{ scene }}</th>{% endfor %}</tr></thead><tbody>
{% for row in grid.rows %}<tr><td>{{ row.value }}</td>{% for cell in row.cells %}<td>{% for src, caption in cell %}{{ fig(src, caption, 'small') }}{% endfor %}</td>{% endfor %}</tr>{% endfor %}</tbody></table>{% endfor %}
<h2>Each run</h2>
{% for run in each %}<div class="each"><h3>{{ run.title }}</h3>{% if run.error %}<p class="note">{{ run.error }}</p>{% endif %}
{% for src, caption in run.pictures %}{{ fig(src, caption, 'small') }}{% endfor %}{% if run.strip %}<figure class="strip"><img src="{{ run.strip[0]|urlencode }}" alt="{{ run.strip[1] }}"><figcaption>{{ run.strip[1] }}</figcaption></figure>{% endif %}</div>{% endfor %}
{% endblock %}
"""

_ENV = jinja2.Environment(loader=jinja2.DictLoader({"base": _BASE, "run": _RUN, "ablation": _ABLATION}),
                          autoescape=True, undefined=jinja2.StrictUndefined)


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, with forward slashes (a URL)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _sort_key(value: Any) -> str:
    return repr(float(value)) if _finite(value) else ("" if value is None else str(value))


# -- the loss curve ----------------------------------------------------------------------------------


def read_train_log(path: Path) -> list[dict]:
    entries = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if _finite(entry.get("step")) and _finite(entry.get("loss")):
            entries.append(entry)
    return entries


def loss_svg(entries: list[dict], width: int = 640, height: int = 240) -> str:
    """The loss against the step as an inline SVG line plot with its axes' ranges labelled ('' if no points)."""
    if not entries:
        return ""
    steps = [float(e["step"]) for e in entries]
    losses = [float(e["loss"]) for e in entries]
    left, right, top, bottom = 56, 12, 12, 34
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(losses), max(losses)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.1 - 1e-6, y1 + abs(y1) * 0.1 + 1e-6

    def x(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def y(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * (height - top - bottom)

    points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, losses, strict=True))
    dots = "".join(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="2.5"/>' for s, v in zip(steps, losses, strict=True))
    return (f'<svg id="loss-curve" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="training loss">'
            f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
            'fill="#fafafa" stroke="#bbb"/>'
            f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="2"/>'
            f'<g fill="#1f77b4">{dots}</g><g font-size="11" fill="#444">'
            f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{y1:.4g}</text>'
            f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{y0:.4g}</text>'
            f'<text x="{left}" y="{height - bottom + 14}">{x0:g}</text>'
            f'<text x="{width - right}" y="{height - bottom + 14}" text-anchor="end">{x1:g}</text>'
            f'<text x="{(left + width) / 2}" y="{height - 4}" text-anchor="middle">step (loss: train_log.jsonl)'
            '</text></g></svg>')


# -- a run -------------------------------------------------------------------------------------------


def _copy_input(image: np.ndarray, path: Path) -> None:
    picture = Image.fromarray(image)
    picture.thumbnail((INPUT_SIDE, INPUT_SIDE), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, picture)


def _inputs(run_dir: Path) -> tuple[list[tuple[str, str]], str | None, list[str]]:
    """Copies of the scene's references, masked target and ground truth in report_files/; the gt's link."""
    record = _read_json(run_dir / RUN_RECORD) or {}
    scene_path = record.get("scene")
    if not scene_path:
        return [], None, []
    from realfill.scene import load_scene  # start-up time (cv2)

    try:
        scene = load_scene(Path(scene_path))
    except Exception as exc:  # noqa: BLE001 - the scene moved or changed: the page says so, without its inputs
        return [], None, [f"the scene's inputs are not shown: {str(exc).splitlines()[0]}"]
    files = run_dir / FILES_DIR
    shown = []
    for i, reference in enumerate(scene.references):
        _copy_input(reference, files / f"reference-{i}.png")
        shown.append((f"{FILES_DIR}/reference-{i}.png", f"reference {i + 1}"))
    _copy_input(scene.masked_target(), files / "target-masked.png")
    shown.append((f"{FILES_DIR}/target-masked.png", "target, the region to fill masked"))
    gt = None
    if scene.gt is not None:
        _copy_input(scene.gt, files / "gt.png")
        gt = f"{FILES_DIR}/gt.png"
    return shown, gt, []


def _metrics_table(record: dict) -> dict | None:
    methods = record.get("methods") or []
    if not methods:
        return None
    better = record.get("higher_is_better", {})
    shown = record.get("shown") or sorted(methods[0]["values"])
    best = record.get("best", {})
    headings = [f"{k} {'↑' if better.get(k, True) else '↓'}" for k in shown]
    rows = [{"method": m["method"], "cells": [{"value": m["values"].get(k), "sort": _sort_key(m["values"].get(k)),
                                               "best": best.get(k) == m["method"] and len(methods) > 1}
                                              for k in shown]} for m in methods]
    return {"headings": headings, "rows": rows}


def write_run_report(run_dir: Path) -> Path:
    """``RUN/report.html`` from what the run folder holds (a part it lacks is left out); returns its path."""
    run_dir = Path(run_dir)
    record = _read_json(run_dir / RUN_RECORD) or {}
    inputs, gt, notes = _inputs(run_dir)
    if record.get("disclaimer"):
        notes.insert(0, record["disclaimer"])
    comparison = _read_json(run_dir / COMPARISON_FILE) or {}
    results = []
    for method in comparison.get("methods") or []:
        if method.get("result") and (run_dir / method["result"]).is_file():  # a failed baseline has none
            values = method.get("values", {})
            scores = ", ".join(f"{k} {values[k]:.3g}" for k in (comparison.get("shown") or [])[:2] if _finite(values.get(k)))
            results.append((Path(method["result"]).as_posix(), f"{method['method']}{': ' + scores if scores else ''}"))
    if not results and (run_dir / "result.png").is_file():
        results.append(("result.png", "result (the best-ranked sample)"))
    if gt is not None:
        results.append((gt, "ground truth"))
    ranking = _read_json(run_dir / "ranking.json") or []
    samples = [(f"samples/{r['file']}", f"#{r['rank']} {Path(r['file']).stem} score {r['score']:.4g}")
               for r in ranking if (run_dir / "samples" / r["file"]).is_file()]
    strips = [(_rel(path, run_dir), f"step {step}") for step, path in validation_strips(run_dir)]
    html = _ENV.get_template("run").render(
        title=f"realfill run: {record.get('run_name', run_dir.name)}", css=_CSS, js=_SORT_JS,
        subtitle=f"scene {Path(record['scene']).name}" if record.get("scene") else run_dir.name,
        notes=notes, inputs=inputs, results=results, metrics=_metrics_table(comparison), samples=samples,
        strips=strips, curve=loss_svg(read_train_log(run_dir / TRAIN_LOG)))
    return atomic_write_text(run_dir / REPORT_FILE, html.lstrip())


# -- an ablation -------------------------------------------------------------------------------------


def _runs_table(rows: list[dict], components: list[str], metrics: list[str], better: dict[str, bool]) -> dict:
    text = ["scene", "configuration", *components, "status"]
    numbers = [*(f"{m} {'↑' if better.get(m, True) else '↓'}" for m in metrics), "train s", "sample s", "rank s"]
    table_rows = []
    for row in rows:
        cells = [row.get("scene"), row.get("configuration"), *(row.get(c) for c in components), row.get("status")]
        values = [*(row.get("metrics", {}).get(m) for m in metrics), row.get("train_s"), row.get("sample_s"),
                  row.get("rank_s")]
        table_rows.append([{"value": v, "sort": _sort_key(v)} for v in [*cells, *values]])
    return {"headings": [*text, *numbers], "rows": table_rows, "text_columns": len(text)}


def _realbench(table: dict | None) -> dict | None:
    if not table or not table.get("methods"):
        return None
    columns = table["columns"]
    best = {}
    for c in columns:
        scored = [(m["values"][c["heading"]], m["configuration"]) for m in table["methods"]
                  if m["values"][c["heading"]] is not None]
        if scored and len(table["methods"]) > 1:
            best[c["heading"]] = (max if c["higher_is_better"] else min)(scored)[1]
    rows = [{"label": m["configuration"], "scenes": f"{m['scenes']}/{m['runs']}",
             "cells": [{"value": m["values"][c["heading"]], "best": best.get(c["heading"]) == m["configuration"]}
                       for c in columns]} for m in table["methods"]]
    rows += [{"label": f"paper: {r['method']}", "scenes": "33",
              "cells": [{"value": r["values"][c["heading"]], "best": False} for c in columns]}
             for r in table["paper"]["rows"]]
    return {"headings": [f"{c['heading']} {'↑' if c['higher_is_better'] else '↓'} ({c['region']})" for c in columns],
            "rows": rows, "note": f"{table['protocol']} Paper rows: {table['paper']['source']}."}


def write_ablation_report(out: Path, rows: list[dict], runs: list[dict], *, axes: dict[str, list[str]],
                          components: list[str], metrics: list[str], better: dict[str, bool],
                          realbench: dict | None = None) -> Path:
    """``OUT/report.html``. ``rows``: results.json's; ``runs``: per row (same order) the absolute paths of its
    run folder (``run_dir``), sample folder (``sample_dir``, or None) and training folder (``train_dir``, or
    None); ``axes``: config key -> the values it takes, for the grids."""
    out = Path(out)
    each, pictures_of = [], []
    for row, where in zip(rows, runs, strict=True):
        run_dir = Path(where["run_dir"])
        pictures = []
        if (run_dir / "result.png").is_file():
            pictures.append((_rel(run_dir / "result.png", out), f"{row['configuration']}: result"))
        sample_dir = where.get("sample_dir")
        for entry in (_read_json(run_dir / "ranking.json") or [])[:BEST_SHOWN]:
            if sample_dir and (path := Path(sample_dir) / "samples" / entry["file"]).is_file():
                pictures.append((_rel(path, out), f"#{entry['rank']} score {entry['score']:.4g}"))
        strip = None
        if where.get("train_dir") and (strips := validation_strips(Path(where["train_dir"]))):
            step, path = strips[-1]
            strip = (_rel(path, out), f"validation, step {step} (the latest)")
        each.append({"title": f"{row['scene']} · {row['configuration']} ({row['status']})", "pictures": pictures,
                     "strip": strip, "error": row.get("error") if row.get("status") != "ok" else None})
        pictures_of.append(pictures[:1])
    scenes = sorted({r["scene"] for r in rows})
    grids = []
    for key, values in axes.items():
        if len(values) < 2:
            continue
        grid_rows = []
        for value in values:
            cells = []
            for scene in scenes:
                cell = []
                for row, where, pictures in zip(rows, runs, pictures_of, strict=True):
                    if row["scene"] == scene and str(where.get("axes", {}).get(key)) == str(value):
                        cell += [(src, f"{row['configuration']}: {_metric_caption(row, metrics)}") for src, _ in pictures]
                cells.append(cell)
            grid_rows.append({"value": value, "cells": cells})
        grids.append({"axis": key, "scenes": scenes, "rows": grid_rows})
    html = _ENV.get_template("ablation").render(
        title=f"realfill ablation: {out.name}", css=_CSS, js=_SORT_JS,
        subtitle=f"{len(rows)} runs over {len(scenes)} scenes: {', '.join(scenes)}",
        runs=_runs_table(rows, components, metrics, better), realbench=_realbench(realbench), grids=grids, each=each)
    return atomic_write_text(out / REPORT_FILE, html.lstrip())


def _metric_caption(row: dict, metrics: list[str]) -> str:
    values = row.get("metrics", {})
    shown = [f"{m} {values[m]:.3g}" for m in metrics[:2] if _finite(values.get(m))]
    return ", ".join(shown) or row.get("status", "")


def linked_files(report: Path) -> list[Path]:
    """Every local file ``report`` links (``src`` and ``href``), resolved against its folder."""
    import html
    import re
    from urllib.parse import unquote

    text = Path(report).read_text()
    links = re.findall(r'(?:src|href)="([^"#:]+)"', text)
    return [Path(report).parent / unquote(html.unescape(link)) for link in links]


__all__ = ["REPORT_FILE", "FILES_DIR", "linked_files", "loss_svg", "read_train_log", "write_ablation_report",
           "write_run_report"]
