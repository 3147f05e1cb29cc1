"""The benchmark's own measuring: memory of a whole process session, percentiles, and its limits note.
The full 100-cell run itself is `make bench`; it needs the local mesh and takes tens of seconds."""

import json
import os
import sys

from reports.bench import (
    kube_estimate,
    limits_note,
    main,
    percentile,
    run_figures,
    run_measured,
    run_section,
    time_suites,
)
from reports.cells import record_figures

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
    assert result["peak_memory_mb"] >= ALLOC_MB and result["peak_pss_mb"] >= ALLOC_MB
    assert max(e["rss_mb"] for e in result["peak_by_process"].values()) >= ALLOC_MB
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
    busy = limits_note({"cpu_busy_pct": 97.0, "peak_processes": 40, "peak_pss_mb": 500.0}, cores=2)
    idle = limits_note({"cpu_busy_pct": 30.0, "peak_processes": 40, "peak_pss_mb": 500.0}, cores=2)
    assert "the CPU was the limit" in busy and "the CPU was the limit" not in idle


def test_missing_section_module_is_reported_as_skipped():
    assert run_section("probes.no_such_bench") == {"skipped": "probes.no_such_bench does not exist"}
    assert "skipped" in run_section("no_such_package.bench")


TINY_MATRIX = '''
import time
import pytest
from reports.cells import record_cell

@pytest.mark.parametrize("ms", [10, 20, 30, 400])
def test_matrix(ms):
    time.sleep(ms / 1000)
    if ms == 400:  # as the mesh fixture does at the end of a worker's session
        from reports.cells import record_figures
        record_figures("local", {"config_rounds": 1, "pods_started": 20, "probes": 4,
                                 "rounds": [{"apply_ms": 150.0, "converge_ms": 900.0, "pods_started": 20}]})
    proof = {"outcome": "mtls", "wire": "mtls", "peer_identity": None}
    record_cell(cell=f"cell-{ms}", passed=True, expected=proof, observed=proof, duration_ms=float(ms))

def test_not_selected():
    raise AssertionError("-k matrix must not select this")
'''


def test_bench_end_to_end_on_a_tiny_suite(tmp_path):
    """The whole `python -m reports.bench` path with real pytest-xdist workers writing cell records."""
    (tmp_path / "test_tiny.py").write_text(TINY_MATRIX)
    out = tmp_path / "bench.json"
    code = main(["--out", str(out), "-n", "2", "--path", str(tmp_path / "test_tiny.py"), "--skip-sections",
                 "--new-suites", "--", "-c", "/dev/null", "--rootdir", str(tmp_path)])
    report = json.loads(out.read_text())
    assert code == 0 and report["pytest_exit_code"] == 0
    assert report["cells"] == 4 and report["cells_passed"] == 4
    assert report["median_cell_ms"] == 25.0 and report["p95_cell_ms"] == 400.0
    assert report["wall_s"] >= 0.4 and report["peak_memory_mb"] > 30  # three Python processes at least
    assert report["cores"] >= 1 and "busy on average" in report["limits"]
    assert report["goal"]["met"] is False  # 4 cells are not the 100-cell matrix
    assert (report["config_rounds"], report["pods_started"], report["probes"]) == (1, 20, 4)
    assert report["rounds"][0]["converge_ms"] == 900.0 and report["kube_estimate"]["estimate"] is True


TINY_SUITES = '''
import pytest
from reports.cells import record_cell

@pytest.mark.parametrize("cell", ["ports/a", "ports/b", "destinations/c", "destinations/not-supported"])
def test_cell(cell):
    if cell.endswith("not-supported"):
        pytest.fail("NOT SUPPORTED YET: server.app")
    proof = {"outcome": "mtls", "wire": "mtls", "peer_identity": None}
    record_cell(cell=cell, passed=cell != "ports/b", expected=proof, observed=proof, duration_ms=10.0 * len(cell))
'''


def test_new_suites_are_timed_apart_per_suite(tmp_path):
    (tmp_path / "test_suites.py").write_text(TINY_SUITES)
    timed = time_suites([str(tmp_path / "test_suites.py"), "-c", "/dev/null", "--rootdir", str(tmp_path)], "2",
                        tmp_path / "cells")
    assert timed["suites"] == {"destinations": {"cells": 1, "cells_passed": 1, "median_cell_ms": 140.0,
                                                "p95_cell_ms": 140.0},
                               "ports": {"cells": 2, "cells_passed": 1, "median_cell_ms": 70.0, "p95_cell_ms": 70.0}}
    assert timed["pytest_exit_code"] == 1 and "1 failed, 3 passed" in timed["pytest_summary"]
    assert timed["wall_s"] > 0 and timed["peak_memory_mb"] > 30


def test_figures_add_up_over_workers_and_the_kube_estimate_follows_them(tmp_path):
    shared = {"config_rounds": 1, "pods_started": 20, "probes": 100,
              "rounds": [{"apply_ms": 1.0, "converge_ms": 2.0, "pods_started": 20}]}
    record_figures("local", shared, tmp_path)
    figures = run_figures(tmp_path)
    assert (figures["config_rounds"], figures["pods_started"], figures["probes"]) == (1, 20, 100)
    one = kube_estimate(figures)
    assert one["goal"]["met"] and "estimate, not a measurement" in one["basis"]
    # one deployment per cell: 100 rounds, new pods for some of them: the goal is missed
    per_cell = {"config_rounds": 100, "pods_started": 14, "probes": 100,
                "rounds": [{"pods_started": 2}] * 7 + [{}] * 93}
    many = kube_estimate(per_cell)
    assert many["wall_s"] > one["wall_s"] and not many["goal"]["met"]


def test_processes_the_run_leaves_behind_are_named():
    leak = "import subprocess; subprocess.Popen(['sleep', '2'])"
    assert run_measured([sys.executable, "-c", leak], dict(os.environ))["leftover_processes"] == ["sleep"]
    clean = "import subprocess; subprocess.run(['true'])"
    assert run_measured([sys.executable, "-c", clean], dict(os.environ))["leftover_processes"] == []
