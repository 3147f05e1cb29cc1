"""`meshproof diff RESULTS_A RESULTS_B`: which cells behaved differently in two runs (e.g. two Istio versions).

A run is a directory with cells/*.jsonl (or *.jsonl), one .jsonl file, or a conformance-report.yaml
(reports/conformance_report.py); a report and a result folder compare too. Two cells differ when the expected
or observed (outcome, wire, peer identity) or the verdict differ, or a cell ran in only one of the runs.
Exit 0 identical, 1 different, 2 bad input.
"""

from __future__ import annotations

import argparse
import html
import sys
from dataclasses import dataclass
from pathlib import Path

from reports.cells import PROOF_KEYS, CellRecord, CellsError, read_cells
from reports.conformance_report import read_report, records_of

EXIT_SAME, EXIT_DIFFERENT, EXIT_USAGE = 0, 1, 2
OUT_FORMATS = (".md", ".html")


@dataclass(frozen=True)
class CellDiff:
    cell: str
    a: CellRecord | None
    b: CellRecord | None

    @property
    def changes(self) -> list[str]:
        """What differs, e.g. ["observed outcome mtls -> 503", "verdict pass -> FAIL"]; [] when the same."""
        if self.a is None or self.b is None:
            return ["only in A" if self.b is None else "only in B"]
        changes = []
        for side in ("expected", "observed"):
            for key, old, new in zip(PROOF_KEYS, self.a.proof(side), self.b.proof(side)):
                if old != new:
                    changes.append(f"{side} {key} {old} -> {new}")
        if self.a.passed != self.b.passed:
            changes.append(f"verdict {_verdict(self.a)} -> {_verdict(self.b)}")
        return changes


@dataclass(frozen=True)
class RunDiff:
    label_a: str
    label_b: str
    compared: int
    differences: list[CellDiff]


def compare_runs(a: list[CellRecord], b: list[CellRecord], label_a: str = "A", label_b: str = "B") -> RunDiff:
    by_a, by_b = {r.cell: r for r in a}, {r.cell: r for r in b}
    cells = sorted(set(by_a) | set(by_b))
    diffs = [CellDiff(c, by_a.get(c), by_b.get(c)) for c in cells]
    return RunDiff(label_a, label_b, len(cells), [d for d in diffs if d.changes])


def _verdict(record: CellRecord | None) -> str:
    return "-" if record is None else ("pass" if record.passed else "FAIL")


def _observed(record: CellRecord | None) -> str:
    if record is None:
        return "(not run)"
    outcome, wire, identity = record.proof("observed")
    peer = str(identity).removeprefix("spiffe://cluster.local/")
    return f"{_verdict(record)} {outcome} wire={wire} peer={peer}"


def _summary(diff: RunDiff) -> str:
    if not diff.differences:
        return f"{diff.compared} cells compared: identical"
    return f"{diff.compared} cells compared: {len(diff.differences)} differ"


def _rows(diff: RunDiff) -> list[tuple[str, str, str, str]]:
    return [(d.cell, _observed(d.a), _observed(d.b), "; ".join(d.changes)) for d in diff.differences]


def to_text(diff: RunDiff) -> str:
    lines = [f"A: {diff.label_a}", f"B: {diff.label_b}", _summary(diff)]
    rows = _rows(diff)
    if rows:
        header = ("cell", "A", "B", "what changed")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for row in [header, tuple("-" * w for w in widths), *rows]:
            lines.append("  ".join(col.ljust(w) for col, w in zip(row, widths)).rstrip())
    return "\n".join(lines) + "\n"


def to_markdown(diff: RunDiff) -> str:
    lines = ["### meshproof diff", "", f"- A: `{diff.label_a}`", f"- B: `{diff.label_b}`", "", _summary(diff), ""]
    if diff.differences:
        lines += ["| cell | A | B | what changed |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(col.replace("|", "\\|") for col in row) + " |" for row in _rows(diff)]
    return "\n".join(lines) + "\n"


def to_html(diff: RunDiff) -> str:
    esc = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{esc(col)}</td>" for col in row) + "</tr>" for row in _rows(diff))
    table = (f"<table><tr><th>cell</th><th>A</th><th>B</th><th>what changed</th></tr>{rows}</table>"
             if rows else "")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>meshproof diff</title><style>"
            "body{font-family:sans-serif} table{border-collapse:collapse} td,th{border:1px solid #999;"
            "padding:3px 6px;text-align:left} td:last-child{color:#d73027;font-weight:bold}</style></head><body>"
            f"<h2>meshproof diff</h2><p>A: <code>{esc(diff.label_a)}</code><br>B: <code>{esc(diff.label_b)}</code>"
            f"</p><p>{esc(_summary(diff))}</p>{table}</body></html>\n")


def _label(path: str, records: list[CellRecord]) -> str:
    meshes = ", ".join(sorted({r.mesh for r in records if r.mesh})) or "mesh unknown"
    versions = ", ".join(sorted({r.istio_version for r in records if r.istio_version})) or "unknown"
    return f"{path} ({meshes}, Istio API {versions}, {len(records)} cells)"


def load_run(path: str) -> list[CellRecord]:
    """The cells of a run: from a conformance report (.yaml/.yml) or from cell records."""
    if Path(path).suffix in (".yaml", ".yml"):
        return records_of(read_report(path))
    return read_cells(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshproof diff", description=__doc__.splitlines()[0])
    parser.add_argument("results_a")
    parser.add_argument("results_b")
    parser.add_argument("--out", help="write markdown (.md) or HTML (.html) here too")
    return parser


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    try:
        diff = _run(args)
    except CellsError as err:
        print(f"meshproof diff: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_DIFFERENT if diff.differences else EXIT_SAME


def _run(args: argparse.Namespace) -> RunDiff:
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix not in OUT_FORMATS:
        raise CellsError(f"--out {out}: unknown format {out.suffix or '(no suffix)'!r}; allowed: .md, .html")
    if out is not None and not out.parent.is_dir():
        raise CellsError(f"--out {out}: directory {out.parent} does not exist")
    a, b = load_run(args.results_a), load_run(args.results_b)
    diff = compare_runs(a, b, _label(args.results_a, a), _label(args.results_b, b))
    print(to_text(diff), end="")
    if out is not None:
        out.write_text(to_markdown(diff) if out.suffix == ".md" else to_html(diff), encoding="utf-8")
    return diff


if __name__ == "__main__":
    sys.exit(main())
