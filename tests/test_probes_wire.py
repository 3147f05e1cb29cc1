"""Wire proof on real captures: real TCP/TLS endpoints in two network namespaces of this test, a real sniffer
on the veth between them, then the verdict. Every expectation here has a sibling that turns it red."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from scapy.utils import RawPcapReader

from probes import capture as capture_module
from probes.canary import new_canary
from probes.capture import SETTLE_QUIET_S, Capture
from probes.flows import read_flows
from probes.verdict import CaptureError, judge
from testsupport import rig

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")]

# Server ports in the server namespace, one behaviour each.
MTLS, SIMPLE, PLAIN, SILENT, BAD_REQUEST, BAD_REQUEST_AT_ONCE, KEEPALIVE, TLS_KEEPALIVE, LARGE, UPLOAD = range(
    8000, 8010)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> rig.Pki:
    return rig.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def net(pki):
    """The two namespaces with all servers; deleted by the finalizer whatever the tests did."""
    with rig.Rig() as pair:
        pair.serve(MTLS, rig.answer_echo, rig.server_tls(pki, mutual=True, alpn=rig.ISTIO_ALPN))
        pair.serve(SIMPLE, rig.answer_echo, rig.server_tls(pki, mutual=False, alpn=["http/1.1"]))
        pair.serve(PLAIN, rig.answer_echo)
        pair.serve(SILENT, rig.answer_nothing)
        pair.serve(BAD_REQUEST, rig.answer_400)
        pair.serve(BAD_REQUEST_AT_ONCE, rig.answer_400_at_once)
        pair.serve(KEEPALIVE, rig.answer_keepalive)
        pair.serve(TLS_KEEPALIVE, rig.answer_keepalive, rig.server_tls(pki, mutual=True, alpn=rig.ISTIO_ALPN))
        pair.serve(LARGE, rig.answer_large)
        pair.serve(UPLOAD, rig.answer_upload)
        yield pair
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert pair.prefix not in listed, "the rig left a namespace behind"


def probe(net, tmp_path, port, tls=None, sni=None, name="probe"):
    canary = new_canary()
    pcap = tmp_path / f"{name}.pcap"
    with Capture(net.server_iface, f"tcp port {port}", pcap, netns=net.server_ns) as cap:
        exchange = net.exchange(port, rig.http_request(canary), tls, sni)
    assert cap.packets > 0
    wire = judge(pcap, canary, rig.SERVER_IP, port)
    assert wire.packets == cap.packets and wire.pcap == str(pcap)
    return wire, exchange, canary


def mesh_client(pki, max_version=ssl.TLSVersion.TLSv1_3):
    return rig.client_tls(pki, mutual=True, alpn=rig.ISTIO_ALPN, max_version=max_version)


def test_mtls_tls13_is_mtls_with_nothing_readable(net, pki, tmp_path):
    wire, exchange, canary = probe(net, tmp_path, MTLS, mesh_client(pki), rig.ISTIO_SNI)
    assert canary.encode() in exchange.response and exchange.tls_version == "TLSv1.3"  # the probe really ran
    assert wire.verdict == "mtls"
    assert wire.sni == rig.ISTIO_SNI and wire.alpn == rig.ISTIO_ALPN
    assert wire.tls_version == "TLSv1.3" and "TLSv1.3" in wire.offered_versions
    assert wire.certificates_visible is False and wire.certificate_uris == []
    assert wire.canary_in_clear is False
    assert (wire.request, wire.response) == ("tls", "tls")
    assert not wire.request_in_clear and not wire.response_in_clear and wire.http_status_on_wire is None
    assert wire.flows[0]["ended"] in ("fin", "rst") and wire.flows[0]["syn_seen"]


def test_mtls_tls12_shows_both_certificates(net, pki, tmp_path):
    wire, exchange, _ = probe(net, tmp_path, MTLS, mesh_client(pki, ssl.TLSVersion.TLSv1_2), rig.ISTIO_SNI)
    assert exchange.tls_version == "TLSv1.2"
    assert wire.verdict == "mtls" and wire.tls_version == "TLSv1.2"
    assert wire.certificates_visible is True
    assert wire.certificate_uris == sorted([rig.CLIENT_ID, rig.SERVER_ID])
    senders = {c["sent_by"] for c in wire.flows[0]["certificates"] if c["chain"]}
    assert senders == {"client", "server"}
    assert wire.canary_in_clear is False


def test_simple_tls_is_app_tls(net, pki, tmp_path):
    client = rig.client_tls(pki, mutual=False, alpn=["http/1.1"])
    wire, exchange, _ = probe(net, tmp_path, SIMPLE, client, "httpbin.ns.svc.cluster.local")
    assert exchange.alpn == "http/1.1"
    assert wire.verdict == "app-tls"
    assert wire.alpn == ["http/1.1"] and wire.sni == "httpbin.ns.svc.cluster.local"
    assert "mesh ALPN" in wire.reason and "outbound_ SNI" in wire.reason
    assert wire.canary_in_clear is False


@pytest.mark.parametrize(("alpn", "sni", "missing"), [
    (rig.ISTIO_ALPN, "httpbin.ns.svc.cluster.local", "outbound_ SNI"),
    (["http/1.1"], rig.ISTIO_SNI, "mesh ALPN"),
])
def test_half_the_mesh_marks_is_app_tls(net, pki, tmp_path, alpn, sni, missing):
    """mTLS needs both marks: TLS that has only one of them must not pass as the mesh's."""
    wire, _, _ = probe(net, tmp_path, MTLS, rig.client_tls(pki, mutual=True, alpn=alpn), sni)
    assert wire.verdict == "app-tls" and wire.reason == f"TLS without the {missing}"


