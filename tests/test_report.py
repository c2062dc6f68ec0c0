"""``report.html`` of a run and of an ablation, opened in a real browser (headless Chromium over the DevTools
pipe, tests/browser.py): the tables are there, every picture loads with a non-zero natural size, clicking a
column header sorts the rows, and the screenshot is not blank. Set ``REALFILL_SCREENSHOTS=DIR`` to keep the
screenshots."""

from __future__ import annotations

import contextlib
import json
import importlib.util
import io
import os
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from realfill.cli import main
from realfill.report import REPORT_FILE, linked_files, loss_svg, write_run_report
from tests.browser import IMAGES_JS, Chromium, click_header_js, column_js, find_chromium

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium; "
                                    ".ci/run installs it where apt-get can)")


TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(scope="session")
def ablation_run(tmp_path_factory, example_scene):
    """``realfill ablate examples/motorcycle --preset smoke --matcher sift --matcher warp`` (2 steps, 2 samples,
    a validation strip every step, TensorBoard where the tracking extra is installed): the folder and what it
    printed (its plain lines, --no-tui)."""
    out = tmp_path_factory.mktemp("ablation") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):  # the shared console writes to whatever sys.stderr is
        code = main(["ablate", str(example_scene), "--preset", "smoke", "--matcher", "sift", "--matcher", "warp",
                     "--steps", "2", "--samples", "2", "--set", "train.validation_steps=1", "--out", str(out),
                     "--no-tui", *(["--tracker", "tensorboard"] if TENSORBOARD else [])])
    assert code == 0, printed.getvalue()[-3000:]
    return out, printed.getvalue()


@pytest.fixture
def ablation(ablation_run):
    return ablation_run[0]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it where apt-get can)")
    with Chromium(CHROMIUM) as chromium:
        yield chromium


def _screenshot_dir(tmp_path: Path) -> Path:
    keep = os.environ.get("REALFILL_SCREENSHOTS")
    folder = Path(keep) if keep else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_relative_links_exist(report: Path) -> list[Path]:
    text = report.read_text()
    assert "http://" not in text and "https://" not in text  # nothing from a network
    links = linked_files(report)
    assert links, "the page links no pictures"
    missing = [str(p) for p in links if not p.is_file()]
    assert missing == []
    assert not re.search(r'(?:src|href)="/', text)  # relative links only: the folder can be moved
    return links


