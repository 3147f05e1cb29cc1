"""`meshproof upgrade-check`: is a candidate Istio revision safe to move workloads to?

With the current revision and a candidate installed side by side (a canary upgrade), the conformance cells
run in legs. Fresh pods: all workloads on the old revision (the baseline), all on the new one, and mixed both
ways (old client -> new server, new client -> old server). Then the steps of Istio's canary upgrade
(istio.io, setup/upgrade/canary), on pods created on one revision and moved in place by relabelling their
namespace and `kubectl rollout restart`: the server moved to the new revision first (data-plane skew old ->
new), both moved, and the rollback (server back first: skew new -> old, then both). With --allow-mesh-wide the
default tag moves too (`istioctl tag set default --revision <new>`, pods injected through it), and back.
Each leg is compared with the oracle (the cell's own verdict) and with the baseline; a regression exits 1:
  - a cell that passed in the baseline fails in the leg,
  - the wire got weaker than in the baseline (Istio mTLS before, anything else now),
  - a cell of the baseline did not run in the leg.
A cell whose result changed but still agrees with the oracle (a documented behaviour change of the new
version) is reported as a change, not a regression. The baseline may also be an earlier run (--baseline).
Identities are compared in the scenario's namespaces: each leg's pods live in run namespaces <ns>-<run>.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from reports.cells import CellRecord, CellsError, read_cells

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2
SUITES = {"matrix": "suites/test_matrix.py", "scope": "suites/test_scope.py"}


@dataclass(frozen=True)
class Leg:
    name: str
    client_revision: str  # what the pods are created on ("" = the default tag's injection)
    server_revision: str
    istio_version: str  # the minor the oracle predicts for
    client_to: str = ""  # canary legs: the revision the client is then moved to in place
    server_to: str = ""
    default_tag: str = ""  # canary legs: `istioctl tag set default --revision` this before the leg


def legs(old_rev: str, new_rev: str, old_version: str, new_version: str, tags: bool = False) -> list[Leg]:
    """Fresh-pod legs, then the canary upgrade's steps and its rollback (in place); the default tag's move
    and its return when `tags` (a mesh-wide change). Mixed legs are predicted with the newer minor: the rules
    the oracle knows to differ by version are the candidate's to honour."""
    moved = [Leg("old", old_rev, old_rev, old_version), Leg("new", new_rev, new_rev, new_version),
             Leg("old-client-new-server", old_rev, new_rev, new_version),
             Leg("new-client-old-server", new_rev, old_rev, new_version),
             Leg("canary-server-moved", old_rev, old_rev, new_version, server_to=new_rev),
             Leg("canary-both-moved", old_rev, old_rev, new_version, client_to=new_rev, server_to=new_rev),
             Leg("rollback-server-moved", new_rev, new_rev, new_version, server_to=old_rev),
             Leg("rollback-both-moved", new_rev, new_rev, old_version, client_to=old_rev, server_to=old_rev)]
    if tags:
        moved += [Leg("default-tag-on-new", "", "", new_version, default_tag=new_rev),
                  Leg("default-tag-back-on-old", "", "", old_version, default_tag=old_rev)]
    return moved


@dataclass(frozen=True)
class Finding:
    leg: str
    cell: str
    kind: str  # "regression" | "change" | "oracle"
    detail: str


def normalised(record: CellRecord) -> CellRecord:
    """The record with its identities in the scenario's namespaces. The suites record them so already;
    a record that carries its run's names (observed.run.run_id) with run-suffixed identities, e.g. an
    earlier run given as --baseline, is brought there with the same mapping (meshproof/namespaces.py)."""
    from meshproof.namespaces import RunNamespaces

    run_id = (record.observed.get("run") or {}).get("run_id")
    if not run_id:
        return record
    names = RunNamespaces(run_id)
    return replace(record, **{side: {**values, "peer_identity": names.normalise_identity(values.get("peer_identity"))}
                              for side, values in (("expected", record.expected), ("observed", record.observed))})


