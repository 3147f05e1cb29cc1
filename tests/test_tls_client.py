"""The adversary's openssl client: the command line it runs and how its output and the capture are read.
The stderr samples are OpenSSL 3.0's own lines from handshakes against the reference mesh's sidecars."""

from probes.tls_client import handshake_stop, read_s_client, s_client_command
from testsupport.wire import wire_verdict

REQUIRED = ("CONNECTION ESTABLISHED\nProtocol version: TLSv1.3\nCiphersuite: TLS_AES_256_GCM_SHA384\n"
            "40F7:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:"
            "../ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n")
VERSION = ("4047:error:0A00042E:SSL routines:ssl3_read_bytes:tlsv1 alert protocol version:"
           "../ssl/record/rec_layer_s3.c:1601:SSL alert number 70\n")
ACCEPTED_OUT = "HTTP/1.1 200 OK\r\nserver: envoy\r\n\r\n{\"headers\": {}}"


def test_command_offers_the_versions_alpn_and_certificate():
    argv = s_client_command("10.0.0.2", 8080, ("TLSv1.2", "TLSv1.3"), ("istio",), "/c.pem", "/k.pem")
    assert argv[:4] == ["openssl", "s_client", "-connect", "10.0.0.2:8080"]
    assert argv[argv.index("-min_protocol") + 1] == "TLSv1.2" and argv[argv.index("-max_protocol") + 1] == "TLSv1.3"
    assert argv[argv.index("-alpn") + 1] == "istio" and argv[argv.index("-cert") + 1] == "/c.pem"
    assert "-cipher" not in argv and "-alpn" not in s_client_command("h", 1, ("TLSv1.3",))


def test_legacy_versions_need_security_level_zero():
    argv = s_client_command("h", 1, ("TLSv1", "TLSv1.1"))
    assert argv[argv.index("-cipher") + 1] == "DEFAULT@SECLEVEL=0"


def test_reads_an_alert_a_version_and_an_answer():
    seen = read_s_client(1, "", REQUIRED)
    assert (seen["outcome"], seen["alert"], seen["tls_version"]) == ("alert", "certificate required (116)", "TLSv1.3")
    assert read_s_client(1, "", VERSION)["alert"] == "protocol version (70)"
    accepted = read_s_client(0, ACCEPTED_OUT, "CONNECTION ESTABLISHED\nProtocol version: TLSv1.2\n")
    assert (accepted["outcome"], accepted["http_status"], accepted["body"]) == ("accepted", 200, '{"headers": {}}')
    assert read_s_client(1, "", "CONNECTED(00000003)\nwrite:errno=104\n")["outcome"] == "closed"
    assert read_s_client(1, "", "s_client: Option unknown option -x\n")["outcome"] == "error"


def _judged(server_bytes, records, hello, closed):
    flow = {"probe_flow": True, "tls": {"server_hello": hello}, "server_closed": closed, "client_closed": None,
            "to_client": {"bytes": server_bytes, "records": records}}
    return wire_verdict("app-tls", flows=[{"probe_flow": False}, flow])


def test_handshake_stop_says_where_and_who():
    assert handshake_stop(_judged(0, {}, None, "rst"))["stopped"] == (
        "at the ClientHello: the server sent no byte; then the server reset the connection")
    assert handshake_stop(_judged(7, {"alert": 1}, None, "fin"))["stopped"].startswith(
        "at the ClientHello: the server answered with a cleartext TLS alert")
    stop = handshake_stop(_judged(900, {"handshake": 1, "application_data": 2}, {"version": "TLSv1.3"}, None))
    assert stop["stopped"] == ("after the ServerHello (TLSv1.3): the server sent 2 encrypted record(s); "
                               "the server did not close the connection")
    assert stop["server_hello"] == "TLSv1.3" and handshake_stop(wire_verdict(flows=[]))["server_bytes"] == 0