def test_plaintext_http_is_plaintext_with_canary(net, tmp_path):
    wire, exchange, _ = probe(net, tmp_path, PLAIN)
    assert exchange.response.startswith(b"HTTP/1.1 200")
    assert wire.verdict == "plaintext"
    assert wire.canary_in_clear is True
    assert set(wire.flows[0]["canary_directions"]) == {"to_server", "to_client"}
    assert wire.http_request_line == "GET /headers HTTP/1.1" and wire.http_status_on_wire == 200
    assert wire.request_in_clear and wire.response_in_clear
    assert wire.tls_version is None and wire.sni is None


def test_pcap_keeps_kernel_timestamps_to_the_microsecond(net, tmp_path):
    wire, _, _ = probe(net, tmp_path, PLAIN)
    with RawPcapReader(wire.pcap) as reader:
        stamps = [meta.sec + meta.usec / 1e6 for _, meta in reader]
    assert stamps == sorted(stamps) and len(set(stamps)) > 1
    assert abs(stamps[0] - time.time()) < 60


def test_strict_server_that_speaks_plaintext_turns_red(net, pki, tmp_path):
    """A deliberately broken "STRICT" server config (no TLS at all): what an mTLS expectation meets."""
    strict_ports = {"STRICT": MTLS}
    broken = dict(strict_ports, STRICT=PLAIN)
    good, _, _ = probe(net, tmp_path, strict_ports["STRICT"], mesh_client(pki), rig.ISTIO_SNI, "good")
    bad, _, _ = probe(net, tmp_path, broken["STRICT"], None, None, "bad")
    assert good.verdict == "mtls" and good.canary_in_clear is False
    assert bad.verdict == "plaintext" and bad.canary_in_clear is True


def test_plaintext_rejected_without_answer_is_recorded(net, tmp_path):
    """A STRICT sidecar closes a plaintext connection: the request is on the wire, no response."""
    wire, exchange, _ = probe(net, tmp_path, SILENT)
    assert exchange.response == b""
    assert wire.verdict == "plaintext"
    assert wire.request_in_clear is True and wire.response_in_clear is False
    assert wire.response == "none" and wire.http_status_on_wire is None
    assert wire.canary_in_clear is True  # the request carried it; the suite decides whether it is a leak


def test_plaintext_400_answer_is_recognisable(net, tmp_path):
    wire, _, _ = probe(net, tmp_path, BAD_REQUEST)
    assert wire.verdict == "plaintext" and wire.http_status_on_wire == 400
    assert wire.flows[0]["to_client"]["http_status_line"] == "HTTP/1.1 400 Bad Request"


def test_mtls_client_answered_by_plaintext_400(net, pki, tmp_path):
    """A plaintext server given a mesh ClientHello answers 400 in the clear: TLS up, cleartext down."""
    wire, exchange, _ = probe(net, tmp_path, BAD_REQUEST_AT_ONCE, mesh_client(pki), rig.ISTIO_SNI)
    assert exchange.response.startswith(b"error:")  # the client's handshake failed
    assert wire.verdict == "plaintext" and wire.reason == "the server sent bytes that are not TLS"
    assert (wire.request, wire.response) == ("tls", "cleartext")
    assert wire.sni == rig.ISTIO_SNI and wire.http_status_on_wire == 400
    assert wire.request_in_clear is False and wire.canary_in_clear is False


