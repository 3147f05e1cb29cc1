"""Cells as declarative records (suites/cells.py): stable unique ids, a `why` sentence each, scenarios that
parse, and a fresh copy of the manifests per use (a runner that renames namespaces cannot change the cell)."""

from __future__ import annotations

import pytest

from meshproof.scenario import scenario_from_dict
from suites.cells import Cell, pa
from suites.matrix import matrix_cells, scope_cells

ALL = matrix_cells() + scope_cells()


def test_ids_are_unique_and_every_cell_says_why_in_a_sentence():
    assert len({cell.id for cell in ALL}) == len(ALL) == 100 + len(scope_cells())
    for cell in ALL:
        assert cell.why.endswith(".") and len(cell.why.split()) >= 6, cell.id


@pytest.mark.parametrize("cell", ALL, ids=lambda c: c.id)
def test_the_scenario_parses_and_carries_the_why(cell):
    scenario = scenario_from_dict(cell.scenario(), f"cell {cell.id}")
    assert scenario.extra["why"] == cell.why and tuple(scenario.extra["tags"]) == cell.tags


def test_a_scenario_is_a_copy():
    cell = Cell("x", "A copy per use.", (pa("STRICT"),), server={"target_port": 9090})
    first = cell.scenario()
    first["resources"][0]["metadata"]["namespace"] = "renamed"
    first["server"]["target_port"] = 1
    assert cell.scenario()["resources"][0]["metadata"]["namespace"] == "httpbin"
    assert cell.scenario()["server"]["target_port"] == 9090


def test_a_field_the_scenario_format_lacks_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"server\.colour: unknown field"):
        scenario_from_dict(Cell("x", "A bad field.", server={"colour": "red"}).scenario(), "cell x")
