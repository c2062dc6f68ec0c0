"""Issue 29: every number belongs to its inputs. A (``examples/motorcycle``) and B (the same scene, its mask
moved 20 px) are real scenes; each case runs the commands a user types and checks the refusal (one line,
exit 2, the folder byte-identical) or the result.

- Case 1: a run folder without a usable ``run.json`` (missing, truncated, garbage, a list, from before
  fingerprints) is never trusted: ``fill --resume``, ``train --resume``, ``sample``, ``rank`` and
  ``evaluate`` refuse it.
- Case 2: ``realfill ablate`` keys its stages by the scene's content: a scene path whose content changed is
  redone, never reported with the first scene's numbers.
- Case 3: ``sample``, ``rank`` and ``evaluate`` check the scene against the run folder first.
- Case 4: ``--set baselines.NAME.KEY=VALUE`` applies in ``ablate`` as in ``fill``.
- Case 7: a baseline named twice, and a ``baselines.NAME`` table naming another baseline, are refused.
- Case 11: a plugin baseline that raises (``RuntimeError``, ``SystemExit(0)``) in ``complete`` costs only its
  own row, in ``fill`` and ``ablate`` (plugins: tests/plugins/raising_baseline.py, exiting_baseline.py).
- Case 12: ablation inputs that are not scenes; a scene without ground truth.
- Case 14: ``realbench.md`` cites the paper and says which images, at which size, it scores.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realfill.cli import main
from realfill.fingerprint import FINGERPRINT_KEY, scene_fingerprint
from realfill.scene import load_scene
from tests.conftest import DummyEntryPoint

QUICK = ["--preset", "smoke", "--steps", "1", "--samples", "2", "--set", "sample.steps=1", "--set", "train.batch_size=2",
         "--set", "train.threads=1"]
#: the test plugin files that register a baseline raising in complete(), and one calling sys.exit(0) there
BROKEN = [DummyEntryPoint("broken-baselines", "raising_baseline", dist="realfill-broken"),
          DummyEntryPoint("exiting-baselines", "exiting_baseline", dist="realfill-exiting")]


def folder_hash(folder: Path) -> str:
    """sha256 over every path under ``folder`` and every file's bytes (a refusal must leave it identical)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def one_line(capsys, code: int, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith(("note:", "warning:"))]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def moved_mask_copy(scene: Path, out: Path, shift: int = 20) -> Path:
    """B: ``scene`` with its mask moved ``shift`` px to the right (the target keeps its pixels)."""
    shutil.copytree(scene, out)
    mask = np.asarray(Image.open(out / "target" / "mask.png").convert("L"))
    Image.fromarray(np.roll(mask, shift, axis=1)).save(out / "target" / "mask.png")
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, example_scene) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scenes")
    a = root / "A"
    shutil.copytree(example_scene, a)
    return a, moved_mask_copy(example_scene, root / "B")


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, scenes):
    """``realfill fill A`` compared with telea and the two broken plugin baselines (case 11), and its output."""
    run = tmp_path_factory.mktemp("fill") / "R"
    with pytest.MonkeyPatch.context() as mp:
        import realfill.plugins as plugins_module

        mp.setattr(plugins_module, "entry_points", lambda group: [ep for ep in BROKEN if group == ep.group])
        mp.delenv("REALFILL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
        mp.delenv("REALFILL_NO_PLUGINS", raising=False)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["fill", str(scenes[0]), *QUICK, "--baseline", "telea", "--baseline", "raises",
                         "--baseline", "exits", "--out", str(run)])
    return run, code, err.getvalue()


# -- case 11: a broken plugin baseline costs only its own row ------------------------------------------


def test_a_raising_plugin_baseline_costs_only_its_row_in_fill(run_a, capsys):
    run, code, err = run_a
    assert code == 0, err
    record = json.loads((run / "comparison.json").read_text())
    rows = {m["method"]: m for m in record["methods"]}
    assert list(rows) == ["this run (tiny-sd2)", "telea", "raises", "exits"]
    assert rows["telea"]["values"]["psnr_masked"] > 0 and "error" not in rows["telea"]
    assert rows["raises"]["values"] == {} and rows["raises"]["error"] == "RuntimeError: the plugin's model is broken"
    assert rows["exits"]["values"] == {} and rows["exits"]["error"].startswith("SystemExit(0)")
    assert record["failed_baselines"]["raises"]["plugin"] == "broken-baselines"
    assert record["failed_baselines"]["exits"]["plugin"] == "exiting-baselines"
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any("'raises' (plugin broken-baselines) failed: RuntimeError" in w for w in warnings), err
    assert any("'exits' (plugin exiting-baselines) failed: SystemExit(0)" in w for w in warnings), err
    assert (run / "result.png").is_file() and (run / "baselines" / "telea" / "result.png").is_file()


