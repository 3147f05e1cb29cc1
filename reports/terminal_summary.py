"""The end of a suites run in the terminal (rich): the matrix in the wire classes of the picture, the counts,
and each mismatch in one line starting with its category."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from reports.categories import category_of
from reports.cells import CellRecord
from reports.matrix import (
    DR_MODES,
    PA_MODES,
    ROWS,
    build_matrix,
    dr_label,
    group_label,
    pa_label,
    summary_line,
)
from reports.wire_classes import CLASSES, MISMATCH_GLYPH, NOT_RUN, expected_class, observed_class


def _cell(record: CellRecord | None) -> Text:
    found = observed_class(record)
    style = f"{found.ink} on {found.colour}"
    if record is None or record.passed:
        return Text(f" {found.glyph} ", style=style)
    return Text(f"{MISMATCH_GLYPH}{expected_class(record).glyph}→{found.glyph}", style=f"bold {style}")


def matrix_table(records: list[CellRecord]) -> Table:
    matrix = build_matrix(records)
    table = Table(title="mTLS matrix: what crossed the wire", box=None, pad_edge=False, padding=(0, 1))
    table.add_column("client → server", no_wrap=True)
    table.add_column("PA")
    for dr in DR_MODES:
        table.add_column(dr_label(dr), justify="center")
    for row in ROWS:
        group = group_label(row[0], row[1]) if row[2] == PA_MODES[0] else ""
        table.add_row(group, pa_label(row[2]), *(_cell(matrix.cells.get((row, dr))) for dr in DR_MODES))
    return table


def legend() -> Text:
    text = Text()
    for found in CLASSES:
        text.append(f" {found.glyph} {found.label} ", style=f"{found.ink} on {found.colour}")
        text.append(" ")
    text.append(f"{MISMATCH_GLYPH}a→b mismatch: expected a, observed b", style="bold")
    return text


def mismatch_lines(records: list[CellRecord]) -> list[str]:
    """One line per cell that did not do what the oracle said: category, cell, the rest of its message."""
    lines = []
    for record in records:
        if not record.passed:
            message = record.message.split("\n", 1)[0]
            found = category_of(message)
            category = record.category or (found.prefix if found else "FAILED:")
            if message.startswith(category):
                message = message[len(category):].strip()
            lines.append(f"{category} {record.cell}: {message}")
    return lines


def render(records: list[CellRecord], width: int, colour: bool) -> str:
    """The summary as terminal text (ANSI colours when `colour`)."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=colour, highlight=False,
                      color_system="truecolor" if colour else None)
    print_summary(records, console)
    return out.getvalue()


def print_summary(records: list[CellRecord], console: Console) -> None:
    if not records:
        return
    matrix = build_matrix(records)
    if matrix.cells:
        console.print(matrix_table(records))
        console.print(legend(), soft_wrap=True)
    console.print(summary_line(matrix), soft_wrap=True)
    lines = mismatch_lines(records)
    for line in lines:
        console.print(Text(line, style="bold red" if "LEAK" in line else "red"), soft_wrap=True)
    if not lines:
        console.print(f"no mismatch in {len(records)} cells" if records else NOT_RUN.label)
