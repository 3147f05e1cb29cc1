"""Inbound capture covers every application port: a client without a sidecar calls httpbin on a target port
next to one the sidecar keeps for itself (15000, 15020, 15021, 15090), under STRICT, and must be closed like on
any other port. Each cell runs in a deployment of its own.
"""

import pytest

from suites.matrix import interception_cells
from suites.runner import cell_params, run_cell

CELLS = {cell.id: cell for cell in interception_cells()}


@pytest.mark.parametrize("cell_id", cell_params(CELLS.values()))
def test_interception(mesh, mesh_options_fixture, cell_id):
    run_cell(mesh, mesh_options_fixture, CELLS[cell_id])