def test_refused_connection_is_none(net, tmp_path):
    """Nothing listens on the port: SYN, RST, no payload."""
    pcap, port = tmp_path / "refused.pcap", 8999
    with (Capture(net.server_iface, f"tcp port {port}", pcap, netns=net.server_ns) as cap,
          pytest.raises(ConnectionRefusedError)):
        net.connect(port)
    assert cap.settled_by == "closed"  # the RST ended the wait, not the quiet period
    wire = judge(pcap, new_canary(), rig.SERVER_IP, port)
    assert wire.verdict == "none" and wire.flows[0]["ended"] == "rst"


def test_empty_capture_is_a_harness_error(net, tmp_path):
    pcap = tmp_path / "empty.pcap"
    with Capture(net.server_iface, "tcp port 8998", pcap, netns=net.server_ns) as cap:
        pass
    assert cap.packets == 0 and pcap.stat().st_size == 24  # a valid pcap with only its header
    with pytest.raises(CaptureError, match="saw no packets"):
        judge(pcap, new_canary(), rig.SERVER_IP, 8998)


def test_capture_that_missed_the_probe_flow_is_a_harness_error(net, pki, tmp_path):
    """The capture holds only an encrypted flow to another port: nothing about the probe's flow is known."""
    pcap, canary = tmp_path / "other.pcap", new_canary()
    with Capture(net.server_iface, "tcp", pcap, netns=net.server_ns):
        exchange = net.exchange(TLS_KEEPALIVE, rig.http_request(canary), mesh_client(pki), rig.ISTIO_SNI)
    assert canary.encode() in exchange.response  # the request was sent, only elsewhere
    assert judge(pcap, canary, rig.SERVER_IP, TLS_KEEPALIVE).verdict == "mtls"
    with pytest.raises(CaptureError, match="missed the probe's flow"):
        judge(pcap, canary, rig.SERVER_IP, MTLS)


def test_canary_in_the_clear_to_an_unexpected_port_is_a_leak(net, tmp_path):
    """A sidecar that forwards the request in cleartext to a port other than the probe's server: no flow to
    the server's port, but the canary crossed the wire readable, so it is a plaintext leak, not a capture error.
    Its sibling above (the same wrong port, encrypted) stays a harness error."""
    pcap, canary = tmp_path / "wrong-port.pcap", new_canary()
    with Capture(net.server_iface, "tcp", pcap, netns=net.server_ns):
        exchange = net.exchange(PLAIN, rig.http_request(canary))
    assert exchange.response.startswith(b"HTTP/1.1 200")
    wire = judge(pcap, canary, rig.SERVER_IP, MTLS)
    assert wire.verdict == "plaintext" and wire.canary_in_clear is True
    assert f"to {rig.SERVER_IP}:{PLAIN}, not to the probe's server {rig.SERVER_IP}:{MTLS}" in wire.reason
    assert [f.split("->")[1] for f in wire.leaking_flows] == [f"{rig.SERVER_IP}:{PLAIN}"]
    assert [f["probe_flow"] for f in wire.flows] == [False]
    assert wire.request_in_clear and wire.http_request_line == "GET /headers HTTP/1.1"


def _pooled(net, port, tls, tmp_path, name):
    """Two requests on one connection; the capture covers only the second."""
    conn = net.connect(port)
    if tls is not None:
        conn = tls.wrap_socket(conn, server_hostname=rig.ISTIO_SNI)
    canary, pcap = new_canary(), tmp_path / f"{name}.pcap"
    try:
        conn.sendall(rig.http_request("warm-up", "/get"))
        rig.read_response(conn)
        with Capture(net.server_iface, f"tcp port {port}", pcap, netns=net.server_ns) as cap:
            conn.sendall(rig.http_request(canary))
            assert canary.encode() in rig.read_response(conn)
    finally:
        conn.close()
    # The flow stays open: the quiet period (counted from the last frame) ended the capture.
    assert cap.settled_by == "quiet" and cap.timings_ms["settle"] >= SETTLE_QUIET_S * 1e3 / 2
    return pcap, canary


def test_reused_tls_connection_cannot_prove_mtls(net, pki, tmp_path):
    pcap, canary = _pooled(net, TLS_KEEPALIVE, mesh_client(pki), tmp_path, "pooled-tls")
    assert read_flows(pcap)[1][0].syn_seen is False
    with pytest.raises(CaptureError, match="reused a TLS connection"):
        judge(pcap, canary, rig.SERVER_IP, TLS_KEEPALIVE)