def assert_page_renders(browser: Chromium, report: Path, shot: Path) -> list[dict]:
    """Every <img> loaded with a non-zero natural size; the screenshot is a picture, not a blank page."""
    browser.open(report)
    images = browser.evaluate(IMAGES_JS)
    assert images, "no <img> on the page"
    broken = [i["src"] for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert broken == []
    browser.screenshot(shot)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[0] >= browser.height and pixels.std() > 20  # text, tables and pictures, not one colour
    assert (pixels.std(axis=2) > 30).mean() > 0.02  # colourful pixels: the photographs rendered
    return images


def assert_sorting_reorders(browser: Chromium, table: str, column: int) -> None:
    before = browser.evaluate(column_js(table, column))
    assert len(set(before)) >= 2, before

    def key(value: str):
        try:
            return (0, float(value))
        except ValueError:
            return (1, value.lower())

    browser.evaluate(click_header_js(table, column))
    ascending = browser.evaluate(column_js(table, column))
    browser.evaluate(click_header_js(table, column))
    descending = browser.evaluate(column_js(table, column))
    assert ascending == sorted(before, key=key)
    assert descending == sorted(before, key=key, reverse=True)
    assert before != ascending or before != descending  # some click reordered the rows
    assert sorted(ascending) == sorted(before)  # the same rows, moved whole


@pytest.mark.slow
@needs_chromium
def test_run_report_opens_in_chromium(tracked_run, browser, tmp_path):
    report = tracked_run / REPORT_FILE
    links = assert_relative_links_exist(report)
    linked = {p.resolve().relative_to(tracked_run.resolve()).as_posix() for p in links}
    assert {"result.png", "validation/step-00002.png", "validation/step-00004.png", "report_files/gt.png",
            "baselines/geometric/result.png"} <= linked
    assert sum(name.startswith("samples/") for name in linked) == 4  # every ranked sample
    shot = _screenshot_dir(tmp_path) / "run-report.png"
    images = assert_page_renders(browser, report, shot)
    shown = {(tracked_run / unquote(i["src"])).resolve() for i in images}
    assert shown == {p.resolve() for p in links}  # every linked file is a picture on the page
    assert browser.evaluate("document.querySelectorAll('#metrics tbody tr').length") == 4  # the run + 3 baselines
    assert browser.evaluate("document.querySelectorAll('#loss-curve circle').length") == 2  # steps 2 and 4
    assert_sorting_reorders(browser, "metrics", 1)


@pytest.mark.slow
@needs_chromium
def test_ablation_report_opens_in_chromium(ablation, browser, tmp_path):
    report = ablation / REPORT_FILE
    assert_relative_links_exist(report)
    shot = _screenshot_dir(tmp_path) / "ablation-report.png"
    assert_page_renders(browser, report, shot)
    assert browser.evaluate("document.querySelectorAll('#runs tbody tr').length") == 2
    assert browser.evaluate("document.querySelectorAll('#realbench tbody tr').length") == 2 + 4  # runs + the paper's
    # the grid of the ranker axis: one row per matcher, each with that run's result
    grid = browser.evaluate("Array.from(document.querySelectorAll('table.grid tbody tr')).map(r => "
                            "[r.cells[0].textContent.trim(), r.querySelectorAll('img').length])")
    assert grid == [["sift", 1], ["warp", 1]]
    assert_sorting_reorders(browser, "runs", 1)  # by configuration
    # every run's latest validation strip and best samples are thumbnails
    sources = [i["src"] for i in browser.evaluate(IMAGES_JS)]
    assert sum("validation/step-00002.png" in s for s in sources) == 2
    assert sum("/samples/" in s for s in sources) == 4


def test_the_loss_curve_is_an_svg_of_the_logged_points():
    svg = loss_svg([{"step": 10, "loss": 0.5}, {"step": 20, "loss": 0.25}, {"step": 30, "loss": 0.4}])
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and "0.5" in svg and "0.25" in svg
    assert loss_svg([]) == ""


def test_a_report_of_an_empty_folder_is_a_page_without_pictures(tmp_path):
    """A folder with nothing of a run yet (train stopped early, say) still gets a valid page."""
    path = write_run_report(tmp_path)
    assert path.read_text().startswith("<!doctype html>") and linked_files(path) == []


@pytest.mark.slow
def test_the_ablation_shows_each_trainings_latest_validation_strip(ablation_run):
    out, printed = ablation_run
    lines = [line for line in printed.splitlines() if line.startswith("valid ")]
    assert len(lines) == 2, printed  # one line per new strip of the one shared training
    assert "step 1:" in lines[0] and lines[0].endswith("validation/step-00001.png")
    assert "step 2:" in lines[1] and lines[1].endswith("validation/step-00002.png")


def test_the_live_ui_shows_a_trainings_latest_validation_strip_beside_its_bar(plugins, tmp_path):
    from rich.console import Console

    from realfill.tui import LiveReporter

    buffer = io.StringIO()
    reporter = LiveReporter(Console(file=buffer, force_terminal=True, width=200, color_system=None), plugins)
    with reporter:
        reporter.stage_started("train:abc", "train", "motorcycle · train abc")
        reporter.stage_progress("train:abc", 500, 2000)
        reporter.stage_validation("train:abc", 500, tmp_path / "validation" / "step-00500.png")
        reporter.live.refresh()
        screen = buffer.getvalue()
    assert "validation step 500:" in screen and "step-00500.png" in screen and "motorcycle · train abc" in screen


@pytest.mark.slow
@pytest.mark.skipif(not TENSORBOARD, reason="the tracking extra is not installed: pip install 'realfill[tracking]'")
def test_the_ablation_logs_each_run_and_training_under_its_own_name(ablation):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = ablation / "tensorboard" / "motorcycle"
    assert sorted(p.name for p in logs.iterdir()) == ["ranker=sift", "ranker=warp", "train-ranker=sift,ranker=warp"]

    def read(name):
        events = EventAccumulator(str(logs / name), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        return events

    training = read("train-ranker=sift,ranker=warp")
    assert [e.step for e in training.Scalars("train/loss")] == [1, 2]
    assert [e.step for e in training.Images("validation")] == [1, 2]
    rows = {r["configuration"]: r for r in json.loads((ablation / "results.json").read_text())["rows"]}
    for name in ("ranker=sift", "ranker=warp"):
        (psnr,) = read(name).Scalars("metrics/psnr_masked")
        assert psnr.value == pytest.approx(rows[name]["metrics"]["psnr_masked"], rel=1e-6)
