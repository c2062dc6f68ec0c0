"""What a person watches while an ablation runs.

:class:`LiveReporter` (Rich ``Live``): a header with the plugins loaded, the overall progress, each
active stage with its progress, and a results table that fills in as runs finish. :class:`PlainReporter`:
one line per event, for logs, pipes and ``--no-tui``. Both take the same calls from the engine.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from realfill.ablation.reports import directions, heading

SHOWN_METRICS = ("psnr_masked", "ssim_masked", "ms_ssim_masked", "sharpness_masked", "lpips", "dino", "clip")


def _value(row: dict, name: str) -> str:
    value = row.get("metrics", {}).get(name)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.3f}"


def plugin_line(plugins) -> str:
    if plugins is None:
        return ""
    infos = plugins.plugin_infos()
    builtin = sum(1 for i in infos if i.builtin)
    third = [f"{i.name} {i.version}" for i in infos if not i.builtin]
    return f"{builtin} built-in plugins" + (f"; third-party: {', '.join(third)}" if third else "; no third-party plugins")


class PlainReporter:
    """One line per event on the console (no cursor movement)."""

    def __init__(self, console: Console, plugins=None):
        self.console, self.plugins = console, plugins
        self.total = 0
        self.finished = 0

    def _line(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False)

    def start(self, plan, executor: str) -> None:
        self.total = len(plan.runs)
        self._line(f"ablation: {self.total} runs ({len({r.scene for r in plan.runs})} scenes), executor {executor}, "
                   f"out {plan.out}")
        if self.plugins is not None:
            self._line(f"plugins: {plugin_line(self.plugins)}")

    def stage_started(self, stage_id: str, kind: str, title: str) -> None:
        self._line(f"start  {escape(title)} \\[{kind}]")

    def stage_progress(self, stage_id: str, done: int, total: int) -> None:
        pass  # lines only at stage boundaries

    def stage_validation(self, stage_id: str, step: int, path) -> None:
        """A training stage's latest validation strip (``train.validation_steps``): a line when it is new."""
        if getattr(self, "_validation", {}).get(stage_id) == step:
            return
        self.__dict__.setdefault("_validation", {})[stage_id] = step
        self._line(f"valid  {escape(stage_id)} step {step}: {escape(str(path))}")

    def stage_finished(self, stage_id: str, kind: str, title: str, record: dict) -> None:
        status = "done  " if record.get("status") == "ok" else "FAILED"
        tail = f" {record.get('seconds', 0):.1f}s" if "seconds" in record else ""
        error = f": {escape(str(record.get('error')))}" if record.get("status") != "ok" else ""
        self._line(f"{status} {escape(title)} \\[{kind}]{tail}{error}")

    def stage_skipped(self, kind: str, text: str) -> None:
        self._line(f"skip   {escape(text)} \\[{kind}] (finished earlier)")

    def run_finished(self, row: dict, skipped: bool = False) -> None:
        self.finished += 1
        metrics = " ".join(f"{m}={_value(row, m)}" for m in SHOWN_METRICS if m in row.get("metrics", {}))
        state = "skipped (finished earlier)" if skipped else row["status"]
        if row["status"] == "skipped":  # an image baseline without its weights: say why
            state = f"skipped: {row.get('error')}"
        self._line(f"[{self.finished}/{self.total}] {escape(row['scene'])} {escape(row['configuration'])}: {state} {metrics}")

    def finish(self, outcome) -> None:
        self._line(summary_line(outcome))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def summary_line(outcome) -> str:
    ran, skipped = outcome.ran, outcome.skipped
    unavailable = sum(r["status"] == "skipped" for r in outcome.rows)
    broken = sum(r["status"] == "baseline failed" for r in outcome.rows)  # a plugin's baseline raised
    return (f"finished: {len(outcome.rows)} runs, {len(outcome.failed)} failed"
            f"{f', {unavailable} skipped (no local weights)' if unavailable else ''}"
            f"{f', {broken} baseline failed (its row has the error)' if broken else ''}; ran {ran['train']} train, "
            f"{ran['sample']} sample, {ran['run']} rank stages; skipped {skipped['run']} finished runs, "
            f"{skipped['train']} train and {skipped['sample']} sample stages")


