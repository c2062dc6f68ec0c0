"""realfill as a user installs it: the sdist and wheel built from the tracked files, and the wheel (with the
example third-party plugin's) installed into a fresh virtual environment, not editable, and run from a
folder outside the checkout. An editable install hides a module missing from the wheel; this does not.

The dependencies come from a wheel folder kept between runs (``REALFILL_WHEELHOUSE``, default
``~/.cache/realfill/wheelhouse``): the first run downloads them there (``pip download`` with
``constraints.txt``, torch 2.13.0's CPU build as scripts/setup.sh installs it); later runs install offline.
The test prints what it ran, so a report can quote it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from realfill.cli import _command_modules

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"realfill/": "realfill/", "plugins/": "realfill_plugins/"}  # checkout folder -> name in the wheel
TORCH = "torch==2.13.0"  # the CPU build, as scripts/setup.sh installs it
WHEELHOUSE = Path(os.environ.get("REALFILL_WHEELHOUSE") or Path.home() / ".cache" / "realfill" / "wheelhouse")

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                reason="builds from the tracked files: needs a git checkout")


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 900)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


def tracked() -> list[str]:
    """The files git tracks (and the untracked ones it does not ignore), deleted ones left out."""
    proc = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=ROOT, check=True)
    return sorted(name for name in proc.stdout.split("\0") if name and (ROOT / name).is_file())


def package_files() -> set[str]:
    """Each tracked file of the two packages, named as in the wheel (plugins/example-plugin is its own package)."""
    names = set()
    for name in tracked():
        for folder, installed in PACKAGES.items():
            if name.startswith(folder) and not name.startswith("plugins/example-plugin/"):
                names.add(installed + name[len(folder):])
    return names


@pytest.fixture(scope="module")
def base() -> Path:
    """A folder of its own for the module (pytest's numbered temporary folders are pruned when other pytest
    runs start meanwhile, as on a shared machine)."""
    with tempfile.TemporaryDirectory(prefix="realfill-wheel-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def built(base) -> dict[str, Path]:
    """sdist and wheel of realfill (the wheel built from the sdist, as ``python -m build`` does) and the
    example plugin's wheel, from a copy of the tracked files: stale build/ folders cannot leak in."""
    source = base / "source"
    for name in tracked():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    dist = base / "dist"
    for folder in (source, source / "plugins" / "example-plugin"):
        proc = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, folder)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = {"sdist": next(dist.glob("realfill-*.tar.gz")), "wheel": next(dist.glob("realfill-*.whl")),
             "plugin": next(dist.glob("realfill_border_bands-*.whl")), "constraints": source / "constraints.txt"}
    return found


