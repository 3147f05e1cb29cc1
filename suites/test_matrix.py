"""The mTLS matrix: client sidecar x server sidecar x PeerAuthentication mode (server namespace) x
DestinationRule tls mode (client namespace), 100 cells. Each cell asserts the oracle's outcome, the wire
verdict (Istio mTLS where the oracle says mTLS, the canary never in clear there) and the peer identity the
app saw.

By default the cells share one deployment (suites/codeployed.py): 10 client and 10 server namespaces, every
policy applied in one round, then every cell probed, many at once, each with its own capture; the oracle
predicts each cell from every deployed object. `--isolate` runs each cell in a deployment of its own (any
order, under xdist too). The cells carry one xdist group, so `--dist loadgroup` keeps them on one worker.
"""

import pytest

from suites.codeployed import co_deployed
from suites.matrix import matrix_cells
from suites.runner import co_deployed_params, run_cell

CELLS = {cell.id: cell for cell in matrix_cells()}


@pytest.fixture(scope="session")
def matrix_deployment(mesh, mesh_options_fixture):
    with co_deployed(mesh, mesh_options_fixture, CELLS.values()) as deployment:
        yield deployment


@pytest.mark.parametrize("cell_id", co_deployed_params(CELLS.values(), "matrix"))
def test_matrix(mesh, mesh_options_fixture, matrix_deployment, cell_id):
    run_cell(mesh, mesh_options_fixture, CELLS[cell_id], deployment=matrix_deployment)