class LiveReporter(PlainReporter):
    """The live terminal UI: header, overall progress, active stages, results table."""

    def __init__(self, console: Console, plugins=None):
        super().__init__(console, plugins)
        self.lock = threading.Lock()
        self.overall = Progress(TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=console)
        self.stages = Progress(TextColumn("{task.fields[kind]:>6}"), TextColumn("{task.description}"), BarColumn(),
                               TaskProgressColumn(), TimeElapsedColumn(), TextColumn("{task.fields[validation]}"),
                               console=console)
        self.overall_task = None
        self.stage_tasks: dict[str, Any] = {}
        self.rows: list[tuple[dict, bool]] = []
        self.header = ""
        self.messages: list[str] = []
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.update(self._render())
        self.live.__exit__(*exc)
        return False

    def _results(self) -> Table:
        names = [m for m in SHOWN_METRICS if any(m in r.get("metrics", {}) for r, _ in self.rows)]
        better = directions([r for r, _ in self.rows])
        table = Table(title="results (↑ higher is better, ↓ lower)", title_justify="left", expand=False)
        for column in ("scene", "configuration", "status", *(heading(m, better) for m in names), "train s", "sample s",
                       "rank s"):
            table.add_column(column, justify="right" if column not in ("scene", "configuration", "status") else "left")
        for row, skipped in self.rows:
            status = ("skipped" if skipped or row["status"] == "skipped" else "ok" if row["status"] == "ok" else
                      "[yellow]baseline failed[/]" if row["status"] == "baseline failed" else "[red]failed[/]")
            cells = [escape(row["scene"]), escape(row["configuration"]), status, *[_value(row, m) for m in names]]
            cells += [f"{row[k]:.1f}" if isinstance(row.get(k), (int, float)) else "—" for k in ("train_s", "sample_s", "rank_s")]
            table.add_row(*cells)
        return table

    def _render(self):
        parts = []
        if self.header:
            parts.append(Panel(self.header, title="realfill ablate", title_align="left", expand=False))
        parts += [self.overall, self.stages]
        if self.rows:
            parts.append(self._results())
        parts += self.messages[-5:]
        return Group(*parts)

    def _refresh(self) -> None:
        self.live.update(self._render())

    def start(self, plan, executor: str) -> None:
        with self.lock:
            scenes = len({r.scene for r in plan.runs})
            self.header = (f"{len(plan.runs)} runs · {scenes} scenes · executor {executor} · out {escape(str(plan.out))}\n"
                           f"plugins: {escape(plugin_line(self.plugins))}")
            self.total = len(plan.runs)
            self.overall_task = self.overall.add_task("runs", total=self.total)
            self._refresh()

    def stage_started(self, stage_id, kind, title):
        with self.lock:
            self.stage_tasks[stage_id] = self.stages.add_task(escape(title), total=None, kind=kind, validation="")
            self._refresh()

    def stage_progress(self, stage_id, done, total):
        with self.lock:
            if stage_id in self.stage_tasks:
                self.stages.update(self.stage_tasks[stage_id], completed=done, total=total)

    def stage_validation(self, stage_id, step, path):
        """The running training's latest validation strip, beside its progress bar: its step and path."""
        with self.lock:
            if stage_id in self.stage_tasks:
                self.stages.update(self.stage_tasks[stage_id],
                                   validation=f"[dim]validation step {step}: {escape(str(path))}[/]")

    def stage_finished(self, stage_id, kind, title, record):
        with self.lock:
            task = self.stage_tasks.pop(stage_id, None)
            if task is not None:
                self.stages.remove_task(task)
            if record.get("status") == "skipped":
                self.messages.append(f"skipped {escape(title)}: {escape(str(record.get('error')))}")
            elif record.get("status") != "ok":
                self.messages.append(f"[red]failed[/] {escape(title)} \\[{kind}]: {escape(str(record.get('error')))}")
            self._refresh()

    def stage_skipped(self, kind, text):
        pass  # shown as "skipped" rows in the results table and in the final summary

    def run_finished(self, row, skipped=False):
        with self.lock:
            self.rows.append((row, skipped))
            self.finished += 1
            if self.overall_task is not None:
                self.overall.update(self.overall_task, completed=self.finished)
            self._refresh()

    def finish(self, outcome):
        with self.lock:
            self.messages.append(summary_line(outcome))
            self._refresh()
        time.sleep(0.05)


def make_reporter(console: Console, plugins=None, *, tui: bool = True) -> PlainReporter:
    """The live UI on a terminal, plain lines otherwise (or with ``tui=False``)."""
    if tui and console.is_terminal and not console.is_dumb_terminal:
        return LiveReporter(console, plugins)
    return PlainReporter(console, plugins)
