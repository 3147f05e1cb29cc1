"""The ports suite (suites/ports.py): httpbin, a TCP echo, a server-first banner and httpbin behind its own TLS,
on ports named http, tcp, https, tls or a name Istio sniffs, under each PeerAuthentication mode, with and without
sidecars and DestinationRules. Each cell runs in a deployment of its own (suites/runner.py run_cell) and asserts
the oracle's outcome, the wire (Istio mTLS, the app's TLS or cleartext, for TCP as for HTTP) and the peer
identity. A cell the oracle or the mesh does not handle yet fails as NOT SUPPORTED YET, never passes.
"""

import pytest

from suites.ports import ports_cells
from suites.runner import cell_params, run_cell

CELLS = {cell.id: cell for cell in ports_cells()}


@pytest.mark.parametrize("cell_id", cell_params(CELLS.values(), pytest.mark.ports))
def test_ports(mesh, mesh_options_fixture, cell_id):
    run_cell(mesh, mesh_options_fixture, CELLS[cell_id])