def compare_leg(leg: str, baseline: list[CellRecord], records: list[CellRecord]) -> list[Finding]:
    """Findings of one leg against the baseline and against the oracle, cell by cell (sorted by cell)."""
    base = {r.cell: normalised(r) for r in baseline}
    now = {r.cell: normalised(r) for r in records}
    found = []
    for cell in sorted(set(base) | set(now)):
        b, n = base.get(cell), now.get(cell)
        if n is None:
            found.append(Finding(leg, cell, "regression", "ran in the baseline but not in this leg"))
            continue
        if not n.passed:
            found.append(Finding(leg, cell, "oracle", n.message or _proofs(n)))
        if b is None:
            continue
        was, is_ = b.observed.get("wire"), n.observed.get("wire")
        if b.passed and not n.passed:
            found.append(Finding(leg, cell, "regression", f"passed in the baseline, fails now: {_proofs(n)}"))
        elif was == "mtls" and is_ not in ("mtls", None):
            found.append(Finding(leg, cell, "regression", f"wire was Istio mTLS in the baseline, now {is_}"))
        elif b.proof("observed") != n.proof("observed"):
            found.append(Finding(leg, cell, "change", f"{_proofs(b)} -> {_proofs(n)}"))
    return found


def regressions(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.kind == "regression"]


def _proofs(record: CellRecord) -> str:
    outcome, wire, identity = record.proof("observed")
    return f"outcome={outcome} wire={wire} identity={identity}"


def markdown(old_rev: str, new_rev: str, counts: dict[str, int], findings: list[Finding]) -> str:
    lines = [f"# upgrade-check: {old_rev} -> {new_rev}", "",
             "| leg | cells | regressions | changes | oracle differences |", "|---|---|---|---|---|"]
    for leg, cells in counts.items():
        of_leg = [f for f in findings if f.leg == leg]
        lines.append(f"| {leg} | {cells} | " + " | ".join(
            str(sum(1 for f in of_leg if f.kind == kind)) for kind in ("regression", "change", "oracle")) + " |")
    for kind, title in (("regression", "Regressions"), ("change", "Changes that agree with the oracle"),
                        ("oracle", "Cells that differ from the oracle")):
        chosen = [f for f in findings if f.kind == kind]
        if chosen:
            lines += ["", f"## {title}", "", "| leg | cell | detail |", "|---|---|---|"]
            lines += [f"| {f.leg} | `{f.cell}` | {f.detail.replace('|', '/')} |" for f in chosen]
    verdict = "REGRESSION" if regressions(findings) else "no regression"
    return "\n".join(lines + ["", f"**{verdict}**", ""])


# --- running the legs on a cluster ----------------------------------------------------------------

def run(args) -> int:
    """The CLI command; raises meshproof.cli.UsageError on bad input or a missing prerequisite."""
    from meshproof.errors import UsageError

    if getattr(args, "mesh", "kube") != "kube":
        raise UsageError("upgrade-check runs on a cluster: use --mesh kube")
    if args.old_revision == args.new_revision:
        raise UsageError(f"--old-revision and --new-revision are both {args.old_revision!r}; give two revisions")
    unknown = [s for s in args.suites.split(",") if s not in SUITES]
    if unknown:
        raise UsageError(f"--suites {','.join(unknown)}: allowed: {', '.join(SUITES)}")
    baseline_records = None
    if args.baseline:
        try:
            baseline_records = read_cells(args.baseline)
        except CellsError as err:
            raise UsageError(f"--baseline: {err}") from None
    planes = _planes(args)
    versions = _revision_versions(planes, [args.old_revision, args.new_revision])
    tags = bool(getattr(args, "allow_mesh_wide", False))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    merged = out / "allure-results"
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir()
    counts: dict[str, int] = {}
    findings: list[Finding] = []
    leg_records: dict[str, list[CellRecord]] = {}
    tag_was = default_tag_revision(args) if tags else ""
    try:
        for leg in legs(args.old_revision, args.new_revision, versions[args.old_revision],
                        versions[args.new_revision], tags):
            if leg.default_tag:
                set_default_tag(args, leg.default_tag, planes[leg.default_tag].version)
            leg_dir = out / leg.name
            shutil.rmtree(leg_dir, ignore_errors=True)
            _run_leg(args, leg, leg_dir)
            try:
                records = read_cells(leg_dir / "cells")
            except CellsError as err:
                raise UsageError(f"leg {leg.name} recorded no cells: {err}") from None
            leg_records[leg.name] = records
            counts[leg.name] = len(records)
            _merge_allure(leg_dir / "allure-results", merged, leg)
    finally:
        if tag_was:  # the default tag goes back where it was, whatever happened
            set_default_tag(args, tag_was, planes[tag_was].version)
    baseline = baseline_records if baseline_records is not None else leg_records["old"]
    for name, records in leg_records.items():
        if name == "old" and baseline_records is None:
            findings += [f for f in compare_leg(name, records, records) if f.kind == "oracle"]
        else:
            findings += compare_leg(name, baseline, records)
    text = markdown(args.old_revision, args.new_revision, counts, findings)
    (out / "upgrade-check.md").write_text(text)
    (out / "upgrade-check.json").write_text(json.dumps(
        {"old_revision": args.old_revision, "new_revision": args.new_revision, "versions": versions,
         "cells": counts, "findings": [asdict(f) for f in findings]}, indent=1))
    _allure_summary(merged, text, bool(regressions(findings)))
    print(text)
    return EXIT_REGRESSION if regressions(findings) else EXIT_OK


