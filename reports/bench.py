"""`make bench`: time the full mTLS matrix with wire capture on, and measure the memory of everything it ran.

    python -m reports.bench --out reports/out/bench.json [-n auto]

Runs `pytest suites -k matrix -n N` as a subprocess (capture on, as in a normal run; by default the matrix
cells share one deployment, `-- --isolate` times one deployment per cell), samples every process of the run
(its process tree and its session, so a daemonised sidecar still counts) every ~100 ms, and writes cells,
wall_s (mesh start-up included), median_cell_ms, p95_cell_ms (from the cell records), peak_memory_mb and a
`limits` note built from what was measured; from the mesh backends' own figures (cluster.backend.RunFigures)
config_rounds (apply -> converge cycles), pods_started, probes and each round's apply and convergence time;
and `kube_estimate`, what the same run would take on kind, an estimate until a cluster run measures it. Adds
the JSON of `python -m cluster.local.bench` and `python -m testsupport.probe_bench` when those modules exist.
The ports and destinations suites (one deployment per cell) are timed apart, after the matrix, in `new_suites`:
the matrix's figures stay what they were.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from reports.cells import CELLS_DIR_ENV, CellsError, read_cells, read_figures

SAMPLE_INTERVAL_S = 0.1
GOAL = {"wall_s": 3.0, "peak_memory_mb": 700.0, "cells": 100}
KUBE_GOAL = {"config_rounds": 2, "pods_started": 24, "wall_s": 600.0}
# What one step takes on kind until a cluster run measures it (docs/kube.md "Time per cell"): pods of one round
# start side by side (image pulls, injection, readiness); a round waits for istiod's push and every proxy's ACK
# (syncz), then the convergence probes (a 1 s settle, 3 identical results 1 s apart); a probe is an exec'd curl
# plus a capture container's tcpdump and the pcap copied out.
KIND_ASSUMED_S = {"pods_ready": 30.0, "push_and_convergence": 5.0, "probe_exec": 1.5}
SECTION_MODULES = ("cluster.local.bench", "testsupport.probe_bench", "meshproof.audit.bench")
SECTION_TIMEOUT_S = 600
# Timed apart from the matrix, each cell in a deployment of its own, on 2 workers as `make conformance` may run them.
NEW_SUITES = ("suites/test_ports.py", "suites/test_destinations.py")
NEW_SUITES_WORKERS = "2"


class MemorySampler(threading.Thread):
    """Samples the summed RSS of a process's tree and of every process in its session. RSS counts a shared
    page (the Envoy binary, Python's libraries) once per process; PSS splits it between them, so the PSS sum
    is the memory the run really occupied."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_INTERVAL_S):
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.session = os.getsid(pid)
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self.peak_processes = 0
        self.peak_by_name: dict[str, dict] = {}
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def members(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.pid)
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc
        except psutil.Error:
            pass
        for pid in psutil.pids():
            try:
                if pid not in found and os.getsid(pid) == self.session:
                    found[pid] = psutil.Process(pid)
            except (OSError, psutil.Error):
                continue  # exited between the listing and the look-up
        return list(found.values())

    def names(self) -> list[str]:
        """Names of the processes alive in the run now."""
        found = set()
        for proc in self.members():
            try:
                found.add(proc.name())
            except psutil.Error:
                continue
        return sorted(found)

    def sample(self) -> int:
        total, pss, count = 0, 0, 0
        by_name: dict[str, dict] = {}
        for proc in self.members():
            try:
                info = proc.memory_full_info()
                name = proc.name()
            except psutil.Error:
                continue  # exited or not readable: it holds no memory worth counting now
            total, pss, count = total + info.rss, pss + info.pss, count + 1
            entry = by_name.setdefault(name, {"processes": 0, "rss_mb": 0.0, "pss_mb": 0.0})
            entry["processes"] += 1
            entry["rss_mb"] += info.rss / 2**20
            entry["pss_mb"] += info.pss / 2**20
        self.samples += 1
        self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_processes = total, count
            self.peak_by_name = {n: {k: round(v, 1) for k, v in e.items()} for n, e in sorted(by_name.items())}
        return total


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was actually measured."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def run_measured(command: list[str], env: dict[str, str]) -> dict:
    """Run command in its own session; returns exit code, wall time, peak memory and CPU use."""
    cpu_before = psutil.cpu_times()
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sampler = MemorySampler(proc.pid)
    sampler.start()
    output, _ = proc.communicate()
    wall_s = time.perf_counter() - started
    sampler.stop()
    # Anything still in the run's session after pytest exited was leaked by the run.
    leftovers = sampler.names()
    cpu_after = psutil.cpu_times()
    busy = sum(cpu_after) - sum(cpu_before) - (cpu_after.idle - cpu_before.idle)
    total = sum(cpu_after) - sum(cpu_before)
    return {"exit_code": proc.returncode, "wall_s": round(wall_s, 2), "output": output,
            "peak_memory_mb": round(sampler.peak_bytes / 2**20, 1), "peak_processes": sampler.peak_processes,
            "peak_pss_mb": round(sampler.peak_pss_bytes / 2**20, 1), "peak_by_process": sampler.peak_by_name,
            "memory_samples": sampler.samples, "leftover_processes": leftovers, "cpu_busy_pct": round(100 * busy / total, 1) if total else 0.0}


def limits_note(result: dict, cores: int) -> str:
    """Say what bounded this run, from the numbers of this run."""
    cpu = result["cpu_busy_pct"]
    bound = ("the CPU was the limit (all cores busy most of the run)" if cpu >= 80 else
             "the CPU was not saturated, so waits (process start-up, xDS propagation, capture settle time) "
             "bounded the run")
    return (f"{cores} cores {cpu:.0f}% busy on average (system-wide: other load on the machine counts too): "
            f"{bound}. peak_memory_mb is the sum of RSS over "
            f"{result['peak_processes']} processes, which counts shared pages (the Envoy binary) once per process; "
            f"peak_pss_mb ({result['peak_pss_mb']:.0f} MB) shares them out and is the memory really used. "
            "Capture is on for every cell and no probe is shared.")


def run_section(module: str) -> dict:
    """Another component's benchmark JSON, or why there is none."""
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        found = None
    if found is None:
        return {"skipped": f"{module} does not exist"}
    try:
        done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True,
                              timeout=SECTION_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"{module} took longer than {SECTION_TIMEOUT_S} s"}
    if done.returncode != 0:
        return {"error": f"{module} exited {done.returncode}: {done.stderr.strip()[-300:]}"}
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": f"{module} printed no JSON: {done.stdout.strip()[-300:]}"}


