"""What the wire proof adds to a probe: `python -m testsupport.probe_bench [--probes N]` prints JSON (milliseconds).

Each kind of probe runs N times without a capture and N times inside Capture + judge, on the rig's real
namespace pair (needs root). "added" is capture start + settle + pcap write + classification; the probe
itself is timed separately. "open_flow" keeps the connection open after the answer (a pooled upstream),
so only the quiet period ends the capture.
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

IMPORT_STARTED = time.perf_counter()  # the import (scapy, once per process) is part of what is measured
from probes.canary import new_canary
from probes.capture import Capture
from probes.verdict import judge
from testsupport import rig

IMPORT_MS = (time.perf_counter() - IMPORT_STARTED) * 1e3
PORTS = {"mtls-tls13": 8000, "mtls-tls12": 8000, "plaintext": 8002, "open_flow": 8003}


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 2),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            "max": round(ordered[-1], 2)}


def _close(connections: list) -> None:
    for conn in connections:
        conn.close()
    connections.clear()


def run(probes: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mpw-bench-") as scratch, rig.Rig() as net:
        workdir = Path(scratch)
        pki = rig.make_pki(workdir)
        net.serve(8000, rig.answer_echo, rig.server_tls(pki, mutual=True, alpn=rig.ISTIO_ALPN))
        net.serve(8002, rig.answer_echo)
        net.serve(8003, rig.answer_keepalive)
        clients = {"mtls-tls13": rig.client_tls(pki, True, rig.ISTIO_ALPN),
                   "mtls-tls12": rig.client_tls(pki, True, rig.ISTIO_ALPN, ssl.TLSVersion.TLSv1_2),
                   "plaintext": None}
        results = {}
        pooled: list = []  # open_flow connections, closed after the capture like a pooled upstream
        for kind, port in PORTS.items():
            tls = clients.get(kind)
            sni = rig.ISTIO_SNI if tls else None

            def send(canary: str, kind=kind, port=port, tls=tls, sni=sni) -> None:
                if kind == "open_flow":
                    conn = net.connect(port)
                    conn.sendall(rig.http_request(canary))
                    rig.read_response(conn)
                    pooled.append(conn)
                else:
                    net.exchange(port, rig.http_request(canary), tls, sni)

            bare = []
            for _ in range(probes):
                began = time.perf_counter()
                send(new_canary())
                bare.append((time.perf_counter() - began) * 1e3)
            _close(pooled)
            parts: dict[str, list[float]] = {"start": [], "probe": [], "settle": [], "write": [], "judge": [],
                                             "added": []}
            verdicts = set()
            for index in range(probes):
                canary, pcap = new_canary(), workdir / f"{kind}-{index}.pcap"
                with Capture(net.server_iface, f"tcp port {port}", pcap, netns=net.server_ns) as cap:
                    began = time.perf_counter()
                    send(canary)
                    parts["probe"].append((time.perf_counter() - began) * 1e3)
                began = time.perf_counter()
                verdicts.add(judge(pcap, canary, rig.SERVER_IP, port).verdict)
                parts["judge"].append((time.perf_counter() - began) * 1e3)
                for name in ("start", "settle", "write"):
                    parts[name].append(cap.timings_ms[name])
                parts["added"].append(sum(parts[n][-1] for n in ("start", "settle", "write", "judge")))
                _close(pooled)
                pcap.unlink()
            results[kind] = {"probe_without_capture": _stats(bare),
                             **{name: _stats(values) for name, values in parts.items()},
                             # the sniffer thread competes with the probe for the CPU and the GIL
                             "probe_slowdown_median": round(statistics.median(parts["probe"])
                                                            - statistics.median(bare), 2),
                             "verdicts": sorted(verdicts)}
    return {"probes_per_kind": probes, "import_ms": round(IMPORT_MS, 1), "goal_added_ms": 50, "kinds": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testsupport.probe_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=50, help="probes per kind (default 50)")
    args = parser.parse_args(argv)
    if args.probes < 1:
        parser.error("--probes must be at least 1")
    print(json.dumps(run(args.probes), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
