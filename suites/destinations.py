"""The destinations suite: the same httpbin reached through its ClusterIP Service, through a headless Service
(clusterIP: None, DNS answers with the pod IP), at the Service's ClusterIP itself and straight at the pod IP, under
each PeerAuthentication mode, with and without sidecars, as declarative cells (suites/cells.py `Cell`).

Users get hurt where the request does not go through a Service VIP: headless Services under STRICT
(istio/istio#19703, #29873, #39439) and pod-IP calls under STRICT (#31319, #37431). The Service's port equals
its target port (8080) in every cell but one, so the four destinations differ only in how they are addressed
(a headless client connects to the pod on the port it asked for). Ids read `destinations/<to>/<sidecars>/pa-<mode>`
with a suffix for the few cells that add a DestinationRule, a port-level policy, a TCP app or other ports.
"""

from __future__ import annotations

from suites.cells import APP, Cell, dr, pa, without
from suites.ports import PA_MODES, SIDECARS

SAME_PORT = {"service_port": 8080, "target_port": 8080}
# to -> (server fields, request fields, how the why says it, where users got hurt)
DESTINATIONS = {
    "service": ({}, {}, "through its ClusterIP Service",
                "the control for the headless and pod-IP cells; Istio docs, Mutual TLS Migration"),
    "headless": ({"headless": True}, {}, "through a headless Service (DNS gives the pod IP)",
                 "istio/istio#19703, #29873"),
    "cluster-ip": ({}, {"to": "cluster-ip"}, "at its Service's ClusterIP (the VIP, no name)",
                   ("a scrape or an app configured by IP, where a sidecar still routes HTTP by its Host: "
                    "istio/istio#41715, httproute.go generateVirtualHostDomains")),
    "pod-ip": ({}, {"to": "pod-ip"}, "straight at the pod IP", "istio/istio#31319, #37431"),
}


def destination_cell(to: str, sidecars: str, pa_mode: str, question: str, suffix: str = "",
                     resources: tuple[dict, ...] | None = None, server: dict | None = None,
                     cites: str | None = None) -> Cell:
    client_sidecar, server_sidecar, where = SIDECARS[sidecars]
    fields, request, how, default_cites = DESTINATIONS[to]
    parts = (to, sidecars, f"pa-{pa_mode.lower()}", *([suffix] if suffix else []))
    why = (f"httpbin reached {how}, {where}, under PeerAuthentication {pa_mode}: pins down {question} "
           f"({cites or default_cites}).")
    description = f"{to}, {where}, PA {pa_mode}" + (f", {suffix}" if suffix else "")
    return Cell("destinations/" + "/".join(parts), why, resources if resources is not None else (pa(pa_mode),),
                {"sidecar": client_sidecar}, {"sidecar": server_sidecar, **SAME_PORT, **fields, **(server or {})},
                description, ("destinations", *parts), request)


GRID_QUESTION = {
    "service": "what the mode does to a call through the Service VIP when the ports are equal",
    "headless": "whether auto mTLS and the mode treat a headless Service's pod-IP endpoint as they treat a VIP",
    "cluster-ip": "whether a call to the VIP itself (Host VIP:port, no name) gets the Service's virtual host, "
                  "so auto mTLS and the mode apply as through the name",
    "pod-ip": "whether a call to the pod IP, which no Service name matches, is held to the same mode",
}


# Designed cells that do not pass end to end on the reference mesh yet: id -> why, and whose side it is (see
# suites/ports.py NOT_YET).
NOT_YET: dict[str, str] = {}


def destinations_cells() -> list[Cell]:
    return without(designed_destinations(), NOT_YET)


def designed_destinations() -> list[Cell]:
    """Every destinations cell designed, those in NOT_YET included."""
    cells = [destination_cell(to, sidecars, mode, GRID_QUESTION[to])
             for to in DESTINATIONS for sidecars in SIDECARS for mode in PA_MODES]
    strict_mutual = (pa("STRICT"), dr("ISTIO_MUTUAL"))
    cells += [
        destination_cell("headless", "sidecars-both", "STRICT",
                         "whether a DestinationRule ISTIO_MUTUAL for the Service host applies to its headless "
                         "endpoints", "dr-istio-mutual", strict_mutual),
        destination_cell("pod-ip", "sidecars-both", "STRICT",
                         "whether a DestinationRule ISTIO_MUTUAL for the Service host reaches a call made to the "
                         "pod IP, which no host matches", "dr-istio-mutual", strict_mutual),
        destination_cell("headless", "sidecars-both", "STRICT",
                         "whether a port-level DISABLE on a headless Service's port reaches both sidecars "
                         "(Istio's own reachability test skips it)", "port-disable",
                         (pa("STRICT"), pa(None, name="httpbin", selector=APP, ports={8080: "DISABLE"})),
                         cites="istio/istio#39439"),
        destination_cell("headless", "sidecars-both", "STRICT",
                         "whether opaque TCP to a headless Service, as a StatefulSet database gets it, is Istio mTLS",
                         "tcp-echo", server={"app": "tcp-echo", "port_name": "tcp"}, cites="istio/istio#29873, #19703"),
        destination_cell("cluster-ip", "sidecars-both", "STRICT",
                         "whether opaque TCP to the VIP, which the Service's name resolves to anyway, gets Istio "
                         "mTLS as through the name", "tcp-echo", server={"app": "tcp-echo", "port_name": "tcp"}),
        destination_cell("pod-ip", "sidecars-both", "STRICT",
                         "whether opaque TCP to the pod IP gets Istio mTLS or is refused", "tcp-echo",
                         server={"app": "tcp-echo", "port_name": "tcp"}),
        destination_cell("pod-ip", "sidecars-both", "STRICT",
                         "what a call to a pod port that no Service port matches (Service 8000, pod 8080) gets from "
                         "the client sidecar", "other-service-port", server={"service_port": 8000}),
    ]
    return cells
