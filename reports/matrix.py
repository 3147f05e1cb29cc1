"""The matrix picture of a run, coloured by what happened on the wire: HTML (hover, links), PNG and markdown.

Each cell is filled with the class of what the probe saw (reports/wire_classes.py: Istio mTLS, other TLS,
cleartext, refused), so where traffic crosses the network in clear, and where it is refused, reads at a
glance. A cell where the mesh did not do what the oracle said gets a ✗ and a heavy border and shows both
classes, expected and observed.

Rows are grouped by client -> server sidecars, then the PeerAuthentication mode; columns are the
DestinationRule tls mode. A matrix cell is found by its tags (the suites tag cells with the cell id's parts):

    client-sidecar | client-no-sidecar      server-sidecar | server-no-sidecar   ("naked-client" works too)
    pa-none | pa-unset | pa-disable | pa-permissive | pa-strict
    dr-none | dr-disable | dr-simple | dr-mutual | dr-istio-mutual

Suites that carry their own grid in their tags (ports, destinations: reports/suite_grids.py) get a section
each, by wire class as well; the remaining cells without all four axes (scope, validation, chaos) are listed
below the table.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from reports.cells import CellRecord
from reports.suite_grids import GridCells, build_grids, key_label
from reports.wire_classes import (
    CLASSES,
    CLEARTEXT,
    MISMATCH_GLYPH,
    NOT_RUN,
    counts,
    counts_line,
    expected_class,
    observed_class,
    outcome_text,
)

CLIENTS = ("sidecar", "no-sidecar")
SERVERS = ("sidecar", "no-sidecar")
PA_MODES = ("none", "unset", "disable", "permissive", "strict")
DR_MODES = ("none", "disable", "simple", "mutual", "istio-mutual")
# The facts of a wire verdict (probes/verdict.py) worth reading in a tooltip or a report.
WIRE_FACT_KEYS = ("tls_version", "alpn", "sni", "cipher", "certificates_visible", "canary_in_clear", "reason")
TITLE = "mTLS conformance matrix: what crossed the wire"


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


GROUPS = [(c, s) for c in CLIENTS for s in SERVERS]
ROWS = [(c, s, pa) for c, s in GROUPS for pa in PA_MODES]


def side_label(side: str) -> str:
    return side.replace("-", " ")


def group_label(client: str, server: str) -> str:
    """e.g. "sidecar → no sidecar": the client's sidecar, then the server's."""
    return f"{side_label(client)} → {side_label(server)}"


def pa_label(pa: str) -> str:
    return "none" if pa == "none" else pa.upper()


def dr_label(dr: str) -> str:
    return "no DR" if dr == "none" else dr.upper().replace("-", "_")


def row_label(row: tuple[str, str, str]) -> str:
    return f"{group_label(row[0], row[1])}, PA {pa_label(row[2])}"


@dataclass(frozen=True)
class Matrix:
    cells: dict[tuple[tuple[str, str, str], str], CellRecord]  # (row, dr) -> cell
    others: list[CellRecord]  # cells outside the matrix and outside every suite grid
    grids: tuple[GridCells, ...] = ()  # the suites with a grid of their own (ports, destinations)

    @property
    def counts(self) -> dict[str, int]:
        return {**counts(list(self.cells.values())), "missing": len(ROWS) * len(DR_MODES) - len(self.cells),
                "other_cells": len(self.others), "other_mismatched": sum(not r.passed for r in self.others)}


def build_matrix(records: list[CellRecord]) -> Matrix:
    cells: dict[tuple[tuple[str, str, str], str], CellRecord] = {}
    outside = []
    for record in records:
        position = position_of(record.tags or record.cell.split("/"))
        if position is None:
            outside.append(record)
        else:
            cells[(position.row, position.dr)] = record
    grids, others = build_grids(outside)
    return Matrix(cells, others, tuple(grids))


def grid_line(grid: GridCells) -> str:
    """e.g. "ports: 101 cells: 60 encrypted (...) · ...": a suite grid's counts in the matrix's words."""
    return f"{grid.grid.suite}: {len(grid.cells)} cells: {counts_line(counts(list(grid.cells.values())))}"


def class_text(record: CellRecord | None, side: str = "observed") -> str:
    """Glyph and class, with the outcome when the class alone hides it (503 vs reset), e.g. "⊘ refused 503"."""
    if record is None:
        return f"{NOT_RUN.glyph} {NOT_RUN.label}"
    found = observed_class(record) if side == "observed" else expected_class(record)
    extra = outcome_text(record.observed.get("outcome") if side == "observed" else record.expected.get("outcome"))
    return f"{found.glyph} {found.label}{' ' + extra if extra and found.key == 'refused' else ''}"


def cell_text(record: CellRecord | None) -> str:
    """One cell's text: its class; a mismatch shows ✗ and both classes."""
    if record is None or record.passed:
        return class_text(record)
    return f"{MISMATCH_GLYPH} expected {class_text(record, 'expected')} / observed {class_text(record)}"


