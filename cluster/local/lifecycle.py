"""What one run of the reference mesh created, and removing it again, even after a crash.

Every object carries the run's prefix (`mp<6 hex>`) and is written to the run's state file *before* it is
created, so a run killed at any point leaves a complete list behind. `clean_leftovers` removes the objects
of runs whose owner process is dead; a live run's objects are never touched.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

STATE_ROOT = Path("/run/meshproof")
# What the workloads execute (cluster/local/runtime.py): off /run, which Debian mounts noexec. It outlives a
# reboot where /run does not, so clean_leftovers also removes folders here that no state file names.
RUNTIME_ROOT = Path("/var/lib/meshproof")
PREFIX_RE = re.compile(r"^mp[0-9a-f]{6}$")
NETNS_ETC = Path("/etc/netns")


def _proc_start_time(pid: int) -> str | None:
    """Start time of a live process in clock ticks (with the pid it names one process even after pid
    reuse); None when there is no such process or only its zombie is left."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def owner_alive(state: dict) -> bool:
    return _proc_start_time(state.get("owner_pid", -1)) == state.get("owner_start")


class RunState:
    """The state file of one run: owner, and every netns, link, process and path it created."""

    def __init__(self, prefix: str | None = None):
        self.prefix = prefix or f"mp{secrets.token_hex(3)}"
        self.dir = STATE_ROOT / self.prefix
        self.runtime_dir = RUNTIME_ROOT / self.prefix
        self.path = self.dir / "state.json"
        self._lock = threading.Lock()
        self.data = {"prefix": self.prefix, "owner_pid": os.getpid(), "owner_start": _proc_start_time(os.getpid()),
                     "created": time.time(), "netns": [], "links": [], "pids": [], "paths": []}

    def create(self) -> None:
        shared_folder(STATE_ROOT)
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(".state.tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)

    def record(self, kind: str, value) -> None:
        """Record an object before creating it (so a crash in between still lists it)."""
        with self._lock:
            if value not in self.data[kind]:
                self.data[kind].append(value)
                self.save()

    def record_pid(self, pid: int) -> None:
        self.record("pids", [pid, _proc_start_time(pid)])

    def teardown(self) -> list[str]:
        """Remove everything recorded; returns what was removed. Safe to repeat."""
        with self._lock:
            removed = _remove_objects(self.data)
            shutil.rmtree(self.dir, ignore_errors=True)
            return removed


def shared_folder(path: Path) -> None:
    """Create `path` (and missing parents) so that the workload users may enter it, whatever the umask:
    mkdir's mode is masked by it, and a root umask of 077 would lock Envoy and the apps out."""
    if path.is_dir() and path not in (STATE_ROOT, RUNTIME_ROOT):  # never chmod a folder that is not ours
        return
    if not path.is_dir():
        shared_folder(path.parent)
        path.mkdir(exist_ok=True)  # exist_ok: a parallel run may create it first
    os.chmod(path, 0o755)


def _remove_objects(data: dict) -> list[str]:
    removed: list[str] = []
    for pid, start in data.get("pids", []):
        if start and _proc_start_time(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
                removed.append(f"process {pid}")
            except ProcessLookupError:
                pass
    existing_ns = set(list_netns())
    for name in data.get("netns", []):
        if name in existing_ns:
            # Anything still running inside (a child of a recorded process) goes with the namespace.
            for pid in _netns_pids(name):
                try:
                    os.kill(pid, signal.SIGKILL)
                    removed.append(f"process {pid} (in netns {name})")
                except ProcessLookupError:
                    pass
    for link in data.get("links", []):
        if Path(f"/sys/class/net/{link}").exists():
            subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)
            removed.append(f"link {link}")
    for name in data.get("netns", []):
        if name in existing_ns:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
            removed.append(f"netns {name}")
        etc = NETNS_ETC / name
        if etc.exists():
            shutil.rmtree(etc, ignore_errors=True)
            removed.append(f"path {etc}")
    # Another run's start may be cleaning the same dead run at the same time: whatever it removed first is
    # simply gone here, never an error.
    for path in map(Path, data.get("paths", [])):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"path {path}")
        elif path.exists():
            path.unlink(missing_ok=True)
            removed.append(f"path {path}")
    return removed


def list_netns() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except FileNotFoundError:
        return []


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], check=False, capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def clean_leftovers() -> list[str]:
    """Remove the objects of every run whose owner process is dead; returns a line per object removed."""
    removed: list[str] = []
    if STATE_ROOT.is_dir():
        removed += _clean_dead_runs()
    removed += _clean_orphan_runtimes()
    return removed


def _clean_dead_runs() -> list[str]:
    removed: list[str] = []
    for entry in sorted(STATE_ROOT.iterdir()):
        if not PREFIX_RE.match(entry.name):
            continue
        state_file = entry / "state.json"
        try:
            data = json.loads(state_file.read_text())
        except (OSError, ValueError):
            # A run killed between mkdir and its first save created nothing yet.
            if time.time() - _mtime(entry) > 60:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(f"path {entry}")
            continue
        if owner_alive(data):
            continue
        removed += _remove_objects(data)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(f"path {entry}")
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # a parallel clean removed it
        return time.time()


def _clean_orphan_runtimes() -> list[str]:
    """Runtime folders whose run has no state file left (a reboot emptied /run, or the run died between
    recording its state and removing it)."""
    if not RUNTIME_ROOT.is_dir():
        return []
    removed = []
    for entry in sorted(RUNTIME_ROOT.iterdir()):
        if PREFIX_RE.match(entry.name) and not (STATE_ROOT / entry.name).exists():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(f"path {entry}")
    return removed


def install_teardown(run: RunState) -> None:
    """Tear the run down at interpreter exit and on SIGTERM/SIGHUP (a killed worker), not only on stop()."""
    atexit.register(run.teardown)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _exit_on_signal)


def _exit_on_signal(signum, frame):
    # SystemExit unwinds finally-blocks and then runs atexit, which tears the run down.
    raise SystemExit(128 + signum)
