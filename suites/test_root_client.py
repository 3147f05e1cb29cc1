"""Clients in the root namespace: which DestinationRule a sidecar there uses (the root namespace's private
rules first, push_context.go destinationRule). The scenario names the client's namespace as its root, so the
run owns it; only the reference mesh runs that (a cluster's root namespace is fixed, meshproof/namespaces.py),
so on --mesh kube these cells are skipped, never passed. Each cell runs in a deployment of its own.
"""

import pytest

from suites.matrix import root_client_cells
from suites.runner import cell_params, run_cell

CELLS = {cell.id: cell for cell in root_client_cells()}


@pytest.fixture(autouse=True)
def _a_root_of_its_own(request):
    if request.config.getoption("--mesh") == "kube":
        pytest.skip("the cell's root namespace is its client's: a cluster's root namespace is the installed mesh's "
                    "(meshConfig.rootNamespace), which a run does not own")


@pytest.mark.parametrize("cell_id", cell_params(CELLS.values()))
def test_root_client(mesh, mesh_options_fixture, cell_id):
    run_cell(mesh, mesh_options_fixture, CELLS[cell_id])