def _planes(args) -> dict:
    """revision -> ControlPlane of the cluster."""
    from cluster.kube.client import connect
    from cluster.kube.inspect import control_planes

    cluster = connect(args.kubeconfig, args.context)
    try:
        return {p.revision: p for p in control_planes(cluster)}
    finally:
        cluster.api.close()


def default_tag_revision(args) -> str:
    """The revision the default tag points at: the istio.io/rev of the tag's injector webhook, which
    `istioctl tag set` labels istio.io/tag=default (istioctl/pkg/tag, release-1.28..1.30)."""
    from cluster.kube.client import connect
    from meshproof.errors import UsageError

    cluster = connect(args.kubeconfig, args.context)
    try:
        hooks = cluster.admission.list_mutating_webhook_configuration(label_selector="istio.io/tag=default").items
    finally:
        cluster.api.close()
    revisions = {(h.metadata.labels or {}).get("istio.io/rev") for h in hooks} - {None}
    if len(revisions) != 1:
        raise UsageError("--allow-mesh-wide moves the default tag, but the cluster has "
                         + (f"several default tags ({', '.join(sorted(revisions))})" if revisions else "none")
                         + "; create it with: istioctl tag set default --revision <current revision>")
    return revisions.pop()


def tag_command(istioctl: str, args, revision: str) -> list[str]:
    """As cluster/kind/up.sh runs it; --overwrite moves an existing tag."""
    return ([istioctl, "tag", "set", "default", "--revision", revision, "--overwrite"]
            + (["--kubeconfig", args.kubeconfig] if args.kubeconfig else [])
            + (["--context", args.context] if args.context else []))


