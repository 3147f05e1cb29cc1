"""reports/mutation.py without running cosmic-ray: the score, the equivalent list, the session config."""

import itertools
from pathlib import Path

import pytest
import yaml

from reports import mutation

ROOT = Path(__file__).resolve().parents[1]


def _mutant(line, operator, outcome):
    return {"module": "m.py", "line": line, "operator": operator, "function": "f", "outcome": outcome}


def test_score_counts_timeouts_as_detected_and_leaves_out_reviewed_equivalents(tmp_path):
    (tmp_path / "m.py").write_text("a = 1\nb = x | None\nc = 2\n")
    mutants = [_mutant(1, "core/NumberReplacer", "killed"), _mutant(2, "core/BitOr", "survived"),
               _mutant(3, "core/NumberReplacer", "survived"), _mutant(1, "core/AddNot", "timeout"),
               _mutant(3, "core/AddNot", "skipped")]
    equivalent = [{"module": "m.py", "operator": "core/BitOr", "code": "b = x | None", "reason": "annotation"}]
    summary = mutation.summarize("oracle", mutants, equivalent, tmp_path)
    assert (summary["killed"], summary["timeout"], summary["survived"], summary["equivalent"]) == (1, 1, 1, 1)
    assert summary["score_percent"] == 66.7
    assert [m["code"] for m in summary["survivors"]] == ["c = 2"]
    assert summary["equivalent_mutants"][0]["equivalent_because"] == "annotation"


def test_one_site_of_a_line_with_several_is_named_by_what_the_line_becomes(tmp_path):
    (tmp_path / "m.py").write_text("PORTS = (1, 5)\n")
    mutants = [dict(_mutant(1, "core/NumberReplacer", "survived"), becomes=f"PORTS = {after}")
               for after in ("(2, 5)", "(1, 6)")]
    equivalent = [{"module": "m.py", "operator": "core/NumberReplacer", "code": "PORTS = (1, 5)",
                   "becomes": "PORTS = (2, 5)", "reason": "the first site only"}]
    summary = mutation.summarize("oracle", mutants, equivalent, tmp_path)
    assert (summary["equivalent"], summary["survived"]) == (1, 1)
    assert summary["survivors"][0]["becomes"] == "PORTS = (1, 6)"
    diff = "--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-PORTS = (1, 5)\n+PORTS = (2, 5)"
    assert mutation._mutated_line(diff) == "PORTS = (2, 5)" and mutation._mutated_line(None) is None


def test_every_reviewed_equivalent_names_a_line_that_exists_and_says_why():
    entries = yaml.safe_load(mutation.EQUIVALENT.read_text()) or []
    modules = {m for s in mutation.SESSIONS.values() for m in s["modules"]}
    for entry in entries:
        assert entry["module"] in modules and entry["operator"].startswith("core/"), entry
        lines = [line.strip() for line in (ROOT / entry["module"]).read_text().splitlines()]
        assert entry["code"] in lines, f"stale equivalent entry (the line is gone): {entry}"
        if "after" in entry:
            assert any(a == entry["after"] and b == entry["code"] for a, b in itertools.pairwise(lines)), entry
        assert len(entry["reason"]) > 20, entry


def test_a_kill_needs_the_same_test_red_twice():
    command = mutation.test_command("tests/test_x.py -n 2")
    first, _, retry = command.partition(" || ")
    assert first.endswith("tests/test_x.py -n 2 -x") and "--lf -x &&" in retry and "-n 2" not in retry.split("&&")[0]
    assert "cluster/local/controlplane.py" in mutation.config("controlplane")


def _session(tmp_path):
    """A real cosmic-ray session of a three-line module (mutants on each line), none run yet."""
    import subprocess
    import sys

    (tmp_path / "m.py").write_text("a = 1\nb = 2\nc = 3\n")
    (tmp_path / "m.toml").write_text('[cosmic-ray]\nmodule-path = "m.py"\ntimeout = 1.0\nexcluded-modules = []\n'
                                     'test-command = "true"\n[cosmic-ray.distributor]\nname = "local"\n')
    cosmic_ray = Path(sys.executable).parent / "cosmic-ray"
    if not cosmic_ray.exists():  # the extra `mutation`, which `make mutants` installs and `make test` does not
        pytest.skip("cosmic-ray is not installed here (make mutants installs it)")
    subprocess.run([cosmic_ray, "init", "m.toml", "m.sqlite"], cwd=tmp_path, check=True)
    return tmp_path / "m.sqlite"


def test_changed_lines_are_the_new_and_edited_lines_of_the_newer_text():
    old = "a = 1\nb = 2\nc = 3\n"
    assert mutation.changed_lines(old, "a = 1\nb = 5\nnew = 0\nc = 3\n") == {2, 3}
    assert mutation.changed_lines(old, "a = 1\nc = 3\n") == set()  # a removed line leaves nothing to mutate
    assert mutation.changed_lines("", "x = 1\ny = 2\n") == {1, 2}


def test_a_sample_of_changed_lines_leaves_every_other_line_not_sampled(tmp_path):
    db = _session(tmp_path)
    mutation.keep_lines(db, {"m.py": {2}})
    outcomes = {(m["line"], m["outcome"]) for m in mutation.results(db)}
    assert outcomes == {(1, "not-sampled"), (2, "pending"), (3, "not-sampled")}


def test_a_later_run_chooses_its_own_sample(tmp_path):
    db = _session(tmp_path)
    mutation.keep_sample(db, 1)
    first = [m for m in mutation.results(db) if m["outcome"] == "pending"]
    mutation.forget_sample(db)
    mutation.keep_sample(db, 2)
    second = [m for m in mutation.results(db) if m["outcome"] == "pending"]
    assert len(first) == 1 and len(second) == 2 and first[0] in second
    mutation.forget_sample(db)
    assert {m["outcome"] for m in mutation.results(db)} == {"pending"}
