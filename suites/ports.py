"""The ports suite: what the app speaks x how the Service port is named x PeerAuthentication x DestinationRule x
sidecars, as declarative cells (suites/cells.py `Cell`).

Istio reads a port's protocol from its name (http*, tcp*, https*/tls*; any other name: sniffing), and users who
run TCP, server-first or app-TLS servers get hurt there (docs/field research: istio/istio#10062, #16455, #22082,
#40680). The full product (4 apps x 5 names x 3 x 3 x 3) mostly repeats itself, so the cells are the subset where
each asks its own question:

- sidecar -> sidecar, no DestinationRule (auto mTLS), under STRICT, PERMISSIVE and DISABLE: every app on every
  name, except where the client sidecar alone decides whatever the server's mode (a non-HTTP app on a port named
  http, a server-first app behind sniffing), which runs under PERMISSIVE (and STRICT for the sniffing hang);
- a client without a sidecar -> a sidecar server: only the server's inbound chains decide, so the names that
  differ there (http, tcp, sniffing; https only for the app-TLS app), under each mode;
- a client sidecar -> a server without one: what the client sidecar's outbound does with each protocol, and an
  ISTIO_MUTUAL DestinationRule that has no plaintext fallback;
- DestinationRules that override auto mTLS: DISABLE towards STRICT and PERMISSIVE, ISTIO_MUTUAL towards DISABLE.

httpbin on a port named http is the matrix's own cell (suites/matrix.py) and is left out here. Ids read
`ports/<app>/<port name>/<sidecars>/pa-<mode>/dr-<mode>`; the sidecar part (`sidecars-both`, `sidecar-server-only`,
`sidecar-client-only`) is not a matrix axis, so the matrix picture never mistakes a ports cell for one of its own.
"""

from __future__ import annotations

from suites.cells import Cell, dr, pa, without

