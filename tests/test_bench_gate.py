"""The benchmark gate (benchmarks/gate.py): a benchmark fails CI only when it fails in every run it takes.

Each case runs the gate, as scripts/bench.sh does, over a small pytest-benchmark suite in a temporary
folder, against a baseline saved there by pytest-benchmark itself. A benchmark is made slow (30 ms against
a saved 2 ms) or made to miss its in-run target in chosen runs, and each benchmark counts the runs it took
part in.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gate  # noqa: E402

SUITE = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    import pytest

    def bad_run(name):
        # GATE_<name>: "always" (every run), "once" (the first run only) or unset; counts this run
        runs = Path(os.environ["GATE_RUNS"]) / name
        before = int(runs.read_text()) if runs.exists() else 0
        runs.write_text(str(before + 1))
        mode = os.environ.get("GATE_" + name)
        return mode == "always" or (mode == "once" and before == 0)

    @pytest.fixture
    def state():
        if os.environ.get("GATE_setup"):
            raise RuntimeError("broken set-up")

    @pytest.mark.parametrize("size", [64])
    def test_median(benchmark, size):
        benchmark.pedantic(time.sleep, args=(0.03 if bad_run("median") else 0.002,), rounds=3)

    def test_ratio(benchmark):
        benchmark.pedantic(time.sleep, args=(0.002,), rounds=3)
        assert not bad_run("ratio"), "speedup 1.0x, target 1.3x"

    def test_setup(benchmark, state):
        benchmark.pedantic(time.sleep, args=(0.002,), rounds=3)
    """
)


@pytest.fixture
def suite(tmp_path, monkeypatch):
    """A benchmark suite with a saved baseline; returns a function that runs the gate over it."""
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_suite.py").write_text(SUITE)
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATE_RUNS", str(runs))
    options = ["-q", "-p", "no:cacheprovider", f"--benchmark-storage=file://{tmp_path / 'saved'}"]
    saved = subprocess.run([sys.executable, "-m", "pytest", "suite", *options, "--benchmark-save=base"],
                           capture_output=True, text=True)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    for count in runs.iterdir():
        count.unlink()

    def run_gate(**modes):
        for name, mode in modes.items():
            monkeypatch.setenv(f"GATE_{name}", mode)
        rc = gate.main(["--attempts", "3", "--pause", "0", "suite", "--", *options, "--benchmark-compare=0001",
                        "--benchmark-compare-fail=median:200%"])
        counts = {p.name: int(p.read_text()) for p in runs.iterdir()}
        return rc, counts

    return run_gate


@pytest.mark.slow
def test_a_clean_run_passes_in_one_run(suite, capsys):
    rc, counts = suite()
    assert rc == 0
    assert counts == {"median": 1, "ratio": 1}
    assert "gate:" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_slowdown_in_one_run_only_passes_when_measured_again(suite, capsys):
    rc, counts = suite(median="once")
    out = capsys.readouterr().out
    assert "Performance has regressed" in out
    assert rc == 0
    assert counts == {"median": 2, "ratio": 1}  # only the benchmark that regressed ran again
    assert "passed when re-measured (run 2 of 3): suite/test_suite.py::test_median[64]" in out


@pytest.mark.slow
def test_a_slowdown_in_every_run_fails_the_gate(suite, capsys):
    rc, counts = suite(median="always")
    assert rc == 1
    assert counts == {"median": 3, "ratio": 1}
    assert "gate: failed in all 3 runs: suite/test_suite.py::test_median[64]" in capsys.readouterr().out


@pytest.mark.slow
def test_a_ratio_short_of_its_target_once_passes_and_always_fails(suite, capsys):
    rc, counts = suite(ratio="once")
    assert (rc, counts) == (0, {"median": 1, "ratio": 2})
    rc, counts = suite(ratio="always")
    assert rc == 1
    assert counts == {"median": 2, "ratio": 5}
    assert "gate: failed in all 3 runs: suite/test_suite.py::test_ratio" in capsys.readouterr().out


def test_an_error_fails_at_once_without_measuring_again(suite, capsys):
    rc, counts = suite(setup="1", median="once")
    assert rc == 1
    assert counts == {"median": 1, "ratio": 1}
    assert "for a reason other than a benchmark missing its target" in capsys.readouterr().out


def test_failing_nodes_reads_pytest_and_pytest_benchmark_output(tmp_path):
    results = tmp_path / "results.json"
    results.write_text('{"benchmarks": [{"name": "test_step[64-2]", '
                       '"fullname": "benchmarks/test_training_step.py::test_step[64-2]"}]}')
    output = ("FAILED benchmarks/test_sampling.py::test_batched - AssertionError: speedup 1.1x\n"
              "Performance has regressed:\n"
              "\ttest_step[64-2] (0005_amd-epy) - Field 'median' has failed PercentageRegressionCheck: "
              "63.0 > 50.0\n")
    assert gate.failing_nodes(output, results) == [
        "benchmarks/test_sampling.py::test_batched", "benchmarks/test_training_step.py::test_step[64-2]"]
    assert gate.failing_nodes("ERROR benchmarks/test_sampling.py::test_batched\n" + output, results) is None
    assert gate.failing_nodes("\ttest_other (0005) - Field 'median' has failed\n", results) is None
    assert gate.failing_nodes("1 passed\n", results) is None
