"""The matrix picture of a run: expected vs observed for every mTLS matrix cell, as HTML, PNG and markdown.

Rows are client sidecar x server sidecar x PeerAuthentication mode, columns the DestinationRule tls mode.
Like the Kubernetes NetworkPolicy truth tables, a cell shows '.' when the mesh did what the oracle said and
'X' when it did not. A matrix cell is found by its tags (the suites tag cells with the cell id's parts):

    client-sidecar | client-no-sidecar      server-sidecar | server-no-sidecar   ("naked-client" works too)
    pa-none | pa-unset | pa-disable | pa-permissive | pa-strict
    dr-none | dr-disable | dr-simple | dr-mutual | dr-istio-mutual

Cells without all four axes (scope, validation, chaos) are listed below the table.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from reports.cells import PROOF_KEYS, CellRecord

CLIENTS = ("sidecar", "no-sidecar")
SERVERS = ("sidecar", "no-sidecar")
PA_MODES = ("none", "unset", "disable", "permissive", "strict")
DR_MODES = ("none", "disable", "simple", "mutual", "istio-mutual")
AS_EXPECTED, DIFFERENT = ".", "X"
GREEN, RED, GREY = "#1a9850", "#d73027", "#bdbdbd"


@dataclass(frozen=True)
class Position:
    client: str
    server: str
    pa: str
    dr: str

    @property
    def row(self) -> tuple[str, str, str]:
        return (self.client, self.server, self.pa)


_SIDE_ALIASES = {"sidecar": "sidecar", "no-sidecar": "no-sidecar", "nosidecar": "no-sidecar", "naked": "no-sidecar",
                 "plain": "no-sidecar"}
_NONE_ALIASES = {"no": "none", "absent": "none", "missing": "none"}


def _axis_of(tag: str) -> tuple[str, str] | None:
    """(axis, value) a tag names, e.g. "dr-istio-mutual" -> ("dr", "istio-mutual"); "naked-client" works too."""
    for side in ("client", "server"):
        for value in (tag.removeprefix(f"{side}-"), tag.removesuffix(f"-{side}")):
            if value != tag and value in _SIDE_ALIASES:
                return side, _SIDE_ALIASES[value]
    for axis, allowed in (("pa", PA_MODES), ("dr", DR_MODES)):
        value = tag.removeprefix(f"{axis}-")
        value = _NONE_ALIASES.get(value, value)
        if tag.startswith(f"{axis}-") and value in allowed:
            return axis, value
    return None


def position_of(tags: list[str]) -> Position | None:
    """Where a cell sits in the matrix, or None when its tags do not name all four axes."""
    found = dict(filter(None, (_axis_of(t.lower().replace("_", "-")) for t in tags)))
    return Position(**found) if len(found) == 4 else None


ROWS = [(c, s, pa) for c in CLIENTS for s in SERVERS for pa in PA_MODES]


def row_label(row: tuple[str, str, str]) -> str:
    client, server, pa = row
    return f"client {client} -> server {server}, PA {pa}"


@dataclass(frozen=True)
class Matrix:
    cells: dict[tuple[tuple[str, str, str], str], CellRecord]  # (row, dr) -> cell
    others: list[CellRecord]  # cells outside the matrix

    @property
    def counts(self) -> dict[str, int]:
        records = list(self.cells.values())
        return {"cells": len(records), "as_expected": sum(r.passed for r in records),
                "different": sum(not r.passed for r in records), "missing": len(ROWS) * len(DR_MODES) - len(records),
                "other_cells": len(self.others), "other_different": sum(not r.passed for r in self.others)}


def build_matrix(records: list[CellRecord]) -> Matrix:
    cells: dict[tuple[tuple[str, str, str], str], CellRecord] = {}
    others = []
    for record in records:
        position = position_of(record.tags or record.cell.split("/"))
        if position is None:
            others.append(record)
        else:
            cells[(position.row, position.dr)] = record
    return Matrix(cells, others)


def marker(record: CellRecord | None) -> str:
    if record is None:
        return "?"
    return AS_EXPECTED if record.passed else DIFFERENT


def cell_text(record: CellRecord | None) -> str:
    """Short text for one cell: the expected outcome, and what differed when it did."""
    if record is None:
        return "not run"
    expected, observed = record.proof("expected"), record.proof("observed")
    if record.passed:
        return str(expected[0])
    for key, want, got in zip(PROOF_KEYS, expected, observed):
        if want != got:
            name = "" if key == "outcome" else f"{key.replace('peer_', '')} "
            return f"{name}{_short(want)}->{_short(got)}"
    return f"{expected[0]} (failed: {record.category or 'see message'})"


def _short(value) -> str:
    text = str(value)
    return "sa/" + text.rsplit("/sa/", 1)[1] if "/sa/" in text else text


def _summary_line(matrix: Matrix) -> str:
    c = matrix.counts
    line = f"{c['cells']} matrix cells: {c['as_expected']} as expected, {c['different']} different"
    if c["missing"]:
        line += f", {c['missing']} not run"
    if c["other_cells"]:
        line += f"; {c['other_cells']} other cells, {c['other_different']} different"
    return line


def to_markdown(matrix: Matrix, title: str = "mTLS conformance matrix") -> str:
    lines = [f"### {title}", "", _summary_line(matrix), "",
             "`.` as expected, `X` different (expected->observed), `?` not run. Columns: DestinationRule tls mode.",
             "", "| client -> server, PA | " + " | ".join(f"DR {dr}" for dr in DR_MODES) + " |",
             "|---|" + "---|" * len(DR_MODES)]
    for row in ROWS:
        entries = []
        for dr in DR_MODES:
            record = matrix.cells.get((row, dr))
            text = f"{marker(record)} {cell_text(record)}"
            entries.append(f"**{text}**" if record is not None and not record.passed else text)
        lines.append(f"| {row_label(row)} | " + " | ".join(e.replace("|", "\\|") for e in entries) + " |")
    failed_others = [r for r in matrix.others if not r.passed]
    if failed_others:
        lines += ["", "Other cells that differ:", ""]
        lines += [f"- `{r.cell}`: {r.message or cell_text(r)}" for r in failed_others]
    return "\n".join(lines) + "\n"


_CSS = f"""
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #999; padding: 4px 8px; text-align: center; font-size: 13px; }}
th.row {{ text-align: left; font-weight: normal; white-space: nowrap; }}
td.ok {{ background: {GREEN}; color: white; }}
td.bad {{ background: {RED}; color: white; font-weight: bold; }}
td.missing {{ background: {GREY}; color: #333; }}
.marker {{ font-family: monospace; font-size: 15px; margin-right: 4px; }}
"""


def to_html(matrix: Matrix, title: str = "mTLS conformance matrix") -> str:
    esc = html.escape
    head = "".join(f"<th>DR {esc(dr)}</th>" for dr in DR_MODES)
    rows = []
    for row in ROWS:
        tds = []
        for dr in DR_MODES:
            record = matrix.cells.get((row, dr))
            css = "missing" if record is None else ("ok" if record.passed else "bad")
            tip = "not run" if record is None else f"{record.cell}\nrule {record.rule}\n{record.message}"
            tds.append(f'<td class="{css}" title="{esc(tip)}"><span class="marker">{esc(marker(record))}</span>'
                       f"{esc(cell_text(record))}</td>")
        rows.append(f'<tr><th class="row">{esc(row_label(row))}</th>{"".join(tds)}</tr>')
    others = ""
    if matrix.others:
        items = "".join(f'<tr><td class="{"ok" if r.passed else "bad"}">{esc(marker(r))}</td>'
                        f'<td style="text-align:left">{esc(r.cell)}</td>'
                        f'<td style="text-align:left">{esc(r.message if not r.passed else cell_text(r))}</td></tr>'
                        for r in matrix.others)
        others = f"<h3>Other cells</h3><table><tr><th></th><th>cell</th><th>result</th></tr>{items}</table>"
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h2>{esc(title)}</h2><p>{esc(_summary_line(matrix))}</p>"
            "<p><code>.</code> as expected, <code>X</code> different (expected-&gt;observed), "
            "<code>?</code> not run. Hover a cell for its rule and message.</p>"
            f"<table><tr><th>client -&gt; server, PA</th>{head}</tr>{''.join(rows)}</table>{others}</body></html>\n")


def to_png(matrix: Matrix, path: Path, title: str = "mTLS conformance matrix") -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none wanted
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    # 0 different, 1 as expected, 2 not run
    grid = [[2 if (r := matrix.cells.get((row, dr))) is None else int(r.passed) for dr in DR_MODES] for row in ROWS]
    fig, ax = plt.subplots(figsize=(11, 11))
    ax.imshow(grid, cmap=ListedColormap([RED, GREEN, GREY]), vmin=0, vmax=2, aspect="auto")
    for y, row in enumerate(ROWS):
        for x, dr in enumerate(DR_MODES):
            record = matrix.cells.get((row, dr))
            ax.text(x, y, f"{marker(record)} {cell_text(record)}", ha="center", va="center", fontsize=8,
                    color="black" if record is None else "white", fontweight="bold" if grid[y][x] == 0 else None)
    ax.set_xticks(range(len(DR_MODES)), [f"DR {dr}" for dr in DR_MODES])
    ax.set_yticks(range(len(ROWS)), [row_label(row) for row in ROWS], fontsize=8)
    ax.xaxis.tick_top()
    # White lines between cells, so a lone red cell stands out as one cell.
    ax.set_xticks([x - 0.5 for x in range(1, len(DR_MODES))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(ROWS))], minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_title(f"{title}\n{_summary_line(matrix)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_matrix(records: list[CellRecord], out_dir: str | Path) -> dict[str, Path]:
    """Write matrix.html, matrix.png and matrix.md into out_dir; returns their paths by format."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matrix = build_matrix(records)
    paths = {"html": out / "matrix.html", "png": out / "matrix.png", "md": out / "matrix.md"}
    paths["html"].write_text(to_html(matrix), encoding="utf-8")
    paths["md"].write_text(to_markdown(matrix), encoding="utf-8")
    to_png(matrix, paths["png"])
    return paths