def test_the_wheel_holds_every_tracked_file_of_the_packages(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    expected = package_files()
    assert sum(name.startswith("realfill/commands/") for name in names) >= 9
    assert not expected - names, f"tracked but not in the wheel: {sorted(expected - names)}"
    stray = {name for name in names - expected if not name.split("/")[0].endswith(".dist-info")}
    assert not stray, f"in the wheel but not a tracked package file: {sorted(stray)}"  # no tests/, no example-plugin
    entry_points = zipfile.ZipFile(built["wheel"]).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "realfill = realfill.cli:main" in entry_points


def test_the_sdist_holds_what_the_wheel_is_built_from(built):
    import tarfile

    with tarfile.open(built["sdist"]) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    needed = {name for name in tracked() if name.startswith(tuple(PACKAGES)) and not name.startswith("plugins/example-plugin/")}
    needed |= {"pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "constraints.txt"}
    assert not needed - names, f"{top}: missing {sorted(needed - names)}"


#: the environment of everything run in the fresh venv: no PYTHONPATH (a checkout on it would pass for an
#: installed realfill, its egg-info and all), no other venv
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _pip(python: Path, *args) -> subprocess.CompletedProcess:
    """This venv's pip installing into another interpreter (no pip of its own to set up there)."""
    return run(sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check", *args, env=CLEAN_ENV)


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (their wall time says more about the neighbours)."""
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_the_installed_wheel_runs_outside_the_checkout(built, base, capsys):
    started, cpu = time.monotonic(), _children_cpu()
    last = [started]
    report = []

    def took() -> str:
        """Seconds since the previous step."""
        now = time.monotonic()
        seconds, last[0] = now - last[0], now
        return f"{seconds:.0f} s"

    tmp_path = base / "installed"
    venv = tmp_path / "venv"
    proc = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert proc.returncode == 0, proc.stderr
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    wanted = ["-c", built["constraints"], TORCH, built["wheel"], built["plugin"]]
    # --no-compile: byte-compiling all of torch's sources took longer than installing it (3:20 against 0:47 here)
    install = _pip(python, "install", "--quiet", "--no-compile", "--no-index", "--find-links", WHEELHOUSE, *wanted)
    if install.returncode != 0:  # a dependency not in the wheel folder yet: fetch what is missing, once
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        download = _pip(python, "download", "--quiet", "--dest", WHEELHOUSE, *wanted)
        assert download.returncode == 0, download.stderr[-3000:]
        for ours in [*WHEELHOUSE.glob("realfill-*.whl"), *WHEELHOUSE.glob("realfill_border_bands-*.whl")]:
            ours.unlink()  # our own wheels come from this build, never from the cache
        install = _pip(python, "install", "--quiet", "--no-compile", "--no-index", "--find-links", WHEELHOUSE, *wanted)
    assert install.returncode == 0, install.stderr[-3000:]
    report.append(f"installed {built['wheel'].name} and {built['plugin'].name} into a fresh venv ({took()})")

    bin_dir = python.parent
    env = dict(CLEAN_ENV)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", REALFILL_DISABLE_PLUGIN_AUTOLOAD="")
    outside = tmp_path / "elsewhere"
    outside.mkdir(parents=True)
    realfill = shutil.which("realfill", path=str(bin_dir))
    assert realfill is not None, f"the wheel installs no `realfill` command: {sorted(p.name for p in bin_dir.iterdir())}"

    def cli(*args) -> subprocess.CompletedProcess:
        return run(realfill, *args, cwd=outside, env=env)

    where = run(python, "-c", "import realfill, realfill_plugins; print(realfill.__file__, realfill_plugins.__file__)",
                cwd=outside, env=env)
    assert where.returncode == 0 and str(ROOT) not in where.stdout and str(venv) in where.stdout, where
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("realfill 0") and "torch 2.13.0" in version.stdout
    report.append(f"$ realfill --version  ({took()})\n  {version.stdout.strip()}")

    commands = sorted(module.NAME for module in _command_modules())
    assert len(commands) >= 8
    for command in commands:
        proc = cli(command, "--help")
        assert proc.returncode == 0 and f"usage: realfill {command}" in proc.stdout, (command, proc.stderr[-2000:])
    report.append(f"$ realfill COMMAND --help: exit 0 for each of {', '.join(commands)} ({took()})")

    listing = cli("plugins", "--json")
    assert listing.returncode == 0, listing.stderr[-2000:]
    plugins = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}
    assert plugins["border-bands"]["components"] == {"masking": ["border-bands"]}
    assert plugins["border-bands"]["distribution"] == "realfill-border-bands"
    assert all(p["builtin"] for name, p in plugins.items() if name != "border-bands")
    report.append(f"$ realfill plugins --json  ({took()})\n" + "\n".join(
        f"  {name} {p['version']}{'' if p['builtin'] else ' (' + p['distribution'] + ')'}: "
        + "; ".join(f"{role} {', '.join(names)}" for role, names in p["components"].items())
        for name, p in plugins.items()))

    out = tmp_path / "run"
    fill = cli("fill", ROOT / "examples" / "motorcycle", "--preset", "smoke", "--steps", "2", "--samples", "2",
               "--out", out)
    assert fill.returncode == 0, fill.stderr[-3000:]
    assert (out / "result.png").is_file()
    report.append(f"$ realfill fill examples/motorcycle --preset smoke --steps 2 --samples 2 --out RUN  ({took()})\n"
                  f"  wrote RUN/result.png ({(out / 'result.png').stat().st_size} bytes); "
                  f"RUN holds {', '.join(sorted(p.name for p in out.iterdir()))}")
    report.append(f"installed-wheel test: {time.monotonic() - started:.0f} s in all, "
                  f"{_children_cpu() - cpu:.0f} s of CPU in the processes it ran")
    with capsys.disabled():
        print("\n" + "\n".join(report))
