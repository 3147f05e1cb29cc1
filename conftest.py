"""pytest plugin for meshproof: the options, the per-worker mesh fixture and the cell runner's fixtures.

One mesh backend per pytest(-xdist) worker, started once per session and stopped by a finalizer that runs
even when a test fails; the backend itself also cleans up on Ctrl-C or a killed worker.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest

# Fixture teardowns in Allure without pytest's own finalizer (see the module).
pytest_plugins = ("reports.allure_pytest_fix",)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshproof", "meshproof mesh target")
    group.addoption("--mesh", choices=("local", "kube"), default="local", help="mesh target (default: local)")
    group.addoption("--kubeconfig", default=None, help="kubeconfig for --mesh kube (default: usual resolution)")
    group.addoption("--context", default=None, help="kubeconfig context for --mesh kube")
    group.addoption("--istio-version", default=None,
                    help="Istio minor the oracle predicts for (1.28, 1.29, 1.30; kube: detected when not given)")
    group.addoption("--istio-revision", default=None, help="kube: the istio.io/rev to inject workloads with")
    # pytest owns --capture (its output capturing), so the wire capture is --wire-capture; --no-capture is
    # kept as the short way to turn it off.
    group.addoption("--wire-capture", dest="meshproof_capture", action="store_true", default=True,
                    help="prove every probe on the wire with a packet capture (default)")
    group.addoption("--no-wire-capture", "--no-capture", dest="meshproof_capture", action="store_false",
                    help="skip the wire capture (outcomes then rest on the identity the app saw)")
    group.addoption("--allow-mesh-wide", action="store_true", default=False,
                    help="kube: allow root-namespace (mesh-wide) policies; the local mesh isolates them itself")
    group.addoption("--isolate", action="store_true", default=False,
                    help="each cell in a deployment of its own (debugging one cell); by default the matrix "
                         "cells share one deployment, configured in one round")
    group.addoption("--push-delay", type=_seconds, default=0.0, metavar="SECONDS",
                    help="local: the control plane pushes each change this much later, debounced as istiod does "
                         "(a cluster's propagation time; default 0)")


def pytest_configure(config: pytest.Config) -> None:
    # The co-deployed matrix is one deployment of 20 pods: under xdist its cells (one xdist_group) must go to one
    # worker, or every worker would start the whole deployment (twice the Envoys, inotify instances and memory)
    # to probe half of it. The controller schedules by group; each worker tags its items with their group.
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        if workerinput.get("meshproof_loadgroup"):
            config.option.loadgroup = True
    elif getattr(config.option, "dist", "no") == "load" and not config.getoption("--isolate"):
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: tell each worker the run distributes by xdist group (it re-parses the command line otherwise)."""
    node.workerinput["meshproof_loadgroup"] = node.config.getoption("dist") == "loadgroup"


def mesh_options(config: pytest.Config) -> SimpleNamespace:
    get = config.getoption
    return SimpleNamespace(mesh=get("--mesh"), kubeconfig=get("--kubeconfig"), context=get("--context"),
                           istio_version=get("--istio-version"), istio_revision=get("--istio-revision"),
                           capture=get("meshproof_capture"), allow_mesh_wide=get("--allow-mesh-wide"),
                           push_delay=get("--push-delay"), isolate=get("--isolate"))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed a number of seconds from 0 to 60")
    return value


@pytest.fixture(scope="session")
def mesh_options_fixture(pytestconfig: pytest.Config) -> SimpleNamespace:
    return mesh_options(pytestconfig)


@pytest.fixture(scope="session")
def mesh(mesh_options_fixture):
    """The mesh backend of this worker, up for the whole session."""
    from cluster.factory import open_backend
    from reports.allure_env import record_environment

    with open_backend(mesh_options_fixture) as backend:
        record_environment(backend.environment())
        yield backend
        if getattr(backend, "figures", None) is not None:
            from reports.cells import record_figures

            record_figures(backend.name, backend.figures.to_json())


def pytest_sessionstart(session: pytest.Session) -> None:
    # The controller (not an xdist worker) of a suites run starts with no cell records of an earlier run;
    # a self-test run leaves them alone.
    if not hasattr(session.config, "workerinput") and _runs_suites(session.config):
        from reports.cells import clear_cells

        clear_cells()


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    """After a suites run, the matrix in wire classes, the counts and one line per mismatch."""
    if hasattr(config, "workerinput") or not _runs_suites(config):
        return
    import shutil

    from reports.cells import CellsError, cells_dir, read_cells
    from reports.terminal_summary import render

    try:
        records = read_cells(cells_dir())
    except CellsError:
        return  # no cell ran (chaos or validation only): nothing to draw
    terminalreporter.write_sep("=", "meshproof: what crossed the wire")
    terminalreporter.write(render(records, shutil.get_terminal_size().columns, terminalreporter.hasmarkup))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # On a shared cluster a root-namespace policy changes every workload in the mesh: opt-in only.
    if config.getoption("--mesh") != "kube" or config.getoption("--allow-mesh-wide"):
        return
    refuse = pytest.mark.skip(reason="mesh-wide cell: needs --allow-mesh-wide on --mesh kube (changes the whole mesh)")
    for item in items:
        if item.get_closest_marker("mesh_wide"):
            item.add_marker(refuse)


def _runs_suites(config: pytest.Config) -> bool:
    suites = Path(__file__).parent / "suites"
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == suites or suites in path.parents or path in suites.parents:
            return True
    return False
