"""The trackers a command was given (``--tracker NAME``, repeatable), driven as one.

:class:`Trackers` checks the names (unknown: the known ones listed; not installed: the extra that installs
it, one line, exit 2) before anything runs, then, once the run folder is locked, starts each tracker and
registers itself as an observer of the run's hooks: every logged training step (``realfill_train_step_end``:
the loss, the learning rates, the step time) and every validation strip (``realfill_validation_done``)
reaches every tracker. The command adds the final metrics and the comparison table, then closes them.

Trackers only report: no stage's output depends on which ran, so they are not part of the run config (a
resumed run may add or drop one). A tracker that raises is reported as a warning and dropped; the run goes
on, as for any observer.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.markup import escape

from realfill.components import Tracker
from realfill.console import console
from realfill.errors import UserError
from realfill.hookspecs import hookimpl


class TrackerWarning(UserWarning):
    """A tracker failed while logging; it is dropped and the run goes on."""


def missing_module(tracker: type[Tracker]) -> str | None:
    """The first module ``tracker`` needs that is not installed, else None."""
    for module in tracker.requires:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def check_trackers(names: Iterable[str], plugins) -> list[type[Tracker]]:
    """The tracker classes ``names`` choose; one line naming the problem for an unknown name, a name given
    twice, or a tracker whose library is not installed (with the extra that installs it)."""
    classes, seen = [], set()
    for name in names:
        if name in seen:
            raise UserError(f"--tracker {name}: given twice")
        seen.add(name)
        tracker = plugins.registry("tracker").get(name)  # unknown: "unknown tracker 'x'; known trackers: ..."
        if (module := missing_module(tracker)) is not None:
            raise UserError(f"--tracker {name}: needs the Python package '{module}', which is not installed; "
                            f"install the extra: pip install 'realfill[{tracker.extra}]'")
        classes.append(tracker)
    return classes


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Trackers:
    """The chosen trackers: ``start`` (after the run folder is locked), then the hooks and
    :meth:`log_metrics` / :meth:`log_table`, then :meth:`close` (also as a context manager)."""

    def __init__(self, names: Iterable[str], plugins):
        self.plugins = plugins
        self.names = list(names)
        self.active: list[Tracker] = [cls() for cls in check_trackers(self.names, plugins)]
        self._registered = False
        self._last: tuple[int, float] | None = None  # (step, seconds) of the last logged step: the step time

    def __bool__(self) -> bool:
        return bool(self.active)

    def _each(self, what: str, call) -> None:
        for tracker in list(self.active):
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001 - a tracker must not break the run
                self.active.remove(tracker)
                message = (f"tracker '{tracker.name}' raised in {what} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); it is dropped, the run goes on")
                # on the console (the CLI silences Python warnings while a command runs) and as a warning
                console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)
                warnings.warn(message, TrackerWarning, stacklevel=3)

    def start(self, directory: Path, run_name: str, config: dict | None = None) -> Trackers:
        """Start every tracker on ``directory`` (the run or ablation folder) under ``run_name``, and observe
        the run's hooks. ``config``: the run config as plain data, logged as hyper-parameters."""
        if not self.active:
            return self
        self._last = None
        self._each("start", lambda t: t.start(Path(directory), run_name, dict(config or {})))
        if not self._registered:
            self.plugins.pm.register(self, name=f"realfill-trackers-{id(self)}")
            self._registered = True
        return self

    # -- the hooks it observes ---------------------------------------------------------------------

    @hookimpl
    def realfill_train_step_end(self, step, loss, learning_rates, seconds):
        values = {"train/loss": float(loss), "train/seconds": float(seconds)}
        values.update({f"train/lr/{name}": float(rate) for name, rate in learning_rates.items()})
        if self._last is not None and step > self._last[0]:
            values["train/step_seconds"] = (seconds - self._last[1]) / (step - self._last[0])
        elif self._last is None and step > 0:
            values["train/step_seconds"] = seconds / step
        self._last = (step, seconds)
        self._each("log_scalars", lambda t: t.log_scalars(values, step))

    @hookimpl
    def realfill_validation_done(self, run_dir, step, path, images):
        from realfill.scene import read_rgb  # start-up time (cv2)

        strip = read_rgb(Path(path))
        self._each("log_image", lambda t: t.log_image("validation", strip, step))

    # -- what the command adds ---------------------------------------------------------------------

    def log_metrics(self, values: dict[str, Any], step: int, prefix: str = "metrics/") -> None:
        finite = {f"{prefix}{k}": float(v) for k, v in values.items() if _finite(v)}
        if finite:
            self._each("log_scalars", lambda t: t.log_scalars(finite, step))

    def log_table(self, tag: str, rows: list[dict], step: int) -> None:
        if rows:
            self._each("log_table", lambda t: t.log_table(tag, rows, step))

    def log_comparison(self, record: dict | None, step: int) -> None:
        """``comparison.json`` (realfill.comparison): the run's values as metrics, every method as a table."""
        if not record or not record.get("methods"):
            return
        self.log_metrics(record["methods"][0]["values"], step)
        shown = record.get("shown") or sorted(record["methods"][0]["values"])
        rows = [{"method": m["method"], **{k: m["values"].get(k) for k in shown}} for m in record["methods"]]
        self.log_table("comparison", rows, step)

    def close(self) -> None:
        if self._registered:
            self.plugins.pm.unregister(self)
            self._registered = False
        self._each("finish", lambda t: t.finish())

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def no_trackers(plugins) -> Trackers:
    return Trackers((), plugins)


__all__ = ["Trackers", "TrackerWarning", "check_trackers", "missing_module", "no_trackers"]
