"""Faults injected into real runs (tiny-sd2, the bundled scene): kill -9 and Ctrl-C in every stage, a full
disk during a checkpoint and during sampling, two writers on one folder, places that cannot be written.

After each, the run folder holds either nothing half-written or the very bytes an uninterrupted run
writes, once resumed. The faults come from ``tests/faults/sitecustomize.py`` in the subprocess (signals
at chosen points, ENOSPC from ``os.fsync``) and, where this machine lets us mount, from a real small
tmpfs and a read-only mount in a private mount namespace (``unshare``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from realfill.atomic import EXIT_OUT_OF_SPACE, TEMP_MARK
from realfill.cli import main
from realfill.runfolder import LOCK_FILE, RunFolderBusy, RunLock

ROOT = Path(__file__).resolve().parents[1]
FAULTS = Path(__file__).resolve().parent / "faults"
SCENE = ROOT / "examples" / "motorcycle"
#: a short smoke run: two checkpoints (steps 3 and 6) of nine steps, two samples drawn one at a time
FAST = ["--preset", "smoke", "--steps", "9", "--samples", "2", "--set", "train.batch_size=4",
        "--set", "train.checkpoint_every=3", "--set", "train.log_every=1", "--set", "sample.steps=2",
        "--set", "sample.batch_size=1"]
ABLATE_FAST = ["--preset", "smoke", "--matcher", "sift", "--matcher", "warp", "--no-tui", "--metric", "psnr",
               "--set", "train.steps=4", "--set", "train.batch_size=2", "--set", "train.checkpoint_every=2",
               "--set", "sample.steps=2", "--set", "sample.num_samples=2"]


def realfill(*args: str, fault: str = "", env: dict | None = None, prefix: list[str] | None = None,
             **kwargs) -> subprocess.CompletedProcess | subprocess.Popen:
    """``python -m realfill ARGS`` with the fault injector loaded (``prefix``: e.g. an unshare wrapper)."""
    full_env = {**os.environ, "REALFILL_DISABLE_PLUGIN_AUTOLOAD": "1", "REALFILL_FAULT": fault,
                "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    command = [*(prefix or []), sys.executable, "-m", "realfill", *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(command, env=full_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, env=full_env, cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(("warning:", "note:"))]


def digest(folder: Path) -> dict[str, str]:
    """Every file's hash, but train_log.jsonl by its steps and losses and comparison.json without the seconds
    each method took (both record times), and no lock."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == LOCK_FILE:
            continue
        name = str(path.relative_to(folder))
        if path.name == "train_log.jsonl":
            out[name] = str([(e["step"], e["loss"]) for e in map(json.loads, path.read_text().splitlines())])
        elif path.name == "comparison.json":
            record = json.loads(path.read_text())
            out[name] = json.dumps({**record, "methods": [{k: v for k, v in m.items() if k != "seconds"}
                                                          for m in record["methods"]]}, sort_keys=True)
        else:
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if TEMP_MARK in p.name or p.name in ("checkpoint.tmp", "checkpoint.old")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run, in its own process."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = realfill("fill", str(SCENE), *FAST, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not (out / "checkpoint").exists() and not leftovers(out) and not (out / LOCK_FILE).exists()
    return out


def _resume(out: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["fill", str(SCENE), "--config", str(out), "--out", str(out), "--resume"]) == 0
    return capsys.readouterr().err


EXIT = {"KILL": -signal.SIGKILL, "INT": 130}


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["KILL", "INT"])
@pytest.mark.parametrize("stage", ["train", "sample", "rank"])
def test_a_killed_fill_resumes_to_the_uninterrupted_bytes(reference, tmp_path, capsys, stage, sig):
    out = tmp_path / "run"
    fault = {"train": f"signal:train:5:{sig}", "sample": f"signal:sample:{sig}", "rank": f"signal:rank:{sig}"}[stage]
    proc = realfill("fill", str(SCENE), *FAST, "--out", str(out), fault=fault)
    assert proc.returncode == EXIT[sig], proc.stderr
    assert not (out / "contact_sheet.png").exists()  # it stopped where it was told to
    if stage == "train":
        assert (out / "checkpoint" / "state.pt").is_file() and not (out / "adapter").exists()
    else:
        assert (out / "adapter").is_dir() and not (out / "checkpoint").exists()
    if stage == "sample":
        assert not (out / "samples").exists()  # samples/ appears whole or not at all
    if sig == "INT":
        assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
        assert not (out / LOCK_FILE).exists() and not leftovers(out)  # released and cleaned on the way out
    else:
        assert json.loads((out / LOCK_FILE).read_text())["pid"] > 0  # left behind by the dead writer
    err = _resume(out, capsys)
    assert ("took over the lock" in err) == (sig == "KILL"), err
    assert digest(out) == digest(reference)
    assert not leftovers(out) and not (out / LOCK_FILE).exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["KILL", "INT"])
