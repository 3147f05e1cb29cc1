"""The wire verdict of one probe: a pcap in, a JSON-able dict out.

    judge(pcap, canary, server_ip, server_port) -> WireVerdict(verdict=Wire.MTLS|APP_TLS|PLAINTEXT|NONE, ...)

Per TCP flow and direction the bytes are TLS records or cleartext. A flow is
- "mtls" when it is TLS whose ClientHello offers a mesh ALPN (istio-peer-exchange, istio, istio-http/...,
  istio-h2) and carries an `outbound_.<port>_.<subset>_.<fqdn>` SNI, and no byte of it is cleartext;
- "app-tls" when it is TLS without those marks (an application's own TLS, tunnelled or not);
- "plaintext" when any of its payload, in either direction, is not TLS;
- "none" when it carried no payload (refused, reset, or closed before a byte was sent).
The probe's verdict is the worst flow's (plaintext > app-tls > mtls > none). The probe's canary in the
clear anywhere in the capture makes the verdict "plaintext" whatever the flows looked like: the canary
is unique to the probe, so its bytes crossed the wire readable; that holds even when the canary was seen
only in flows to another address or port than the probe's server (then those flows stand for the probe's).

With a heartbeat (probes/heartbeat.py: a frame from the client's link, sent after the probe, that the capture
must see), a capture without the probe's flow is "none": the probe sent nothing along the path (a client
sidecar that answered or waited by itself). A completed probe with "none" is no pass (cluster/backend.py).

A capture that saw no packets (or not its heartbeat), missed the probe's flow (and saw no canary in the clear
elsewhere, and had no heartbeat), missed bytes of it, or saw only a reused connection whose handshake
happened before the capture cannot prove anything: CaptureError, never a verdict.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from meshproof.vocabulary import Wire
from probes import tls
from probes.errors import CaptureError
from probes.flows import Direction, Flow, read_flows
from probes.heartbeat import HEARTBEAT_SOURCE_PORT, heartbeat_port

__all__ = ["CaptureError", "WireVerdict", "is_mesh_alpn", "is_mesh_sni", "judge", "tls_shortfalls"]

MESH_ALPN = ("istio-peer-exchange", "istio", "istio-h2")
MESH_ALPN_PREFIX = "istio-http/"
_MESH_SNI = re.compile(r"^outbound_\.(\d+)_\.([^_]*)_\.(.+)$")
_REQUEST_LINE = re.compile(rb"^([A-Z]{3,10}) (\S+) (HTTP/\d(?:\.\d)?)\r?\n")
_STATUS_LINE = re.compile(rb"^(HTTP/\d(?:\.\d)?) (\d{3})(?: ([^\r\n]*))?\r?\n")
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_RANK = {"none": 0, "mtls": 1, "app-tls": 2, "plaintext": 3}


@dataclass(frozen=True)
class WireVerdict:
    """What the capture of one probe proves. `to_json()` is the dict cell records and reports store."""

    verdict: Wire
    reason: str  # one sentence: why this verdict
    sni: str | None  # of the deciding flow's ClientHello
    alpn: list[str] | None
    offered_versions: list[str] | None
    tls_version: str | None  # negotiated (the ServerHello's)
    cipher: str | None
    certificates_visible: bool  # a certificate crossed the wire readable (TLS 1.2 or lower)
    certificate_uris: list[str]  # the URI SANs of the readable certificates
    canary_in_clear: bool  # the probe's canary was readable anywhere in the capture
    leaking_flows: list[str]  # "client->server" of the flows that carried it readable
    request_in_clear: bool
    response_in_clear: bool
    http_request_line: str | None  # as seen on the wire, when readable
    http_status_on_wire: int | None
    request: str  # the deciding flow's direction to the server: "tls" | "cleartext" | "none"
    response: str
    packets: int
    pcap: str
    flows: list[dict[str, Any]]  # per-flow facts (summarize_flow)
    # Where an adversarial client's handshake stopped (probes.tls_client.handshake_stop); None for a probe.
    handshake: dict[str, Any] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = str(self.verdict)
        if self.handshake is None:
            del data["handshake"]
        return data


def is_mesh_alpn(alpn: list[str]) -> bool:
    return any(p in MESH_ALPN or p.startswith(MESH_ALPN_PREFIX) for p in alpn)


def is_mesh_sni(sni: str | None) -> bool:
    return bool(sni and _MESH_SNI.match(sni))


def judge(pcap_path: Path | str, canary: str, server_ip: str | None = None,
          server_port: int | None = None, heartbeat: bool = False) -> WireVerdict:
    """Classify the capture of one probe. `server_ip`/`server_port` pick the probe's flows (the flows
    whose server end is that address); without them every TCP flow in the capture is the probe's.
    `heartbeat`: the capture holds probes/heartbeat.py's frame to `server_ip`, sent after the probe from the
    client's link; it must be there, and then a capture without the probe's flow is verdict "none" (nothing of
    the probe reached the server's link), not a capture that missed it."""
    if not isinstance(canary, str) or not canary:
        raise ValueError("judge: canary must be the probe's non-empty canary token (see probes.canary)")
    if server_ip is not None:
        try:
            server_ip = str(ipaddress.ip_address(server_ip))
        except ValueError:
            raise ValueError(f"judge: server_ip {server_ip!r} is not an IPv4 or IPv6 address") from None
    if server_port is not None and (isinstance(server_port, bool) or not isinstance(server_port, int)
                                    or not 1 <= server_port <= 65535):
        raise ValueError(f"judge: server_port {server_port!r} is not a port number (an int, 1-65535)")
    if heartbeat and server_ip is None:
        raise ValueError("judge: a heartbeat needs the server_ip it was sent to")
    pcap = Path(pcap_path)
    frames, flows = read_flows(pcap)
    if frames == 0:
        raise CaptureError(f"{pcap}: the capture saw no packets; the sniffer was not on the probe's path")
    beats = [f for f in flows if heartbeat and _is_heartbeat(f, server_ip, server_port)]
    flows = [f for f in flows if f not in beats]
    if heartbeat and not beats:
        raise CaptureError(f"{pcap}: the capture did not see its heartbeat from the client's link to "
                           f"{server_ip}; the sniffer was not on the probe's path")
    picked = [(server_ip is None or f.server[0] == server_ip) and (server_port is None or f.server[1] == server_port)
              for f in flows]
    target = f"{server_ip or '*'}:{server_port or '*'}"
    summaries = [dict(summarize_flow(flow, canary), probe_flow=mine) for flow, mine in zip(flows, picked, strict=True)]
    canary_in_clear = any(s["canary_in_clear"] for s in summaries)
    probe = [s for s in summaries if s["probe_flow"]]
    leaked_elsewhere = not probe and canary_in_clear
    if leaked_elsewhere:
        # The request went out readable to an address it was not meant for (a sidecar forwarding to the
        # wrong port in the clear): a leak the mesh made, not a capture that missed something.
        probe = [s for s in summaries if s["canary_in_clear"]]
    elif not probe and beats:
        return _nothing_reached(pcap, frames, summaries, target)
    elif not probe:
        seen = ", ".join(f"{f.client[0]}:{f.client[1]}->{f.server[0]}:{f.server[1]}" for f in flows) or "none"
        raise CaptureError(f"{pcap}: {frames} packets but no TCP flow to {target} (flows seen: {seen}); "
                           "the capture missed the probe's flow")

    known = [s for s in probe if s["verdict"] != "unproven"]
    worst = max(known, key=lambda s: _RANK[s["verdict"]], default=probe[0])
    if leaked_elsewhere:
        verdict, reason = "plaintext", (f"the canary is readable on the wire in a flow to {probe[0]['server']}, "
                                        f"not to the probe's server {target}")
    elif worst["verdict"] == "plaintext":
        verdict, reason = "plaintext", worst["reason"]
    elif canary_in_clear:
        verdict, reason = "plaintext", "the canary is readable on the wire, outside the flows that looked encrypted"
    elif len(known) < len(probe) and worst["verdict"] in ("mtls", "none", "unproven"):
        unproven = next(s for s in probe if s["verdict"] == "unproven")
        raise CaptureError(f"{pcap}: the flow {unproven['client']} -> {unproven['server']} proves nothing: "
                           f"{unproven['reason']}")
    else:
        verdict, reason = worst["verdict"], worst["reason"]
    deciding = worst if worst["tls"] or verdict == "plaintext" else next((s for s in probe if s["tls"]), worst)
    hello = deciding["tls"].get("client_hello") or {} if deciding["tls"] else {}
    server_hello = deciding["tls"].get("server_hello") or {} if deciding["tls"] else {}
    certificates = [c for s in probe for c in s["certificates"]]
    return WireVerdict(
        verdict=Wire(verdict),
        reason=reason,
        sni=hello.get("sni"),
        alpn=hello.get("alpn"),
        offered_versions=hello.get("offered_versions"),
        tls_version=server_hello.get("version"),
        cipher=server_hello.get("cipher"),
        certificates_visible=any(c["chain"] for c in certificates),
        certificate_uris=sorted({uri for c in certificates for cert in c["chain"] for uri in cert["uris"]}),
        canary_in_clear=canary_in_clear,
        leaking_flows=[f"{s['client']}->{s['server']}" for s in summaries if s["canary_in_clear"]],
        request_in_clear=any(s["to_server"]["kind"] == "cleartext" for s in probe),
        response_in_clear=any(s["to_client"]["kind"] == "cleartext" for s in probe),
        http_request_line=next((s["to_server"]["http_request_line"] for s in probe
                                if s["to_server"].get("http_request_line")), None),
        http_status_on_wire=next((s["to_client"]["http_status"] for s in probe
                                  if s["to_client"].get("http_status") is not None), None),
        request=deciding["to_server"]["kind"],
        response=deciding["to_client"]["kind"],
        packets=frames,
        pcap=str(pcap),
        flows=summaries,
    )


def _is_heartbeat(flow: Flow, server_ip: str | None, server_port: int | None) -> bool:
    """A lone RST to the heartbeat port and nothing back (the reference mesh's), or a SYN there without payload
    whatever answers it (the kube backend's: between nodes kube-proxy drops a lone RST as conntrack INVALID, so
    it connects from the proxy's group instead, cluster/kube/capture.py heartbeat_command). Either side of a
    flow without SYN or payload may be named its client (read_flows), so the frame's own direction decides."""
    target = (server_ip, heartbeat_port(server_port))
    return any(sent.dst == target and sent.src[1] == HEARTBEAT_SOURCE_PORT and not sent.runs
               and ((sent.rst and not back.frames) or sent.opened)
               for sent, back in ((flow.to_server, flow.to_client), (flow.to_client, flow.to_server)))


def _nothing_reached(pcap: Path, frames: int, summaries: list[dict[str, Any]], target: str) -> WireVerdict:
    """The verdict when the heartbeat proves the capture was on the path and the probe sent nothing along it."""
    return WireVerdict(
        verdict=Wire.NONE, reason=f"nothing of the probe reached {target}: the capture saw the client's "
                                  "heartbeat on that path, and no flow of the probe",
        sni=None, alpn=None, offered_versions=None, tls_version=None, cipher=None, certificates_visible=False,
        certificate_uris=[], canary_in_clear=False, leaking_flows=[], request_in_clear=False,
        response_in_clear=False, http_request_line=None, http_status_on_wire=None, request="none", response="none",
        packets=frames, pcap=str(pcap), flows=summaries)


def tls_shortfalls(verdict: WireVerdict, expected: dict[str, Any]) -> list[str]:
    """How a judged capture falls short of the TLS facts a handshake should show: `expected` holds `version`
    (negotiated), `certificates_visible`, `alpn` (a protocol the ClientHello must offer) and `sni` (exact);
    a None value is not checked. Empty when the wire shows all of them."""
    problems = []
    if expected.get("version") and verdict.tls_version != expected["version"]:
        problems.append(f"negotiated {verdict.tls_version or 'no TLS version'}, not {expected['version']}")
    if expected.get("certificates_visible") is False and verdict.certificates_visible:
        problems.append(f"certificates readable on the wire ({', '.join(verdict.certificate_uris)})")
    if expected.get("alpn") and expected["alpn"] not in (verdict.alpn or []):
        problems.append(f"ClientHello ALPN {verdict.alpn} lacks {expected['alpn']}")
    if expected.get("sni") and verdict.sni != expected["sni"]:
        problems.append(f"SNI {verdict.sni!r}, not {expected['sni']!r}")
    return problems


def summarize_flow(flow: Flow, canary: str) -> dict[str, Any]:
    """Per-flow facts plus the flow's own verdict ("unproven" for a TLS flow seen without its handshake)."""
    tls13 = tls.negotiated_tls13(flow.to_client.data) if tls.starts_like_tls(flow.to_client.data) else False
    up, down = _direction(flow.to_server, tls13), _direction(flow.to_client, tls13)
    marker = canary.encode()
    in_clear = [name for name, d in (("to_server", flow.to_server), ("to_client", flow.to_client))
                if any(marker in run for run in d.runs)]
    hello = up.get("client_hello")
    certificates = [dict(c, sent_by=side) for side, d in (("client", up), ("server", down))
                    for c in d.get("certificates", [])]
    if "cleartext" in (up["kind"], down["kind"]):
        side = "client" if up["kind"] == "cleartext" else "server"
        verdict, reason = "plaintext", f"the {side} sent bytes that are not TLS"
    elif up["kind"] == "tls" and hello:
        mesh_alpn, mesh_sni = is_mesh_alpn(hello["alpn"]), is_mesh_sni(hello["sni"])
        if mesh_alpn and mesh_sni:
            verdict, reason = "mtls", "TLS with the mesh ALPN and an outbound_ SNI"
        else:
            missing = [m for m, ok in (("mesh ALPN", mesh_alpn), ("outbound_ SNI", mesh_sni)) if not ok]
            verdict, reason = "app-tls", f"TLS without the {' and '.join(missing)}"
    elif "tls" in (up["kind"], down["kind"]):
        verdict, reason = "unproven", ("it reused a TLS connection opened before the capture; its handshake is "
                                       "not on the wire (open a new connection per probe)")
    else:
        verdict, reason = "none", "no payload in either direction"
    holes = flow.to_server.holes + flow.to_client.holes
    if holes and verdict != "plaintext":
        # Bytes the capture missed could have been anything: only cleartext already seen is decisive.
        verdict, reason = "unproven", f"the capture missed {holes} stretch(es) of its bytes"
    return {
        "client": f"{flow.client[0]}:{flow.client[1]}",
        "server": f"{flow.server[0]}:{flow.server[1]}",
        "verdict": verdict,
        "reason": reason,
        "syn_seen": flow.syn_seen,
        "ended": "rst" if flow.to_server.rst or flow.to_client.rst else "fin" if flow.closed else "open",
        # Who closed: "rst", "fin" or None per side (the server's RST or FIN says it refused).
        "server_closed": "rst" if flow.to_client.rst else "fin" if flow.to_client.fin else None,
        "client_closed": "rst" if flow.to_server.rst else "fin" if flow.to_server.fin else None,
        "canary_in_clear": bool(in_clear),
        "canary_directions": in_clear,
        "tls": {"client_hello": hello, "server_hello": down.get("server_hello"),
                "hello_retry": down.get("hello_retry", False)} if "tls" in (up["kind"], down["kind"]) else None,
        "certificates": certificates,
        "to_server": up,
        "to_client": down,
    }


def _direction(direction: Direction, tls13: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {"frames": direction.frames, "bytes": direction.payload_bytes,
                               "holes": direction.holes, "conflicting_bytes": direction.conflicting_bytes}
    if not direction.runs:
        return {"kind": "none", **summary}
    data = direction.runs[0]
    if not tls.starts_like_tls(data):
        # Captured from the middle of a connection, a TLS stream may begin inside a record.
        resync = None if direction.start_seen else tls.record_chain_start(data)
        if resync is None:
            return {"kind": "cleartext", **summary, **_http(data), "head": data[:80].decode("latin-1")}
        summary["unknown_prefix_bytes"] = resync
        data = data[resync:]
    walked = tls.walk(data, tls13)
    summary.update({
        "records": walked.records, "truncated": walked.truncated,
        "client_hello": walked.client_hello, "server_hello": walked.server_hello,
        "hello_retry": walked.hello_retry, "certificate_request": walked.certificate_request,
        "certificates": walked.certificates, "handshake_errors": walked.handshake_errors,
    })
    if walked.trailing:
        # TLS that turns into something else: the tail is readable, so the direction is cleartext.
        return {**summary, "kind": "cleartext", "cleartext_after_tls": len(walked.trailing),
                **_http(walked.trailing), "head": walked.trailing[:80].decode("latin-1")}
    return {"kind": "tls", **summary}


def _http(data: bytes) -> dict[str, Any]:
    if data.startswith(_H2_PREFACE):
        return {"http_request_line": "PRI * HTTP/2.0"}
    if match := _REQUEST_LINE.match(data):
        return {"http_request_line": match.group(0).strip().decode("latin-1")}
    if match := _STATUS_LINE.match(data):
        return {"http_status_line": match.group(0).strip().decode("latin-1"), "http_status": int(match.group(2))}
    return {}