def wire_facts(record: CellRecord) -> dict:
    facts = record.observed.get("wire_facts") or {}
    return {k: facts[k] for k in WIRE_FACT_KEYS if facts.get(k) not in (None, [], "")}


def _fact(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def hover_text(record: CellRecord) -> str:
    """What a hover shows: the rule, the wire facts and the failure message."""
    lines = [record.cell, f"rule: {record.rule or '-'}",
             f"expected: {record.expected.get('outcome')} (wire {record.expected.get('wire')})",
             (f"observed: {record.observed.get('outcome')} (http {record.observed.get('http_status')}, "
              f"wire {record.observed.get('wire')})")]
    lines += [f"{key}: {_fact(value)}" for key, value in wire_facts(record).items()]
    if record.observed.get("failure_detail"):
        lines.append(f"envoy: {record.observed['failure_detail']}")
    if not record.passed:
        lines.append(record.message)
    return "\n".join(lines)


def summary_line(matrix: Matrix, with_grids: bool = True) -> str:
    c = matrix.counts
    line = f"{c['cells']} matrix cells: {counts_line(c)}"
    if c["missing"]:
        line += f" · {c['missing']} not run"
    if c["other_cells"]:
        line += f"; {c['other_cells']} other cells, {c['other_mismatched']} mismatched"
    for grid in matrix.grids if with_grids else ():
        line += f"; {grid_line(grid)}"
    return line


def legend_text() -> str:
    return " · ".join(f"{c.glyph} {c.label}" for c in CLASSES) + f" · {MISMATCH_GLYPH} mismatch (heavy border)"


def to_markdown(matrix: Matrix, title: str = TITLE) -> str:
    lines = [f"### {title}", "", summary_line(matrix), "", f"Legend: {legend_text()} · {NOT_RUN.glyph} not run",
             "", "| client → server | PA | " + " | ".join(dr_label(dr) for dr in DR_MODES) + " |",
             "|---|---|" + "---|" * len(DR_MODES)]
    for row in ROWS:
        entries = []
        for dr in DR_MODES:
            record = matrix.cells.get((row, dr))
            text = cell_text(record)
            entries.append(f"**{text}**" if record is not None and not record.passed else text)
        group = group_label(row[0], row[1]) if row[2] == PA_MODES[0] else ""
        lines.append(f"| {group} | {pa_label(row[2])} | " + " | ".join(e.replace("|", "\\|") for e in entries) + " |")
    for grid in matrix.grids:
        lines += ["", *grid_markdown(grid)]
    mismatched_others = [r for r in matrix.others if not r.passed]
    if mismatched_others:
        lines += ["", "Other cells that differ:", ""]
        lines += [f"- `{r.cell}`: {r.message or cell_text(r)}" for r in mismatched_others]
    return "\n".join(lines) + "\n"


def grid_markdown(grid: GridCells) -> list[str]:
    """A suite grid as a markdown table: rows by its row tags, a column per combination its cells name."""
    lines = [f"#### {grid.grid.title}", "", grid_line(grid), "",
             f"| {grid.grid.row_heading} | " + " | ".join(key_label(c) for c in grid.columns) + " |",
             "|---|" + "---|" * len(grid.columns)]
    for row in grid.rows:
        entries = []
        for column in grid.columns:
            record = grid.cells.get((row, column))
            text = "" if record is None else cell_text(record)
            entries.append(f"**{text}**" if record is not None and not record.passed else text)
        lines.append(f"| {key_label(row)} | " + " | ".join(e.replace("|", "\\|") for e in entries) + " |")
    return lines


def _css() -> str:
    fills = "".join(f"td.{c.key} {{ background: {c.colour}; color: {c.ink}; }}\n" for c in (*CLASSES, NOT_RUN))
    return f"""
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #777; padding: 4px 8px; font-size: 13px; }}
th.group {{ text-align: left; white-space: nowrap; background: #f4f4f4; }}
th.pa {{ font-weight: normal; font-family: monospace; text-align: left; }}
td.cell {{ position: relative; text-align: center; min-width: 7em; }}
td.cell a {{ color: inherit; text-decoration: none; display: block; }}
td.mismatch {{ outline: 4px solid #000; outline-offset: -4px; font-weight: bold; }}
.glyph {{ font-size: 16px; }}
.tip {{ display: none; position: absolute; z-index: 2; left: 50%; top: 100%; white-space: pre-wrap;
        text-align: left; background: #222; color: #fff; padding: 6px; width: 32em; font-size: 12px;
        font-weight: normal; }}
td.cell:hover .tip {{ display: block; }}
.legend span {{ display: inline-block; padding: 3px 8px; margin-right: 6px; border: 1px solid #777; }}
.legend span.mismatch {{ outline: 3px solid #000; outline-offset: -3px; font-weight: bold; }}
.counts b {{ font-size: 16px; }}
{fills}"""


def _td(record: CellRecord | None, link: str | None) -> str:
    esc = html.escape
    if record is None:
        return f'<td class="cell {NOT_RUN.key}">{esc(cell_text(None))}</td>'
    found = observed_class(record)
    classes = f"cell {found.key}" + ("" if record.passed else " mismatch")
    content = esc(cell_text(record))
    if not record.passed:  # expected over observed, so a mismatch does not widen its column
        content = (f"{MISMATCH_GLYPH} expected {esc(class_text(record, 'expected'))}<br>"
                   f"observed {esc(class_text(record))}")
    if link:
        content = f'<a href="{esc(link)}" target="_blank">{content}</a>'
    return (f'<td class="{classes}" data-cell="{esc(record.cell)}" data-class="{found.key}" '
            f'data-expected-class="{expected_class(record).key}">{content}'
            f'<div class="tip">{esc(hover_text(record))}</div></td>')


def to_html(matrix: Matrix, title: str = TITLE, links: dict[str, str] | None = None) -> str:
    """links: cell id -> URL of its Allure page (a click on the cell opens it)."""
    esc, links = html.escape, links or {}
    c = matrix.counts
    counts_html = (f'<p class="counts"><b>{c["encrypted"]}</b> encrypted ({c["mtls"]} Istio mTLS, '
                   f'{c["other_tls"]} other TLS) · <b>{c["cleartext"]}</b> cleartext · <b>{c["refused"]}</b> '
                   f'refused · <b>{c["mismatched"]}</b> mismatched · {c["missing"]} not run</p>')
    legend = "".join(f'<span class="{k.key}" style="background:{k.colour};color:{k.ink}" title="{esc(k.meaning)}">'
                     f'{k.glyph} {esc(k.label)}</span>' for k in CLASSES)
    legend += f'<span class="mismatch">{MISMATCH_GLYPH} expected ≠ observed</span>'
    head = "".join(f"<th>{esc(dr_label(dr))}</th>" for dr in DR_MODES)
    rows = []
    for row in ROWS:
        group = ""
        if row[2] == PA_MODES[0]:
            group = f'<th class="group" rowspan="{len(PA_MODES)}">{esc(group_label(row[0], row[1]))}</th>'
        records = [matrix.cells.get((row, dr)) for dr in DR_MODES]
        tds = "".join(_td(r, links.get(r.cell) if r else None) for r in records)
        rows.append(f'<tr>{group}<th class="pa">{esc(pa_label(row[2]))}</th>{tds}</tr>')
    sections = "".join(grid_html(grid, links) for grid in matrix.grids)
    others = ""
    if matrix.others:
        items = "".join(f"<tr>{_td(r, links.get(r.cell))}<td>{esc(r.cell)}</td>"
                        f"<td>{esc(r.message if not r.passed else r.rule)}</td></tr>" for r in matrix.others)
        others = f"<h3>Other cells</h3><table><tr><th>wire</th><th>cell</th><th>rule / failure</th></tr>{items}</table>"
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_css()}</style></head><body><h2>{esc(title)}</h2>{counts_html}"
            f'<p class="legend">{legend}</p><p>Hover a cell for its rule, wire facts and failure; click it for its '
            "Allure page.</p>"
            f'<table class="matrix"><tr><th>client → server sidecar</th><th>PeerAuthentication</th>{head}</tr>'
            f"{''.join(rows)}</table>{sections}{others}</body></html>\n")


