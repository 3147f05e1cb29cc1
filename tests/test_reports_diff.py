"""`meshproof diff`: identical runs exit 0, a changed cell exits 1 and is named, bad input exits 2."""

import pytest

from meshproof.cli import main as meshproof
from reports.cells import record_cell

MTLS = {"outcome": "mtls", "wire": "mtls", "peer_identity": "spiffe://cluster.local/ns/sleep/sa/sleep"}
CELLS = ["client-sidecar/server-sidecar/pa-strict/dr-none", "client-sidecar/server-sidecar/pa-strict/dr-disable",
         "client-no-sidecar/server-sidecar/pa-permissive/dr-none"]


def write_run(directory, changed: str | None = None, missing: str | None = None):
    for cell in CELLS:
        if cell == missing:
            continue
        observed = {**MTLS, "outcome": "503"} if cell == changed else MTLS
        record_cell(cell=cell, tags=cell.split("/"), passed=cell != changed, expected=MTLS, observed=observed,
                    directory=directory / "cells", mesh="local", istio_version="1.30", duration_ms=100.0)
    return str(directory)


def test_identical_runs_exit_0(tmp_path, capsys):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b")
    assert meshproof(["diff", a, b]) == 0
    assert "3 cells compared: identical" in capsys.readouterr().out


def test_one_changed_cell_exits_1_and_is_named(tmp_path, capsys):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", changed=CELLS[1])
    assert meshproof(["diff", a, b]) == 1
    out = capsys.readouterr().out
    assert "3 cells compared: 1 differ" in out
    (line,) = [line for line in out.splitlines() if line.startswith(CELLS[1])]
    assert "observed outcome mtls -> 503" in line and "verdict pass -> FAIL" in line
    assert CELLS[0] not in out.split("what changed", 1)[1]  # unchanged cells are not listed


def test_a_cell_run_only_once_is_a_difference(tmp_path, capsys):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", missing=CELLS[2])
    assert meshproof(["diff", a, b]) == 1
    assert "only in A" in capsys.readouterr().out


@pytest.mark.parametrize("suffix,marker", [(".md", "| cell | A | B | what changed |"), (".html", "<table>")])
def test_out_writes_markdown_or_html(tmp_path, suffix, marker):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", changed=CELLS[0])
    out = tmp_path / f"diff{suffix}"
    assert meshproof(["diff", a, b, "--out", str(out)]) == 1
    text = out.read_text()
    assert marker in text and CELLS[0] in text


def test_missing_run_exits_2_with_the_path(tmp_path, capsys):
    a = write_run(tmp_path / "a")
    assert meshproof(["diff", a, str(tmp_path / "nope")]) == 2
    assert f"meshproof diff: error: {tmp_path / 'nope'}: no such file or directory" in capsys.readouterr().err


def test_malformed_cells_exit_2_naming_file_and_line(tmp_path, capsys):
    a = write_run(tmp_path / "a")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"cell": "x", "passed": true, "expected": {}}\n')
    assert meshproof(["diff", a, str(bad)]) == 2
    assert "bad.jsonl:1: field 'observed' is missing" in capsys.readouterr().err


def test_unknown_out_format_exits_2_and_writes_nothing(tmp_path, capsys):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b")
    assert meshproof(["diff", a, b, "--out", str(tmp_path / "diff.txt")]) == 2
    assert "allowed: .md, .html" in capsys.readouterr().err
    assert not (tmp_path / "diff.txt").exists()