def test_a_raising_plugin_baseline_costs_only_its_row_in_ablate(scenes, tmp_path, fake_entry_points, capsys):
    fake_entry_points(*BROKEN)
    out = tmp_path / "abl"
    code = main(["ablate", str(scenes[0]), "--baselines-only", "--baseline", "telea", "--baseline", "raises",
                 "--baseline", "exits", "--metric", "psnr", "--out", str(out), "--no-tui"])
    err = capsys.readouterr().err
    assert code == 0, err
    rows = {r["configuration"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows["telea"]["status"] == "ok" and float(rows["telea"]["psnr_masked"]) > 0
    assert rows["raises"]["status"] == "baseline failed" and "plugin broken-baselines" in rows["raises"]["error"]
    assert "RuntimeError: the plugin's model is broken" in rows["raises"]["error"]
    assert rows["exits"]["status"] == "baseline failed" and "SystemExit(0)" in rows["exits"]["error"]
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert sum("plugin broken-baselines" in w or "plugin exiting-baselines" in w for w in warnings) == 2, err


# -- case 1: a folder that cannot prove its scene is never trusted -------------------------------------


BROKEN_RECORDS = {
    "missing": None,
    "truncated": '{"scene": "/somewhere", "scene_finger',
    "garbage": "\x00\x01 not json at all",
    "list-shaped": "[1, 2, 3]",
    "pre-fingerprint": json.dumps({"scene": "/somewhere", "run_name": "tiny-sd2+lora"}),
}


@pytest.mark.parametrize("kind", list(BROKEN_RECORDS))
def test_a_run_folder_without_a_usable_record_is_refused_by_every_command(kind, run_a, scenes, tmp_path, capsys):
    run = tmp_path / "R"
    shutil.copytree(run_a[0], run)
    if BROKEN_RECORDS[kind] is None:
        (run / "run.json").unlink()
    else:
        (run / "run.json").write_text(BROKEN_RECORDS[kind])
    before = folder_hash(run)
    a, b = map(str, scenes)
    commands = {
        "fill": ["fill", b, *QUICK, "--no-compare", "--out", str(run), "--resume"],
        "fill A": ["fill", a, *QUICK, "--no-compare", "--out", str(run), "--resume"],  # even the right scene
        "train": ["train", b, *QUICK, "--out", str(run), "--resume"],
        "sample": ["sample", b, "--run", str(run), "--out", str(tmp_path / "s")],
        "rank": ["rank", b, "--samples", str(run)],
        "evaluate": ["evaluate", str(run), "--scene", b],
    }
    for name, argv in commands.items():
        line = one_line(capsys, main(argv), "cannot be checked")
        assert ("run.json" in line) and ("another --out" in line or name in ("sample", "rank", "evaluate")), (name, line)
        assert folder_hash(run) == before, name
    assert not (tmp_path / "s").exists()


# -- case 3: sample, rank and evaluate check the scene ----------------------------------------------


def test_sample_rank_and_evaluate_refuse_another_scene_and_touch_nothing(run_a, scenes, tmp_path, capsys):
    run = tmp_path / "R"
    shutil.copytree(run_a[0], run)
    before = folder_hash(run)
    b = str(scenes[1])
    for argv in (["sample", b, "--run", str(run), "--out", str(tmp_path / "s")],
                 ["sample", b, "--run", str(run)],
                 ["rank", b, "--samples", str(run)],
                 ["rank", b, "--samples", str(run), "--out", str(tmp_path / "ranked")],
                 ["evaluate", str(run), "--scene", b]):
        one_line(capsys, main(argv), str(run), "made from another scene", "mask differs", str(scenes[0].resolve()))
        assert folder_hash(run) == before, argv
    assert not (tmp_path / "s").exists() and not (tmp_path / "ranked").exists()
    # the run's own scene is accepted: ranking A's samples against A rewrites the ranking
    assert main(["rank", str(scenes[0]), "--samples", str(run), "--json"]) == 0
    assert main(["evaluate", str(run), "--metric", "psnr", "--json"]) == 0


# -- case 2: ablate keys its stages by the scene's content --------------------------------------------


ABLATE_QUICK = ["--preset", "smoke", "--steps", "2", "--samples", "2", "--set", "sample.steps=1",
                "--set", "train.batch_size=2", "--set", "train.resolution=32", "--set", "train.threads=1",
                "--set", "train.checkpoint_every=0", "--metric", "psnr", "--no-tui"]


def test_ablate_redoes_the_work_when_a_scene_path_gets_other_content(example_scene, tmp_path, capsys):
    p = tmp_path / "P"
    shutil.copytree(example_scene, p)
    out = tmp_path / "abl"
    argv = ["ablate", str(p), *ABLATE_QUICK, "--baseline", "telea", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    first = json.loads((out / "results.json").read_text())["rows"]
    shutil.rmtree(p)
    moved_mask_copy(example_scene, p)  # P now holds B
    assert main(argv) == 0, capsys.readouterr().err
    second = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in second] == [r["method"] for r in first] == ["realfill", "telea"]
    for then, now in zip(first, second, strict=True):
        assert now["run_key"] != then["run_key"] and now["run_dir"] != then["run_dir"]
        assert now["metrics"]["psnr_masked"] != then["metrics"]["psnr_masked"]  # B's numbers, not A's
        record = json.loads((out / now["run_dir"] / "run.json").read_text())
        assert record[FINGERPRINT_KEY] == scene_fingerprint(load_scene(p))  # each run folder records its scene
    assert first[0]["train_key"] != second[0]["train_key"]
    assert len(list((out / "stages" / "train").iterdir())) == 2  # trained again, for B


# -- case 4 and 7: baseline settings ------------------------------------------------------------------


def test_ablate_applies_a_baselines_settings_and_reports_what_ran(example_scene, tmp_path, capsys):
    values = {}
    for radius in (5, 40):
        out = tmp_path / f"r{radius}"
        assert main(["ablate", str(example_scene), "--baselines-only", "--baseline", "telea", "--metric", "psnr",
                     "--set", f"baselines.telea.radius={radius}", "--out", str(out), "--no-tui"]) == 0
        row = json.loads((out / "results.json").read_text())["rows"][0]
        values[radius] = row["metrics"]["psnr_masked"]
        record = json.loads((out / row["run_dir"] / "run.json").read_text())
        assert record["radius"] == radius and record["settings"]["radius"] == radius  # what ran
        assert f"baselines.telea.radius={radius}" in (out / "report.md").read_text()  # what the report lists
    assert values[5] != values[40]
    capsys.readouterr()
    # a wrong value is refused before anything runs, as in fill
    code = main(["ablate", str(example_scene), "--baselines-only", "--baseline", "telea",
                 "--set", "baselines.telea.radius=0", "--out", str(tmp_path / "bad"), "--no-tui"])
    one_line(capsys, code, "baselines.telea.radius")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["fill", "{scene}", "--preset", "smoke", "--baseline", "telea", "--baseline", "telea"], "--baseline telea: given twice"),
    (["ablate", "{scene}", "--baselines-only", "--baseline", "telea", "--baseline", "telea"], "--baseline telea: given twice"),
    (["config", "--preset", "smoke", "--set", "baselines.telea.name=geometric"], "baselines.telea.name"),
    (["fill", "{scene}", "--preset", "smoke", "--set", "baselines.telea.name=geometric"], "baselines.telea.name"),
    (["ablate", "{scene}", "--baselines-only", "--baseline", "telea", "--set", "baselines.telea.name=geometric"],
     "baselines.telea.name"),
])
def test_a_baseline_named_twice_or_renamed_is_refused(argv, fragment, example_scene, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier file")
    before = folder_hash(out)
    argv = [a.replace("{scene}", str(example_scene)) for a in argv]
    if argv[0] != "config":
        argv += ["--out", str(out)]
    one_line(capsys, main(argv), fragment)
    assert folder_hash(out) == before


# -- case 12: ablation inputs ------------------------------------------------------------------------


def test_ablate_refuses_a_folder_that_is_not_a_scene(tmp_path, capsys):
    out = tmp_path / "abl"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier ablation's file")
    before = folder_hash(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    readme = tmp_path / "readme-only"
    readme.mkdir()
    (readme / "README.md").write_text("not a scene")
    for folder in (empty, readme):
        code = main(["ablate", str(folder), "--baselines-only", "--baseline", "telea", "--out", str(out), "--no-tui"])
        one_line(capsys, code, str(folder))
        assert folder_hash(out) == before


def test_ablate_lists_what_it_leaves_out_and_scores_no_scene_without_ground_truth(example_scene, tmp_path, capsys):
    root = tmp_path / "scenes"
    shutil.copytree(example_scene, root / "1")
    shutil.copytree(example_scene, root / "2")
    (root / "2" / "target" / "gt.png").unlink()
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("not a scene")
    os.symlink(root, root / "self")
    os.symlink(".", root / "dot")
    out = tmp_path / "abl"
    code = main(["ablate", str(root), "--baselines-only", "--baseline", "telea", "--metric", "psnr", "--out", str(out),
                 "--no-tui"])
    err = capsys.readouterr().err
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    left = [n for n in notes if "left out" in n]
    assert len(left) == 1 and "4 subfolders without target/" in left[0], err
    for name in ("empty", "notes", "self", "dot"):
        assert str(root / name) in left[0]
    assert any(f"{root / '2'} has no ground truth" in n for n in notes), err
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["scene"], r["status"]) for r in rows] == [("1", "ok"), ("2", "ok")]
    assert rows[0]["metrics"]["psnr_masked"] > 0 and rows[1]["metrics"] == {}
    assert rows[1]["skipped_metrics"] == {"psnr": "no ground truth (target/gt.png)"}
    assert (out / rows[1]["run_dir"] / "result.png").is_file()  # its result is still made
    table = (out / "realbench.md").read_text()
    assert "| 1/2 (2: no ground truth (target/gt.png)) |" in table, table


