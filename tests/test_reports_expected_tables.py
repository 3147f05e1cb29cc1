"""The committed expected tables (suites/expected/<minor>.yaml) are what the oracle computes now, for every cell
of every suite and every supported minor; a rule change without regenerated tables goes red here."""

import dataclasses

import yaml

from meshproof.cli import main as cli
from meshproof.scenario import SUPPORTED_ISTIO_VERSIONS
from reports import expected_tables
from suites import expectations


def test_committed_tables_match_the_oracle():
    stale = expected_tables.stale_tables()
    assert not stale, "\n".join(stale) + f"\nregenerate with: {expected_tables.REGENERATE}"


def test_tables_hold_every_cell_of_every_suite_for_every_minor():
    suites = expected_tables.suites()
    assert {"matrix", "scope"} <= set(suites) and len(suites["matrix"]) == 100
    for version in SUPPORTED_ISTIO_VERSIONS:
        committed = yaml.safe_load(expected_tables.path_for(version).read_text())
        assert committed["istio_version"] == version
        for name, cells in suites.items():
            assert list(committed["suites"][name]) == [cell for cell, _ in cells]


def test_a_changed_rule_makes_the_tables_stale_and_names_its_cells(monkeypatch, tmp_path, capsys):
    for version in SUPPORTED_ISTIO_VERSIONS:
        expected_tables.path_for(version, tmp_path).write_text(expected_tables.render(version))
    assert expected_tables.stale_tables(tmp_path) == []
    rule = expectations.RULES["naked-client-to-strict-reset"]
    monkeypatch.setitem(expectations.RULES, "naked-client-to-strict-reset", dataclasses.replace(rule, outcome="503"))
    stale = expected_tables.stale_tables(tmp_path)
    assert len(stale) == len(SUPPORTED_ISTIO_VERSIONS)
    assert "client-no-sidecar/server-sidecar/pa-strict/dr-none" in stale[0]
    folder = ["--tables-dir", str(tmp_path)]
    assert cli(["expect", "--check-tables", *folder]) == 1 and "regenerate with" in capsys.readouterr().out
    assert cli(["expect", "--write-tables", *folder]) == 0 and cli(["expect", "--check-tables", *folder]) == 0
