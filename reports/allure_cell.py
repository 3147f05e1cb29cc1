"""What one conformance cell puts in Allure and in its cell record: where it sits (epic › feature › story), a
title a person reads, the why of the prediction with links to the Istio sources it cites, the wire facts, the
attachments, and `critical` severity for a cleartext leak where the oracle said encrypted.

suites/runner.py calls these; the report build (reports/build.py) finds a cell's Allure page by its `cell` label.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import allure

from meshproof.scenario import differs_from_default
from reports.matrix import PA_MODES, WIRE_FACT_KEYS, dr_label, group_label, pa_label, position_of
from reports.suite_grids import GRIDS, SIDECARS
from reports.wire_classes import ENCRYPTED, MTLS, REFUSED, classify

CELL_LABEL = "cell"
# A cited file: "istio/istio pilot/pkg/.../cluster_tls.go Func" or "istio/api security/v1/....proto".
_CITED = re.compile(r"\b(istio/(?:istio|api))\s+([\w.-]+(?:/[\w.-]+)+\.(?:go|proto|md|yaml))")
_PATH = re.compile(r"(?<![\w/])((?:pilot|pkg|tests|security|networking|operator|manifests)/[\w./-]+\.(?:go|proto|md))")


def source_links(source: str, istio_version: str) -> list[tuple[str, str]]:
    """(name, URL) of every Istio file a rule's source cites, at the release branch of the predicted version.
    A path cited after a first one without its repository belongs to istio/istio (the oracle's convention)."""
    branch = f"release-{istio_version}" if istio_version else "master"
    found: dict[str, str] = {}
    for repo, path in _CITED.findall(source):
        found.setdefault(path, repo)
    for path in _PATH.findall(source):
        found.setdefault(path, "istio/api" if path.endswith(".proto") else "istio/istio")
    return [(f"{repo} {path} ({branch})", f"https://github.com/{repo}/blob/{branch}/{path}") for path, repo in found.items()]


def expected_words(prediction) -> str:
    """The expected result in a word or two: mTLS, other TLS, cleartext, 503, reset."""
    found = classify(prediction.outcome, prediction.wire)
    if found is REFUSED:
        return str(prediction.outcome)
    return "mTLS" if found is MTLS else found.label


def hierarchy(cell_id: str, tags: tuple[str, ...], description: str) -> tuple[str, str, str]:
    """(epic, feature, story) of a cell: Matrix › client → server sidecars › PeerAuthentication mode; other
    suites by their first id part (Scope, Ports, ...) › their second tag › the cell."""
    position = position_of(list(tags) or cell_id.split("/"))
    if position is not None:
        return ("Matrix", f"client {position.client.replace('-', ' ')} → server {position.server.replace('-', ' ')}",
                "no PeerAuthentication" if position.pa == "none" else f"PeerAuthentication {pa_label(position.pa)}")
    suite, _, rest = cell_id.partition("/")
    if suite in TAGGED_SUITES and len(tags) > 2:  # (suite, feature, story, ...): the app or destination, then
        return suite.title(), _FEATURES.get(tags[1], tags[1]), _STORIES.get(tags[2], f"port named {tags[2]}")
    kind = next((t for t in tags if t != suite), rest.split("-")[0] if rest else suite)
    return suite.replace("-", " ").title(), _feature(kind), description or rest or cell_id


_FEATURES = {"pa": "PeerAuthentication scope", "dr": "DestinationRule selection", "auto": "auto mTLS",
             "server": "server-side TLS",
             # ports: the app; destinations: how the server is addressed
             "httpbin": "httpbin (HTTP/1.1)", "tcp-echo": "TCP echo (client-first)",
             "banner": "banner (server-first TCP)", "https": "app TLS (httpbin behind its own TLS)",
             "service": "ClusterIP Service", "headless": "headless Service", "cluster-ip": "ClusterIP (VIP) itself",
             "pod-ip": "pod IP"}
# ports: the Service port's name (the default); destinations: the sidecars
_STORIES = SIDECARS
TAGGED_SUITES = tuple(grid.suite for grid in GRIDS)


def _feature(kind: str) -> str:
    """A tag as a feature name: "pa-strict" reads "PeerAuthentication STRICT"."""
    if kind.startswith("pa-") and kind.removeprefix("pa-") in PA_MODES:
        return f"PeerAuthentication {pa_label(kind.removeprefix('pa-'))}"
    return _FEATURES.get(kind, kind)


def title(cell_id: str, tags: tuple[str, ...], description: str, prediction=None) -> str:
    """e.g. "STRICT namespace, no DestinationRule: sidecar → sidecar ⇒ mTLS" (without "⇒ ..." before the
    prediction is known)."""
    position = position_of(list(tags) or cell_id.split("/"))
    if position is None:
        head = description or cell_id
    else:
        pa = "no PeerAuthentication" if position.pa == "none" else f"{pa_label(position.pa)} namespace"
        dr = "no DestinationRule" if position.dr == "none" else f"DestinationRule {dr_label(position.dr)}"
        head = f"{pa}, {dr}: {group_label(position.client, position.server)}"
    return head if prediction is None else f"{head} ⇒ {expected_words(prediction)}"


def describe(cell_id: str, scenario, tags: tuple[str, ...], mesh_name: str) -> None:
    """Before the cell deploys: where it sits, its title, its stable parameters."""
    description = str(scenario.extra.get("description") or "")
    epic, feature, story = hierarchy(cell_id, tags, description)
    allure.dynamic.epic(epic)
    allure.dynamic.feature(feature)
    allure.dynamic.story(story)
    allure.dynamic.title(title(cell_id, tags, description))
    allure.dynamic.label(CELL_LABEL, cell_id)
    # Stable parameters: the same cell lines up across runs and versions in Allure's history (the suites
    # parametrize by cell id only, so a cell's history key is its id, the mesh and the version).
    allure.dynamic.parameter("mesh", mesh_name)
    allure.dynamic.parameter("istio_version", scenario.istio_version)
    # The workload dimensions (meshproof/scenario.py DIMENSIONS) a cell sets away from their defaults; excluded
    # from the history key, which stays the cell id.
    for label, value in differs_from_default(scenario).items():
        allure.dynamic.parameter(label, value, excluded=True)
    allure.dynamic.tag(*tags)


def predicted(cell_id: str, scenario, tags: tuple[str, ...], prediction) -> None:
    """Once the oracle has spoken: the title says what it expects; the why and the cited sources."""
    allure.dynamic.title(title(cell_id, tags, str(scenario.extra.get("description") or ""), prediction))
    tls_source = (getattr(prediction, "tls", None) or {}).get("source", "")
    for name, url in source_links(f"{prediction.source}; {tls_source}", scenario.istio_version):
        allure.dynamic.link(url, name=name)
    allure.dynamic.description_html(description_html(cell_id, prediction, None, question=question_of(scenario)))


def question_of(scenario) -> str:
    """The question the cell asks (its `why`, suites/cells.py), which the report shows above the prediction."""
    return str(scenario.extra.get("why") or "")


def conclude(cell_id: str, prediction, result, verdict, question: str = "") -> None:
    """After the probe: the description gains the wire facts; a leak where mTLS was expected is critical."""
    allure.dynamic.description_html(description_html(cell_id, prediction, result, verdict, question))
    observed = classify(result.outcome, result.wire.verdict if result.wire else None)
    if classify(prediction.outcome, prediction.wire) in ENCRYPTED and observed.key == "cleartext":
        allure.dynamic.severity(allure.severity_level.CRITICAL)


def wire_facts(wire: dict | None) -> dict:
    """The facts of a wire verdict a reader wants beside the verdict: TLS version, ALPN, SNI, certificates."""
    wire = wire or {}
    return {key: wire.get(key) for key in WIRE_FACT_KEYS if key in wire}


def description_html(cell_id: str, prediction, result, verdict=None, question: str = "") -> str:
    esc = html.escape
    why = (f"<p><b>Question:</b> {esc(question)}</p>" if question else "") + (
           f"<p><b>Why:</b> {esc(prediction.reason)}</p>"
           f"<p><b>Prediction:</b> {esc(prediction.outcome)} (wire {esc(prediction.wire or 'none')}, peer "
           f"{esc(str(prediction.peer_identity))}) by rule <code>{esc(prediction.rule)}</code></p>"
           f"<p><b>Source:</b> {esc(prediction.source)}</p>")
    tls = {k: v for k, v in (getattr(prediction, "tls", None) or {}).items() if k != "source" and v is not None}
    if tls:
        why += "<p><b>Expected handshake:</b> " + esc(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in tls.items()))
        why += "</p>"
    if prediction.details:
        why += "<ol>" + "".join(f"<li>{esc(step)}</li>" for step in prediction.details) + "</ol>"
    if result is None:
        return why + f"<p><code>{esc(cell_id)}</code>: not probed yet.</p>"
    wire = _json(result.wire)
    rows = [("outcome", result.outcome), ("HTTP status", result.http_status), ("wire verdict", wire.get("verdict")),
            ("peer identity", result.peer_identity),
            *((key.replace("_", " "), _shown(value)) for key, value in wire_facts(wire).items()),
            ("Envoy failure detail", result.failure_detail)]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows if v not in (None, ""))
    outcome = "" if verdict is None else f"<p><b>Result:</b> {esc(verdict.message)}</p>"
    return (f"{why}<h4>Wire facts</h4><table class=\"wire-facts\" data-cell=\"{esc(cell_id)}\">{table}</table>"
            f"{outcome}")


