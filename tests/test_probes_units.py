"""Wire-proof parts that need no network: reassembly corner cases a live capture rarely produces (hand-built
segments written to a pcap), the TLS record walk, the mesh marks, the XFCC identity and bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from probes import tls
from probes.canary import PREFIX, echoed_canary, new_canary
from probes.flows import read_flows
from probes.identity import peer_identity_from_headers
from probes.verdict import CaptureError, is_mesh_alpn, is_mesh_sni, judge

C, S = ("10.9.0.1", 40000), ("10.9.0.2", 8000)


def seg(src, dst, seq, flags="PA", data=b""):
    return Ether() / IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], seq=seq % 2**32, flags=flags) / data


def flow_of(tmp_path, frames):
    wrpcap(str(tmp_path / "f.pcap"), frames)
    count, flows = read_flows(tmp_path / "f.pcap")
    assert count == len(frames) and len(flows) == 1
    return flows[0]


@pytest.mark.parametrize("isn", [1000, 2**32 - 7])  # the second wraps the sequence space mid-stream
def test_out_of_order_retransmitted_and_overlapping_segments(tmp_path, isn):
    frames = [seg(C, S, isn, "S"), seg(S, C, 5000, "SA"),
              seg(C, S, isn + 8, data=b"world, "),           # out of order
              seg(C, S, isn + 1, data=b"hello, "),
              seg(C, S, isn + 1, data=b"hello, "),           # plain retransmit
              seg(C, S, isn + 6, data=b", world, again"),    # overlaps both neighbours
              seg(C, S, isn + 20, "FA")]
    flow = flow_of(tmp_path, frames)
    assert flow.client == C and flow.syn_seen
    assert flow.to_server.data == b"hello, world, again"
    assert flow.to_server.holes == 0 and flow.to_server.conflicting_bytes == 0


def test_conflicting_retransmit_is_counted_and_first_copy_wins(tmp_path):
    flow = flow_of(tmp_path, [seg(C, S, 0, "S"), seg(C, S, 1, data=b"abcdef"), seg(C, S, 3, data=b"XYZ")])
    assert flow.to_server.data == b"abcdef" and flow.to_server.conflicting_bytes == 3


def test_hole_ends_the_stream_and_is_counted(tmp_path):
    flow = flow_of(tmp_path, [seg(C, S, 0, "S"), seg(C, S, 1, data=b"abc"), seg(C, S, 10, data=b"xyz")])
    assert flow.to_server.data == b"abc" and flow.to_server.runs == [b"abc", b"xyz"]
    assert flow.to_server.holes == 1


def test_missed_start_gives_no_stream_start(tmp_path):
    flow = flow_of(tmp_path, [seg(C, S, 0, "S"), seg(C, S, 5, data=b"tail")])
    assert flow.to_server.data == b"" and flow.to_server.missed_start and flow.to_server.holes == 1


def test_client_without_syn_is_the_first_sender(tmp_path):
    flow = flow_of(tmp_path, [seg(S, C, 9, "A"), seg(C, S, 7, data=b"GET / HTTP/1.1\r\n")])
    assert flow.client == C and not flow.syn_seen
    assert flow.to_server.data.startswith(b"GET")


def test_synack_alone_names_the_client(tmp_path):
    flow = flow_of(tmp_path, [seg(S, C, 9, "SA"), seg(C, S, 1, "A")])
    assert flow.client == C


def test_a_port_reused_after_a_reset_is_two_flows(tmp_path):
    """A reset leaves no TIME_WAIT, so the client reuses its port seconds later (seen in a chaos window): the
    second SYN's new ISN opens a second flow, each whole, with its own times; a SYN sent again is not a new one."""
    first = [seg(C, S, 1000, "S"), seg(S, C, 5000, "SA"), seg(C, S, 1001, data=b"GET /one"), seg(S, C, 5001, "RA")]
    second = [seg(C, S, 90000, "S"), seg(C, S, 90000, "S"), seg(S, C, 7000, "SA"), seg(C, S, 90001, data=b"GET /two"),
              seg(S, C, 7001, data=b"HTTP/1.1 200 OK")]
    for when, frame in enumerate(first + second):
        frame.time = 100 + when
    wrpcap(str(tmp_path / "reused.pcap"), first + second)
    _, flows = read_flows(tmp_path / "reused.pcap")
    assert [(f.to_server.data, f.to_client.data) for f in flows] == [(b"GET /one", b""),
                                                                     (b"GET /two", b"HTTP/1.1 200 OK")]
    assert all(f.client == C and f.syn_seen and f.to_server.holes == 0 for f in flows)
    assert [(f.first_time, f.last_time) for f in flows] == [(100, 103), (104, 108)]


def _record(kind: int, body: bytes) -> bytes:
    return bytes([kind, 3, 3]) + len(body).to_bytes(2, "big") + body


