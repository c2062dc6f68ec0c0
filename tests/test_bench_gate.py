"""The benchmark gate (benchmarks/gate.py): medians judged relative to the machine's speed, and a benchmark
fails CI only when it fails in every run it takes.

Two parts:

- **A real benchmark** (the warp ranker's cached path, ``benchmarks/test_ranking.py -k warp``, the cheapest
  in the subset), with a baseline saved here, as ``scripts/bench.sh --save`` does: a planted 2x slowdown in
  its timed path (``REALFILL_BENCH_PLANT_SLOWDOWN=warp``) fails the gate; the unchanged tree against the same
  baseline made to look like a faster machine's (its medians and its calibration scaled by 0.6) passes,
  where pytest-benchmark's absolute check (``--benchmark-compare-fail=median:50%``, the gate before) fails.
- **The retries**, over a small pytest-benchmark suite in a temporary folder: a benchmark is made slow
  (100 ms against a saved 2 ms) or made to miss its in-run target in chosen runs, and counts its runs.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gate  # noqa: E402

PYTEST = ["-q", "-s", "-p", "no:cacheprovider"]
WARP = ["benchmarks/test_ranking.py", "--", *PYTEST, "-k", "warp"]


# -- a real benchmark against a saved, calibrated baseline -----------------------------------------------


@pytest.fixture(scope="module")
def warp_baseline(tmp_path_factory):
    """A baseline of the warp ranking benchmark saved with its calibration, as ``scripts/bench.sh --save``."""
    storage = tmp_path_factory.mktemp("saved")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setenv("REALFILL_BENCH_MEMORY", "0")
        mp.setenv("REALFILL_DISABLE_PLUGIN_AUTOLOAD", "1")
        mp.delenv("REALFILL_BENCH_PLANT_SLOWDOWN", raising=False)
        assert gate.main(["--storage", str(storage), "--save", "warp", *WARP]) == 0
    (saved,) = storage.glob("*/*.json")
    return saved


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("REALFILL_BENCH_MEMORY", "0")
    monkeypatch.setenv("REALFILL_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("REALFILL_BENCH_PLANT_SLOWDOWN", raising=False)
    return monkeypatch


def test_the_saved_baseline_carries_the_calibration_and_the_kind(warp_baseline):
    data = json.loads(warp_baseline.read_text())
    calibration = data["machine_info"]["calibration"]
    assert set(calibration) == {"start", "end", "combined"}
    assert calibration["combined"]["compute"] > 0 and calibration["combined"]["memory"] > 0
    (bench,) = data["benchmarks"]
    assert bench["extra_info"]["calibration"] == "memory"
    # the gate compares per call: a round's median over the calls in it (an inner loop makes a round last
    # at least 0.1 s where one ranking pass is shorter)
    assert bench["extra_info"]["inner_loops"] >= 1
    assert bench["stats"]["median"] / bench["extra_info"]["inner_loops"] == pytest.approx(
        bench["extra_info"]["cached_median_s"], rel=0.01)  # two clocks around the same rounds


def test_a_planted_2x_slowdown_fails_the_gate(warp_baseline, at_root, capsys):
    # one run: the verdict on a slowdown (the retries are the small suite's below). On these two cores at
    # load 12, a second run of the planted slowdown once came in at 1.66x the saved median where the
    # memory calibration had moved 40% within the run: a 2x slowdown is what one run shows reliably there.
    at_root.setenv("REALFILL_BENCH_PLANT_SLOWDOWN", "warp")
    rc = gate.main(["--storage", str(warp_baseline.parents[1]), "--attempts", "1", "--margin", "50", *WARP])
    out = capsys.readouterr().out
    assert rc == 1, out[-3000:]
    row = next(line for line in out.splitlines() if line.startswith("| test_ranking.py") and "[warp]" in line)
    assert "FAIL: slower" in row, row
    assert "in-run ratio" not in row  # the cached path's ratio still meets 1.8x: the median caught it
    assert ("gate: failed in its one run (--attempts 1): "
            "benchmarks/test_ranking.py::test_cached_reference_features_vs_naive[warp]") in out
    assert "PerformanceRegression" not in out and "Traceback" not in out


def _as_faster_machine(saved: Path, folder: Path, factor: float = 0.6) -> Path:
    """The saved run as if a machine ``1 / factor`` times as fast had saved it: its times and calibration."""
    data = json.loads(saved.read_text())
    for bench in data["benchmarks"]:
        for key in ("min", "max", "mean", "median", "stddev", "iqr", "q1", "q3", "total", "ld15iqr", "hd15iqr"):
            bench["stats"][key] *= factor
        bench["stats"]["ops"] /= factor
    calibration = data["machine_info"]["calibration"]
    for part in calibration.values():
        for kind in ("compute", "memory"):
            part[kind] *= factor
    target = folder / saved.parent.name / "0001_faster.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(data))
    return target


def test_a_faster_machines_baseline_passes_where_the_absolute_check_fails(warp_baseline, at_root, tmp_path, capsys):
    faster = _as_faster_machine(warp_baseline, tmp_path / "storage")
    results = tmp_path / "results.json"
    rc = gate.main(["--storage", str(faster.parents[1]), "--attempts", "3", "--pause", "0", "--margin", "50",
                    "--results", str(results), *WARP])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert "comparing medians with 0001_faster.json" in out
    row = next(line for line in out.splitlines() if line.startswith("| test_ranking.py") and "[warp]" in line)
    assert "| pass " in row, row
    assert "the baseline machine's speed" in out  # the speed factor

    # The gate before this one: pytest-benchmark's own check (scripts/bench.sh --ci passed
    # --benchmark-compare-fail=median:50%), on the run the gate just passed against the same run made to
    # look like a 0.6x-faster machine's: it fails on the unchanged tree. (Against the saved run scaled, as
    # the gate was judged above, it fails too unless this machine got faster since the save: on these shared
    # cores it did once, at load 12 then 6, which is the gate's point.)
    from pytest_benchmark.utils import parse_compare_fail

    check = parse_compare_fail("median:50%")
    (now,) = json.loads(results.read_text())["benchmarks"]
    as_faster = {key: value * 0.6 for key, value in now["stats"].items() if isinstance(value, float)}
    assert check.fails(now["stats"], as_faster)
    # and the gate, on the same numbers, passes it: the calibration moves with the machine
    calibration = json.loads(results.read_text())["machine_info"]["calibration"]["combined"]
    saved = gate.Baseline(faster, "faster", {k: v * 0.6 for k, v in calibration.items()},
                          {now["fullname"]: gate.per_call_s(now) * 0.6})
    assert gate.judge(now["fullname"], now, calibration, saved, 0.5, ratio_ok=True).passed


def test_a_baseline_without_calibration_is_named_and_the_ratios_judge_alone(tmp_path, capsys):
    old = tmp_path / "Linux" / "0001_old.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"machine_info": {"cpu_model": "AMD EPYC"}, "benchmarks": []}))
    assert gate.find_baseline(tmp_path) == (None, [old])
    new = tmp_path / "Linux" / "0002_new.json"
    new.write_text(json.dumps({"datetime": "2026-12-08T00:00:00", "benchmarks": [],
                               "machine_info": {"calibration": {"combined": {"compute": 1e-3, "memory": 5e-3}}}}))
    assert gate.find_baseline(tmp_path) == (new, [old])


# -- retries, over a small suite ----------------------------------------------------------------------------

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
        benchmark.extra_info["calibration"] = "compute"
        benchmark.pedantic(time.sleep, args=(0.1 if bad_run("median") else 0.002,), rounds=3)

    def test_ratio(benchmark):
        benchmark.extra_info["calibration"] = "ratio"
        benchmark.pedantic(time.sleep, args=(0.002,), rounds=3)
        assert not bad_run("ratio"), "speedup 1.0x, target 1.3x"

    def test_setup(benchmark, state):
        benchmark.pedantic(time.sleep, args=(0.002,), rounds=3)
    """
)


