"""What a cell shows in Allure: its place in the tree, a human title, the why with links to the cited Istio
sources, the wire facts, `critical` for a leak, no unknown teardown steps, and a matrix cell that links to it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshproof.scenario import scenario_from_dict
from reports import build
from reports.allure_cell import hierarchy, source_links, title
from suites.expectations import RULES, expect
from suites.matrix import matrix_scenarios, scope_scenarios

ROOT = Path(__file__).resolve().parents[1]
STRICT_NO_DR = "client-sidecar/server-sidecar/pa-strict/dr-none"
PHANTOM_SUITE = '''
import pytest

@pytest.fixture(scope="session")
def session_thing(pytestconfig):
    yield 1

@pytest.fixture
def per_test(session_thing):
    yield 2

def test_uses_fixtures(per_test):
    pass
'''
# A cell as the runner reports it, with a real prediction and a probe result that leaked or did not.
CELL_SUITE = '''
import pytest
from cluster.backend import ProbeResult
from meshproof.namespaces import RunNamespaces
from meshproof.scenario import scenario_from_dict
from reports import allure_cell
from suites.expectations import expect
from suites.interpret import compare
from suites.matrix import matrix_scenarios
from testsupport.wire import wire_verdict

SCENARIOS = dict(matrix_scenarios())

@pytest.mark.parametrize("cell,wire", [("%(cell)s", "mtls"), ("%(cell)s", "plaintext")], ids=["ok", "leak"])
def test_cell(cell, wire):
    tags = tuple(cell.split("/"))
    scenario = scenario_from_dict(SCENARIOS[cell], "test")
    allure_cell.describe(cell, scenario, tags, "local")
    prediction = expect(scenario)
    allure_cell.predicted(cell, scenario, tags, prediction)
    tls = prediction.tls or {}
    # What the wire classifier reports for this cell's handshake (or for a sidecar that sent cleartext).
    facts = wire_verdict(wire, canary_in_clear=wire == "plaintext", certificates_visible=False,
                         tls_version=tls.get("version"), alpn=[tls.get("alpn")], sni=tls.get("sni"),
                         reason="TLS with the mesh ALPN and an outbound_ SNI")
    result = ProbeResult("mtls" if wire == "mtls" else "plaintext", 200, 0,
                         prediction.peer_identity if wire == "mtls" else None, wire=facts)
    verdict = compare(prediction, result, captured=True)
    allure_cell.conclude(cell, prediction, result, verdict, allure_cell.question_of(scenario))
    names = RunNamespaces.for_scenario(scenario, "t1")
    allure_cell.record(cell, tags, scenario, prediction, result, verdict, 1.0, "local", names)
    assert verdict.passed, verdict.message
'''


def _pytest(tmp_path: Path, suite: str, *args: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "test_it.py").write_text(suite)
    results = tmp_path / "allure-results"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", "/dev/null", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "--alluredir", str(results), *args, str(tmp_path / "test_it.py")],
                          capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "MESHPROOF_CELLS_DIR": str(tmp_path / "cells"),
                               "PATH": "/usr/bin:/bin"})
    assert list(results.glob("*-result.json")), done.stdout + done.stderr
    return results


def _teardowns(results: Path) -> list[tuple[str, str | None]]:
    return [(after["name"], after.get("status")) for path in results.glob("*-container.json")
            for after in json.loads(path.read_text()).get("afters", [])]


def test_pytests_own_finalizers_are_not_reported_as_unknown_teardown_steps(tmp_path):
    bare = _teardowns(_pytest(tmp_path / "bare", PHANTOM_SUITE))
    # Without the plugin, allure-pytest reports pytest's own finalizer, never closed: this check can go red.
    assert ("pytestconfig::<lambda>", None) in bare
    fixed = _teardowns(_pytest(tmp_path / "fixed", PHANTOM_SUITE, "-p", "reports.allure_pytest_fix"))
    assert all(status == "passed" for _, status in fixed) and not any("<lambda>" in n for n, _ in fixed)
    assert {name.split("::")[0] for name, _ in fixed} == {"session_thing", "per_test"}  # real teardowns kept


def _prediction(cell: str, scenarios=None):
    return expect(scenario_from_dict(dict(scenarios or matrix_scenarios())[cell], "test"))


def test_matrix_cell_reads_as_epic_feature_story_and_a_human_title():
    tags = tuple(STRICT_NO_DR.split("/"))
    assert hierarchy(STRICT_NO_DR, tags, "") == ("Matrix", "client sidecar → server sidecar",
                                                 "PeerAuthentication STRICT")
    assert title(STRICT_NO_DR, tags, "", _prediction(STRICT_NO_DR)) == \
        "STRICT namespace, no DestinationRule: sidecar → sidecar ⇒ mTLS"
    naked = "client-no-sidecar/server-sidecar/pa-strict/dr-none"
    assert title(naked, tuple(naked.split("/")), "", _prediction(naked)).endswith("no sidecar → sidecar ⇒ reset")


def test_scope_cell_title_is_its_description_and_outcome():
    cell = "scope/pa-mesh-strict"
    data = dict(scope_scenarios())[cell]
    epic, feature, _ = hierarchy(cell, tuple(data["tags"]), data["description"])
    assert (epic, feature) == ("Scope", "PeerAuthentication scope")
    assert title(cell, tuple(data["tags"]), data["description"], _prediction(cell, scope_scenarios())) == \
        "mesh STRICT reaches the server ⇒ reset"


def test_every_rule_links_the_istio_files_it_cites_at_the_release_branch():
    for name, rule in RULES.items():
        links = source_links(rule.source, "1.29")
        assert links, f"rule {name} cites no Istio file: {rule.source}"
        for _, url in links:
            assert url.startswith("https://github.com/istio/") and "/blob/release-1.29/" in url, url
    assert source_links("istio/istio pilot/pkg/model/push_context.go X + authentication.go Y", "1.30") == [
        ("istio/istio pilot/pkg/model/push_context.go (release-1.30)",
         "https://github.com/istio/istio/blob/release-1.30/pilot/pkg/model/push_context.go")]


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cell-run")
    results = _pytest(tmp_path, CELL_SUITE % {"cell": STRICT_NO_DR}, "-p", "reports.allure_pytest_fix")
    return tmp_path, results, [json.loads(p.read_text()) for p in results.glob("*-result.json")]


def test_cell_result_carries_tree_title_links_wire_facts_and_critical_leak(cell_run):
    _, _, results = cell_run
    ok, leak = sorted(results, key=lambda r: r["status"] != "passed")
    labels = {(label["name"], label["value"]) for label in ok["labels"]}
    assert {("epic", "Matrix"), ("feature", "client sidecar → server sidecar"),
            ("story", "PeerAuthentication STRICT"), ("cell", STRICT_NO_DR)} <= labels
    assert ok["name"] == "STRICT namespace, no DestinationRule: sidecar → sidecar ⇒ mTLS"
    assert any("filterchain_options.go" in link["url"] for link in ok["links"])
    page = ok["descriptionHtml"]
    assert "<b>Why:</b> " in page and "by rule <code>istio-mutual-accepted</code>" in page
    assert "<p><b>Question:</b> A client with a sidecar calls a server with one: " in page  # the cell's why
    assert "<th>tls version</th><td>TLSv1.3</td>" in page and "<th>sni</th><td>outbound_.8000_._.httpbin" in page
    assert ("severity", "critical") not in labels
    assert leak["status"] == "failed" and "PLAINTEXT LEAK" in leak["statusDetails"]["message"]
    assert ("severity", "critical") in {(label["name"], label["value"]) for label in leak["labels"]}


def test_built_matrix_links_each_cell_to_its_allure_page(cell_run, tmp_path):
    allure = build.DEFAULT_ALLURE
    if not allure.exists():
        pytest.skip("Allure 3 is not installed (make report installs it); test_reports_build covers the install")
    run_dir, results, _ = cell_run
    out = tmp_path / "out"
    assert build.main(["--results", str(results), "--out", str(out), "--allure", str(allure),
                       "--cells", str(run_dir / "cells")]) == 0
    index = out / "allure-report" / "index.html"
    assert "googletagmanager" not in index.read_text()  # the page calls nothing outside its file
    links = build.cell_links(out / "allure-report", out)
    assert set(links) == {STRICT_NO_DR} and links[STRICT_NO_DR].startswith("allure-report/index.html#/")
    assert f'href="{links[STRICT_NO_DR]}"' in (out / "matrix.html").read_text()
    config = json.loads((out / "allurerc.json").read_text())
    assert config["plugins"]["awesome"]["options"]["groupBy"] == ["epic", "feature", "story"]
    assert (out / "history.jsonl").exists()  # kept in --out for the next run's trends


def test_suites_beside_the_matrix_get_their_epic_and_a_readable_feature():
    assert hierarchy("adversary/pa-strict/self-signed", ("adversary", "pa-strict", "self-signed"),
                     "self-signed against STRICT") == ("Adversary", "PeerAuthentication STRICT",
                                                       "self-signed against STRICT")
    assert hierarchy("ports/tcp-strict", ("ports",), "")[0] == "Ports"
    banner = ("ports", "banner", "web", "sidecars-both", "pa-permissive", "dr-none")
    assert hierarchy("/".join(banner), banner, "") == ("Ports", "banner (server-first TCP)", "port named web")
    headless = ("destinations", "headless", "sidecar-server-only", "pa-strict")
    assert hierarchy("/".join(headless), headless, "") == ("Destinations", "headless Service", "none → sidecar")