def test_tls_walk_counts_records_and_spots_a_cut_record():
    data = _record(tls.APPLICATION_DATA, b"x" * 40) + _record(tls.APPLICATION_DATA, b"y" * 40)[:20]
    walked = tls.walk(data, tls13=True)
    assert walked.records == {"application_data": 1} and walked.truncated and walked.trailing == b""


def test_tls_that_turns_into_cleartext_is_cleartext(tmp_path):
    """TLS records followed by readable HTTP: the direction is cleartext, not TLS."""
    body = _record(tls.APPLICATION_DATA, b"\x17" * 30) + b"HTTP/1.1 200 OK\r\n\r\nmp-canary-00"
    frames = [seg(C, S, 0, "S"), seg(S, C, 0, "SA"), seg(C, S, 1, data=_record(tls.APPLICATION_DATA, b"z" * 30)),
              seg(S, C, 1, data=body)]
    wrpcap(str(tmp_path / "mixed.pcap"), frames)
    wire = judge(tmp_path / "mixed.pcap", "mp-canary-00")
    down = wire.flows[0]["to_client"]
    assert wire.verdict == "plaintext" and down["kind"] == "cleartext"
    assert down["cleartext_after_tls"] == len(b"HTTP/1.1 200 OK\r\n\r\nmp-canary-00")
    assert down["http_status"] == 200 and wire.canary_in_clear


