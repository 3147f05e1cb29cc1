"""The end-of-run terminal summary: the matrix in wire classes, the counts, one line per mismatch."""

from reports.cells import read_cells, record_cell
from reports.terminal_summary import render

MTLS = {"outcome": "mtls", "wire": "mtls", "peer_identity": "spiffe://cluster.local/ns/sleep/sa/sleep"}
STRICT = "client-sidecar/server-sidecar/pa-strict/dr-none"
LEAK = "client-sidecar/server-sidecar/pa-strict/dr-istio-mutual"


def _records(tmp_path, leak: bool):
    record_cell(cell=STRICT, tags=STRICT.split("/"), passed=True, expected=MTLS, observed=MTLS, directory=tmp_path)
    record_cell(cell=LEAK, tags=LEAK.split("/"), passed=not leak, expected=MTLS,
                observed={"outcome": "plaintext", "wire": "plaintext"} if leak else MTLS, directory=tmp_path,
                category="PLAINTEXT LEAK:" if leak else "",
                message="PLAINTEXT LEAK: canary seen in cleartext where policy says mtls" if leak else "")
    return read_cells(tmp_path)


def test_summary_draws_classes_counts_and_one_line_per_mismatch(tmp_path):
    text = render(_records(tmp_path, leak=True), width=140, colour=False)
    strict_row = next(line for line in text.splitlines() if "STRICT" in line)
    assert strict_row.split()[-5:] == ["●", "·", "·", "·", "✗●→○"]  # no DR mTLS ... ISTIO_MUTUAL leaked
    assert "1 encrypted (1 Istio mTLS, 0 other TLS) · 1 cleartext · 0 refused · 1 mismatched" in text
    leak_lines = [line for line in text.splitlines() if line.startswith("PLAINTEXT LEAK:")]
    assert leak_lines == [f"PLAINTEXT LEAK: {LEAK}: canary seen in cleartext where policy says mtls"]


def test_a_clean_run_has_no_mismatch_and_colours_each_class(tmp_path):
    text = render(_records(tmp_path, leak=False), width=140, colour=True)
    assert text.count("✗") == 1 and "no mismatch in 2 cells" in text  # the legend's ✗ only
    assert "48;2;0;114;178" in text  # Istio mTLS's blue (#0072B2) as the cell background
