"""`meshproof` command line: expect, probe, clean, doctor, diff, upgrade-check, audit, what-if.

Exit codes: 0 the command ran (whatever the mesh did), 2 bad input or a missing prerequisite, 1 a
comparison found a difference (diff, upgrade-check) or a proposed change breaks a pair (what-if).
"""

from __future__ import annotations

import argparse
import json
import sys

from meshproof.errors import UsageError
from meshproof.istio_api import ManifestError

EXIT_OK, EXIT_DIFFERENT, EXIT_USAGE = 0, 1, 2


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mesh", choices=("local", "kube"), default="local", help="mesh target (default: local)")
    parser.add_argument("--kubeconfig", help="kubeconfig file for --mesh kube (default: usual resolution)")
    parser.add_argument("--context", help="kubeconfig context for --mesh kube")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshproof", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    expect = sub.add_parser("expect", help="print what Istio does for a scenario (the oracle)")
    expect.add_argument("scenario", nargs="?", help="scenario YAML file")
    expect.add_argument("--matrix", action="store_true", help="print the default matrix with predictions")
    expect.add_argument("--istio-version", help="override the scenario's istio_version")
    expect.add_argument("--write-tables", action="store_true",
                        help="regenerate suites/expected/<minor>.yaml, every suite's predictions per supported minor")
    expect.add_argument("--check-tables", action="store_true",
                        help="exit 1 naming the tables in suites/expected/ that differ from the oracle")
    expect.add_argument("--tables-dir", help="where the expected tables are (default: suites/expected)")

    probe = sub.add_parser("probe", help="deploy a scenario on a mesh, send one request, print what happened")
    probe.add_argument("scenario", nargs="?", help="scenario YAML file")
    probe.add_argument("--matrix", action="store_true",
                       help="with --mesh kube --dry-run: the co-deployed matrix (every cell in one deployment)")
    probe.add_argument("--no-capture", dest="capture", action="store_false", help="skip the wire capture")
    probe.add_argument("--dry-run", action="store_true",
                       help="kube: print, in order, the objects the run would create (YAML); contact no cluster")
    probe.add_argument("--allow-mesh-wide", action="store_true",
                       help="kube: allow root-namespace (mesh-wide) policies")
    _add_cluster_options(probe)

    clean = sub.add_parser("clean", help="remove what an interrupted run left behind")
    _add_cluster_options(clean)

    doctor = sub.add_parser("doctor", help="check the prerequisites of a mesh target")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    _add_cluster_options(doctor)

    diff = sub.add_parser("diff", help="cell-by-cell difference of two result sets")
    diff.add_argument("results_a")
    diff.add_argument("results_b")
    diff.add_argument("--out", help="write markdown (.md) or HTML (.html) here too")

    upgrade = sub.add_parser("upgrade-check", help="run the cells on an old and a new Istio revision and mixed; "
                                                   "exit 1 on a regression")
    upgrade.add_argument("--old-revision", required=True, help="istio.io/rev of the current control plane")
    upgrade.add_argument("--new-revision", required=True, help="istio.io/rev of the candidate control plane")
    upgrade.add_argument("--baseline", help="cell results of an earlier run to diff against (default: the old leg)")
    upgrade.add_argument("--suites", default="matrix", help="comma-separated: matrix, scope (default: matrix)")
    upgrade.add_argument("--out", default="reports/out/upgrade", help="results, diff and report folder")
    upgrade.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per leg (default: 2)")
    upgrade.add_argument("--no-wire-capture", dest="capture", action="store_false", help="skip the wire capture")
    upgrade.add_argument("--allow-mesh-wide", action="store_true",
                         help="also move the default tag to the new revision and back (istioctl tag set)")
    _add_cluster_options(upgrade)
    upgrade.set_defaults(mesh="kube")

    from meshproof.audit.command import add_parsers
    add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ManifestError, UsageError) as err:
        print(f"meshproof {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"meshproof {args.command}: interrupted", file=sys.stderr)
        return 130


def _expect(args) -> int:
    from meshproof.scenario import load_scenario
    from suites import expectations, matrix

    if args.matrix:
        print(json.dumps(matrix.matrix_predictions(args.istio_version), indent=1))
        return EXIT_OK
    if args.write_tables or args.check_tables:
        return _tables(args.write_tables, args.tables_dir)
    if not args.scenario:
        raise UsageError("give a scenario file or --matrix")
    scenario = load_scenario(args.scenario)
    if args.istio_version:
        from dataclasses import replace

        from meshproof.scenario import check_istio_version
        version = check_istio_version(args.istio_version, "command line", "--istio-version")
        scenario = replace(scenario, istio_version=version)
    print(json.dumps(expectations.expect(scenario).to_json()))
    return EXIT_OK


def _tables(write: bool, directory: str | None) -> int:
    from pathlib import Path

    from reports import expected_tables

    folder = Path(directory) if directory else expected_tables.TABLES_DIR
    if write:
        changed = expected_tables.write_tables(folder)
        print("\n".join(f"wrote {path}" for path in changed) or "tables already match the oracle")
        return EXIT_OK
    stale = expected_tables.stale_tables(folder)
    for line in stale:
        print(line)
    if stale:
        print(f"regenerate with: {expected_tables.REGENERATE}")
    return EXIT_DIFFERENT if stale else EXIT_OK


def _probe(args) -> int:
    from cluster.factory import open_backend
    from meshproof.scenario import load_scenario

    if args.matrix:
        if not args.dry_run or args.scenario:
            raise UsageError("--matrix shows the co-deployed matrix: use it with --mesh kube --dry-run, "
                             "without a scenario file")
        return _dry_run(args, None)
    if not args.scenario:
        raise UsageError("probe needs a scenario YAML file (or --matrix with --dry-run)")
    scenario = load_scenario(args.scenario)  # bad input fails before anything is created
    if args.dry_run:
        return _dry_run(args, scenario)
    with open_backend(args) as backend:
        handle = backend.deploy(scenario)
        try:
            result = backend.probe(handle, capture=args.capture)
        finally:
            backend.teardown(handle)
    print(json.dumps(result.to_json()))
    return EXIT_OK


def _dry_run(args, scenario) -> int:
    import yaml

    from cluster.kube.backend import KubeBackend

    if args.mesh != "kube":
        raise UsageError("--dry-run shows what a run on a cluster would create: use it with --mesh kube")
    if scenario is None:
        from meshproof.codeploy import plan
        from meshproof.scenario import scenario_from_dict
        from suites.matrix import matrix_scenarios

        matrix, _ = plan([(c, scenario_from_dict(d, c)) for c, d in matrix_scenarios()])
        calls = KubeBackend.from_options(args).dry_run_plan(matrix)
    else:
        calls = KubeBackend.from_options(args).dry_run(scenario, capture=args.capture)
    print(f"# meshproof probe --dry-run {args.scenario or '--matrix'}: what a kube run creates, in this order. Nothing was "
          "sent to a cluster;\n# the run id and pod names are chosen when it runs.")
    for index, (request, doc) in enumerate(calls, 1):
        print(f"---\n# {index}. {request}\n" + yaml.safe_dump(doc, sort_keys=False), end="")
    return EXIT_OK


def _clean(args) -> int:
    from cluster.factory import clean_leftovers

    removed = clean_leftovers(args)
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to clean")
    return EXIT_OK


def _doctor(args) -> int:
    from cluster.factory import run_doctor

    checks = run_doctor(args)
    if args.json:
        print(json.dumps([c.to_json() for c in checks], indent=1))
    else:
        for check in checks:
            print(check.line())
    return EXIT_OK if all(c.ok for c in checks) else EXIT_USAGE


def _diff(args) -> int:
    from reports import diff

    return diff.main(args)


def _upgrade_check(args) -> int:
    from meshproof import upgrade

    return upgrade.run(args)


def _audit(args) -> int:
    from meshproof.audit.command import run_audit

    return run_audit(args)


def _what_if(args) -> int:
    from meshproof.audit.command import run_what_if

    return run_what_if(args)


COMMANDS = {"audit": _audit, "what-if": _what_if, "expect": _expect, "probe": _probe, "clean": _clean, "doctor": _doctor, "diff": _diff,
            "upgrade-check": _upgrade_check}

if __name__ == "__main__":
    sys.exit(main())