def _shown(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _json(wire) -> dict:
    """A probes.verdict.WireVerdict as the dict records and pages show ({} without a capture)."""
    return wire.to_json() if wire else {}


def attach_wire(verdict) -> None:
    """The pcap itself and the flows the classifier read from it (verdict: a probes.verdict.WireVerdict)."""
    if not verdict:
        return
    wire = _json(verdict)
    pcap = wire.get("pcap")
    if pcap and Path(pcap).exists():
        allure.attach.file(pcap, "probe.pcap", "application/vnd.tcpdump.pcap", "pcap")
    allure.attach(json.dumps({k: v for k, v in wire.items() if k != "pcap"}, indent=1), "wire-flows.json",
                  allure.attachment_type.JSON)


def attach_diagnostics(folder: Path) -> None:
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            allure.attach.file(str(path), path.name, allure.attachment_type.TEXT)


def record(cell_id, tags, scenario, prediction, result, verdict, duration_ms, mesh_name, names) -> None:
    """The cell's line in the run's cell records (matrix picture, diff, conformance report). Identities are
    recorded in the scenario's namespaces, so cells of different runs (and upgrade-check legs) compare; the
    run's own names go along in observed.run."""
    from reports.cells import record_cell

    wire = _json(result.wire)
    record_cell(
        cell=cell_id, tags=list(tags), mesh=mesh_name, istio_version=scenario.istio_version,
        expected={"outcome": prediction.outcome, "wire": prediction.wire,
                  "peer_identity": names.normalise_identity(prediction.peer_identity)},
        observed={"outcome": result.outcome, "wire": wire.get("verdict"),
                  "peer_identity": names.normalise_identity(result.peer_identity),
                  "http_status": result.http_status, "failure_detail": result.failure_detail,
                  "wire_facts": wire_facts(wire),
                  "run": {"run_id": names.run_id, "namespaces": names.run_namespaces(),
                          "peer_identity": result.peer_identity}},
        rule=prediction.rule, passed=verdict.passed, category=verdict.category, message=verdict.message,
        duration_ms=round(duration_ms, 1), pcap=wire.get("pcap"),
    )