# -- case 14: realbench.md says where its paper rows come from and what it scores ----------------------


def test_realbench_cites_the_paper_and_states_its_protocol(example_scene, tmp_path):
    out = tmp_path / "abl"
    assert main(["ablate", str(example_scene), "--baselines-only", "--baseline", "telea", "--metric", "psnr",
                 "--out", str(out), "--no-tui"]) == 0
    text = (out / "realbench.md").read_text()
    assert "arXiv 2309.16668" in text and "Table 1" in text and "Tang et al." in text
    assert "DESIGN.md" not in text and "/work/" not in text
    assert "Images scored (pick): one image per scene and method, the ranked pick" in text and "at the target's own size" in text
    assert "16 samples" in text and "512x512" in text


def test_the_averaged_protocol_scores_every_sample_and_says_so(example_scene, tmp_path, capsys):
    """``--protocol samples-mean``: each value is the mean over the run's samples (as eric15342335/realfill
    scores; ``-512`` resizes to 512x512 first); the record and realbench.md say which protocol ran, and a
    run scored one way is scored again, not relabelled, when asked another way."""
    from realfill.evaluation import build_metrics, evaluate_images
    from realfill.plugins import RealfillPlugins
    from realfill.seed_selection import write_ranking

    scene = load_scene(example_scene)
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, noise in enumerate((5, 60)):
        image = scene.gt.astype(np.int16)
        image[scene.mask] += rng.integers(-noise, noise + 1, size=image[scene.mask].shape, dtype=np.int16)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(run / "samples" / f"{index:03d}.png")
    write_ranking(run / "ranking.json", [{"file": "000.png", "score": 2, "rank": 1}, {"file": "001.png", "score": 1, "rank": 2}])
    shutil.copy(run / "samples" / "000.png", run / "result.png")
    from tests.conftest import record_scene

    record_scene(run, example_scene)
    psnr = build_metrics(RealfillPlugins(autoload=False), ["psnr"])
    each = [evaluate_images(np.asarray(Image.open(run / "samples" / f"{i:03d}.png")), scene.gt, scene.mask, psnr)
            .values["psnr_masked"] for i in range(2)]
    values = {}
    for protocol in ("pick", "samples-mean", "samples-mean-512"):
        assert main(["evaluate", str(run), "--metric", "psnr", "--protocol", protocol, "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["protocol"] == protocol
        values[protocol] = record["values"]["psnr_masked"]
    assert values["pick"] == pytest.approx(each[0])
    assert values["samples-mean"] == pytest.approx(np.mean(each))
    assert values["samples-mean-512"] != pytest.approx(values["samples-mean"])
    one_line(capsys, main(["evaluate", str(run), "--protocol", "mean"]), "--protocol mean", "samples-mean-512")

    out = tmp_path / "abl"
    for protocol in ("pick", "samples-mean-512"):
        assert main(["ablate", str(example_scene), "--baselines-only", "--baseline", "telea", "--metric", "psnr",
                     "--protocol", protocol, "--out", str(out), "--no-tui"]) == 0
        row = json.loads((out / "results.json").read_text())["rows"][0]
        assert row["protocol"] == protocol and row["scored_images"] == 1
        assert f"Images scored ({protocol})" in (out / "realbench.md").read_text()
    assert "skipped 0 finished runs" in capsys.readouterr().err  # scored again at 512, not relabelled
