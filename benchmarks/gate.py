"""Run the benchmark subset and gate on it: in-run ratios, and medians against a saved baseline relative to
the machine's speed, re-measuring what failed before calling it a regression.

``scripts/bench.sh`` runs the benchmarks through this script::

    python benchmarks/gate.py [--attempts N] [--pause S] [--margin PCT] [--storage DIR] [--baseline FILE]
                              [--save NAME] TARGET -- PYTEST_OPTIONS...

How it decides, per benchmark:

1. **In-run ratio.** Every benchmark asserts its own target on a ratio timed in the same run (ours against
   the recipe, cached against naive, resumed against first): a ``FAILED`` test.
2. **Median against the saved baseline, relative to the machine.** The calibration kernels of
   ``benchmarks/calibration.py`` (``compute``: a float32 matrix product at the benchmarks' thread count;
   ``memory``: a float32 add streaming through memory) are timed before the first run and after every run;
   a run's calibration is the median of the two around it. Each benchmark declares its kind
   (``@pytest.mark.calibration(kind)``, recorded in its ``extra_info``); its median, scaled to the baseline
   machine's speed (``now * saved calibration / calibration now``), fails when it is more than ``--margin``
   percent above the saved median. A benchmark of kind ``ratio`` is judged by its in-run ratio alone. The
   baseline is the newest JSON under ``--storage`` that carries a calibration, whatever its CPU model (the
   calibration is what makes another machine's times comparable); without one the gate says so and
   judges the in-run ratios alone.
3. **A failure must repeat.** The benchmarks that failed either way are run again, alone, after
   ``--pause`` seconds, up to ``--attempts`` runs in all; the gate fails only when a benchmark fails in
   every run it took part in: a real regression does, a neighbour that took a core on a shared machine for a
   minute or two does not (calibration measures a slower machine, not an oversubscribed one).

Anything else (a test that errors, a crash, an exit status that failed tests do not explain) fails at once,
without a second run. The gate ends with one table: each case's saved median, its median now, now scaled to
the baseline machine, the limit, its in-run ratio, pass or fail and the runs it took; and this machine's
speed against the baseline machine's, per kind.

``--save NAME`` runs once with ``--benchmark-save=NAME`` and stores the calibration in the saved JSON
(``machine_info["calibration"]``), which makes it a baseline the gate can use on any machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from calibration import KINDS, RATIO_ONLY, combine, measure  # noqa: E402

#: pytest's short summary line of a failed test: ``FAILED <node id>`` or ``FAILED <node id> - <message>``
FAILED = re.compile(r"^FAILED (?P<node>\S+?)(?: - .*)?$")
#: pytest's short summary line of a test that errored (setup, teardown, collection)
ERRORED = re.compile(r"^ERROR (?P<node>\S+)")


def run(args: list[str]) -> tuple[int, str]:
    """``python -m pytest args``, its output echoed as it comes and returned with the exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    return proc.wait(), "".join(lines)


def calibrate() -> dict:
    """The calibration kernels' seconds per call, timed now (benchmarks/calibration.py), in this process:
    torch is imported once, and each calibration then takes about a second."""
    return measure()


def failed_nodes(output: str) -> list[str] | None:
    """The node ids of the tests that failed (missed their in-run target) in one run, or None when a test
    errored (set-up, collection): that is no measurement to repeat."""
    lines = output.splitlines()
    if any(ERRORED.match(line) for line in lines):
        return None
    return list(dict.fromkeys(m["node"] for line in lines if (m := FAILED.match(line))))


def per_call_s(bench: dict) -> float:
    """A benchmark's median per call: pytest-benchmark's median of rounds over the calls in a round."""
    return bench["stats"]["median"] / bench.get("extra_info", {}).get("inner_loops", 1)


def results_by_node(path: Path) -> dict[str, dict]:
    try:
        return {b["fullname"]: b for b in json.loads(path.read_text())["benchmarks"]}
    except (OSError, ValueError, KeyError):
        return {}


