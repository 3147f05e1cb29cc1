"""`make mutants`: a mutation score for the suites against the reference mesh, and for the self-tests against
the oracle, with cosmic-ray (pinned in pyproject.toml, extra `mutation`).

    python -m reports.mutation [--session controlplane|oracle ...] [--out reports/out]

Each session mutates its modules one mutant at a time in its own copy of the tracked tree
(reports/out/mutation/<session>/, so the checkout is never left mutated) and runs its test command against the mutant:

- controlplane: cluster/local/controlplane.py (the Istio API -> Envoy TLS config) and cluster/local/iptables.py
  (interception) against the matrix, scope, root-client, interception, adversary, ports and destinations suites on
  the reference mesh;
- oracle: suites/expectations.py and suites/expectations_ports.py against their self-tests, whose expectations were read from Istio's sources
  (the generated expected tables are left out: a snapshot of the oracle would kill any change of it).

The operators are cosmic-ray's with one replacement per site for binary, comparison and unary operators (the
inverse: + -> -, == -> !=, ...), so a site weighs once rather than ten times. A session's sqlite file survives an
interruption and the next run continues it. `--changed-since COMMIT` judges only mutants on lines changed since
that commit (a sample of new code). Survivors listed in reports/mutation_equivalent.yaml (module, operator,
the mutated line, optionally the line before it and the line as the mutant has it (`becomes`, where one line holds
several sites), and why no test can tell) count as equivalent; the rest stay survivors.
Output: reports/out/mutation.json, reports/out/mutation.html, and cosmic-ray's own page per session.
"""

from __future__ import annotations

import argparse
import difflib
import html
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = Path(__file__).resolve().parent / "mutation_equivalent.yaml"
SESSIONS = {
    "controlplane": {"modules": ["cluster/local/controlplane.py", "cluster/local/iptables.py"],
                     "tests": "suites/test_matrix.py suites/test_scope.py suites/test_root_client.py "
                              "suites/test_interception.py suites/test_adversary.py suites/test_ports.py "
                              "suites/test_destinations.py -n 2",
                     "timeout": 600.0},
    "oracle": {"modules": ["suites/expectations.py", "suites/expectations_ports.py"],
               "tests": "tests/test_expectations.py tests/test_expectations_ports.py", "timeout": 120.0},
}
# One replacement per operator site: its inverse.
EXCLUDED_OPERATORS = [
    ("core/ReplaceBinaryOperator_(?!Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Mul|Mod_FloorDiv|Pow_Mul|BitOr_BitAnd|"
    "BitAnd_BitOr|BitXor_BitAnd|LShift_RShift|RShift_LShift).*"),
    "core/ReplaceComparisonOperator_(?!Eq_NotEq$|NotEq_Eq$|Lt_GtE$|LtE_Gt$|Gt_LtE$|GtE_Lt$|Is_IsNot$|IsNot_Is$).*",
    "core/ReplaceUnaryOperator_(?!USub_UAdd|Not_).*",
]


def test_command(tests: str) -> str:
    """pytest, stopping at the first red test. A mutant counts as killed only when that test is red again on
    its own: on a loaded machine a cell can fail once for reasons of its own, and a flake is no kill (after a
    flake the whole run is repeated)."""
    pytest = f"{sys.executable} -m pytest -q"
    return f"sh -c '{pytest} {tests} -x || ({pytest} {tests.split(' -n ')[0]} --lf -x && {pytest} {tests} -x)'"


def config(name: str) -> str:
    session = SESSIONS[name]
    quoted = ", ".join(json.dumps(m) for m in session["modules"])
    excluded = ",\n  ".join(json.dumps(p) for p in EXCLUDED_OPERATORS)
    return (f"[cosmic-ray]\nmodule-path = [{quoted}]\ntimeout = {session['timeout']}\nexcluded-modules = []\n"
            f"test-command = {json.dumps(test_command(session['tests']))}\n"
            f"[cosmic-ray.distributor]\nname = \"local\"\n"
            f"[cosmic-ray.filters.operators-filter]\nexclude-operators = [\n  {excluded},\n]\n")


