"""The destinations suite (suites/destinations.py): httpbin through its ClusterIP Service, through a headless
Service, at the Service's ClusterIP and at its pod IP, under each PeerAuthentication mode, with and without
sidecars. Each cell runs in a deployment of its own (suites/runner.py run_cell) and asserts the oracle's outcome,
the wire and the peer identity. A cell the oracle or the mesh does not handle yet fails as NOT SUPPORTED YET, never passes.
"""

import pytest

from suites.destinations import destinations_cells
from suites.runner import cell_params, run_cell

CELLS = {cell.id: cell for cell in destinations_cells()}


@pytest.mark.parametrize("cell_id", cell_params(CELLS.values(), pytest.mark.destinations))
def test_destinations(mesh, mesh_options_fixture, cell_id):
    run_cell(mesh, mesh_options_fixture, CELLS[cell_id])
