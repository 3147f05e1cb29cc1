"""The benchmark's own measuring: memory of a whole process session, percentiles, and its limits note.
The full 100-cell run itself is `make bench`; it needs the local mesh and takes tens of seconds."""

import os
import sys

from reports.bench import limits_note, percentile, run_measured, run_section

ALLOC_MB = 200
# A grandchild that detaches from its parent (double fork) and holds ALLOC_MB: it must still be counted.
DAEMONISED_HOG = f"""
import os, time
if os.fork() == 0:
    if os.fork() == 0:
        block = bytearray({ALLOC_MB} * 2**20)
        time.sleep(1.0)
    os._exit(0)
time.sleep(1.2)
"""


def test_peak_memory_counts_a_daemonised_grandchild():
    result = run_measured([sys.executable, "-c", DAEMONISED_HOG], dict(os.environ))
    assert result["exit_code"] == 0
    assert result["peak_memory_mb"] >= ALLOC_MB
    assert result["peak_processes"] >= 2 and result["memory_samples"] >= 5


def test_peak_memory_is_small_for_a_small_process():
    result = run_measured([sys.executable, "-c", "import time; time.sleep(0.5)"], dict(os.environ))
    assert 1 < result["peak_memory_mb"] < ALLOC_MB


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == 95.0 and percentile(values, 50) == 50.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([10.0, 1.0, 5.0], 95) == 10.0


def test_limits_note_follows_the_measured_cpu():
    busy = limits_note({"cpu_busy_pct": 97.0, "peak_processes": 40}, cores=2)
    idle = limits_note({"cpu_busy_pct": 30.0, "peak_processes": 40}, cores=2)
    assert "the CPU was the limit" in busy and "the CPU was the limit" not in idle


def test_missing_section_module_is_reported_as_skipped():
    assert run_section("probes.no_such_bench") == {"skipped": "probes.no_such_bench does not exist"}
    assert "skipped" in run_section("no_such_package.bench")
