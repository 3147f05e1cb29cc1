"""The capture's heartbeat (probes/heartbeat.py) and what judge makes of it: proof that the capture was on the
path, so a missing probe flow means nothing reached the server; without it, a missing flow proves nothing."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapWriter

from probes.errors import CaptureError
from probes.heartbeat import frame, heartbeat_port
from probes.verdict import judge

CLIENT, SERVER = "10.250.9.2", "10.250.9.3"
CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:02", "02:00:00:00:00:03"
CANARY = "mp-canary-00112233aabbccdd"


def pcap(tmp_path, *frames: bytes):
    path = tmp_path / "probe.pcap"
    with RawPcapWriter(str(path), linktype=1) as writer:
        writer.write_header(None)
        for data in frames:
            writer.write_packet(data, sec=0, usec=0)
    return path


def beat(port: int = 8080) -> bytes:
    return frame(CLIENT_MAC, SERVER_MAC, CLIENT, SERVER, heartbeat_port(port))


def segment(payload: bytes, flags: str = "PA", port: int = 8080) -> bytes:
    return bytes(Ether(src=CLIENT_MAC, dst=SERVER_MAC) / IP(src=CLIENT, dst=SERVER) /
                 TCP(sport=40000, dport=port, flags=flags, seq=1000) / payload)


def test_the_heartbeat_frame_is_a_well_formed_rst_to_the_server():
    parsed = Ether(beat())
    assert (parsed[IP].src, parsed[IP].dst, parsed[TCP].dport, str(parsed[TCP].flags)) == (CLIENT, SERVER, 9, "R")
    rebuilt = Ether(bytes(parsed))  # scapy recomputes nothing it was given: the checksums must already be right
    del rebuilt[IP].chksum, rebuilt[TCP].chksum
    assert Ether(bytes(rebuilt))[IP].chksum == parsed[IP].chksum
    assert Ether(bytes(rebuilt))[TCP].chksum == parsed[TCP].chksum
    assert heartbeat_port(9) == 19  # never the probe's own port


def test_only_the_heartbeat_means_nothing_reached_the_server(tmp_path):
    verdict = judge(pcap(tmp_path, beat()), CANARY, SERVER, 8080, heartbeat=True)
    assert verdict.verdict == "none" and "nothing of the probe reached" in verdict.reason
    assert verdict.flows == [] and not verdict.canary_in_clear


def test_without_asking_for_the_heartbeat_the_same_capture_proves_nothing(tmp_path):
    with pytest.raises(CaptureError, match="no TCP flow"):
        judge(pcap(tmp_path, beat()), CANARY, SERVER, 8080)


def test_a_capture_without_its_heartbeat_is_a_harness_error(tmp_path):
    with pytest.raises(CaptureError, match="did not see its heartbeat"):
        judge(pcap(tmp_path, segment(b"meshproof-canary x\n")), CANARY, SERVER, 8080, heartbeat=True)


def test_the_heartbeat_hides_no_flow_of_the_probe(tmp_path):
    verdict = judge(pcap(tmp_path, segment(b"", "S"), segment(f"meshproof-canary {CANARY}\n".encode()), beat()),
                    CANARY, SERVER, 8080, heartbeat=True)
    assert verdict.verdict == "plaintext" and verdict.canary_in_clear, verdict.reason


def test_a_heartbeat_needs_the_server_address():
    with pytest.raises(ValueError, match="server_ip"):
        judge("unused.pcap", CANARY, heartbeat=True)


def test_the_heartbeat_is_found_whichever_address_sorts_first(tmp_path):
    """A flow without SYN or payload has no client by the wire's evidence: the RST's direction decides."""
    low_server = frame(CLIENT_MAC, SERVER_MAC, "10.250.9.9", SERVER, heartbeat_port(8080))  # "10.250.9.3" sorts first
    verdict = judge(pcap(tmp_path, low_server), CANARY, SERVER, 8080, heartbeat=True)
    assert verdict.verdict == "none"
