"""Adversarial TLS clients: a workload without a sidecar speaks TLS itself (openssl s_client) straight to the
server pod's port, with no certificate, a self-signed one, one from another CA, a mesh-CA certificate of another
trust domain, an expired mesh certificate, a valid mesh certificate of another workload, Istio's ALPN without a
certificate, TLS 1.2 only and TLS 1.0/1.1, against STRICT, PERMISSIVE and DISABLE (suites/adversary.py). Each
cell asserts the oracle's outcome, what refused it, and on the wire where the handshake stopped and who ended it.
"""

import pytest

from suites.adversary import adversary_cells, run_handshake_cell

CELLS = {cell: (scn, attempt) for cell, scn, attempt in adversary_cells()}


@pytest.mark.parametrize("cell_id", list(CELLS))
def test_adversary(mesh, mesh_options_fixture, cell_id):
    scn, attempt = CELLS[cell_id]
    run_handshake_cell(mesh, mesh_options_fixture, cell_id, scn, attempt)
