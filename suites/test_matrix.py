"""The mTLS matrix: client sidecar x server sidecar x PeerAuthentication mode (server namespace) x
DestinationRule tls mode (client namespace), 100 cells. Each cell asserts the oracle's outcome, the wire
verdict (Istio mTLS where the oracle says mTLS, the canary never in clear there) and the peer identity the
app saw. Cells are independent: each deploys its own scenario and can run alone, in any order, under xdist.
"""

import pytest

from suites.matrix import matrix_cells
from suites.runner import cell_marks, run_cell

CELLS = {cell.id: cell for cell in matrix_cells()}


@pytest.mark.parametrize("cell_id", [pytest.param(c.id, id=c.id, marks=cell_marks(c.scenario())) for c in CELLS.values()])
def test_matrix(mesh, mesh_options_fixture, cell_id):
    run_cell(mesh, mesh_options_fixture, CELLS[cell_id])