def find_baseline(storage: Path) -> tuple[Path | None, list[Path]]:
    """The newest saved run under ``storage`` with a calibration, and the saved runs without one."""
    with_calibration, without = [], []
    for path in sorted(storage.glob("*/*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("machine_info", {}).get("calibration"):
            with_calibration.append((data.get("datetime", ""), path.name, path))
        else:
            without.append(path)
    return (max(with_calibration)[2] if with_calibration else None), without


@dataclass
class Baseline:
    path: Path
    cpu_model: str
    calibration: dict
    medians: dict[str, float]

    @classmethod
    def load(cls, path: Path) -> Baseline:
        data = json.loads(path.read_text())
        machine = data.get("machine_info", {})
        return cls(path, machine.get("cpu_model", "?"), machine["calibration"]["combined"],
                   {b["fullname"]: per_call_s(b) for b in data["benchmarks"]})


@dataclass
class Case:
    """One benchmark's verdict in one run."""

    node: str
    kind: str
    now_s: float
    in_run: str = ""
    saved_s: float | None = None
    adjusted_s: float | None = None
    limit_s: float | None = None
    ratio_ok: bool = True
    runs: int = 1

    @property
    def median_ok(self) -> bool:
        return self.adjusted_s is None or self.adjusted_s <= self.limit_s

    @property
    def passed(self) -> bool:
        return self.ratio_ok and self.median_ok

    @property
    def verdict(self) -> str:
        if self.passed:
            return "pass" if self.adjusted_s is not None else "pass (ratio only)"
        return "FAIL: " + " and ".join(
            reason for reason, bad in (("in-run ratio", not self.ratio_ok), ("slower", not self.median_ok)) if bad)


def in_run_ratio(bench: dict) -> str:
    extra = bench.get("extra_info", {})
    if "speedup" in extra:
        return f"{extra['speedup']:.2f}x"
    if "ratio" in extra:
        return f"{extra['ratio']:.4f}"
    return ""


def judge(node: str, bench: dict, calibration: dict, baseline: Baseline | None, margin: float,
          ratio_ok: bool) -> Case:
    kind = bench.get("extra_info", {}).get("calibration", RATIO_ONLY)
    case = Case(node, kind, per_call_s(bench), in_run_ratio(bench), ratio_ok=ratio_ok)
    if baseline is not None and node in baseline.medians:
        case.saved_s = baseline.medians[node]
        if kind in calibration and kind in baseline.calibration:
            case.adjusted_s = case.now_s * baseline.calibration[kind] / calibration[kind]
            case.limit_s = case.saved_s * (1 + margin)
    return case


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def summary(cases: dict[str, Case], baseline: Baseline | None, calibrations: list[dict], margin: float) -> str:
    """The gate's table, and the machine's speed against the baseline machine's."""
    rows = [("case", "kind", "saved", "now", "adjusted", f"limit (+{margin:.0%})", "in-run", "result", "runs")]
    for case in cases.values():
        rows.append((case.node.split("/")[-1], case.kind, _time(case.saved_s), _time(case.now_s),
                     _time(case.adjusted_s), _time(case.limit_s), case.in_run, case.verdict, str(case.runs)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["", "gate: summary (medians per call; adjusted = now x saved calibration / calibration now, the "
             "time on the baseline machine)"]
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    now = combine(calibrations)
    for kind in KINDS:
        seen = ", ".join(_time(c[kind]) for c in calibrations)
        line = f"gate: calibration {kind}: {_time(now[kind])} per call now (median of {seen})"
        if baseline is not None and kind in baseline.calibration:
            line += (f", {_time(baseline.calibration[kind])} on the baseline machine: this machine runs it at "
                     f"{baseline.calibration[kind] / now[kind]:.2f}x the baseline machine's speed")
        lines.append(line)
    return "\n".join(lines)


def _save_calibration(storage: Path, before: set[Path], calibrations: list[dict]) -> list[Path]:
    saved = sorted(set(storage.glob("*/*.json")) - before)
    for path in saved:
        data = json.loads(path.read_text())
        data["machine_info"]["calibration"] = {"start": calibrations[0], "end": calibrations[-1],
                                               "combined": combine(calibrations)}
        path.write_text(json.dumps(data, indent=4) + "\n")
    return saved


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="benchmarks/gate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="what the first run collects (a folder or a file)")
    parser.add_argument("--attempts", type=int, default=4, help="runs in all before a failure counts")
    parser.add_argument("--pause", type=float, default=30.0, help="seconds to wait before a re-run")
    parser.add_argument("--margin", type=float, default=30.0,
                        help="percent a median may be above the saved one, both relative to the machine's speed")
    parser.add_argument("--storage", type=Path, default=BENCH_DIR / "baseline", help="where baselines are saved")
    parser.add_argument("--baseline", type=Path, help="compare with this saved JSON (default: the newest in "
                        "--storage with a calibration)")
    parser.add_argument("--save", metavar="NAME", help="run once and save a baseline with its calibration")
    parser.add_argument("--results", type=Path, help="copy each run's pytest-benchmark JSON here (the last run's "
                        "stays), with the run's calibration in machine_info")
    opts = parser.parse_args(argv[:split])
    pytest_options = [*argv[split + 1:], f"--benchmark-storage=file://{opts.storage.resolve()}"]
    margin = opts.margin / 100

    baseline_path, uncalibrated = (opts.baseline, []) if opts.baseline else find_baseline(opts.storage)
    baseline = None
    if baseline_path is not None:
        try:
            baseline = Baseline.load(baseline_path)
        except (OSError, ValueError, KeyError, TypeError):
            print(f"gate: {baseline_path} is not a saved run with a calibration; gating on the in-run ratios only")
    if baseline is not None:
        print(f"gate: comparing medians with {baseline.path.name} (saved on {baseline.cpu_model}), relative to "
              f"each machine's calibration, margin {opts.margin:g}%")
    elif not opts.baseline:
        names = ", ".join(p.name for p in uncalibrated) or "none"
        print(f"gate: no saved baseline with a calibration in {opts.storage} (without one: {names}; their medians "
              "cannot be compared with another machine's); gating on the in-run ratios only "
              "(scripts/bench.sh --save makes one)")
    attempts = 1 if opts.save else opts.attempts
    if opts.save:
        pytest_options.append(f"--benchmark-save={opts.save}")
    before_save = set(opts.storage.glob("*/*.json"))

    calibrations = [calibrate()]
    cases: dict[str, Case] = {}
    runs: dict[str, int] = {}
    failing: list[str] = []
    rc = 0
    with tempfile.TemporaryDirectory(prefix="realfill-gate-") as tmp:
        results = Path(tmp) / "results.json"
        targets = [opts.target]
        for attempt in range(1, attempts + 1):
            results.unlink(missing_ok=True)
            rc, output = run([*targets, *pytest_options, f"--benchmark-json={results}"])
            calibrations.append(calibrate())
            failed = failed_nodes(output)
            if failed is None or (rc != 0 and not failed):
                print(summary(cases, baseline, calibrations, margin))
                print(f"gate: pytest exited with {rc} for a reason other than a benchmark missing its target; "
                      "not re-measuring")
                return rc or 1
            calibration = combine(calibrations[-2:])  # the kernels timed just before and just after this run
            benchmarks = results_by_node(results)
            if opts.results and results.exists():
                data = json.loads(results.read_text())
                data["machine_info"]["calibration"] = {"start": calibrations[-2], "end": calibrations[-1],
                                                       "combined": calibration}
                opts.results.write_text(json.dumps(data, indent=4) + "\n")
            failing = [node for node in failed if node not in benchmarks]  # failed before it was timed
            for node, bench in benchmarks.items():
                runs[node] = runs.get(node, 0) + 1
                case = judge(node, bench, calibration, baseline, margin, ratio_ok=node not in failed)
                case.runs = runs[node]
                cases[node] = case
                if not case.passed:
                    failing.append(node)
            if not failing:
                break
            targets = failing  # a benchmark that passed once is done: the next run takes only these
            if attempt < attempts:
                print(f"gate: run {attempt} of {attempts}: {', '.join(targets)} failed the gate "
                      f"({'; '.join(cases[n].verdict for n in targets if n in cases) or 'failed'}); "
                      f"measuring again in {opts.pause:g} s")
                time.sleep(opts.pause)
                calibrations.append(calibrate())
    print(summary(cases, baseline, calibrations, margin))
    if opts.save:
        for path in _save_calibration(opts.storage, before_save, calibrations):
            print(f"gate: saved {path} with this run's calibration")
        return rc
    if failing:
        runs_said = f"all {attempts} runs" if attempts > 1 else "its one run (--attempts 1)"
        print(f"gate: failed in {runs_said}: {', '.join(failing)}")
        return 1
    if attempt > 1:
        print(f"gate: passed when re-measured (run {attempt} of {attempts}): every benchmark that failed an "
              "earlier run passed in a later one; a busy machine, not a regression")
    return 0


if __name__ == "__main__":
    sys.exit(main())
