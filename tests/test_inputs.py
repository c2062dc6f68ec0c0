"""The last bad inputs, each one line naming what to fix: ``--config RUN_FOLDER``, references and targets
that exist but cannot be read, a wrong-size ``--result``, a matcher in capitals, ``--keep`` above the
samples, a mask drawn with 0/1; and the adapter file's bytes, the same in two identical seeded runs.

Issue 22's cases (the list: docs/method.md "Bad input: what is tested"): a resume with another scene or
other settings, out-of-bound values (every key: tests/test_config_properties.py), a plugin raising
SystemExit, crafted lock files, a too-long --out, references that are not images, --no-plugin typos, a
sample preset mismatch, a wrong-size candidate, tables at 80 columns."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from realfill.cli import main
from tests.test_cli import assert_one_line_error, realfill

QUICK = ["--preset", "smoke", "--steps", "1", "--samples", "2", "--set", "sample.steps=1", "--set", "train.batch_size=2"]


@pytest.fixture
def scene(example_scene, tmp_path):
    copy = tmp_path / "scene"
    shutil.copytree(example_scene, copy)
    return copy


def _one_line(capsys, code, *fragments):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_config_accepts_a_run_folder_and_names_any_other_folder(tmp_path, capsys):
    assert main(["config", "--preset", "smoke", "--steps", "3"]) == 0
    text = capsys.readouterr().out
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(text.split("\n", 1)[1])  # without the "# run name" comment
    assert main(["config", "--config", str(run)]) == 0
    assert capsys.readouterr().out == text
    other = tmp_path / "not-a-run"
    other.mkdir()
    for command in (["config"], ["fill", "examples/motorcycle"]):
        _one_line(capsys, main([*command, "--config", str(other)]), str(other), "not a run folder")


@pytest.mark.slow
def test_fill_repeats_a_run_from_its_folder(example_scene, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["fill", str(example_scene), *QUICK, "--out", str(first)]) == 0
    second = tmp_path / "second"
    assert main(["fill", str(example_scene), "--config", str(first), "--out", str(second)]) == 0
    assert (second / "config.toml").read_text() == (first / "config.toml").read_text()
    # the same seed, the same bytes: the adapter too (its LoRA alpha once came out as 16 or 16.0)
    for name in ("adapter/pytorch_lora_weights.safetensors", "result.png", "samples/000.png"):
        assert (second / name).read_bytes() == (first / name).read_bytes(), name


@pytest.mark.slow
def test_adapter_bytes_are_the_same_in_two_seeded_runs(example_scene, tmp_path):
    """Two processes, two string-hash seeds: peft's target_modules is a set, saved sorted."""
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"run{seed}"
        proc = realfill("train", str(example_scene), *QUICK, "--out", str(out), env={"PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outs.append((out / "adapter" / "pytorch_lora_weights.safetensors").read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("where", ["ref/left_b.png", "target/target.png", "target/mask.png", "target/gt.png"])
def test_a_broken_link_in_a_scene_is_an_error_naming_it(scene, tmp_path, capsys, where):
    path = scene / where
    path.unlink()
    path.symlink_to(tmp_path / "gone.png")
    code = main(["fill", str(scene), *QUICK, "--out", str(tmp_path / "run")])
    _one_line(capsys, code, str(path), "broken link")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_reference_is_an_error_naming_it(scene, tmp_path, capsys):
    path = scene / "ref" / "left_b.png"
    path.chmod(0)
    code = main(["fill", str(scene), *QUICK, "--out", str(tmp_path / "run")])
    _one_line(capsys, code, str(path), "permission denied")


def test_evaluate_names_a_result_of_the_wrong_size(example_scene, tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    _one_line(capsys, main(["evaluate", str(example_scene), "--result", str(small)]), str(small), "40x30")


def test_a_matcher_in_capitals_gets_the_name_it_meant():
    proc = realfill("fill", "examples/motorcycle", "--preset", "smoke", "--matcher", "SIFT")
    assert_one_line_error(proc, "unknown ranker 'SIFT'", "did you mean 'sift'")
    proc = realfill("rank", "examples/motorcycle", "--samples", "examples/motorcycle/ref", "--matcher", "Warp")
    assert_one_line_error(proc, "did you mean 'warp'")


@pytest.mark.slow
def test_keep_above_the_samples_keeps_them_all_with_a_note(example_scene, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fill", str(example_scene), *QUICK, "--keep", "100", "--out", str(out)]) == 0
    assert "--keep 100: there are only 2 samples; keeping all 2" in capsys.readouterr().err
    assert main(["rank", str(example_scene), "--samples", str(out / "samples"), "--keep", "100", "--json"]) == 0
    captured = capsys.readouterr()
    assert "--keep 100: there are only 2 samples; keeping all 2" in captured.err
    import json

    assert [row["kept"] for row in json.loads(captured.out)] == [True, True]


def test_a_mask_drawn_with_zero_and_one_says_white_is_255(scene, tmp_path, capsys):
    mask = np.asarray(Image.open(scene / "target" / "mask.png").convert("L")) // 255  # 0 and 1
    Image.fromarray(mask.astype(np.uint8)).save(scene / "target" / "mask.png")
    code = main(["fill", str(scene), *QUICK, "--out", str(tmp_path / "run")])
    _one_line(capsys, code, "nothing to fill", "brightest value is 1", "white = 255")


# -- issue 22: a resume never mixes two scenes; every value is bounded -------------------------------


def _snapshot(folder):
    """Every file under ``folder`` with its bytes (and every folder), to prove a refusal touched nothing."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_a_resume_with_another_scene_is_refused_and_touches_nothing(scene, tmp_path, capsys, monkeypatch):
    """Case 1: the scene is compared by content (references, target, mask), so a moved scene still resumes,
    and the settings by key: each mismatch is one line naming what differs, exit 2, the folder untouched.
    The first fill is case 9's `fill > log` too: its comparison table is on stdout (not a terminal, 80
    columns) with every method's full name."""
    monkeypatch.setenv("COLUMNS", "80")
    run = tmp_path / "R"
    assert main(["fill", str(scene), *QUICK, "--out", str(run)]) == 0
    log = capsys.readouterr().out
    for method in ("this run (tiny-sd2)", "telea", "geometric", "multi-homography"):
        assert f"│ {method} " in log, log
    assert log.splitlines()[-1] == str(run)
    before = _snapshot(run)
    other = tmp_path / "B"  # the same scene with another mask
    shutil.copytree(scene, other)
    mask = np.asarray(Image.open(other / "target" / "mask.png").convert("L")).copy()
    mask[: mask.shape[0] // 8] = 255
    Image.fromarray(mask).save(other / "target" / "mask.png")
    code = main(["fill", str(other), *QUICK, "--no-compare", "--out", str(run), "--resume"])
    _one_line(capsys, code, str(run), "another scene", "mask", str(scene.resolve()))
    assert _snapshot(run) == before
    Image.open(scene / "ref" / "left_b.png").rotate(90).save(other / "ref" / "left_b.png")
    code = main(["train", str(other), *QUICK, "--out", str(run), "--resume"])
    _one_line(capsys, code, "reference", "mask")
    code = main(["fill", str(scene), *QUICK, "--steps", "2", "--no-compare", "--out", str(run), "--resume"])
    _one_line(capsys, code, "differs from this run's config", "train.steps: 1 then, 2 now")
    assert _snapshot(run) == before
    moved = tmp_path / "moved"  # the same pixels elsewhere: the same scene
    scene.rename(moved)
    assert main(["fill", str(moved), *QUICK, "--no-compare", "--out", str(run), "--resume"]) == 0
    assert "training already finished" in capsys.readouterr().err
    assert (run / "result.png").read_bytes() == before["result.png"]


@pytest.mark.parametrize("flags, key", [
    (["--set", "sample.guidance_scale=inf"], "sample.guidance_scale"),
    (["--set", "sample.guidance_scale=nan"], "sample.guidance_scale"),
    (["--set", "train.lr_denoiser=-inf"], "train.lr_denoiser"),
    (["--set", "train.lr_unet=-inf"], "train.lr_denoiser"),  # its old spelling names the key as it is now
    (["--set", "ranker.ratio=nan"], "ranker.ratio"),  # a component's float too
    (["--seed", "18446744073709551615"], "seed"),
    (["--seed", str(2**64)], "seed"),
    (["--seed", "-1"], "seed"),
    (["--set", "backbone.seed=4294967296"], "backbone.seed"),
    (["--set", "train.resolution=100000"], "train.resolution"),
    (["--set", "train.resolution=129"], "train.resolution"),  # tiny-sd2: at most 2x its native 64 px
    (["--set", "sample.resolution=257"], "sample.resolution"),
    (["--set", "train.adam_beta1=1.0"], "train.adam_beta1"),
    (["--set", "sample.steps=1001"], "sample.steps"),
    (["--samples", "0"], "sample.num_samples"),
])
def test_an_out_of_bounds_value_is_refused_before_any_file(example_scene, tmp_path, capsys, flags, key):
    """Cases 2-4: one line naming the key, exit 2, no run folder (docs/method.md "Bounds" states the rules)."""
    out = tmp_path / "run"
    code = main(["fill", str(example_scene), "--preset", "smoke", *flags, "--out", str(out)])
    _one_line(capsys, code, f"'{key}'")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_plugin_raising_systemexit_is_one_warning_and_the_command_goes_on(fake_entry_points, capsys):
    """Case 6: SystemExit at import or in a registration hook (anything but KeyboardInterrupt) is one
    warning naming the plugin; the command runs without it (it used to end with the plugin's exit code)."""
    from tests.conftest import DummyEntryPoint

    fake_entry_points(DummyEntryPoint("exits-at-import", "exits_at_import"),
                      DummyEntryPoint("exits-registering", "exits_registering"))
    assert main(["config", "--preset", "smoke"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, warnings
    assert "'exits-at-import'" in warnings[0] and "SystemExit: 3" in warnings[0]
    assert "'exits-registering'" in warnings[1] and "bye from a registration hook" in warnings[1]


@pytest.mark.parametrize("content, taken_over", [
    ({"pid": 2**70, "started": 1e300}, True),  # OverflowError in os.kill and in gmtime, once
    ({"pid": -1, "started": -1e300}, True),  # os.kill(-1, 0) asks every process: "alive" forever
    ({"pid": 0}, True),
    ({"pid": True}, True),
    ({"pid": "123", "started": "yesterday"}, True),
    ("[1, 2, 3]", True),
    ("\x00\xff not json at all", True),
    ({"pid": 1, "host": "another-host", "started": 1e300}, False),
])
def test_a_crafted_lock_file_is_taken_over_or_refused_in_one_line(tmp_path, content, taken_over):
    """Case 7: whatever a lock file holds, the lock is taken over (with a one-line note) or refused in one line."""
    import io
    import json
    import socket

    from rich.console import Console

    from realfill.runfolder import LOCK_FILE, RunFolderBusy, RunLock

    folder = tmp_path / "run"
    folder.mkdir()
    if isinstance(content, dict):
        content = json.dumps({"host": socket.gethostname(), **content})
    (folder / LOCK_FILE).write_text(content)
    note = io.StringIO()
    lock = RunLock(folder, "fill", console=Console(file=note, width=80))
    if taken_over:
        lock.acquire()
        lock.release()
        assert len(note.getvalue().strip().splitlines()) == 1 and "took over the lock" in note.getvalue()
    else:
        with pytest.raises(RunFolderBusy) as refused:
            lock.acquire()
        assert "another host" in str(refused.value) and "\n" not in str(refused.value)


def test_reading_a_scene_drops_no_file_without_a_word(scene, tmp_path, capsys):
    """Case 8: any format Pillow reads is a reference whatever its name; an entry named like an image that is
    not one is an error naming it; anything else under ref/ is named in a note and the run goes on."""
    from realfill.scene import load_scene

    left = Image.open(scene / "ref" / "left_b.png")
    left.save(scene / "ref" / "x.tiff")
    left.convert("RGB").save(scene / "ref" / "y.png", format="JPEG")  # a JPEG named .png
    (scene / "ref" / "notes.txt").write_text("taken on a sunny day\n")
    loaded = load_scene(scene)
    assert [p.name for p in loaded.reference_paths] == ["left_a.png", "left_b.png", "left_c.png", "x.tiff", "y.png"]
    assert len(loaded.references) == 5
    assert [n for n in loaded.notes if "notes.txt" in n] == [f"{scene / 'ref' / 'notes.txt'}: not an image Pillow "
                                                            "reads, so not a reference; ignored"]
    (scene / "ref" / "y.png").unlink()  # five references at most
    (scene / "ref" / "z.png").mkdir()
    out = tmp_path / "run"
    _one_line(capsys, main(["fill", str(scene), *QUICK, "--out", str(out)]), str(scene / "ref" / "z.png"), "a folder")
    (scene / "ref" / "z.png").rmdir()
    mask = scene / "target" / "mask.png"
    mask.unlink()
    mask.mkdir()
    _one_line(capsys, main(["fill", str(scene), *QUICK, "--out", str(out)]), str(mask), "a folder, not an image")
    assert not out.exists()


def test_an_out_name_too_long_is_one_line(example_scene, tmp_path, capsys):
    """Case 5: a 300-character --out name was a `File name too long` traceback from the lock."""
    out = tmp_path / ("a" * 300)
    _one_line(capsys, main(["fill", str(example_scene), "--preset", "smoke", "--out", str(out)]), "more than the 255")
    assert list(tmp_path.iterdir()) == []


def test_no_plugin_with_a_name_no_plugin_has_is_a_warning(capsys):
    """Case 9: a typo in --no-plugin must not pass for a blocked plugin; warned (not refused: the same
    names come from REALFILL_NO_PLUGINS, set once for machines that do not all have every plugin)."""
    assert main(["--no-plugin", "nosuch", "--no-plugin", "rankers.sift", "config", "--preset", "cpu"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--no-plugin nosuch" in warnings[0] and "no plugin of that name" in warnings[0]


def test_sample_with_another_preset_names_the_mismatch(example_scene, tmp_path, capsys):
    """Case 9: `sample --preset cpu` on a smoke run said "train first"; it names what differs."""
    run = tmp_path / "run"
    run.mkdir()
    assert main(["config", "--preset", "smoke"]) == 0
    (run / "config.toml").write_text(capsys.readouterr().out.split("\n", 1)[1])
    code = main(["sample", str(example_scene), "--run", str(run), "--preset", "cpu", "--out", str(tmp_path / "s")])
    _one_line(capsys, code, "--preset cpu", "backbone.name: 'tiny-sd2' then, 'scratch-pixel' now")
    assert not (tmp_path / "s").exists()


def test_rank_names_a_wrong_size_candidate_with_its_folder(example_scene, tmp_path, capsys):
    """Case 9: the mixed-size error named `a.png` alone."""
    folder = tmp_path / "candidates"
    folder.mkdir()
    target = Image.open(example_scene / "target" / "target.png")
    target.save(folder / "a.png")
    target.resize((40, 30)).save(folder / "b.png")
    _one_line(capsys, main(["rank", str(example_scene), "--samples", str(folder)]), f"{folder / 'b.png'}: candidate is 40x30")


@pytest.mark.parametrize("terminal", [False, True])
def test_the_comparison_table_keeps_every_method_name_at_80_columns(terminal, monkeypatch):
    """Case 9: in a log (not a terminal) or an 80-column terminal, Rich squeezed the table and cut the
    method names ("(scratch-p…", "multi-homo…"); a log gets the table at its own width, a narrow terminal
    the Markdown table."""
    import io

    from rich.console import Console

    from realfill.comparison import render_comparison
    from realfill.console import print_table

    monkeypatch.setenv("COLUMNS", "80")
    keys = ["psnr_masked", "ssim_masked", "vif_masked", "sharpness_masked"]
    names = ["this run (scratch-pixel)", "telea", "geometric", "multi-homography"]
    record = {"shown": keys, "higher_is_better": dict.fromkeys(keys, True), "best": {"psnr_masked": names[3]},
              "methods": [{"method": n, "values": dict.fromkeys(keys, 0.5), "seconds": 1.0} for n in names],
              "run_beaten_on": {"psnr_masked": [names[3]]}}
    text = io.StringIO()
    console = Console(file=text, force_terminal=terminal, color_system=None)
    assert console.width == 80
    print_table(console, render_comparison(record))
    for name in names:
        assert name in text.getvalue(), text.getvalue()
    if terminal:
        assert all(len(line) <= 80 for line in text.getvalue().splitlines() if not line.startswith("|"))


def test_sample_steps_above_a_scratch_backbones_timesteps_is_refused(example_scene, tmp_path, capsys):
    """Found while bounding sample.steps: the samplers refuse more steps than the training timesteps,
    which scratch-pixel lets a config set (it died after fine-tuning)."""
    out = tmp_path / "run"
    code = main(["fill", str(example_scene), "--preset", "cpu", "--set", "backbone.num_train_timesteps=4",
                 "--set", "sample.steps=5", "--out", str(out)])
    _one_line(capsys, code, "'sample.steps'", "backbone.num_train_timesteps")
    assert not out.exists()


# -- issue 29: images decode by their bit depth and their colour profile -----------------------------------


def _profile(colorants: dict[bytes, tuple[float, float, float]]) -> bytes:
    """LittleCMS's own sRGB profile (Pillow's ImageCms) with other primaries: each of ``rXYZ``, ``gXYZ``,
    ``bXYZ`` given is its colorant's D50 XYZ, written as the profile's s15Fixed16 numbers."""
    import struct

    from PIL import ImageCms

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    for i in range(struct.unpack(">I", data[128:132])[0]):
        signature, offset, _ = struct.unpack(">4sII", data[132 + 12 * i:144 + 12 * i])
        if signature in colorants:
            data[offset + 8:offset + 20] = struct.pack(">3i", *(round(v * 65536) for v in colorants[signature]))
    return bytes(data)


#: sRGB's primaries (D50-adapted, as LittleCMS writes them) and Display P3's (Apple's Display P3 profile)
SRGB_COLORANTS = {b"rXYZ": (0.4361, 0.2225, 0.0139), b"gXYZ": (0.3851, 0.7169, 0.0971),
                  b"bXYZ": (0.1431, 0.0606, 0.7141)}
P3_COLORANTS = {b"rXYZ": (0.5151, 0.2412, -0.0011), b"gXYZ": (0.2920, 0.6922, 0.0419),
                b"bXYZ": (0.1571, 0.0666, 0.7841)}


def test_a_16_bit_png_scales_by_its_bit_depth_not_its_content(scene, tmp_path, capsys):
    from realfill.scene import load_scene, read_mask, read_rgb

    dark = np.full((32, 48), 200, np.uint16)  # 200 of 65535: nearly black, whatever the brightest pixel is
    dark[::2] = 100
    Image.fromarray(dark).save(tmp_path / "dark.png")
    assert Image.open(tmp_path / "dark.png").mode == "I;16"
    assert read_rgb(tmp_path / "dark.png").max() <= 1  # it read as 200/255 (mean 79) before
    ramp = (np.arange(32 * 48).reshape(32, 48) * 41).astype(np.uint16)  # 0 .. 62976
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    expected = np.round(ramp / 65535 * 255).astype(np.uint8)
    assert np.array_equal(read_rgb(tmp_path / "ramp.png"), np.repeat(expected[..., None], 3, axis=2))
    # a 16-bit RGB PNG (written by OpenCV; Pillow decodes it to 8 bits itself) and a 16-bit mask
    import cv2

    rgb = np.zeros((8, 8, 3), np.uint16)
    rgb[..., 2], rgb[..., 1], rgb[..., 0] = 200, 65535, 32768  # OpenCV's order is BGR
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb)
    assert read_rgb(tmp_path / "rgb16.png")[0, 0].tolist() == [0, 255, 128]
    mask = np.asarray(Image.open(scene / "target" / "mask.png").convert("L")) > 127
    Image.fromarray(mask.astype(np.uint16) * 65535).save(scene / "target" / "mask.png")
    assert np.array_equal(read_mask(scene / "target" / "mask.png")[0], mask)
    assert load_scene(scene).mask.sum() == mask.sum()
    Image.fromarray(mask.astype(np.uint16) * 200).save(scene / "target" / "mask.png")  # black, in 16 bits
    _one_line(capsys, main(["fill", str(scene), *QUICK, "--out", str(tmp_path / "run")]), "mask.png",
              "nothing to fill")
    assert not (tmp_path / "run").exists()


def test_an_embedded_icc_profile_is_converted_to_srgb(scene, tmp_path):
    from realfill.scene import load_scene, read_rgb

    # four 16 x 16 blocks (a JPEG's chroma is averaged over 2 x 2 pixels, its blocks are 8 x 8)
    colours = np.array([[[200, 30, 10], [10, 30, 200], [128, 128, 128], [230, 120, 40]]], np.uint8)
    colours = colours.repeat(16, axis=0).repeat(16, axis=1)
    plain = tmp_path / "plain.png"
    Image.fromarray(colours).save(plain)
    assert np.array_equal(read_rgb(plain), colours)  # no profile: the values as they are
    # LittleCMS's sRGB profile, embedded: the same colours (to a rounding step)
    Image.fromarray(colours).save(tmp_path / "srgb.png", icc_profile=_profile({}))
    assert np.abs(read_rgb(tmp_path / "srgb.png").astype(int) - colours).max() <= 1
    # red and blue primaries swapped: what the file calls red is sRGB's blue, so the colours come out swapped
    swapped = _profile({b"rXYZ": SRGB_COLORANTS[b"bXYZ"], b"bXYZ": SRGB_COLORANTS[b"rXYZ"]})
    Image.fromarray(colours).save(tmp_path / "swapped.png", icc_profile=swapped)
    assert np.abs(read_rgb(tmp_path / "swapped.png").astype(int) - colours[..., ::-1]).max() <= 2
    # Display P3 (a phone's photos): its primaries are more saturated than sRGB's, so a warm colour comes
    # out more saturated in sRGB (more red, less green and blue) and a gray stays gray; in a JPEG too
    for name in ("p3.png", "p3.jpg"):
        Image.fromarray(colours).save(tmp_path / name, icc_profile=_profile(P3_COLORANTS), quality=100)
        p3 = read_rgb(tmp_path / name).astype(int)
        raw = np.asarray(Image.open(tmp_path / name)).astype(int)
        r, g, b = p3[8, 56]
        assert r > raw[8, 56, 0] + 5 and g < raw[8, 56, 1] and b < raw[8, 56, 2] - 5, (p3[8, 56], raw[8, 56])
        assert np.abs(p3[8, 40] - raw[8, 40]).max() <= 2 and np.ptp(p3[8, 40]) <= 2
    # and the scene's images go through it: a target saved with the swapped profile loads swapped back
    target = np.asarray(Image.open(scene / "target" / "target.png").convert("RGB"))
    Image.fromarray(target[..., ::-1].copy()).save(scene / "target" / "target.png", icc_profile=swapped)
    assert np.abs(load_scene(scene).target.astype(int) - target).max() <= 2


def test_an_icc_profile_that_cannot_be_applied_is_one_line_naming_the_file(scene, tmp_path, capsys):
    reference = scene / "ref" / "left_b.png"
    Image.open(reference).save(reference, icc_profile=b"not a profile" * 20)
    out = tmp_path / "run"
    _one_line(capsys, main(["fill", str(scene), *QUICK, "--out", str(out)]), str(reference), "ICC profile")
    assert not out.exists()


ISSUE_29_REFUSED = [
    ["--set", "baselines.multi-homography.clean=1000000000"],
    ["--set", "baselines.telea.radius=1e20"],
    ["--set", "baselines.tiny-flux-kontext.device=banana"],
    ["--set", "ranker.max_keypoints=1000000000000"],
    ["--set", "train.warmup_steps=3"],  # with the smoke preset's constant schedule
]


def test_a_refused_value_leaves_the_run_folder_byte_identical(example_scene, tmp_path, capsys):
    """Issue 29: each value refused with the config is refused before the run folder is touched, on a
    --resume of a finished run and on a plain rerun into it alike."""
    out = tmp_path / "run"
    assert main(["fill", str(example_scene), *QUICK, "--no-compare", "--out", str(out)]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    for bad in ISSUE_29_REFUSED:
        for resume in ([], ["--resume"]):
            _one_line(capsys, main(["fill", str(example_scene), *QUICK, *bad, "--out", str(out), *resume]),
                      bad[-1].split("=")[0].split(".")[-1])
            assert _snapshot(out) == before, bad