def grid_html(grid: GridCells, links: dict[str, str]) -> str:
    """A suite grid's section: blank where the suite has no cell, a coloured cell (hover, link) where it has."""
    esc = html.escape
    head = "".join(f"<th>{esc(key_label(c, ' / '))}</th>" for c in grid.columns)
    rows = []
    for row in grid.rows:
        tds = "".join(_td(r, links.get(r.cell)) if (r := grid.cells.get((row, c))) else "<td></td>"
                      for c in grid.columns)
        rows.append(f'<tr><th class="group">{esc(key_label(row))}</th>{tds}</tr>')
    return (f'<h3>{esc(grid.grid.title)}</h3><p class="counts">{esc(grid_line(grid))}</p>'
            f'<table class="suite" data-suite="{esc(grid.grid.suite)}"><tr><th>{esc(grid.grid.row_heading)} / '
            f"{esc(grid.grid.column_heading)}</th>{head}</tr>{''.join(rows)}</table>")


OTHER_COLUMNS = 3  # cells outside the matrix, as tiles under it


def _tile(ax, x: float, y: float, width: float, record: CellRecord | None, text: str) -> None:
    """One cell: filled with its observed class (cleartext hatched too, for grey-scale print); a mismatch
    gets a heavy black border."""
    from matplotlib.patches import Rectangle

    found = observed_class(record)
    ax.add_patch(Rectangle((x, y), width, 1, facecolor=found.colour, edgecolor="white", linewidth=1.5,
                           hatch="/" if found is CLEARTEXT else None))
    mismatch = record is not None and not record.passed
    if mismatch:
        ax.add_patch(Rectangle((x + 0.05, y + 0.07), width - 0.1, 0.86, fill=False, edgecolor="black", linewidth=4))
    ax.text(x + width / 2, y + 0.5, text, ha="center", va="center", fontsize=9, color=found.ink,
            fontweight="bold" if mismatch else None,
            bbox={"facecolor": found.colour, "edgecolor": "none", "pad": 3} if found is CLEARTEXT else None)