def copy_tree(target: Path) -> None:
    """The tracked files as they are in the working tree, into `target` (emptied first)."""
    shutil.rmtree(target, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_session(name: str, work: Path, sample: int | None = None, changed_since: str | None = None) -> None:
    """Init (once) and run one session in a fresh copy of the tree of its own (a mutated oracle must not reach
    the control-plane session's suites; an interrupted run may have left a mutant on disk).

    The mutated modules are kept as they were when the session began (its mutation positions are theirs); when
    it resumes on a newer checkout, the newer tests must first pass on them."""
    tree, db, toml, kept = work / name, work / f"{name}.sqlite", work / f"{name}.toml", work / f"{name}.modules"
    toml.write_text(config(name))
    bin_dir = Path(sys.executable).parent
    if db.exists() and not kept.is_dir():
        kept.unlink(missing_ok=True)  # a digest file of an earlier version of this script
        _keep_modules(name, tree, kept)  # cosmic-ray puts each module back after each mutant
    copy_tree(tree)
    if not db.exists():
        subprocess.run([bin_dir / "cosmic-ray", "init", toml, db], cwd=tree, check=True)
        subprocess.run([bin_dir / "cr-filter-operators", db, toml], cwd=tree, check=True)
        _keep_modules(name, tree, kept)
    else:
        for module in SESSIONS[name]["modules"]:
            shutil.copy2(kept / module, tree / module)
        if subprocess.run(shlex.split(test_command(SESSIONS[name]["tests"])), cwd=tree, check=False).returncode:
            raise SystemExit(f"the checkout's tests fail on session {name}'s own (unmutated) modules: start it over "
                             f"(remove {db})")
    forget_sample(db)
    if changed_since:
        keep_lines(db, {module: changed_lines(_at_commit(changed_since, module), (kept / module).read_text())
                        for module in SESSIONS[name]["modules"]})
    if sample:
        keep_sample(db, sample)
    subprocess.run([bin_dir / "cosmic-ray", "exec", toml, db], cwd=tree, check=True)
    page = subprocess.run([bin_dir / "cr-html", db], cwd=tree, check=True, capture_output=True, text=True).stdout
    (work / f"{name}.html").write_text(page)


def _at_commit(commit: str, module: str) -> str:
    if subprocess.run(["git", "rev-parse", "--quiet", "--verify", f"{commit}^{{commit}}"], cwd=ROOT, check=False,
                      capture_output=True).returncode:
        raise SystemExit(f"--changed-since: {commit!r} is not a commit of this repository")
    shown = subprocess.run(["git", "show", f"{commit}:{module}"], cwd=ROOT, check=False, capture_output=True,
                           text=True)
    return shown.stdout if shown.returncode == 0 else ""  # a module new since then: every line is new


def _keep_modules(name: str, tree: Path, kept: Path) -> None:
    for module in SESSIONS[name]["modules"]:
        (kept / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / module, kept / module)


def keep_sample(db_path: Path, size: int) -> None:
    """Leave `size` mutants to judge (those already judged count first; the rest chosen by a hash of where and
    what they mutate, so the same code gives the same sample) and mark the others not sampled."""
    import hashlib
    import sqlite3

    with sqlite3.connect(db_path) as db:
        # cosmic-ray stores its enums by name
        done = db.execute("SELECT COUNT(*) FROM work_results WHERE worker_outcome != 'SKIPPED'").fetchone()[0]
        pending = db.execute(
            "SELECT m.job_id, m.module_path, m.operator_name, m.start_pos_row, m.start_pos_col FROM mutation_specs m "
            "WHERE m.job_id NOT IN (SELECT job_id FROM work_results)").fetchall()
        pending.sort(key=lambda row: hashlib.sha256(repr(row[1:]).encode()).hexdigest())
        db.executemany("INSERT INTO work_results (worker_outcome, output, test_outcome, diff, job_id) "
                       "VALUES ('SKIPPED', 'not sampled', NULL, NULL, ?)",
                       [(row[0],) for row in pending[max(0, size - done):]])


def forget_sample(db_path: Path) -> None:
    """Put the mutants an earlier run left out of its sample back to pending: this run chooses its own (a larger
    sample keeps the smaller one's mutants, being chosen by the same hash; no --sample judges them all)."""
    import sqlite3

    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM work_results WHERE output = 'not sampled'")


def changed_lines(old: str, new: str) -> set[int]:
    """The line numbers of `new` that are not in `old` (added or changed)."""
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    return {line + 1 for tag, _, _, start, end in matcher.get_opcodes() if tag in ("replace", "insert")
            for line in range(start, end)}


def keep_lines(db_path: Path, lines: dict[str, set[int]]) -> None:
    """Mark the pending mutants outside `lines` (module -> line numbers) not sampled: a sample of new code only."""
    import sqlite3

    with sqlite3.connect(db_path) as db:
        pending = db.execute("SELECT job_id, module_path, start_pos_row FROM mutation_specs "
                             "WHERE job_id NOT IN (SELECT job_id FROM work_results)").fetchall()
        db.executemany("INSERT INTO work_results (worker_outcome, output, test_outcome, diff, job_id) "
                       "VALUES ('SKIPPED', 'not sampled', NULL, NULL, ?)",
                       [(job,) for job, module, row in pending if row not in lines.get(module, set())])


def forget_survivors(name: str, work: Path) -> None:
    """Put the session's survivors back to pending (run_session then runs them against the checkout's tests)."""
    import sqlite3

    with sqlite3.connect(work / f"{name}.sqlite") as db:
        db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")


def results(db: Path) -> list[dict]:
    """One dict per mutant: where, which operator, and what the tests did (cosmic-ray's session dump)."""
    dump = subprocess.run([Path(sys.executable).parent / "cosmic-ray", "dump", db], check=True, capture_output=True,
                          text=True).stdout
    out = []
    for line in dump.splitlines():
        work_item, result = json.loads(line)
        mutation = work_item["mutations"][0]
        out.append({"module": mutation["module_path"], "line": mutation["start_pos"][0],
                    "operator": mutation["operator_name"], "function": mutation.get("definition_name"),
                    "outcome": _outcome(result), "becomes": _mutated_line((result or {}).get("diff"))})
    return out


def _mutated_line(diff: str | None) -> str | None:
    """The mutated line as the mutant has it: the line the diff adds."""
    return next((line[1:].strip() for line in (diff or "").splitlines()
                 if line.startswith("+") and not line.startswith("+++")), None)


def _outcome(result: dict | None) -> str:
    if result is None:
        return "pending"
    if result["worker_outcome"] == "skipped":
        # an operator left out by the filter, or a mutant outside the sample
        return "not-sampled" if result.get("output") == "not sampled" else "skipped"
    if result["worker_outcome"] == "timeout":
        return "timeout"
    return {"killed": "killed", "survived": "survived"}.get(result.get("test_outcome"), "incompetent")


def summarize(name: str, mutants: list[dict], equivalent: list[dict], source_root: Path) -> dict:
    for mutant in mutants:
        lines = (source_root / mutant["module"]).read_text().splitlines()
        code = lines[mutant["line"] - 1].strip()
        before = next((line.strip() for line in reversed(lines[:mutant["line"] - 1]) if line.strip()), "")
        mutant["code"] = code
        if mutant["outcome"] == "survived":
            # `after` (the line before) tells apart identical lines of one module
            reason = next((e["reason"] for e in equivalent if e["module"] == mutant["module"]
                           and e["operator"] == mutant["operator"] and e["code"] == code
                           and e.get("after", before) == before
                           and e.get("becomes", mutant.get("becomes")) == mutant.get("becomes")), None)
            if reason:
                mutant["outcome"], mutant["equivalent_because"] = "equivalent", reason
    counts = {k: sum(m["outcome"] == k for m in mutants) for k in
              ("killed", "timeout", "survived", "equivalent", "incompetent", "pending", "skipped", "not-sampled")}
    judged = counts["killed"] + counts["timeout"] + counts["survived"]
    # A timeout is a detected mutant: the suite did not pass.
    score = round(100.0 * (counts["killed"] + counts["timeout"]) / judged, 1) if judged else None
    return {"modules": SESSIONS[name]["modules"], "test_command": "pytest " + SESSIONS[name]["tests"], **counts,
            "score_percent": score, "survivors": [m for m in mutants if m["outcome"] == "survived"],
            "equivalent_mutants": [m for m in mutants if m["outcome"] == "equivalent"]}


def write_report(out: Path, sessions: dict, duration_s: float | None) -> None:
    report = {"tool": f"cosmic-ray {_version()}", "duration_s": duration_s, "sessions": sessions,
              "score_is": "(killed + timeout) / (killed + timeout + survived); equivalent and incompetent excluded"}
    (out / "mutation.json").write_text(json.dumps(report, indent=1))
    rows = []
    for name, s in sessions.items():
        rows.append(f"<h2>{html.escape(name)}: {s['score_percent']} %</h2><p>{html.escape(', '.join(s['modules']))} "
                    f"against <code>{html.escape(s['test_command'])}</code>: killed {s['killed']}, timed out "
                    f"{s['timeout']}, survived {s['survived']}, equivalent {s['equivalent']}, incompetent "
                    f"{s['incompetent']}, not sampled {s['not-sampled']}, pending {s['pending']} "
                    f"(<a href='mutation/{name}.html'>every mutant</a>)</p><table border=1>"
                    "<tr><th>outcome</th><th>where</th><th>operator</th><th>code</th><th>why equivalent</th></tr>")
        for m in s["survivors"] + s["equivalent_mutants"]:
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                m["outcome"], f"{m['module']}:{m['line']} {m['function']}", m["operator"],
                m["code"] + (f" → {m['becomes']}" if m.get("becomes") else ""),
                m.get("equivalent_because", ""))) + "</tr>")
        rows.append("</table>")
    (out / "mutation.html").write_text("<!doctype html><meta charset=utf-8><title>meshproof mutation score</title>"
                                       f"<h1>Mutation score ({html.escape(report['tool'])}, "
                                       f"{duration_s or '?'} s)</h1>" + "".join(rows))


