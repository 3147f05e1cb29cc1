"""Ctrl-C in the middle of a parallel suite run leaves no network namespace, link, process or state behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.local import lifecycle

pytestmark = [pytest.mark.root, pytest.mark.mesh, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")]
ROOT = Path(__file__).resolve().parent.parent


def _runs_of(controller_pid: int) -> set[str]:
    """The meshes whose owner is one of this pytest run's xdist workers (children of its controller);
    other tests may start meshes of their own meanwhile."""
    runs = set()
    for state in lifecycle.STATE_ROOT.glob("mp*/state.json") if lifecycle.STATE_ROOT.exists() else ():
        try:
            owner = json.loads(state.read_text())["owner_pid"]
            parent = int(Path(f"/proc/{owner}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, KeyError, IndexError):
            continue
        if parent == controller_pid:
            runs.add(state.parent.name)
    return runs


def _command_lines() -> list[str]:
    lines = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return lines


def test_ctrl_c_during_a_parallel_run_leaves_nothing(tmp_path):
    env = {**os.environ, "MESHPROOF_CELLS_DIR": str(tmp_path / "cells")}
    # A terminal's Ctrl-C goes to the whole process group: the controller and its xdist workers.
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "suites/test_matrix.py", "-n", "2", "-q",
                             "-p", "no:cacheprovider"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    try:
        ours: set[str] = set()
        while len(ours) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            ours |= _runs_of(proc.pid)
        assert len(ours) == 2, "the two workers' meshes did not start"
        time.sleep(0.5)  # mid-run: pairs up, cells in flight
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed check above must not leave the run going
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, f"the run was not interrupted:\n{output[-2000:]}"
    left = [ns for ns in lifecycle.list_netns() if any(ns.startswith(prefix) for prefix in ours)]
    left += [link for link in os.listdir("/sys/class/net") if any(link.startswith(p) for p in ours)]
    left += [str(root / p) for p in ours for root in (lifecycle.STATE_ROOT, lifecycle.RUNTIME_ROOT)
             if (root / p).exists()]
    left += [f"process {cmd}" for cmd in _command_lines() if any(prefix in cmd for prefix in ours)]
    assert not left, f"an interrupted run left {left}"


def test_clean_removes_the_wire_rig_of_a_killed_process(tmp_path):
    script = tmp_path / "rig.py"
    script.write_text("import time\nfrom testsupport.rig import Rig\nr = Rig()\nprint(r.prefix, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        prefix = proc.stdout.readline().strip()
        assert prefix and any(ns.startswith(prefix) for ns in lifecycle.list_netns())
    finally:
        proc.kill()
        proc.wait()
    # Killed, the rig could not remove its namespaces; a clean did (this one, or a parallel test's mesh start).
    subprocess.run([sys.executable, "-m", "meshproof.cli", "clean"], cwd=ROOT, capture_output=True, check=True)
    assert not [ns for ns in lifecycle.list_netns() if ns.startswith(prefix)]
    assert not (lifecycle.STATE_ROOT / prefix).exists()


def test_clean_removes_runtime_folders_no_state_names_and_keeps_live_ones():
    """/var/lib outlives a reboot that empties /run: a runtime folder without its run's state is an orphan.
    A live run's runtime folder (its state file exists) stays."""
    live = lifecycle.RunState()
    live.create()
    orphan = lifecycle.RUNTIME_ROOT / f"mp{os.urandom(3).hex()}"
    try:
        for folder in (orphan, live.runtime_dir):
            lifecycle.shared_folder(folder / "bin")
            (folder / "bin" / "envoy").write_text("")
        removed = lifecycle.clean_leftovers()
        assert f"path {orphan}" in removed and not orphan.exists()
        assert live.runtime_dir.exists()
    finally:
        live.record("paths", str(live.runtime_dir))
        live.teardown()
    assert not live.runtime_dir.exists()