PA_MODES = ("PERMISSIVE", "STRICT", "DISABLE")
# The sidecar part of an id -> (client sidecar, server sidecar, how the why says it).
SIDECARS = {
    "sidecars-both": (True, True, "between two sidecars"),
    "sidecar-server-only": (False, True, "from a client without a sidecar to a server with one"),
    "sidecar-client-only": (True, False, "from a client sidecar to a server without one"),
}
APP_TEXT = {
    "httpbin": "Plain HTTP/1.1 (httpbin)",
    "tcp-echo": "A client-first TCP echo",
    "banner": "A server-first TCP banner (it greets before the client speaks, like MySQL or SMTP)",
    "https": "httpbin behind its own TLS (curl -k)",
}
PORT_TEXT = {
    "http": "a port named http (Istio reads HTTP)",
    "tcp": "a port named tcp (Istio reads opaque TCP)",
    "https": "a port named https (Istio reads TLS, opaque to the sidecar)",
    "tls": "a port named tls",
    "web": "a port named web (no protocol prefix: Istio sniffs the protocol)",
}
PROTOCOL_SELECTION = "Istio docs, Protocol Selection"
SERVER_FIRST = "istio/istio#10062, #16455; Istio docs, Application Requirements, Server First Protocols"
APP_TLS = "istio/istio#40680, #41138"
# (app, port name) -> (what the cell pins down, where users got hurt).
QUESTION = {
    ("httpbin", "tcp"): ("whether HTTP still gets Istio mTLS when the sidecars carry it as opaque TCP",
                         f"{PROTOCOL_SELECTION}; istio/istio#22082"),
    ("httpbin", "https"): ("whether plain HTTP on a port named for TLS is carried as opaque TCP", PROTOCOL_SELECTION),
    ("httpbin", "web"): ("whether sniffing finds HTTP and treats the call as HTTP", PROTOCOL_SELECTION),
    ("tcp-echo", "http"): ("whether a non-HTTP payload on a port misnamed http is refused by the HTTP proxy",
                           PROTOCOL_SELECTION),
    ("tcp-echo", "tcp"): ("whether opaque TCP gets Istio mTLS, proven on the wire since telemetry cannot tell",
                          "istio/istio#22082, #17110"),
    ("tcp-echo", "https"): ("whether bytes that are not TLS on a port named https pass as opaque TCP",
                            PROTOCOL_SELECTION),
    ("tcp-echo", "web"): ("whether sniffing falls back to TCP for a client-first payload that is not HTTP",
                          PROTOCOL_SELECTION),
    ("banner", "http"): (("whether a server-first protocol on a port named http hangs while the HTTP proxy waits "
                         "for a request"), SERVER_FIRST),
    ("banner", "tcp"): ("whether a server-first protocol works on a port declared tcp, the documented fix",
                        SERVER_FIRST),
    ("banner", "https"): ("whether a server-first protocol on a port named https waits behind TLS inspection",
                          SERVER_FIRST),
    ("banner", "web"): (("whether a server-first protocol hangs behind protocol sniffing (protocolDetectionTimeout "
                        "0s)"), SERVER_FIRST),
    ("https", "http"): ("whether the app's own TLS on a port named http is refused by the HTTP proxy",
                        f"{APP_TLS}; {PROTOCOL_SELECTION}"),
    ("https", "tcp"): ("whether the app's own TLS on a port named tcp passes through the sidecars", APP_TLS),
    ("https", "https"): (("whether the app's own TLS on a port named https passes through the sidecars, and "
                         "whether Istio mTLS wraps it"), APP_TLS),
    ("https", "tls"): ("whether a port named tls carries the app's own TLS as one named https does",
                       f"{APP_TLS}; {PROTOCOL_SELECTION}"),
    ("https", "web"): ("whether sniffing recognises the app's own TLS and passes it through",
                       f"{APP_TLS}; {PROTOCOL_SELECTION}"),
}
COMBOS = tuple(QUESTION)  # every (app, port name) but httpbin on http (the matrix's)
# Where only the client sidecar decides: the HTTP proxy refuses what is not HTTP, and sniffing waits for a
# server-first client's first bytes, whatever the server's mode.
CLIENT_DECIDES = {("tcp-echo", "http"), ("banner", "http"), ("https", "http"), ("banner", "web")}
# The names a client without a sidecar tells apart: the server's inbound chains are HTTP, TCP (tcp, https, tls)
# or sniffing; https only for the app whose TLS it is named for.
INBOUND_NAMES = ("http", "tcp", "web")
# Apps that answer a client sidecar's ClientHello when it reaches them unterminated (ISTIO_MUTUAL towards a server
# without a sidecar or under DISABLE), so the client sidecar's handshake fails at once: httpbin answers 400, the
# banner greets, the https app completes TLS with its own certificate. Not tcp-echo: it echoes at a '\n' only, which
# the ClientHello's random bytes hold about one time in three (Istio's samples/tcp-echo reads lines too), so the
# call is reset or waits past the probe's deadline by chance.
SPEAKS_BACK = (("httpbin", "tcp"), ("banner", "tcp"), ("https", "https"))


def _slug(mode: str | None) -> str:
    return "none" if mode is None else mode.lower().replace("_", "-")


def _dr_text(mode: str | None) -> str:
    return {None: "no DestinationRule (auto mTLS)", "ISTIO_MUTUAL": "a DestinationRule ISTIO_MUTUAL",
            "DISABLE": "a DestinationRule DISABLE (plaintext from the client sidecar)"}[mode]