def set_default_tag(args, revision: str, version: str) -> None:
    from cluster.kube.diagnostics import find_istioctl
    from meshproof.errors import UsageError

    istioctl = find_istioctl([version])
    if not istioctl:
        raise UsageError(f"moving the default tag needs istioctl {version} (make kind-up fetches it; or set "
                         "MESHPROOF_ISTIOCTL)")
    print(f"upgrade-check: default tag -> {revision}", flush=True)
    done = subprocess.run(tag_command(istioctl, args, revision), check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(f"istioctl tag set default --revision {revision} failed: {(done.stderr or done.stdout)[-500:]}")


def _revision_versions(planes: dict, revisions: list[str]) -> dict[str, str]:
    from meshproof.errors import UsageError
    from meshproof.scenario import SUPPORTED_ISTIO_VERSIONS

    versions = {}
    for rev in revisions:
        if rev not in planes:
            raise UsageError(f"revision {rev!r} is not installed; installed: {', '.join(sorted(planes)) or 'none'}")
        minor = ".".join(planes[rev].version.split(".")[:2])
        if minor not in SUPPORTED_ISTIO_VERSIONS:
            raise UsageError(f"revision {rev} runs Istio {planes[rev].version}; the oracle knows "
                             f"{', '.join(SUPPORTED_ISTIO_VERSIONS)}")
        versions[rev] = minor
    return versions


def leg_command(args, leg: Leg, leg_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The pytest command and environment of one leg: namespace-scoped cells only (a mesh-wide cell would
    change the other legs' workloads too), cell records and Allure results in the leg's own folder."""
    from cluster.kube.backend import (
        CLIENT_REVISION_ENV,
        MIGRATE_CLIENT_ENV,
        MIGRATE_SERVER_ENV,
        SERVER_REVISION_ENV,
    )

    command = [sys.executable, "-m", "pytest", *(SUITES[s] for s in args.suites.split(",")),
               "--mesh", "kube", "--istio-version", leg.istio_version, "-p", "no:cacheprovider",
               "--alluredir", str(leg_dir / "allure-results"), "--junitxml", str(leg_dir / "junit.xml"),
               "-m", "not mesh_wide", "-n", str(args.workers)]
    command += ["--kubeconfig", args.kubeconfig] if args.kubeconfig else []
    command += ["--context", args.context] if args.context else []
    command += [] if args.capture else ["--no-wire-capture"]
    env = dict(os.environ, MESHPROOF_CELLS_DIR=str(leg_dir / "cells"),
               **{CLIENT_REVISION_ENV: leg.client_revision, SERVER_REVISION_ENV: leg.server_revision,
                  MIGRATE_CLIENT_ENV: leg.client_to, MIGRATE_SERVER_ENV: leg.server_to})
    return command, env


def _run_leg(args, leg: Leg, leg_dir: Path) -> None:
    from meshproof.errors import UsageError

    command, env = leg_command(args, leg, leg_dir)
    print(f"upgrade-check: leg {leg.name} (client {leg.client_revision or 'default tag'}"
          + (f" -> {leg.client_to}" if leg.client_to else "")
          + f", server {leg.server_revision or 'default tag'}" + (f" -> {leg.server_to}" if leg.server_to else "")
          + f", oracle {leg.istio_version})", flush=True)
    code = subprocess.run(command, env=env, check=False).returncode
    if code not in (0, 1):  # 1 = some cells failed, which the diff reports; anything else is the harness
        raise UsageError(f"leg {leg.name}: pytest exited {code} ({' '.join(command)})")


def _merge_allure(source: Path, target: Path, leg: Leg) -> None:
    """Copy one leg's Allure results, made distinct per leg so the report shows the legs side by side."""
    if not source.is_dir():
        return
    for path in source.iterdir():
        if not path.name.endswith("-result.json"):
            shutil.copy2(path, target / path.name)  # attachments keep their unique names
            continue
        result = json.loads(path.read_text())
        result["parameters"] = [*result.get("parameters", []), {"name": "revisions", "value": leg_revisions(leg)}]
        result["labels"] = [lab for lab in result.get("labels", []) if lab.get("name") != "parentSuite"] + \
            [{"name": "parentSuite", "value": f"upgrade leg {leg.name}"}]
        for key in ("historyId", "testCaseId"):
            if key in result:
                result[key] = hashlib.md5(f"{result[key]}/{leg.name}".encode()).hexdigest()
        (target / f"{leg.name}-{path.name}").write_text(json.dumps(result))


def leg_revisions(leg: Leg) -> str:
    """client -> server revisions of a leg, with in-place moves and the default tag spelled out."""
    def side(created: str, moved: str) -> str:
        return (created or f"default tag ({leg.default_tag})") + (f" moved to {moved}" if moved else "")
    return f"{side(leg.client_revision, leg.client_to)} -> {side(leg.server_revision, leg.server_to)}"


def _allure_summary(target: Path, text: str, regressed: bool) -> None:
    """One Allure test carrying the diff, failed when there is a regression."""
    attachment = f"{uuid.uuid4()}-attachment.md"
    (target / attachment).write_text(text)
    result = {"uuid": str(uuid.uuid4()), "name": "upgrade-check: diff of the legs",
              "fullName": "meshproof.upgrade-check", "historyId": hashlib.md5(b"upgrade-check").hexdigest(),
              "status": "failed" if regressed else "passed", "stage": "finished",
              "statusDetails": {"message": "regression (see the diff)" if regressed else "no regression"},
              "attachments": [{"name": "upgrade-check.md", "source": attachment, "type": "text/markdown"}],
              "labels": [{"name": "parentSuite", "value": "upgrade-check"}], "parameters": []}
    (target / f"{result['uuid']}-result.json").write_text(json.dumps(result))
