"""Run the benchmark subset and gate on it, re-measuring what failed before calling it a regression.

``scripts/bench.sh`` runs the benchmarks through this script::

    python benchmarks/gate.py [--attempts N] [--pause S] TARGET -- PYTEST_OPTIONS...

The first run is ``pytest TARGET PYTEST_OPTIONS --benchmark-json=...``. When it fails, the benchmarks that
failed the gate (an in-run ratio short of its target: a ``FAILED`` test; or a median slower than the saved
baseline by more than ``--benchmark-compare-fail``'s margin: a line under pytest-benchmark's "Performance
has regressed") are run again, alone, after a pause, up to ``--attempts`` runs in all. The gate fails only
when a benchmark fails in every run it took part in: a real regression does, while a neighbour that took a
core on a shared machine for a minute or two does not. CI once saw the eager loop's median at two threads
at 1.63x the saved baseline, slower than the same loop at one thread, while every other benchmark in the
run moved 11% or less; here the same benchmark ran at 1.77x, 1.68x, then 1.13x in three runs a minute
apart, with the reference loop timed beside it slowed as much (the in-run ratio held at 1.15-1.19x).

Anything else (a test that errors, a crash, an exit status the two patterns do not explain) fails at
once, without a second run.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: pytest-benchmark's line for one regression, under "Performance has regressed:":
#: ``\t<name> (<saved run>) - Field 'median' has failed PercentageRegressionCheck: ...``
REGRESSED = re.compile(r"^\t(?P<name>\S.*?) \((?P<saved>[^()]*)\) - Field '")
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


def failing_nodes(output: str, results: Path) -> list[str] | None:
    """The node ids of the benchmarks that failed the gate in one run, or None when the run failed for
    another reason too (an error, a crash, or a failure neither pattern explains)."""
    lines = output.splitlines()
    if any(ERRORED.match(line) for line in lines):
        return None
    nodes = [m["node"] for line in lines if (m := FAILED.match(line))]
    regressed = [m["name"] for line in lines if (m := REGRESSED.match(line))]
    if regressed:
        try:
            fullnames = {b["name"]: b["fullname"] for b in json.loads(results.read_text())["benchmarks"]}
        except (OSError, ValueError, KeyError):
            return None
        if any(name not in fullnames for name in regressed):
            return None
        nodes += [fullnames[name] for name in regressed]
    return list(dict.fromkeys(nodes)) or None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="benchmarks/gate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="what the first run collects (a folder or a file)")
    parser.add_argument("--attempts", type=int, default=4, help="runs in all before a failure counts")
    parser.add_argument("--pause", type=float, default=30.0, help="seconds to wait before a re-run")
    opts = parser.parse_args(argv[:split])
    pytest_options = argv[split + 1:]
    with tempfile.TemporaryDirectory(prefix="realfill-gate-") as tmp:
        results = Path(tmp) / "results.json"
        targets = [opts.target]
        for attempt in range(1, opts.attempts + 1):
            results.unlink(missing_ok=True)
            rc, output = run([*targets, *pytest_options, f"--benchmark-json={results}"])
            if rc == 0:
                if attempt > 1:
                    print(f"gate: passed when re-measured (run {attempt} of {opts.attempts}): "
                          f"{', '.join(targets)} failed the gate in every earlier run, not in this one; "
                          "a busy machine, not a regression")
                return 0
            nodes = failing_nodes(output, results)
            if nodes is None:
                print(f"gate: pytest exited with {rc} for a reason other than a benchmark missing its "
                      "target or its saved baseline; not re-measuring")
                return rc
            targets = nodes  # a benchmark that passed once is done: the next run takes only these
            if attempt < opts.attempts:
                print(f"gate: run {attempt} of {opts.attempts}: {', '.join(targets)} failed the gate; "
                      f"measuring again in {opts.pause:g} s")
                time.sleep(opts.pause)
        print(f"gate: failed in all {opts.attempts} runs: {', '.join(targets)}")
        return rc


if __name__ == "__main__":
    sys.exit(main())