def port_cell(app: str, port: str, sidecars: str, pa_mode: str, dr_mode: str | None = None,
              question: str | None = None, cites: str | None = None, service_port: int | None = None,
              app_protocol: str | None = None) -> Cell:
    """One ports cell; `question` and `cites` replace the (app, port) ones where the policies ask something else;
    `service_port` moves the Service port off its default (the id's port part reads `<name>@<number>`) and
    `app_protocol` sets the port's appProtocol (`<name>+<appProtocol>`, '/' read as '-')."""
    client_sidecar, server_sidecar, where = SIDECARS[sidecars]
    default_question, default_cites = QUESTION[(app, port)]
    named = f"{port}@{service_port}" if service_port else port
    named += f"+{app_protocol.replace('/', '-')}" if app_protocol else ""
    parts = (app, named, sidecars, f"pa-{_slug(pa_mode)}", f"dr-{_slug(dr_mode)}")
    resources = [pa(pa_mode)] + ([dr(dr_mode)] if dr_mode else [])
    on = f"a port named {port} numbered {service_port}" if service_port else PORT_TEXT[port]
    on += f" with appProtocol {app_protocol}" if app_protocol else ""
    why = (f"{APP_TEXT[app]} on {on}, {where}, under PeerAuthentication {pa_mode} with "
           f"{_dr_text(dr_mode)}: pins down {question or default_question} ({cites or default_cites}).")
    description = (f"{app} on port '{named}', {where}, PA {pa_mode}, "
                   f"{'DR ' + dr_mode if dr_mode else 'no DR'}")
    server = {"sidecar": server_sidecar, "app": app, "port_name": port,
              **({"service_port": service_port} if service_port else {}),
              **({"app_protocol": app_protocol} if app_protocol else {})}
    return Cell("ports/" + "/".join(parts), why, tuple(resources), {"sidecar": client_sidecar}, server,
                description, ("ports", *parts))


# Istio's wellKnownPorts (pkg/config/kube/conversion.go: SMTP, DNS, MySQL, MongoDB): a name it does not know on one
# of them is opaque TCP rather than sniffed, because sniffing would hang these server-first protocols.
WELL_KNOWN_PORTS = (25, 53, 3306, 27017)

# Designed cells that do not pass end to end on the reference mesh yet: id -> why, and whose side it is. They wait
# here, outside the suite (never run as a pass or a skip), until the oracle or the mesh handles them.
NOT_YET: dict[str, str] = {}


def ports_cells() -> list[Cell]:
    return without(designed_ports(), NOT_YET)


def designed_ports() -> list[Cell]:
    """Every ports cell designed, those in NOT_YET included."""
    cells = []
    # sidecar -> sidecar, auto mTLS, each mode
    for app, port in COMBOS:
        for mode in PA_MODES:
            if (app, port) in CLIENT_DECIDES and mode != "PERMISSIVE" and (app, port, mode) != ("banner", "web", "STRICT"):
                continue
            cells.append(port_cell(app, port, "sidecars-both", mode))
    # a client without a sidecar: the server's inbound chains alone
    for app, port in COMBOS:
        if port in INBOUND_NAMES or (app, port) == ("https", "https"):
            if (app, port) == ("https", "tcp"):
                continue  # app TLS is asked about on its own name, https
            for mode in PA_MODES:
                cells.append(port_cell(app, port, "sidecar-server-only", mode))
    # a client sidecar -> a server without one: the outbound side alone (STRICT guards nothing there)
    for app, port in COMBOS:
        if (app, port) not in CLIENT_DECIDES:
            cells.append(port_cell(app, port, "sidecar-client-only", "STRICT"))
    no_fallback = ("whether ISTIO_MUTUAL from a DestinationRule goes to a server without a sidecar with no "
                   "plaintext fallback, so the connection is reset")
    for app, port in SPEAKS_BACK:
        cells.append(port_cell(app, port, "sidecar-client-only", "STRICT", "ISTIO_MUTUAL", no_fallback,
                               "istio/istio#36672, #12795"))
    # DestinationRules that override auto mTLS, between two sidecars
    refused = ("whether STRICT's TCP chains refuse plaintext from a client sidecar told to send it (a reset, not "
               "HTTP's 503)")
    for app, port in (("httpbin", "tcp"), ("tcp-echo", "tcp"), ("banner", "tcp"), ("https", "https"),
                      ("tcp-echo", "web")):
        cells.append(port_cell(app, port, "sidecars-both", "STRICT", "DISABLE", refused, "istio/istio#22082"))
    permissive = {
        ("banner", "tcp"): (("whether PERMISSIVE's TLS detection lets a server-first protocol through in plaintext "
                            "when the client sidecar sends no TLS"), SERVER_FIRST),
        ("https", "https"): (("whether PERMISSIVE passes the app's own TLS through without terminating it when the "
                             "client sidecar adds no mTLS"), APP_TLS),
        ("tcp-echo", "web"): ("whether PERMISSIVE's sniffing accepts a plaintext TCP payload from a client sidecar",
                              PROTOCOL_SELECTION),
    }
    for (app, port), (question, cites) in permissive.items():
        cells.append(port_cell(app, port, "sidecars-both", "PERMISSIVE", "DISABLE", question, cites))
    well_known = ("whether a port name Istio does not know on a well-known port is opaque TCP, so the server-first "
                  "greeting that hangs behind sniffing on another port number gets through")
    for number in WELL_KNOWN_PORTS:
        cells.append(port_cell("banner", "web", "sidecars-both", "PERMISSIVE", None, well_known,
                               f"{SERVER_FIRST}; {PROTOCOL_SELECTION}", service_port=number))
    to_disable = ("whether DISABLE's plaintext-only TCP chains refuse Istio mTLS that a DestinationRule forces "
                  "(a reset)")
    for app, port in SPEAKS_BACK:
        cells.append(port_cell(app, port, "sidecars-both", "DISABLE", "ISTIO_MUTUAL", to_disable,
                               "istio/istio#36672"))
    return cells + with_app_protocol()


