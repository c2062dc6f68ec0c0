"""Benchmarks run as plain tests under ``--benchmark-disable`` (pytest-benchmark's documented way): their
code runs once with its correctness assertions, and nothing reads timing statistics that are not there.

The fast subset in full (``pytest benchmarks --benchmark-disable -m "not slow"``) compiles training steps
and takes many minutes on a CPU, so the suite runs the part of it that fits in about a minute: the
ablation resume (which read ``benchmark.stats``, None when disabled) and the ranking cache on the two
rankers that need no weights, without the fresh-process memory measurements.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_fast_benchmarks_pass_with_benchmarks_disabled(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/test_ablate_resume.py", "benchmarks/test_ranking.py",
         "-k", "resumed or sift or warp", "-m", "not slow", "--benchmark-disable", "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'bench'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "REALFILL_BENCH_MEMORY": "0", "REALFILL_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 passed" in proc.stdout, proc.stdout[-2000:]
