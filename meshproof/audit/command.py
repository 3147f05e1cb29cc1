"""The `meshproof audit` and `meshproof what-if` commands: options, sources, output, exit codes."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from meshproof.errors import UsageError
from meshproof.scenario import DEFAULT_ISTIO_VERSION, DEFAULT_ROOT_NAMESPACE, check_istio_version

EXIT_OK, EXIT_BREAKS, EXIT_USAGE = 0, 1, 2


def add_source_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-manifests", metavar="DIR",
                        help="a folder of manifests: multi-document YAML, `kubectl get -A -o yaml` dumps, "
                             "nested folders (read offline)")
    source.add_argument("--from-cluster", action="store_true",
                        help="a live cluster, read-only (list calls; meshproof/audit/clusterrole.yaml)")
    parser.add_argument("--kubeconfig", help="kubeconfig file for --from-cluster (default: usual resolution)")
    parser.add_argument("--context", help="kubeconfig context for --from-cluster")
    parser.add_argument("--root-namespace",
                        help="the mesh config's rootNamespace (default: the cluster's mesh config with "
                             f"--from-cluster, else {DEFAULT_ROOT_NAMESPACE})")
    parser.add_argument("--istio-version", default=DEFAULT_ISTIO_VERSION, help="the Istio minor to predict for")
    parser.add_argument("--from", dest="from_", action="append", metavar="NS[/LABEL=VALUE]",
                        help="only clients of this namespace (and label); repeatable")
    parser.add_argument("--to", action="append", metavar="NS[/SERVICE]",
                        help="only Services of this namespace (or this Service); repeatable")
    parser.add_argument("--json", metavar="FILE", help="also write the pairs as JSON here")


def add_audit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", dest="every_pair", action="store_true",
                        help="list every pair in the table (by default a mesh of more than 300 pairs shows the "
                             "ones not in mTLS)")
    parser.add_argument("--picture", metavar="DIR",
                        help="also write the matrix picture here: audit-matrix.html and audit-matrix.png")
    parser.add_argument("--verify", action="store_true",
                        help="(root) deploy each predicted pair on the local reference mesh and check the "
                             "prediction by traffic with wire proof; exit 1 if any pair differs. Pairs are "
                             "deployed one at a time and reused by shape: at most 4 pods at once, so it is "
                             "bounded by time, not memory (examples/audit: see the README)")


def add_parsers(sub) -> None:
    audit_parser = sub.add_parser("audit", help="predict, for every client workload x Service port of a mesh's "
                                                "manifests, whether it is mTLS, cleartext or broken")
    add_source_options(audit_parser)
    add_audit_options(audit_parser)
    what_if = sub.add_parser("what-if", help="what a proposed change does to every pair; exit 1 if any breaks")
    add_source_options(what_if)
    what_if.add_argument("--apply", action="append", metavar="FILE",
                         help="PeerAuthentications / DestinationRules to apply (a file or folder); repeatable")
    what_if.add_argument("--strict", action="append", metavar="NAMESPACE",
                         help="switch this namespace's PeerAuthentication to STRICT; repeatable")
    what_if.add_argument("--strict-mesh", action="store_true", help="switch the mesh-wide PeerAuthentication to STRICT")
    what_if.add_argument("--verify", action="store_true",
                         help="(root) deploy each pair as the change leaves it on the local reference mesh and check "
                              "the prediction by traffic with wire proof; exit 1 if any pair breaks or differs")


def _load(args):
    """(inventory, filters, Istio version); sets args.root_namespace when it was left to the source."""
    from meshproof.audit.pairs import Filters

    version = check_istio_version(args.istio_version, "command line", "--istio-version")
    filters = Filters.parse(args.from_, args.to)
    if args.from_cluster:
        from cluster.kube.client import connect
        from meshproof.audit.live import read_cluster

        cluster = connect(args.kubeconfig, args.context)
        try:
            inv, root = read_cluster(cluster.api, f"cluster {cluster.context or cluster.server}")
        finally:
            cluster.api.close()
        args.root_namespace = args.root_namespace or root or DEFAULT_ROOT_NAMESPACE
        return inv, filters, version
    from meshproof.audit.manifests import read_manifests

    if not Path(args.from_manifests).is_dir():
        raise UsageError(f"--from-manifests {args.from_manifests}: not a folder")
    args.root_namespace = args.root_namespace or DEFAULT_ROOT_NAMESPACE
    return read_manifests(args.from_manifests), filters, version


def run_audit(args) -> int:
    from rich.console import Console

    from meshproof.audit import render
    from meshproof.audit.pairs import audit

    inv, filters, version = _load(args)
    pairs, predictor = audit(inv, args.root_namespace, version, filters)
    console = Console()
    render.print_audit(pairs, inv, console, args.every_pair)
    if args.json:
        render.write_json(args.json, pairs, inv, {"oracle_calls": predictor.oracle_calls})
    if args.picture:
        from reports.audit_matrix import write_picture

        for path in write_picture(pairs, render.summary(pairs), render.summary(pairs, lists=False), args.picture):
            console.print(f"wrote {path}", highlight=False)
    if args.verify:
        return _verify(args, pairs, predictor, inv, console)
    return EXIT_OK


def _verify(args, pairs, predictor, inv, console, json_key: str = "") -> int:
    """Check `pairs` by traffic on the local mesh; with --json, add what was observed to the file (audit: the
    pairs file rewritten; what-if: `json_key` added to the changes file)."""
    from cluster.factory import open_backend
    from meshproof.audit import render
    from meshproof.audit.verify import print_verified, summary, verify

    console.print("verifying on the local reference mesh ...", highlight=False)
    with open_backend(argparse.Namespace(mesh="local")) as mesh:
        checked = verify(pairs, predictor, mesh)
    print_verified(checked, console)
    if args.json and json_key:
        written = json.loads(Path(args.json).read_text())
        written[json_key] = {"verified": summary(checked), "pairs": [c.to_json() for c in checked]}
        Path(args.json).write_text(json.dumps(written, indent=1) + "\n")
    elif args.json:  # the same file, now with what the traffic showed
        render.write_json(args.json, pairs, inv, {"oracle_calls": predictor.oracle_calls, "verified": summary(checked),
                                                  "verification": [c.to_json() for c in checked]})
    return EXIT_BREAKS if any(c.verdict is not None and not c.agrees for c in checked) else EXIT_OK


def run_what_if(args) -> int:
    from rich.console import Console

    from meshproof.audit import render, whatif
    from meshproof.audit.pairs import audit

    inv, filters, version = _load(args)
    changed, said = inv, []
    for path in args.apply or []:
        changed, sentence = whatif.apply_file(changed, path)
        said.append(sentence)
    for namespace in args.strict or []:
        changed, sentence = whatif.strict(changed, namespace)
        said.append(f"switching namespace {namespace} to STRICT ({sentence})")
    if args.strict_mesh:
        changed, sentence = whatif.strict(changed, args.root_namespace, must_exist=False)
        said.append(f"switching the mesh to STRICT ({sentence})")
    if not said:
        raise UsageError("what-if needs a change: --apply FILE, --strict NAMESPACE or --strict-mesh")
    before, _ = audit(inv, args.root_namespace, version, filters)
    after, predictor_after = audit(changed, args.root_namespace, version, filters)
    changes = whatif.compare(before, after)
    console = Console()
    for line in render.warnings(inv):
        console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    counts = Counter(c.kind for c in changes)
    breaks = [c for c in changes if c.kind == "breaks"]
    console.print(f"{'; '.join(said)} breaks {counts['breaks']} pair{'s' if counts['breaks'] != 1 else ''}"
                  + (":" if breaks else ""), highlight=False, soft_wrap=True)
    for c in breaks:
        console.print(f"  {c.after.client.ref} -> {c.after.port.ref}: {c.why()}", highlight=False, soft_wrap=True)
    for kind, title in (("encrypts", "become encrypted"), ("fixes", "are no longer broken"),
                        ("stays-cleartext", "stay in cleartext"), ("unknown", "cannot be predicted")):
        chosen = [c for c in changes if c.kind == kind]
        if chosen:
            console.print(f"{len(chosen)} pair{'s' if len(chosen) != 1 else ''} {title}:", highlight=False)
            for c in chosen:
                console.print(f"  {c.after.client.ref} -> {c.after.port.ref}: {c.why()}", highlight=False,
                              soft_wrap=True)
    console.print(f"{len(changes)} pairs: {counts['breaks']} break, {counts['encrypts']} become encrypted, "
                  f"{counts['fixes']} fixed, {counts['stays-cleartext']} stay cleartext, "
                  f"{counts['unchanged']} unchanged, {counts['unknown']} not predicted", highlight=False)
    if args.json:
        Path(args.json).write_text(json.dumps({"change": said, "counts": dict(counts),
                                               "changes": [c.to_json() for c in changes]}, indent=1) + "\n")
    if args.verify:
        # The prediction that gates a change is the one after it: deploy the changed mesh and check that.
        console.print("the mesh after the change:", highlight=False)
        differs = _verify(args, after, predictor_after, changed, console, json_key="verification_after_change")
        return EXIT_BREAKS if breaks or differs == EXIT_BREAKS else EXIT_OK
    return EXIT_BREAKS if breaks else EXIT_OK