def run_figures(cells_dir: Path) -> dict:
    """The mesh backends' own figures of the run, summed over workers."""
    found = read_figures(cells_dir)
    rounds = [r for f in found for r in f.get("rounds", [])]
    return {"config_rounds": sum(f.get("config_rounds", 0) for f in found),
            "pods_started": sum(f.get("pods_started", 0) for f in found),
            "probes": sum(f.get("probes", 0) for f in found),
            "rounds": rounds}


def kube_estimate(figures: dict) -> dict:
    """A kind run of the same cells: the same plan gives the same rounds, pods and probes on both backends;
    each costs what KIND_ASSUMED_S says until a cluster run measures it."""
    rounds, pods, probes = figures["config_rounds"], figures["pods_started"], figures["probes"]
    pod_rounds = sum(1 for r in figures["rounds"] if r.get("pods_started"))
    wall = (pod_rounds * KIND_ASSUMED_S["pods_ready"] + rounds * KIND_ASSUMED_S["push_and_convergence"]
            + probes * KIND_ASSUMED_S["probe_exec"])
    return {"estimate": True,
            "basis": "an estimate, not a measurement: no cluster has run it (docs/kube.md, 'not yet run on a "
                     "cluster'); rounds x push and convergence + rounds that start pods x pod start-up + probes x "
                     "exec time (probes counted one after another)",
            "assumed_s": KIND_ASSUMED_S, "config_rounds": rounds, "pods_started": pods, "probes": probes,
            "wall_s": round(wall, 1),
            "goal": {**KUBE_GOAL, "met": rounds <= KUBE_GOAL["config_rounds"] and pods <= KUBE_GOAL["pods_started"]
                     and wall <= KUBE_GOAL["wall_s"]}}


def _goal_met(cells: int, wall_s: float, memory_mb: float) -> bool:
    return cells >= GOAL["cells"] and wall_s < GOAL["wall_s"] and memory_mb < GOAL["peak_memory_mb"]