@pytest.fixture
def suite(tmp_path, monkeypatch):
    """A benchmark suite with a saved, calibrated baseline; returns a function that runs the gate over it."""
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_suite.py").write_text(SUITE)
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATE_RUNS", str(runs))
    monkeypatch.setenv("REALFILL_BENCH_CALIBRATION_S", "0.01")  # short calibration samples: these are sleeps
    gate_options = ["--storage", str(tmp_path / "saved"), "--pause", "0", "--margin", "200"]
    assert gate.main([*gate_options, "--save", "base", "suite", "--", "-q", "-p", "no:cacheprovider"]) == 0
    for count in runs.iterdir():
        count.unlink()

    def run_gate(**modes):
        for name, mode in modes.items():
            monkeypatch.setenv(f"GATE_{name}", mode)
        rc = gate.main([*gate_options, "--attempts", "3", "suite", "--", "-q", "-p", "no:cacheprovider"])
        counts = {p.name: int(p.read_text()) for p in runs.iterdir()}
        return rc, counts

    return run_gate


@pytest.mark.slow
def test_a_clean_run_passes_in_one_run(suite, capsys):
    rc, counts = suite()
    out = capsys.readouterr().out
    assert rc == 0
    assert counts == {"median": 1, "ratio": 1}
    assert "measuring again" not in out
    assert "| test_suite.py::test_median[64] | compute |" in out  # the summary table


@pytest.mark.slow
def test_a_slowdown_in_one_run_only_passes_when_measured_again(suite, capsys):
    rc, counts = suite(median="once")
    out = capsys.readouterr().out
    assert rc == 0
    assert counts == {"median": 2, "ratio": 1}  # only the benchmark that regressed ran again
    assert "gate: run 1 of 3: suite/test_suite.py::test_median[64] failed the gate (FAIL: slower)" in out
    assert "passed when re-measured (run 2 of 3)" in out
    assert "PerformanceRegression" not in out and "Traceback" not in out


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
    out = capsys.readouterr().out
    assert rc == 1
    assert counts == {"median": 2, "ratio": 5}
    assert "gate: failed in all 3 runs: suite/test_suite.py::test_ratio" in out
    assert "FAIL: in-run ratio" in out


def test_an_error_fails_at_once_without_measuring_again(suite, capsys):
    rc, counts = suite(setup="1", median="once")
    assert rc == 1
    assert counts == {"median": 1, "ratio": 1}
    assert "for a reason other than a benchmark missing its target" in capsys.readouterr().out


def test_failed_nodes_reads_pytest_output():
    output = ("FAILED benchmarks/test_sampling.py::test_batched - AssertionError: speedup 1.1x\n"
              "FAILED benchmarks/test_training_step.py::test_step[64-2]\n1 passed, 2 failed\n")
    assert gate.failed_nodes(output) == [
        "benchmarks/test_sampling.py::test_batched", "benchmarks/test_training_step.py::test_step[64-2]"]
    assert gate.failed_nodes("ERROR benchmarks/test_sampling.py::test_batched\n" + output) is None
    assert gate.failed_nodes("1 passed\n") == []