def _tile_text(record: CellRecord | None) -> str:
    if record is not None and not record.passed:
        return f"{MISMATCH_GLYPH} exp {class_text(record, 'expected')}\nobs {class_text(record)}"
    return class_text(record)


def _draw_matrix(ax, matrix: Matrix) -> None:
    n_rows, n_cols = len(ROWS), len(DR_MODES)
    for y, row in enumerate(ROWS):
        for x, dr in enumerate(DR_MODES):
            record = matrix.cells.get((row, dr))
            _tile(ax, x, y, 1, record, _tile_text(record))
    ax.set_xlim(0, n_cols)
    ax.set_ylim(n_rows, 0)
    ax.set_xticks([x + 0.5 for x in range(n_cols)], [dr_label(dr) for dr in DR_MODES], fontsize=10)
    ax.xaxis.tick_top()
    ax.set_yticks([y + 0.5 for y in range(n_rows)], [pa_label(row[2]) for row in ROWS], fontsize=9,
                  family="monospace")
    for index, (client, server) in enumerate(GROUPS):
        top = index * len(PA_MODES)
        ax.axhline(top, color="black", linewidth=2)
        ax.text(-0.62, top + len(PA_MODES) / 2, group_label(client, server), rotation=90, ha="center",
                va="center", fontsize=11, fontweight="bold", transform=ax.transData, clip_on=False)
    ax.set_xlabel("DestinationRule tls mode (client namespace)", fontsize=10)
    ax.xaxis.set_label_position("top")