def bench(workers: str, pytest_args: list[str], cells_dir: Path, path: str = "suites") -> tuple[dict, int]:
    env = {**os.environ, CELLS_DIR_ENV: str(cells_dir)}
    command = [sys.executable, "-m", "pytest", path, "-k", "matrix", "-n", workers, "-q", "-p",
               "no:cacheprovider", *pytest_args]
    result = run_measured(command, env)
    try:
        records = read_cells(cells_dir)
    except CellsError:
        records = []
    durations = [r.duration_ms for r in records]
    cores = len(os.sched_getaffinity(0))
    figures = run_figures(cells_dir)
    report = {
        "cells": len(records),
        "cells_passed": sum(r.passed for r in records),
        "wall_s": result["wall_s"],
        "median_cell_ms": round(statistics.median(durations), 1) if durations else None,
        "p95_cell_ms": round(percentile(durations, 95), 1) if durations else None,
        "peak_memory_mb": result["peak_memory_mb"],
        "peak_pss_mb": result["peak_pss_mb"],
        "config_rounds": figures["config_rounds"],
        "pods_started": figures["pods_started"],
        "probes": figures["probes"],
        "rounds": figures["rounds"],
        "kube_estimate": kube_estimate(figures),
        "peak_by_process": result["peak_by_process"],
        "cores": cores,
        "workers": workers,
        "cpu_busy_pct": result["cpu_busy_pct"],
        "memory_samples": result["memory_samples"],
        "pytest_exit_code": result["exit_code"],
        "leftover_processes": result["leftover_processes"],
        "command": " ".join(command),
        "goal": {**GOAL, "met": _goal_met(len(records), result["wall_s"], result["peak_memory_mb"]),
                 "met_counting_pss": _goal_met(len(records), result["wall_s"], result["peak_pss_mb"])},
        "limits": limits_note(result, cores),
    }
    if result["exit_code"] != 0 or not records:
        report["pytest_tail"] = result["output"].strip().splitlines()[-15:]
    return report, result["exit_code"]


def time_suites(paths: list[str], workers: str, cells_dir: Path) -> dict:
    """Wall time, memory and per-suite cell times of suites run on their own (the ports and destinations suites).
    A cell that fails before it is probed (NOT SUPPORTED YET) has no record: pytest's summary line counts it."""
    env = {**os.environ, CELLS_DIR_ENV: str(cells_dir)}
    command = [sys.executable, "-m", "pytest", *paths, "-n", workers, "-q", "-p", "no:cacheprovider"]
    result = run_measured(command, env)
    try:
        records = read_cells(cells_dir)
    except CellsError:
        records = []
    suites: dict[str, list] = {}
    for record in records:
        suites.setdefault(record.cell.split("/")[0], []).append(record)
    lines = result["output"].strip().splitlines()
    return {"paths": paths, "workers": workers, "wall_s": result["wall_s"], "peak_memory_mb": result["peak_memory_mb"],
            "peak_pss_mb": result["peak_pss_mb"], "cpu_busy_pct": result["cpu_busy_pct"],
            "pytest_exit_code": result["exit_code"], "pytest_summary": lines[-1] if lines else "",
            "leftover_processes": result["leftover_processes"],
            "suites": {name: {"cells": len(found), "cells_passed": sum(r.passed for r in found),
                              "median_cell_ms": round(statistics.median(r.duration_ms for r in found), 1),
                              "p95_cell_ms": round(percentile([r.duration_ms for r in found], 95), 1)}
                       for name, found in sorted(suites.items())},
            "command": " ".join(command)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the JSON")
    parser.add_argument("-n", "--workers", default="0",
                        help="pytest-xdist workers (default: %(default)s, none: the co-deployed matrix probes many "
                             "cells at once itself; with -- --isolate, 'auto' spreads the cells over the cores)")
    parser.add_argument("--path", default="suites", help="where the matrix suite is (default: %(default)s)")
    parser.add_argument("--skip-sections", action="store_true",
                        help=f"do not run {' and '.join(SECTION_MODULES)}")
    parser.add_argument("--new-suites", nargs="*", default=list(NEW_SUITES), metavar="PATH",
                        help="suites timed apart after the matrix (default: %(default)s; none: not run)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="meshproof-bench-") as cells_dir:
        report, code = bench(args.workers, args.pytest_args, Path(cells_dir), args.path)
    if args.new_suites:
        with tempfile.TemporaryDirectory(prefix="meshproof-bench-suites-") as cells_dir:
            report["new_suites"] = time_suites(args.new_suites, NEW_SUITES_WORKERS, Path(cells_dir))
    if not args.skip_sections:
        report["sections"] = {module: run_section(module) for module in SECTION_MODULES}
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k not in ("sections", "pytest_tail")}, indent=1))
    if code != 0:
        print(f"reports.bench: the matrix run exited {code}; numbers are written but describe a failing run",
              file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