def test_record_chain_start_finds_records_after_a_partial_one():
    stream = _record(tls.APPLICATION_DATA, b"a" * 50)[20:] + _record(tls.APPLICATION_DATA, b"b" * 30) * 2
    assert tls.record_chain_start(stream) == 35
    assert tls.record_chain_start(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is None


def test_connection_captured_mid_record_is_unproven_not_plaintext(tmp_path):
    """A pooled TLS connection whose first captured segment starts inside a record: no false "plaintext"."""
    up = _record(tls.APPLICATION_DATA, b"a" * 50)[20:] + _record(tls.APPLICATION_DATA, b"b" * 30)
    wrpcap(str(tmp_path / "mid.pcap"), [seg(C, S, 100, data=up), seg(S, C, 7, data=_record(23, b"c" * 40))])
    with pytest.raises(CaptureError, match="reused a TLS connection"):
        judge(tmp_path / "mid.pcap", new_canary(), S[0], S[1])
    # The same bytes with the connection's start captured are not TLS from byte 0: cleartext.
    wrpcap(str(tmp_path / "start.pcap"), [seg(C, S, 99, "S"), seg(C, S, 100, data=up)])
    assert judge(tmp_path / "start.pcap", new_canary(), S[0], S[1]).verdict == "plaintext"


def test_mesh_tls_flow_with_a_hole_proves_nothing(tmp_path):
    """A real mesh ClientHello and ServerHello, then a stretch the capture missed: no mTLS verdict."""
    _, flows = read_flows(Path(__file__).parent / "data" / "wire" / "envoy-strict-mtls.pcap")
    hello, answer = flows[0].to_server.data, flows[0].to_client.data
    record = _record(tls.APPLICATION_DATA, b"r" * 40)
    frames = [seg(C, S, 0, "S"), seg(S, C, 0, "SA"), seg(C, S, 1, data=hello), seg(S, C, 1, data=answer)]
    wrpcap(str(tmp_path / "whole.pcap"), [*frames, seg(C, S, 1 + len(hello), data=record)])
    assert judge(tmp_path / "whole.pcap", new_canary()).verdict == "mtls"
    wrpcap(str(tmp_path / "hole.pcap"), [*frames, seg(C, S, 1 + len(hello) + 100, data=record)])
    with pytest.raises(CaptureError, match=r"proves nothing: the capture missed 1 stretch"):
        judge(tmp_path / "hole.pcap", new_canary())


def test_starts_like_tls():
    assert tls.starts_like_tls(_record(tls.HANDSHAKE, b"\x01"))
    assert not tls.starts_like_tls(b"GET / HTTP/1.1\r\n")
    assert not tls.starts_like_tls(b"\x16\x03\x03\x00\x00")  # zero-length record
    assert not tls.starts_like_tls(b"\x16\x03")


@pytest.mark.parametrize(("sni", "mesh"), [
    ("outbound_.8000_._.httpbin.foo.svc.cluster.local", True),
    ("outbound_.9080_.v1_.reviews.default.svc.cluster.local", True),
    ("httpbin.foo.svc.cluster.local", False),
    ("outbound|8000||httpbin.foo.svc.cluster.local", False),  # a cluster name, not an SNI
    ("outbound_.http_._.httpbin", False),
    (None, False),
])
def test_mesh_sni(sni, mesh):
    assert is_mesh_sni(sni) is mesh


@pytest.mark.parametrize(("alpn", "mesh"), [
    (["istio-peer-exchange", "istio"], True), (["istio-http/1.1", "istio"], True), (["istio-h2"], True),
    (["h2", "http/1.1"], False), ([], False), (["istio-foo"], False),
])
def test_mesh_alpn(alpn, mesh):
    assert is_mesh_alpn(alpn) is mesh


XFCC = ('By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=ab12;Subject="";'
        'URI=spiffe://cluster.local/ns/foo/sa/sleep')


@pytest.mark.parametrize(("headers", "identity"), [
    ({"X-Forwarded-Client-Cert": XFCC}, "spiffe://cluster.local/ns/foo/sa/sleep"),
    ({"x-forwarded-client-cert": XFCC}, "spiffe://cluster.local/ns/foo/sa/sleep"),
    # two hops: the last element is the one nearest the app
    ({"X-Forwarded-Client-Cert": 'URI=spiffe://a/ns/x/sa/first,Subject="CN=a, O=b;c";URI=spiffe://b/ns/y/sa/last'},
     "spiffe://b/ns/y/sa/last"),
    ({"X-Forwarded-Client-Cert": 'Hash=ab;Subject="O=x"'}, None),
    ({"Host": "httpbin"}, None),
])
def test_peer_identity_from_httpbin_headers(headers, identity):
    body = json.dumps({"headers": headers})
    assert peer_identity_from_headers(body) == identity
    assert peer_identity_from_headers(body.encode()) == identity


@pytest.mark.parametrize("body", ["upstream connect error or disconnect/reset before headers", "", "[1, 2]",
                                  '{"headers": "x"}', b"\xff\xfe"])
def test_peer_identity_of_anything_else_is_none(body):
    assert peer_identity_from_headers(body) is None


def test_canaries_are_unique_and_marked():
    tokens = {new_canary() for _ in range(1000)}
    assert len(tokens) == 1000 and all(t.startswith(PREFIX) and len(t) == len(PREFIX) + 16 for t in tokens)


def test_judge_needs_a_canary(tmp_path):
    wrpcap(str(tmp_path / "a.pcap"), [seg(C, S, 0, "S")])
    with pytest.raises(ValueError, match="canary"):
        judge(tmp_path / "a.pcap", "")


@pytest.mark.parametrize(("server_ip", "server_port", "message"), [
    ("10.9.0.300", None, "server_ip '10.9.0.300' is not an IPv4 or IPv6 address"),
    (None, "8000", "server_port '8000' is not a port number"),
    (None, 0, "server_port 0 is not a port number"),
    (None, True, "server_port True is not a port number"),
])
def test_judge_rejects_a_bad_server_address(tmp_path, server_ip, server_port, message):
    wrpcap(str(tmp_path / "a.pcap"), [seg(C, S, 0, "S")])
    with pytest.raises(ValueError, match=message):
        judge(tmp_path / "a.pcap", new_canary(), server_ip, server_port)


def test_judge_names_a_missing_or_broken_pcap(tmp_path):
    with pytest.raises(CaptureError, match=r"nothing\.pcap: no such pcap file"):
        judge(tmp_path / "nothing.pcap", new_canary())
    (tmp_path / "notes.pcap").write_text("this is not a capture\n")
    with pytest.raises(CaptureError, match=r"notes\.pcap: not a readable pcap file"):
        judge(tmp_path / "notes.pcap", new_canary())


def test_canary_in_another_flow_overrides_a_tls_looking_probe(tmp_path):
    """The probe's flow looks like mTLS, but its canary crossed readable in a second flow (a bypass)."""
    canary = new_canary()
    other = ("10.9.0.1", 40001)
    frames = [seg(C, S, 0, "S"), seg(C, S, 1, data=_record(tls.APPLICATION_DATA, b"q" * 30)),
              seg(other, ("10.9.0.3", 9000), 0, "S"), seg(other, ("10.9.0.3", 9000), 1, data=canary.encode())]
    wrpcap(str(tmp_path / "bypass.pcap"), frames)
    wire = judge(tmp_path / "bypass.pcap", canary, S[0], S[1])
    assert wire.verdict == "plaintext" and wire.canary_in_clear and "canary" in wire.reason
    assert [f["canary_in_clear"] for f in wire.flows] == [False, True]
    with pytest.raises(CaptureError, match="reused a TLS connection"):
        judge(tmp_path / "bypass.pcap", "mp-canary-absent", S[0], S[1])


@pytest.mark.parametrize(("body", "echoed"), [
    ('{"headers": {"X-Meshproof-Canary": "mp-canary-1"}}', "mp-canary-1"),  # python httpbin
    ('{"headers": {"X-Meshproof-Canary": ["mp-canary-1"]}}', "mp-canary-1"),  # go-httpbin lists values
    ('{"headers": {"x-meshproof-canary": "mp-canary-1"}}', "mp-canary-1"),  # header names are case-blind
    ('{"headers": {"X-Meshproof-Canary": ["mp-canary-1", "mp-canary-2"]}}', "mp-canary-1, mp-canary-2"),
    ('{"headers": {"Host": "httpbin"}}', None),
    ('{"headers": ["X-Meshproof-Canary"]}', None),
    ("[1, 2]", None),
    ("upstream connect error", None),
    (b"\xff\xfe", None),
])
def test_echoed_canary_reads_both_httpbins_and_nothing_else(body, echoed):
    assert echoed_canary(body) == echoed