def _draw_others(ax, others: list[CellRecord]) -> None:
    rows = -(-len(others) // OTHER_COLUMNS)
    width = len(DR_MODES) / OTHER_COLUMNS
    for index, record in enumerate(others):
        x, y = (index // rows) * width, index % rows
        short = record.cell.split("/", 1)[-1]
        text = f"{observed_class(record).glyph} {short}"
        if not record.passed:
            text = f"{MISMATCH_GLYPH} {short}\n{expected_class(record).glyph} → {observed_class(record).glyph}"
        _tile(ax, x, y, width, record, text)
    ax.set_xlim(0, len(DR_MODES))
    ax.set_ylim(rows, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("other cells (scope, ...)", fontsize=10)


def _draw_grid(ax, grid: GridCells) -> None:
    """A suite grid under the matrix: a tile per cell, its class's glyph (a mismatch: expected → observed)."""
    for y, row in enumerate(grid.rows):
        for x, column in enumerate(grid.columns):
            record = grid.cells.get((row, column))
            if record is None:
                continue  # the suite has no cell here
            text = (observed_class(record).glyph if record.passed else
                    f"{MISMATCH_GLYPH}{expected_class(record).glyph}→{observed_class(record).glyph}")
            _tile(ax, x, y, 1, record, text)
    ax.set_xlim(0, len(grid.columns))
    ax.set_ylim(len(grid.rows), 0)
    ax.set_xticks([x + 0.5 for x in range(len(grid.columns))], [key_label(c, "\n") for c in grid.columns],
                  fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([y + 0.5 for y in range(len(grid.rows))], [key_label(r) for r in grid.rows], fontsize=8)
    ax.set_title(f"{grid.grid.title}\n{grid_line(grid)}", fontsize=10, pad=42)


def to_png(matrix: Matrix, path: Path, title: str = TITLE) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none wanted
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    other_rows = -(-len(matrix.others) // OTHER_COLUMNS)
    # each suite grid: its rows, plus room for its title and its column labels
    grid_heights = [len(g.rows) * 0.8 + 3 for g in matrix.grids]
    # A run of other suites alone (ports, destinations) is not drawn over an empty matrix of "not run" cells.
    show_matrix = bool(matrix.cells) or not matrix.grids
    matrix_rows = len(ROWS) if show_matrix else 0
    heights = ([matrix_rows] if show_matrix else []) + ([other_rows * 0.8] if other_rows else []) + grid_heights
    fig, axes = plt.subplots(len(heights), 1, figsize=(13, 1 + matrix_rows * 0.55 + other_rows * 0.45
                                                        + sum(grid_heights) * 0.45),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    ax = axes[0][0]
    if show_matrix:
        _draw_matrix(ax, matrix)
    if other_rows:
        _draw_others(axes[1 if show_matrix else 0][0], matrix.others)
    for grid, (grid_ax,) in zip(matrix.grids, axes[len(heights) - len(grid_heights):], strict=True):
        _draw_grid(grid_ax, grid)
    for axis in (a for (a,) in axes):
        axis.tick_params(length=0)
        for side in axis.spines.values():
            side.set_visible(False)
    handles = [Patch(facecolor=c.colour, edgecolor="#777", hatch="/" if c is CLEARTEXT else None,
                     label=f"{c.glyph} {c.label}") for c in CLASSES]
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=3, label=f"{MISMATCH_GLYPH} mismatch"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=10, frameon=False)
    if show_matrix:
        ax.set_title(f"{title}\n{summary_line(matrix, with_grids=False)}", fontsize=11, pad=36)  # grids: their own
    else:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0.03, 0.03, 1, 1 if show_matrix else 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_matrix(records: list[CellRecord], out_dir: str | Path, links: dict[str, str] | None = None
                 ) -> dict[str, Path]:
    """Write matrix.html, matrix.png and matrix.md into out_dir; returns their paths by format."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matrix = build_matrix(records)
    paths = {"html": out / "matrix.html", "png": out / "matrix.png", "md": out / "matrix.md"}
    paths["html"].write_text(to_html(matrix, links=links), encoding="utf-8")
    paths["md"].write_text(to_markdown(matrix), encoding="utf-8")
    to_png(matrix, paths["png"])
    return paths

