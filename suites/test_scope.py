"""Scope and precedence: mesh vs namespace vs workload vs port-level PeerAuthentication, UNSET inheritance,
conflicting policies at one level (oldest wins), selector policies in the root namespace (ignored),
DestinationRules in the client / server / root namespace and exportTo, port-level DestinationRule settings,
Service port vs target port. Cells with root-namespace objects are marked `mesh_wide`: on a shared kube
cluster they need --allow-mesh-wide and run on their own (the local mesh gives every worker its own mesh).
"""

import pytest

from suites.matrix import scope_cells
from suites.runner import cell_marks, run_cell

CELLS = {cell.id: cell for cell in scope_cells()}


@pytest.mark.parametrize("cell_id", [pytest.param(c.id, id=c.id, marks=cell_marks(c.scenario())) for c in CELLS.values()])
def test_scope(mesh, mesh_options_fixture, cell_id):
    run_cell(mesh, mesh_options_fixture, CELLS[cell_id])