def _version() -> str:
    from importlib.metadata import version

    return version("cosmic-ray")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--session", action="append", choices=sorted(SESSIONS), help="default: all")
    parser.add_argument("--out", default="reports/out")
    parser.add_argument("--report-only", action="store_true", help="summarize the existing sessions, run nothing")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="judge N mutants per session (a deterministic sample) instead of all")
    parser.add_argument("--changed-since", metavar="COMMIT",
                        help="judge only mutants on lines changed since COMMIT (with --sample: a sample of those)")
    parser.add_argument("--retry-survivors", action="store_true",
                        help="run the survivors again against the checkout as it is now (e.g. with a new cell)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    work = out.resolve() / "mutation"
    names = args.session or sorted(SESSIONS)
    started = time.monotonic()
    if not args.report_only:
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            if args.retry_survivors:
                forget_survivors(name, work)
            run_session(name, work, args.sample, args.changed_since)
    equivalent = yaml.safe_load(EQUIVALENT.read_text()) or []
    sessions = {name: summarize(name, results(work / f"{name}.sqlite"), equivalent, work / name)
                for name in names if (work / f"{name}.sqlite").exists()}
    duration = None if args.report_only else round(time.monotonic() - started, 1)
    write_report(out, sessions, duration)
    for name, s in sessions.items():
        print(f"{name}: {s['score_percent']} % (killed {s['killed']}, timeout {s['timeout']}, survived "
              f"{s['survived']}, equivalent {s['equivalent']}, incompetent {s['incompetent']})")
    print(f"{out / 'mutation.json'}, {out / 'mutation.html'}" + (f"; {duration} s" if duration else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
