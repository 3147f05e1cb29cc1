"""`meshproof audit --verify` on the local reference mesh (root): every predicted pair of examples/audit is
observed as predicted, and a prediction made wrong on purpose is reported as differing with exit 1."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from cluster.factory import open_backend
from meshproof import cli
from meshproof.audit import pairs as audit_pairs
from meshproof.audit.manifests import read_manifests
from meshproof.audit.verify import summary, verify
from meshproof.vocabulary import Outcome, Wire

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "audit" / "mesh"

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")]


def test_every_predicted_pair_of_the_example_agrees():
    pairs, predictor = audit_pairs.audit(read_manifests(EXAMPLE))
    with open_backend(argparse.Namespace(mesh="local")) as mesh:
        checked = verify(pairs, predictor, mesh)
    predicted = [c for c in checked if c.pair.prediction is not None]
    assert predicted and all(c.not_verifiable is None for c in predicted)
    assert [c.verdict.message for c in predicted if not c.agrees] == []
    # the unknown-sidecar pairs are named, never counted as verified
    unknown = [c for c in checked if c.pair.prediction is None]
    assert unknown and all("sidecar status" in c.not_verifiable for c in unknown)
    assert summary(checked) == f"{len(predicted)} pairs verified: {len(predicted)} agree, 0 differ, " \
                               f"{len(unknown)} not verifiable"
    # each outcome the example has was observed, wire included: mTLS, cleartext, the STRICT reset and the
    # server-first database behind PERMISSIVE's TLS inspector (nothing sent: timeout)
    assert {(c.observed.outcome, c.observed_wire) for c in predicted} == {
        ("mtls", "mtls"), ("plaintext", "plaintext"), ("reset", "plaintext"), ("timeout", "none")}


def test_a_wrong_prediction_differs_and_exits_1(monkeypatch, capsys, tmp_path):
    real = audit_pairs.expect

    def wrong_for_ledger_9090(scenario):
        found = real(scenario)
        if scenario.server.service_port == 9090 and found.outcome == Outcome.MTLS:
            return replace(found, outcome=Outcome.PLAINTEXT, wire=Wire.PLAINTEXT, peer_identity=None, tls=None)
        return found

    monkeypatch.setattr(audit_pairs, "expect", wrong_for_ledger_9090)
    code = cli.main(["audit", "--from-manifests", str(EXAMPLE), "--to", "payments/ledger", "--from", "frontend",
                     "--from", "batch", "--verify", "--json", str(tmp_path / "audit.json")])
    out = capsys.readouterr().out
    assert code == 1
    assert ("differs frontend/web -> payments/ledger:9090 (payments/ledger): expected plaintext (wire plaintext), "
            "observed mtls (wire mtls)") in out
    assert "agrees frontend/web -> payments/ledger:8080" in out
    assert "agrees batch/cron-reporter -> payments/ledger:9090" in out
    assert "4 pairs verified: 3 agree, 1 differ (frontend/web -> payments/ledger:9090), 0 not verifiable" in out
    written = json.loads((tmp_path / "audit.json").read_text())
    differing = [v for v in written["verification"] if not v["agrees"]]
    assert [(v["client"], v["service"], v["expected"], v["observed"]["outcome"], v["observed"]["wire"])
            for v in differing] == [("frontend/web", "payments/ledger:9090",
                                     {"outcome": "plaintext", "wire": "plaintext"}, "mtls", "mtls")]
    assert Path(differing[0]["observed"]["pcap"]).is_file()  # the wire proof is kept


def test_what_if_verify_checks_the_changed_mesh_by_traffic(capsys, tmp_path):
    """`what-if --verify` deploys the mesh as the change leaves it: the pairs it says break are seen breaking,
    and exit 1 follows from the breaks even when every prediction agrees."""
    out = tmp_path / "what-if.json"
    code = cli.main(["what-if", "--from-manifests", str(EXAMPLE), "--strict", "payments", "--from", "batch",
                     "--from", "payments", "--to", "payments/api", "--verify", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "breaks 1 pair:" in printed and "batch/cron-reporter has no sidecar -> reset" in printed
    assert "agrees batch/cron-reporter -> payments/api:8080 (payments/api): expected reset (wire plaintext), " \
           "observed reset (wire plaintext)" in printed
    written = json.loads(out.read_text())
    after = written["verification_after_change"]
    assert after["verified"] == "3 pairs verified: 3 agree, 0 differ, 0 not verifiable"
    assert {(p["client"], p["observed"]["outcome"], p["observed"]["wire"]) for p in after["pairs"]} == {
        ("batch/cron-reporter", "reset", "plaintext"), ("payments/api", "mtls", "mtls"),
        ("payments/ledger", "mtls", "mtls")}


def test_what_if_verify_reports_a_wrong_prediction_of_the_change(monkeypatch, capsys):
    """A prediction of the changed mesh made wrong on purpose (the break predicted as plaintext) differs: the
    change that breaks nothing on paper still exits 1, because the traffic disagrees."""
    real = audit_pairs.expect

    def hides_the_break(scenario):
        found = real(scenario)
        if not scenario.client.sidecar and found.outcome == Outcome.RESET:
            return replace(found, outcome=Outcome.PLAINTEXT, wire=Wire.PLAINTEXT, peer_identity=None, tls=None)
        return found

    monkeypatch.setattr(audit_pairs, "expect", hides_the_break)
    code = cli.main(["what-if", "--from-manifests", str(EXAMPLE), "--strict", "payments", "--from", "batch",
                     "--to", "payments/api", "--verify"])
    printed = capsys.readouterr().out
    assert "breaks 0 pairs" in printed
    assert "differs batch/cron-reporter -> payments/api:8080" in printed
    assert code == 1
