"""realfill starts where Python runs: no POSIX-only module at import time (Windows has no ``fcntl``), and the
run folder's lock is filelock's, the system's own lock on each platform."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "examples" / "motorcycle"


def without_fcntl(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python where ``import fcntl`` fails, as it does on Windows."""
    script = "import sys\nsys.modules['fcntl'] = None  # `import fcntl` raises ImportError from here on\n"
    return subprocess.run([sys.executable, "-c", script + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_the_command_line_starts_without_fcntl(tmp_path):
    proc = without_fcntl("""
        import realfill.runfolder
        from realfill.cli import main
        code = main(["config", "--preset", "smoke"])
        assert "fcntl" not in sys.modules or sys.modules["fcntl"] is None
        sys.exit(code)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'name = "tiny-sd2"' in proc.stdout and "steps = 20" in proc.stdout


def test_without_any_file_lock_a_run_is_refused_in_one_line_and_leaves_nothing(tmp_path):
    """No fcntl and not Windows (filelock falls back to lock-by-existence): the lock is refused, one line, not a
    traceback, and the folders it would have made are not left behind."""
    out = tmp_path / "new" / "run"
    proc = without_fcntl(f"""
        from realfill.cli import main
        sys.exit(main(["fill", {str(SCENE)!r}, "--preset", "smoke", "--out", {str(out)!r}]))
    """, tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{out}/.realfill.lock: cannot lock the run folder: this platform has no file locks" in errors[0]
    assert not (tmp_path / "new").exists()


def test_a_lock_file_left_by_a_killed_writer_is_taken_over(tmp_path):
    """The system frees the lock of a killed process; the record it left in the lock file is then taken over."""
    import json
    import signal

    from realfill.runfolder import LOCK_FILE, RunFolderBusy, RunLock

    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from realfill.runfolder import RunLock
        RunLock({str(folder)!r}, "train").acquire()
        print("held", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        try:
            RunLock(folder, "fill").acquire()
            raise AssertionError("a second writer took a held lock")
        except RunFolderBusy as busy:
            assert f"in use by `realfill train` (pid {holder.pid} on " in str(busy)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid  # what the killed writer left
    lock = RunLock(folder, "fill").acquire()
    assert lock.took_over["pid"] == holder.pid
    lock.release()
    assert list(folder.iterdir()) == []  # the killed writer made the folder; the lock file goes with the lock
