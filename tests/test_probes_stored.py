"""The verdict on captures kept in tests/data/wire: real Envoy 1.40 sidecars of the reference mesh (TLS 1.3 with
the X25519MLKEM768 key share, whose ClientHello arrives as one GSO frame larger than the MTU) and a Python
TLS 1.2 mTLS exchange. Runs without root. index.json holds each probe's canary and server address; the
expectations below are written from what each scenario does, not copied from an earlier output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probes.canary import new_canary
from probes.verdict import judge

DATA = Path(__file__).parent / "data" / "wire"
INDEX = json.loads((DATA / "index.json").read_text())
MESH_SNI = "outbound_.8000_._.httpbin.foo.svc.cluster.local"

EXPECTED = {
    # STRICT server, client with a sidecar (ISTIO_MUTUAL): the whole exchange is mesh mTLS.
    "envoy-strict-mtls": {
        "verdict": "mtls", "sni": MESH_SNI, "alpn": ["istio-peer-exchange", "istio"], "tls_version": "TLSv1.3",
        "certificates_visible": False, "canary_in_clear": False, "request": "tls", "response": "tls",
        "http_status_on_wire": None},
    # PERMISSIVE server, client without a sidecar: plaintext both ways, the canary readable.
    "envoy-permissive-plain-client": {
        "verdict": "plaintext", "sni": None, "tls_version": None, "canary_in_clear": True, "request": "cleartext",
        "response": "cleartext", "http_status_on_wire": 200, "http_request_line": "GET /headers HTTP/1.1"},
    # STRICT server, client without a sidecar: the request is on the wire, nothing comes back.
    "envoy-strict-plain-client": {
        "verdict": "plaintext", "canary_in_clear": True, "request_in_clear": True, "response_in_clear": False,
        "response": "none", "http_status_on_wire": None},
    # DISABLE server, ISTIO_MUTUAL client: a mesh ClientHello answered by a plaintext 400.
    "envoy-disable-server-mtls-client": {
        "verdict": "plaintext", "sni": MESH_SNI, "canary_in_clear": False, "request": "tls",
        "response": "cleartext", "request_in_clear": False, "response_in_clear": True, "http_status_on_wire": 400},
    # SIMPLE client TLS to a PERMISSIVE server: TLS without the mesh marks, refused by the server.
    "envoy-simple-client": {
        "verdict": "app-tls", "sni": "httpbin.foo.svc.cluster.local", "alpn": ["http/1.1"],
        "canary_in_clear": False, "request": "tls"},
    # TLS 1.2 mTLS: both certificates, and so both SPIFFE IDs, travel in the clear.
    "python-mtls-tls12": {
        "verdict": "mtls", "tls_version": "TLSv1.2", "certificates_visible": True,
        "certificate_uris": ["spiffe://cluster.local/ns/ns/sa/httpbin", "spiffe://cluster.local/ns/ns/sa/sleep"],
        "canary_in_clear": False},
}


def test_every_stored_capture_has_expectations():
    assert set(EXPECTED) == set(INDEX) == {p.stem for p in DATA.glob("*.pcap")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stored_capture(name):
    probe = INDEX[name]
    wire = judge(DATA / f"{name}.pcap", probe["canary"], probe["server_ip"], probe["server_port"])
    assert {key: getattr(wire, key) for key in EXPECTED[name]} == EXPECTED[name]


@pytest.mark.parametrize("name", ["envoy-permissive-plain-client", "envoy-strict-plain-client"])
def test_canary_search_is_specific_to_the_token(name):
    """Another probe's token is not found in the same cleartext: the canary check is not `any text`."""
    probe = INDEX[name]
    wire = judge(DATA / f"{name}.pcap", new_canary(), probe["server_ip"], probe["server_port"])
    assert wire.verdict == "plaintext" and wire.canary_in_clear is False


def test_envoy_clienthello_came_as_one_frame_larger_than_the_mtu():
    from scapy.utils import RawPcapReader

    with RawPcapReader(str(DATA / "envoy-strict-mtls.pcap")) as reader:
        assert max(len(frame) for frame, _ in reader) > 1514


def test_tls_facts_of_stored_captures():
    from probes.verdict import tls_shortfalls

    istio = {"version": "TLSv1.3", "certificates_visible": False, "alpn": "istio", "sni": MESH_SNI}
    probe = INDEX["envoy-strict-mtls"]
    assert tls_shortfalls(judge(DATA / "envoy-strict-mtls.pcap", probe["canary"], probe["server_ip"],
                                probe["server_port"]), istio) == []
    probe = INDEX["python-mtls-tls12"]
    weak = tls_shortfalls(judge(DATA / "python-mtls-tls12.pcap", probe["canary"], probe["server_ip"],
                                probe["server_port"]), istio)
    uris = "spiffe://cluster.local/ns/ns/sa/httpbin, spiffe://cluster.local/ns/ns/sa/sleep"
    assert weak[:2] == ["negotiated TLSv1.2, not TLSv1.3", f"certificates readable on the wire ({uris})"]