def test_a_killed_ablation_reruns_to_the_uninterrupted_bytes(tmp_path, capsys, sig):
    straight = tmp_path / "straight"
    assert main(["ablate", str(SCENE), *ABLATE_FAST, "--out", str(straight)]) == 0
    out = tmp_path / "killed"
    proc = realfill("ablate", str(SCENE), *ABLATE_FAST, "--out", str(out), fault=f"signal:ranked:1:{sig}")
    assert proc.returncode == EXIT[sig], proc.stderr
    assert not (out / "results.csv").exists()
    capsys.readouterr()
    assert main(["ablate", str(SCENE), *ABLATE_FAST, "--out", str(out)]) == 0
    assert ("took over the lock" in capsys.readouterr().err) == (sig == "KILL")
    rows = {r["configuration"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    for row in json.loads((straight / "results.json").read_text())["rows"]:
        mine = rows[row["configuration"]]
        assert mine["status"] == "ok" and mine["metrics"] == row["metrics"]
        for name in ("result.png", "ranking.json", "contact_sheet.png"):
            assert (out / mine["run_dir"] / name).read_bytes() == (straight / row["run_dir"] / name).read_bytes()
    assert not leftovers(out)


# -- full disks ----------------------------------------------------------------------------------------


def _mount_namespace() -> list[str] | None:
    """An ``unshare`` prefix giving the command a private mount namespace where it may mount, or None."""
    if shutil.which("unshare") is None:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as place:
        for prefix in (["unshare", "--mount"], ["unshare", "--mount", "--map-root-user"]):
            probe = subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {place}"],
                                   capture_output=True)
            if probe.returncode == 0:
                return prefix
    return None


MOUNT = _mount_namespace()


def _in_namespace(script: str, tmp_path: Path, fault: str = "") -> subprocess.CompletedProcess:
    """Run a shell ``script`` in a private mount namespace; ``$REALFILL`` runs realfill with the injector."""
    env = {**os.environ, "REALFILL_DISABLE_PLUGIN_AUTOLOAD": "1", "REALFILL_FAULT": fault,
           "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]),
           "REALFILL": f"{sys.executable} -m realfill", "T": str(tmp_path)}
    return subprocess.run([*MOUNT, "sh", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def _assert_out_of_space(stderr: str, *fragments: str) -> str:
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for fragment in ("out of space", "free there", "last good checkpoint:", "free space, then --resume", *fragments):
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_resumes(reference, tmp_path, capsys):
    adapter = (reference / "adapter" / "pytorch_lora_weights.safetensors").stat().st_size
    out = tmp_path / "run"
    if MOUNT is not None:
        # a checkpoint is about 4 adapters (weights, two Adam moments, the adapter): the first fits in 6,
        # the second, built while the first still stands, does not
        (tmp_path / "disk").mkdir()
        script = (f'mount -t tmpfs -o size={6 * adapter} tmpfs "$T/disk" && '
                  f'$REALFILL fill {SCENE} {" ".join(FAST)} --out "$T/disk/run"; echo "rc=$?"; '
                  'cp -a "$T/disk/run" "$T/run"')
        proc = _in_namespace(script, tmp_path)
        assert "rc=3" in proc.stdout, proc.stdout + proc.stderr
    else:  # no mounting here: the file system's ENOSPC injected at the second checkpoint's state.pt
        proc = realfill("fill", str(SCENE), *FAST, "--out", str(out), fault="enospc:*/checkpoint.tmp/*state.pt:1")
        assert proc.returncode == EXIT_OUT_OF_SPACE, proc.stderr
    line = _assert_out_of_space(proc.stderr, "checkpoint", "step 3")
    assert str(out / "checkpoint") in line.replace(str(tmp_path / "disk"), str(tmp_path))
    assert not leftovers(out), leftovers(out)  # no checkpoint.tmp taking the space
    assert (out / "checkpoint" / "state.pt").is_file()
    _resume(out, capsys)  # with room again
    assert digest(out) == digest(reference)


@pytest.mark.slow
def test_a_full_disk_during_sampling_leaves_no_partial_samples(reference, tmp_path, capsys):
    out = tmp_path / "run"
    proc = realfill("fill", str(SCENE), *FAST, "--out", str(out), fault="enospc:*/samples*/001.png:0")
    assert proc.returncode == EXIT_OUT_OF_SPACE, proc.stderr
    line = _assert_out_of_space(proc.stderr, "training finished")
    assert str(out / "samples") in line
    assert not (out / "samples").exists() and not leftovers(out) and not (out / LOCK_FILE).exists()
    _resume(out, capsys)
    assert digest(out) == digest(reference)


# -- two writers -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_first(reference, tmp_path):
    out = tmp_path / "run"
    go = tmp_path / "go"
    first = realfill("fill", str(SCENE), *FAST, "--out", str(out), fault=f"wait:train:1:{go}", background=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK_FILE).is_file() or not (out / "train_log.jsonl").is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = realfill("fill", str(SCENE), *FAST, "--out", str(out))
        again = realfill("fill", str(SCENE), *FAST, "--out", str(out), "--resume")
    finally:
        go.touch()
        _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    for proc in (second, again):
        assert proc.returncode == 2
        lines = error_lines(proc.stderr)
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"in use by `realfill fill` (pid {first.pid} on " in lines[0] and "one writer at a time" in lines[0]
    assert digest(out) == digest(reference)  # one consistent run: the first one's


@pytest.mark.slow
def test_two_writers_started_together_one_refused(reference, tmp_path):
    out = tmp_path / "run"
    procs = [realfill("fill", str(SCENE), *FAST, "--out", str(out), background=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert len(error_lines(refused)) == 1 and "Traceback" not in refused, refused
    assert digest(out) == digest(reference)


def test_the_lock_names_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder, "fill"):
        with pytest.raises(RunFolderBusy, match=rf"in use by `realfill fill` \(pid {os.getpid()} on "):
            RunLock(folder, "train").acquire()
    assert not folder.exists()  # it made the folder, and nothing was written in it
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (folder / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    lock = RunLock(folder, "fill").acquire()
    assert lock.took_over["pid"] == int(dead.stdout)
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-host"}))
    with pytest.raises(RunFolderBusy, match="another host"):
        RunLock(folder, "fill").acquire()


# -- places that cannot be written -------------------------------------------------------------------


def _assert_refused_fast(proc: subprocess.CompletedProcess, seconds: float, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert seconds < 2.0, f"took {seconds:.1f} s"


@pytest.mark.parametrize(("out", "why"), [("/proc/x", "cannot write there"), ("/proc/self/x/y", "cannot write there"),
                                          ("/sys/realfill-run", "cannot write there")])
def test_an_unwritable_out_is_one_line_within_two_seconds(out, why):
    start = time.monotonic()
    proc = realfill("fill", str(SCENE), "--preset", "smoke", "--out", out)
    _assert_refused_fast(proc, time.monotonic() - start, f"--out {out}", why)
    assert not Path(out).exists()


def test_an_out_through_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for command in (["fill", str(SCENE)], ["train", str(SCENE)], ["ablate", str(SCENE)]):
        start = time.monotonic()
        proc = realfill(*command, "--preset", "smoke", "--out", str(tmp_path / "file" / "run"))
        _assert_refused_fast(proc, time.monotonic() - start, "is not a folder")


@pytest.mark.skipif(MOUNT is None, reason="no private mount namespace here (unshare --mount) for a read-only mount")
def test_a_read_only_out_is_one_line_within_two_seconds(tmp_path):
    (tmp_path / "ro").mkdir()
    script = (f'mount -t tmpfs -o ro,size=64k tmpfs "$T/ro" && $REALFILL fill {SCENE} --preset smoke '
              '--out "$T/ro/run"; echo "rc=$?"')
    start = time.monotonic()  # the mount namespace and the mount take milliseconds of it
    proc = _in_namespace(script, tmp_path)
    seconds = time.monotonic() - start
    assert "rc=2" in proc.stdout, proc.stdout + proc.stderr
    _assert_refused_fast(subprocess.CompletedProcess([], 2, proc.stdout, proc.stderr), seconds,
                         f"--out {tmp_path / 'ro' / 'run'}", "read-only file system")


# -- the helpers themselves ------------------------------------------------------------------------------


def test_an_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    import errno

    import numpy as np
    from PIL import Image

    from realfill.atomic import OutOfSpace, atomic_dir, atomic_write, atomic_write_text, save_image

    path = atomic_write_text(tmp_path / "ranking.json", "old\n")

    def half(f, error):
        f.write(b"new, but only ha")
        raise error

    with pytest.raises(RuntimeError):
        atomic_write(path, lambda f: half(f, RuntimeError("killed")))
    with pytest.raises(OutOfSpace, match=r"ranking.json: out of space while writing it \(.* free there\)"):
        atomic_write(path, lambda f: half(f, OSError(errno.ENOSPC, "No space left on device")))
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["ranking.json"]
    with pytest.raises(OutOfSpace), atomic_dir(tmp_path / "samples") as building:
        (building / "000.png").write_bytes(b"x")
        raise RuntimeError("safetensors: IoError(Os { code: 28, kind: StorageFull })")  # a library's own words
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranking.json"]
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "plain.png")
    save_image(tmp_path / "atomic.png", image)  # the same bytes as PIL's own save
    assert (tmp_path / "atomic.png").read_bytes() == (tmp_path / "plain.png").read_bytes()


def test_every_writing_command_takes_the_lock(tmp_path, capsys):
    folder = tmp_path / "held"
    commands = {
        "train": ["train", str(SCENE), "--preset", "smoke", "--out", str(folder)],
        "sample": ["sample", str(SCENE), "--run", str(folder), "--preset", "smoke"],
        "rank": ["rank", str(SCENE), "--samples", str(SCENE / "ref"), "--matcher", "sift", "--out", str(folder)],
        "ablate": ["ablate", str(SCENE), "--preset", "smoke", "--no-tui", "--out", str(folder)],
        "fill": ["fill", str(SCENE), "--preset", "smoke", "--out", str(folder), "--resume"],
    }
    with RunLock(folder, "fill"):
        for name, argv in commands.items():
            capsys.readouterr()
            assert main(argv) == 2, name
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"in use by `realfill fill` (pid {os.getpid()} on " in err, (name, err)
            assert [p.name for p in folder.iterdir()] == [LOCK_FILE], name  # touched nothing
