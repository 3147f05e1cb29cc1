"""The grid of a suite whose cells are not matrix cells but carry their place in their tags (ports, destinations):
which tags make the row and which the column, and how each reads. reports/matrix.py draws one section per grid,
coloured by wire class like the matrix itself.

    ports:        ("ports", app, port name, sidecars, pa-<mode>, dr-<mode>)  rows app x port name
    destinations: ("destinations", to, sidecars, pa-<mode>[, extra])         rows to (+ extra)

A tag missing from a cell (a destinations cell without an extra) is left out of its row or column key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reports.cells import CellRecord

SIDECARS = {"sidecars-both": "sidecar → sidecar", "sidecar-server-only": "none → sidecar",
            "sidecar-client-only": "sidecar → none"}
# Rows and columns sort by where their tags stand here (a tag not listed: after these, alphabetically); the app
# https comes last as its port name does.
ORDER = ("httpbin", "tcp-echo", "banner", "http", "tcp", "https", "tls", "web", "service", "headless", "cluster-ip",
         "pod-ip", *SIDECARS, "pa-permissive", "pa-strict", "pa-disable", "dr-none", "dr-istio-mutual", "dr-disable")


@dataclass(frozen=True)
class SuiteGrid:
    suite: str  # the first part of the cell ids and the first tag
    title: str
    row_tags: tuple[int, ...]  # tag positions that make the row key
    column_tags: tuple[int, ...]  # ... and the column key
    row_heading: str
    column_heading: str

    def key(self, tags: list[str], positions: tuple[int, ...]) -> tuple[str, ...]:
        return tuple(tags[i] for i in positions if i < len(tags))


GRIDS = (
    SuiteGrid("ports", "Ports: what the app speaks x how its Service port is named", (1, 2), (3, 4, 5),
              "app · port name", "sidecars · PeerAuthentication · DestinationRule"),
    SuiteGrid("destinations", "Destinations: ClusterIP Service, headless Service, pod IP", (1, 4), (2, 3),
              "destination", "sidecars · PeerAuthentication"),
)


@dataclass
class GridCells:
    grid: SuiteGrid
    cells: dict[tuple[tuple[str, ...], tuple[str, ...]], CellRecord] = field(default_factory=dict)
    rows: list[tuple[str, ...]] = field(default_factory=list)  # in ORDER
    columns: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, record: CellRecord) -> None:
        tags = record.tags or record.cell.split("/")
        row, column = self.grid.key(tags, self.grid.row_tags), self.grid.key(tags, self.grid.column_tags)
        for known, key in ((self.rows, row), (self.columns, column)):
            if key not in known:
                known.append(key)
        self.cells[(row, column)] = record


def grid_of(record: CellRecord) -> SuiteGrid | None:
    suite = (record.tags or record.cell.split("/"))[0]
    return next((g for g in GRIDS if g.suite == suite), None)


def build_grids(records: list[CellRecord]) -> tuple[list[GridCells], list[CellRecord]]:
    """(the grids that hold at least one record, in GRIDS order; the records no grid holds)."""
    found: dict[str, GridCells] = {}
    rest = []
    for record in records:
        grid = grid_of(record)
        if grid is None:
            rest.append(record)
        else:
            found.setdefault(grid.suite, GridCells(grid)).add(record)
    for grid in found.values():
        grid.rows.sort(key=_order)
        grid.columns.sort(key=_order)
    return [found[g.suite] for g in GRIDS if g.suite in found], rest


def _order(key: tuple[str, ...]) -> tuple:
    return tuple((ORDER.index(tag), "") if tag in ORDER else (len(ORDER), tag) for tag in key)


def part_label(tag: str) -> str:
    """A tag as a header reads: pa-strict -> STRICT, dr-none -> no DR, sidecars-both -> sidecar → sidecar."""
    if tag in SIDECARS:
        return SIDECARS[tag]
    if tag.startswith("pa-"):
        return tag.removeprefix("pa-").upper()
    if tag.startswith("dr-"):
        mode = tag.removeprefix("dr-")
        return "no DR" if mode == "none" else f"DR {mode.upper().replace('-', '_')}"
    return tag


def key_label(key: tuple[str, ...], joiner: str = " · ") -> str:
    return joiner.join(part_label(tag) for tag in key)
