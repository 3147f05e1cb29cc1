"""Cells as declarative records (suites/cells.py): stable unique ids, a `why` sentence each, scenarios that
parse, and a fresh copy of the manifests per use (a runner that renames namespaces cannot change the cell)."""

from __future__ import annotations

import re

import pytest

from meshproof.scenario import scenario_from_dict
from reports.allure_cell import hierarchy
from reports.matrix import position_of
from suites import destinations, ports
from suites.cells import Cell, pa, same_questions, without
from suites.destinations import designed_destinations, destinations_cells
from suites.matrix import interception_cells, matrix_cells, root_client_cells, scope_cells
from suites.ports import designed_ports, ports_cells

NEW = designed_ports() + designed_destinations()  # the cells waiting in NOT_YET are held to the same standard
OWN = root_client_cells() + interception_cells()
ALL = matrix_cells() + scope_cells() + OWN + NEW
# A citation: an Istio issue (istio/istio#10062, #16455) or Istio's documentation.
CITES = re.compile(r"#\d{4,}|Istio docs")
# Asked twice before the ports and destinations suites came: the scope cell names the rule the matrix cell hits.
KNOWN_TWICE = [("client-sidecar/server-no-sidecar/pa-none/dr-istio-mutual", "scope/dr-istio-mutual-naked-server")]


def test_ids_are_unique_and_every_cell_says_why_in_a_sentence():
    assert len({cell.id for cell in ALL}) == len(ALL) == 100 + len(scope_cells()) + len(OWN) + len(NEW)
    for cell in ALL:
        assert cell.why.endswith(".") and len(cell.why.split()) >= 6, cell.id


def test_the_new_suites_have_about_a_hundred_and_a_few_dozen_cells():
    assert 90 <= len(designed_ports()) <= 110 and 25 <= len(designed_destinations()) <= 45


def test_a_cell_not_passing_yet_waits_outside_its_suite_with_a_reason():
    for module, designed, run in ((ports, designed_ports(), ports_cells()), (destinations, designed_destinations(),
                                                                              destinations_cells())):
        assert {c.id for c in designed} - {c.id for c in run} == set(module.NOT_YET)
        assert all(len(reason.split()) >= 4 for reason in module.NOT_YET.values())
    cells = designed_ports()[:3]
    assert without(cells, {cells[1].id: "the mesh refuses it"}) == [cells[0], cells[2]]
    with pytest.raises(ValueError, match="does not have: \\['ports/gone'\\]"):
        without(cells, {"ports/gone": "a stale entry"})


@pytest.mark.parametrize("cell", NEW, ids=lambda c: c.id)
def test_a_new_cell_cites_where_users_got_hurt_and_stays_out_of_the_matrix_picture(cell):
    assert CITES.search(cell.why), f"{cell.id}: its why cites no Istio issue or doc"
    assert cell.why.count(". ") == 0, f"{cell.id}: one sentence"
    assert position_of(list(cell.tags)) is None
    suite = cell.id.split("/")[0]
    assert cell.tags[0] == suite and hierarchy(cell.id, cell.tags, cell.description)[0] == suite.title()


def test_no_new_cell_asks_what_another_cell_asks():
    new = {cell.id for cell in NEW}
    twice = same_questions(ALL)
    assert [pair for pair in twice if new & set(pair)] == []
    assert twice == KNOWN_TWICE


def test_two_cells_with_one_question_are_found_whatever_their_words():
    cell = ports_cells()[0]
    again = Cell("ports/again", "Other words, same question.", cell.resources, cell.client, cell.server,
                 "another title", ("ports", "again"), cell.request)
    assert same_questions([cell, again]) == [(cell.id, "ports/again")]
    moved = Cell("ports/moved", cell.why, cell.resources, cell.client, {**cell.server, "target_port": 9090})
    assert same_questions([cell, moved]) == []
    assert same_questions([cell, Cell("x", cell.why, cell.resources, cell.client, cell.server,
                                      request={"to": "pod-ip"})]) == []


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


def test_the_readme_names_only_cells_the_suites_have():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Surprises we check", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`((?:ports|destinations)/[^`]+)`", section)
    assert len(named) >= 10
    running = {cell.id for cell in ports_cells() + destinations_cells()}
    assert set(named) <= running, set(named) - running