def test_reused_plaintext_connection_is_still_plaintext(net, tmp_path):
    pcap, canary = _pooled(net, KEEPALIVE, None, tmp_path, "pooled-plain")
    wire = judge(pcap, canary, rig.SERVER_IP, KEEPALIVE)
    assert wire.verdict == "plaintext" and wire.canary_in_clear is True
    assert wire.flows[0]["syn_seen"] is False


def test_large_response_in_gso_frames_is_reassembled(net, tmp_path):
    """The canary sits at the end of a 200 kB body: found only if every segment was put back in order."""
    wire, exchange, _ = probe(net, tmp_path, LARGE)
    down = wire.flows[0]["to_client"]
    assert down["bytes"] == len(exchange.response) and down["holes"] == 0
    assert wire.flows[0]["canary_directions"] == ["to_server", "to_client"]
    frames = read_flows(Path(wire.pcap))[1][0].to_client.frames
    assert frames < len(exchange.response) // 1448, "expected GSO super-frames larger than the MTU on veth"


def test_retransmitted_segments_are_merged(net, tmp_path):
    """The server namespace drops every other data segment after the sniffer saw it: real retransmissions."""
    rule = ["INPUT", "-p", "tcp", "--dport", str(UPLOAD), "-m", "length", "--length", "200:65535",
            "-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0", "-j", "DROP"]
    subprocess.run(["ip", "netns", "exec", net.server_ns, "iptables", "-A", *rule], check=True)
    canary, pcap = new_canary(), tmp_path / "retransmit.pcap"
    body = b"y" * 40_000 + canary.encode()
    request = (b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
               % (len(body), body))
    try:
        with Capture(net.server_iface, f"tcp port {UPLOAD}", pcap, netns=net.server_ns):
            exchange = net.exchange(UPLOAD, request)
    finally:
        subprocess.run(["ip", "netns", "exec", net.server_ns, "iptables", "-D", *rule], check=True)
    assert exchange.response.endswith(str(len(body)).encode())
    up = read_flows(pcap)[1][0].to_server
    assert up.data == request and up.holes == 0 and up.conflicting_bytes == 0
    sent = sum(len(data) for _, _, data in up._segments)
    assert sent > len(request), "no segment was retransmitted; the drop rule did not bite"
    assert judge(pcap, canary, rig.SERVER_IP, UPLOAD).canary_in_clear is True


def test_frames_the_kernel_dropped_make_the_capture_an_error(net, tmp_path, monkeypatch):
    """A receive queue too small for one GSO frame: the kernel drops, the capture must say so."""
    monkeypatch.setattr(capture_module, "RECEIVE_BUFFER", 1)  # the kernel rounds it up to its minimum
    pcap = tmp_path / "dropped.pcap"
    with pytest.raises(CaptureError, match=r"the kernel dropped \d+ frames"), \
            Capture(net.server_iface, f"tcp port {LARGE}", pcap, netns=net.server_ns):
        net.exchange(LARGE, rig.http_request(new_canary()))


