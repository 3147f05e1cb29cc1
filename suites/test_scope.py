"""Scope and precedence: mesh vs namespace vs workload vs port-level PeerAuthentication, UNSET inheritance,
conflicting policies at one level (oldest wins), selector policies in the root namespace (ignored),
DestinationRules in the client / server / root namespace and exportTo, port-level DestinationRule settings,
Service port vs target port. Cells with root-namespace objects are marked `mesh_wide`: on a shared kube
cluster they need --allow-mesh-wide and run on their own (the local mesh gives every worker its own mesh).
"""

import pytest

from suites.codeployed import co_deployed
from suites.matrix import scope_cells
from suites.runner import co_deployed_params, run_cell

CELLS = {cell.id: cell for cell in scope_cells()}
# Pods per round (3 rounds for the 47 cells that can share one; the 20 with root-namespace objects keep their
# own deployment). On a cluster a round (istiod's push, every proxy's ACK) and a pod (10-30 s) cost far more
# than a probe, so the cells go in rounds there. On the reference mesh a round costs milliseconds and a pair of
# one shape is reused, while the scope cells' groups hardly repeat (about one pod per cell): rounds there
# took 22 s against 12 s per cell, so it keeps a deployment per cell (tests/test_codeploy.py runs the rounds).
MAX_PODS = 20


@pytest.fixture(scope="session")
def scope_deployment(mesh, mesh_options_fixture):
    with co_deployed(mesh, mesh_options_fixture, CELLS.values(), MAX_PODS, on_local=False) as deployment:
        yield deployment


@pytest.mark.parametrize("cell_id", co_deployed_params(CELLS.values(), "scope"))
def test_scope(mesh, mesh_options_fixture, scope_deployment, cell_id):
    run_cell(mesh, mesh_options_fixture, CELLS[cell_id], deployment=scope_deployment)