# A Service port's appProtocol, which Istio reads instead of its name (conversion.go ConvertProtocol): what charts
# set so as not to rename a port (kubernetes-sigs/metrics-server#1540, neuvector/neuvector-helm#389,
# nats-io/k8s#360, kiali/kiali#4498). (app, port name, appProtocol, sidecars, mode, question, where users got hurt)
APP_PROTOCOL_CELLS = (
    ("banner", "web", "tcp", "sidecars-both", "STRICT",
     ("whether appProtocol tcp on a port whose name Istio does not know turns sniffing off, so a server-first "
      "greeting gets through in Istio mTLS"),
     f"nats-io/k8s#360; {SERVER_FIRST}"),
    ("banner", "web", "tcp", "sidecar-server-only", "PERMISSIVE",
     ("whether appProtocol tcp also saves a client without a sidecar under PERMISSIVE, where the server sidecar's "
      "TLS detection waits for the client's first bytes"),
     SERVER_FIRST),
    ("banner", "http", "tcp", "sidecars-both", "STRICT",
     "whether appProtocol wins over the port name: tcp on a port named http makes a server-first protocol work",
     f"kiali/kiali#4498; {PROTOCOL_SELECTION}"),
    ("tcp-echo", "http", "tcp", "sidecars-both", "STRICT",
     ("whether appProtocol tcp on a port named http carries a non-HTTP payload in Istio mTLS instead of the HTTP "
      "proxy's passthrough"),
     f"kiali/kiali#4498; {PROTOCOL_SELECTION}"),
    ("https", "http", "https", "sidecars-both", "STRICT",
     ("whether appProtocol https on a port named http passes the app's own TLS through wrapped in Istio mTLS, where "
      "the name alone sends it out of the HTTP proxy's passthrough without Istio mTLS"),
     f"kubernetes-sigs/metrics-server#1540; {APP_TLS}"),
    ("tcp-echo", "web", "kubernetes.io/ws", "sidecars-both", "PERMISSIVE",
     ("whether Kubernetes' standard appProtocol kubernetes.io/ws is read as HTTP: a non-HTTP payload then leaves "
      "the client sidecar in plaintext and the server's HTTP chain refuses it, where sniffing would carry it in "
      "Istio mTLS"),
     f"{PROTOCOL_SELECTION}; Kubernetes Service appProtocol"),
)


def with_app_protocol() -> list[Cell]:
    return [port_cell(app, port, sidecars, mode, None, question, cites, app_protocol=app_protocol)
            for app, port, app_protocol, sidecars, mode, question, cites in APP_PROTOCOL_CELLS]