def _answer_once(listener: socket.socket, answer) -> int:
    """Serve one connection on `listener` with `answer` in a thread; returns the listening port."""
    def serve():
        conn, _ = listener.accept()
        with conn:
            answer(conn)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_capture_in_this_namespace_on_loopback(tmp_path):
    """netns=None: the sniffer opens in the caller's namespace (here: loopback of this process)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = _answer_once(listener, rig.answer_echo)
    canary, pcap = new_canary(), tmp_path / "lo.pcap"
    try:
        with Capture("lo", f"tcp port {port}", pcap) as cap, socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(rig.http_request(canary))
            rig.read_until_close(conn)
    finally:
        listener.close()
    assert cap.packets > 0
    wire = judge(pcap, canary, "127.0.0.1", port)
    assert wire.verdict == "plaintext" and wire.canary_in_clear is True


def test_ipv6_flow_on_loopback(tmp_path):
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    port = _answer_once(listener, rig.answer_400)
    canary, pcap = new_canary(), tmp_path / "lo6.pcap"
    try:
        with Capture("lo", f"tcp port {port}", pcap), socket.create_connection(("::1", port)) as conn:
            conn.sendall(rig.http_request(canary))
            rig.read_until_close(conn)
    finally:
        listener.close()
    wire = judge(pcap, canary, "::1", port)
    assert wire.verdict == "plaintext" and wire.http_status_on_wire == 400 and wire.canary_in_clear
    assert wire.flows[0]["server"] == f"::1:{port}"


def test_parallel_captures_each_see_their_own_probe(net, pki, tmp_path):
    """Probes 4 wide in one process, each with its own sniffer: no capture sees or loses another's flow."""
    cases = {MTLS: ("mtls", mesh_client(pki), rig.ISTIO_SNI), PLAIN: ("plaintext", None, None),
             SILENT: ("plaintext", None, None), BAD_REQUEST: ("plaintext", None, None)}
    verdicts: dict[int, object] = {}

    def run(port):
        try:
            verdicts[port] = probe(net, tmp_path, port, cases[port][1], cases[port][2], name=f"par-{port}")[0]
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            verdicts[port] = err

    for _ in range(3):
        threads = [threading.Thread(target=run, args=(port,)) for port in cases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not [v for v in verdicts.values() if isinstance(v, Exception)], verdicts
        assert {port: v.verdict for port, v in verdicts.items()} == {port: c[0] for port, c in cases.items()}
        assert all(len(v.flows) == 1 for v in verdicts.values())


def test_settle_ends_on_close_not_on_a_fixed_sleep(net, tmp_path):
    """Both FINs seen: the capture stops at once instead of waiting out the quiet period."""
    pcap = tmp_path / "closed.pcap"
    with Capture(net.server_iface, f"tcp port {PLAIN}", pcap, netns=net.server_ns) as cap:
        net.exchange(PLAIN, rig.http_request(new_canary()))
    assert judge(pcap, "mp-canary-x", rig.SERVER_IP, PLAIN).flows[0]["ended"] == "fin"
    assert cap.settled_by == "closed"


@pytest.mark.parametrize(("iface", "bpf", "netns", "message"), [
    ("mpw-nosuch0", "tcp", None, "interface 'mpw-nosuch0'"),
    ("", "tcp", None, "must be an interface name, not ''"),
    ("lo", "tcp port", None, "capture filter 'tcp port' is not valid BPF"),
    ("lo", "tcp", "mpw-nosuch-ns", "network namespace 'mpw-nosuch-ns' does not exist"),
])
def test_capture_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, iface, bpf, netns, message):
    own_netns = os.readlink("/proc/thread-self/ns/net")
    threads = threading.active_count()
    with pytest.raises(CaptureError, match=message), Capture(iface, bpf, tmp_path / "x.pcap", netns=netns):
        pytest.fail("the block must not run")
    assert os.readlink("/proc/thread-self/ns/net") == own_netns
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() <= threads + 1  # at most the socket-closing thread, which ends by itself


def test_an_error_inside_the_block_still_writes_the_pcap_and_propagates(net, tmp_path):
    pcap = tmp_path / "failed-probe.pcap"
    with pytest.raises(RuntimeError, match="probe runner broke"), \
            Capture(net.server_iface, f"tcp port {PLAIN}", pcap, netns=net.server_ns) as cap:
        net.exchange(PLAIN, rig.http_request(new_canary()))
        raise RuntimeError("probe runner broke")
    assert cap.packets > 0 and read_flows(pcap)[0] == cap.packets
    assert not pcap.with_name(pcap.name + ".partial").exists()


def test_capture_to_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CaptureError, match="directory for the pcap does not exist"), \
            Capture("lo", "tcp", tmp_path / "nope" / "x.pcap"):
        pass


class _LaggingCapture(Capture):
    """A sniffer thread that falls behind, as on a loaded machine: each frame costs it 4 ms."""

    def _track(self, frame) -> None:
        time.sleep(0.004)
        super()._track(frame)


def _lagging_window(net, tmp_path, requests=40):
    pcap = tmp_path / "lagging.pcap"
    with _LaggingCapture(net.server_iface, f"tcp port {PLAIN}", pcap, netns=net.server_ns):
        for _ in range(requests):
            net.exchange(PLAIN, rig.http_request(new_canary()))
    return pcap


def test_a_lagging_sniffer_is_drained_before_the_capture_stops(net, tmp_path):
    """The frames still queued for a sniffer that lags seconds behind were on the wire before the stop: every
    exchange's flow is in the pcap, not only those the sniffer had read when the settle limit ran out."""
    _, flows = read_flows(_lagging_window(net, tmp_path))
    assert len(flows) == 40 and all(f.closed for f in flows)


def test_a_sniffer_that_cannot_catch_up_is_an_incomplete_capture(net, tmp_path, monkeypatch):
    monkeypatch.setattr(capture_module, "MAX_DRAIN_S", 0.05)
    with pytest.raises(CaptureError, match="still had frames queued"):
        _lagging_window(net, tmp_path)
