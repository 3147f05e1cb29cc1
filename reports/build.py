"""Build the run's report: environment and categories into the Allure results, the matrix picture and the
conformance report (conformance-report.yaml) from the cell records, and the Allure 3 HTML report with the
picture attached to every page.

    python -m reports.build --results reports/out/allure-results --out reports/out \
        --allure reports/node_modules/.bin/allure

Exit 0 when the report was built, 1 when Allure failed, 2 on bad input or a missing Allure.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from reports.allure_cell import CELL_LABEL
from reports.allure_env import (
    environment_facts,
    read_recorded_environment,
    write_allure_config,
    write_categories,
    write_environment,
)
from reports.cells import CellsError, cell_files, cells_dir, read_cells
from reports.conformance_report import REPORT_NAME, build_report, validate, write_report
from reports.matrix import write_matrix

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_ALLURE = Path(__file__).resolve().parent / "node_modules" / ".bin" / "allure"
ALLURE_TIMEOUT_S = 300
# Kept in --out between runs (make conformance removes only the results), so trends and retries have a past.
HISTORY_FILE = "history.jsonl"


class BuildError(Exception):
    """Bad input or a missing prerequisite: one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="allure-pytest results directory of the run")
    parser.add_argument("--out", required=True, help="where matrix.* and allure-report/ go")
    parser.add_argument("--allure", default=str(DEFAULT_ALLURE), help="Allure 3 command (default: %(default)s)")
    parser.add_argument("--cells", help=f"cell records of the run (default: {cells_dir()})")
    parser.add_argument("--name", default="meshproof conformance", help="report title")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = build(Path(args.results), Path(args.out), args.allure, args.cells, args.name)
    except (BuildError, CellsError) as err:
        print(f"reports.build: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except subprocess.CalledProcessError as err:
        print(f"reports.build: Allure failed (exit {err.returncode}): {' '.join(map(str, err.cmd))}\n"
              f"{err.stderr or ''}", file=sys.stderr)
        return EXIT_FAILED
    print(f"report: {report}")
    return EXIT_OK


def build(results: Path, out: Path, allure: str, cells: str | None, name: str) -> Path:
    """Everything is checked before anything is written, so bad input leaves no half-built report."""
    allure_cmd = _allure_command(allure)
    if not results.is_dir():
        raise BuildError(f"--results {results}: no such directory (run the suites with --alluredir first)")
    if not any(results.glob("*-result.json")):
        raise BuildError(f"--results {results}: no *-result.json files in it (did the suites run?)")
    cells_path = Path(cells) if cells else cells_dir()
    records = read_cells(cells_path) if cells else _default_records()
    facts = {**environment_facts(records), **read_recorded_environment(cells_path)}
    conformance = build_report(records, facts, results)
    validate(conformance)

    out.mkdir(parents=True, exist_ok=True)
    write_environment(results, facts)
    write_categories(results)
    pictures = write_matrix(records, out)
    write_report(conformance, out / REPORT_NAME)
    config = write_allure_config(out / "allurerc.json", name, [pictures["html"], pictures["png"]],
                                 history=out / HISTORY_FILE)
    _append_job_summary(pictures["md"])

    report_dir = out / "allure-report"
    if report_dir.exists():
        shutil.rmtree(report_dir)  # ours: a report never mixes two runs
    subprocess.run([*allure_cmd, "generate", str(results.resolve()), "-o", str(report_dir.resolve()),
                    "-c", str(config.resolve())], check=True, capture_output=True, text=True,
                   timeout=ALLURE_TIMEOUT_S)
    index = report_dir / "index.html"
    if not index.exists():
        raise BuildError(f"Allure finished but wrote no {index}")
    strip_analytics(index)
    # Now that each test has its page, the matrix beside the report links every cell to it.
    write_matrix(records, out, links=cell_links(report_dir, relative_to=out))
    return index


def report_data(index: Path) -> dict[str, bytes]:
    """The data files a single-file Allure 3 report embeds in its index.html, by path (e.g.
    "widgets/categories.json", "data/test-results/<id>.json")."""
    return {path: base64.b64decode(encoded) for path, encoded in _EMBEDDED.findall(index.read_text(encoding="utf-8"))}


def cell_links(report_dir: Path, relative_to: Path) -> dict[str, str]:
    """cell id -> URL of its page in the Allure report (index.html#/<test result id>), by the `cell` label."""
    index = report_dir / "index.html"
    base = os.path.relpath(index, relative_to)
    links = {}
    for path, data in report_data(index).items():
        if path.startswith("data/test-results/"):
            result = json.loads(data)
            cell = next((lb["value"] for lb in result.get("labels", []) if lb.get("name") == CELL_LABEL), None)
            if cell:
                links[cell] = f"{base}#/{result['id']}"
    return links


_EMBEDDED = re.compile(r'd\("([\w./-]+)","([A-Za-z0-9+/=]*)"\)')
# Allure 3.18's page loads Google's analytics script whatever the config says: a report of a security check
# should not call out when opened, and offline the failed load is a console error. Removed from the page.
_ANALYTICS = re.compile(r'<script async src="https://www\.googletagmanager\.com/[^"]*"></script>\s*<script>'
                        r"[^<]*gtag\([^<]*</script>")


def strip_analytics(index: Path) -> None:
    page = index.read_text(encoding="utf-8")
    index.write_text(_ANALYTICS.sub("", page), encoding="utf-8")


def _allure_command(allure: str) -> list[str]:
    path = shutil.which(allure) or (allure if Path(allure).is_file() else None)
    if path is None:
        raise BuildError(f"--allure {allure}: not found; install Allure 3 with `make report` or `cd reports && npm ci`")
    version = subprocess.run([path, "--version"], check=False, capture_output=True, text=True, timeout=60)
    if version.returncode != 0 or not version.stdout.strip().startswith("3."):
        raise BuildError(f"--allure {allure}: want Allure 3.x (npm package `allure`), got "
                         f"{(version.stdout or version.stderr).strip()[:80]!r}")
    return [path]


def _default_records():
    """The run's cells; a run without cell records still gets a report (the picture says 'not run')."""
    path = cells_dir()
    try:
        cell_files(path)
    except CellsError:
        print(f"reports.build: note: no cell records in {path}; the matrix picture will be empty", file=sys.stderr)
        return []
    return read_cells(path)


def _append_job_summary(markdown: Path) -> None:
    """In GitHub Actions the matrix also goes to the job summary page."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as out:
            out.write(markdown.read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(main())
