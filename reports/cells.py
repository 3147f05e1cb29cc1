"""One conformance cell's result as a JSON line, written by the suites and read by the matrix, diff and bench.

Each pytest worker appends to its own file, `<cells dir>/<worker>.jsonl`, so xdist workers never share a
file. The cells dir is `reports/out/cells` unless MESHPROOF_CELLS_DIR says otherwise.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CELLS_DIR_ENV = "MESHPROOF_CELLS_DIR"
DEFAULT_CELLS_DIR = Path(__file__).resolve().parent / "out" / "cells"
# The three things a cell proves; expected and observed both carry them (observed may carry more).
PROOF_KEYS = ("outcome", "wire", "peer_identity")
FIGURES_SUFFIX = ".figures.json"


class CellsError(ValueError):
    """Unreadable or malformed cell results; the message names the file, line and field."""


@dataclass(frozen=True)
class CellRecord:
    cell: str  # stable id, e.g. "client-sidecar/server-sidecar/pa-strict/dr-istio-mutual"
    passed: bool
    expected: dict[str, Any]  # outcome, wire, peer_identity
    observed: dict[str, Any]  # outcome, wire, peer_identity, plus http_status, failure_detail, ...
    tags: list[str] = field(default_factory=list)
    rule: str = ""  # the oracle rule that predicted `expected`
    category: str = ""  # a reports.categories prefix when failed
    message: str = ""
    duration_ms: float = 0.0
    pcap: str | None = None
    mesh: str = ""
    istio_version: str = ""
    worker: str = ""
    recorded_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def proof(self, side: str) -> tuple:
        """(outcome, wire, peer_identity) of side "expected" or "observed"."""
        values = self.expected if side == "expected" else self.observed
        return tuple(values.get(key) for key in PROOF_KEYS)


def cells_dir() -> Path:
    return Path(os.environ.get(CELLS_DIR_ENV) or DEFAULT_CELLS_DIR)


def worker_name() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def record_cell(*, cell: str, passed: bool, expected: dict, observed: dict, directory: str | Path | None = None,
                **fields: Any) -> Path:
    """Append one cell's result to this worker's JSON lines file; returns the file. Other keyword
    arguments are CellRecord fields (tags, rule, category, message, duration_ms, pcap, mesh, istio_version)."""
    unknown = set(fields) - set(CellRecord.__dataclass_fields__)
    if unknown:
        raise TypeError(f"record_cell: unknown field(s) {sorted(unknown)}; "
                        f"allowed: {sorted(CellRecord.__dataclass_fields__)}")
    record = CellRecord(cell=cell, passed=bool(passed), expected=dict(expected), observed=dict(observed),
                        worker=worker_name(), recorded_at=time.time(), **fields)
    target_dir = Path(directory) if directory is not None else cells_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / f"{record.worker}.jsonl"
    # One write of one line per call: appends from one process never interleave.
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record.to_json(), default=str) + "\n")
    return path


def record_figures(mesh: str, figures: dict[str, Any], directory: str | Path | None = None) -> Path:
    """What this worker's mesh backend spent (cluster.backend.RunFigures), beside its cells, for `make bench`."""
    target_dir = Path(directory) if directory is not None else cells_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / f"{worker_name()}{FIGURES_SUFFIX}"
    path.write_text(json.dumps({"mesh": mesh, "worker": worker_name(), **figures}) + "\n", encoding="utf-8")
    return path


def read_figures(directory: str | Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(Path(directory).glob(f"*{FIGURES_SUFFIX}"))]


def clear_cells(directory: str | Path | None = None) -> int:
    """Remove the cell and figures files of a previous run (only those in the cells dir); returns how many."""
    target_dir = Path(directory) if directory is not None else cells_dir()
    removed = 0
    for path in [*target_dir.glob("*.jsonl"), *target_dir.glob(f"*{FIGURES_SUFFIX}")]:
        path.unlink()
        removed += 1
    return removed


def cell_files(path: str | Path) -> list[Path]:
    """The JSON lines files of one run: a .jsonl file, a cells dir, or a results dir holding cells/."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CellsError(f"{path}: no such file or directory (want a .jsonl file or a directory with cells/*.jsonl)")
    files = sorted(path.glob("*.jsonl")) or sorted((path / "cells").glob("*.jsonl"))
    if not files:
        raise CellsError(f"{path}: no cell results (*.jsonl or cells/*.jsonl) in this directory")
    return files


def read_cells(path: str | Path) -> list[CellRecord]:
    """All cells of one run, sorted by id. A cell recorded twice (a rerun) keeps its latest record."""
    latest: dict[str, CellRecord] = {}
    for file in cell_files(path):
        for record in _read_file(file):
            previous = latest.get(record.cell)
            if previous is None or record.recorded_at >= previous.recorded_at:
                latest[record.cell] = record
    return [latest[key] for key in sorted(latest)]


def _read_file(file: Path) -> list[CellRecord]:
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CellsError(f"{file}: cannot read: {err}") from err
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            records.append(_parse_line(line, f"{file}:{number}"))
    return records


_REQUIRED = {"cell": str, "passed": bool, "expected": dict, "observed": dict}
_OPTIONAL = {"tags": list, "rule": str, "category": str, "message": str, "duration_ms": (int, float),
             "pcap": (str, type(None)), "mesh": str, "istio_version": str, "worker": str,
             "recorded_at": (int, float)}


def _parse_line(line: str, where: str) -> CellRecord:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise CellsError(f"{where}: not JSON: {err.msg}") from err
    if not isinstance(data, dict):
        raise CellsError(f"{where}: a cell record must be a JSON object, got {type(data).__name__}")
    for name, kind in _REQUIRED.items():
        if name not in data:
            raise CellsError(f"{where}: field '{name}' is missing (required: {', '.join(_REQUIRED)})")
        if not isinstance(data[name], kind):
            raise CellsError(f"{where}: field '{name}' must be {kind.__name__}, got {type(data[name]).__name__}")
    for name, kind in _OPTIONAL.items():
        if name in data and not isinstance(data[name], kind):
            allowed = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise CellsError(f"{where}: field '{name}' must be {allowed}, got {type(data[name]).__name__}")
    known = {k: v for k, v in data.items() if k in CellRecord.__dataclass_fields__}
    return CellRecord(**known)
