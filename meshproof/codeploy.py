"""Many cells in one deployment: one namespace per client group and per server group, every cell's Istio
objects applied in one round, every cell a client -> server pair of that one mesh.

A cell's PeerAuthentications live in its server's namespace and its DestinationRules (for its own server's
host) in its client's, so cells with the same client side share a client namespace and cells with the same
server side share a server namespace:

- a server group: the server's workload fields and the objects in its namespace (the matrix: 10, one per
  server sidecar x PeerAuthentication mode);
- a client group: the client's workload fields and the objects in its namespace, with the server named
  relatively (the matrix: 10, one per client sidecar x DestinationRule mode).

Client group i's objects are written once per server group j it calls, into `<client ns>-<i>`, with the server
renamed to `<server ns>-<j>` (host, SAN, SNI, exportTo, as meshproof/namespaces.py renames run namespaces) and
a DestinationRule's name suffixed `-<j>` (one namespace holds a rule per server host).

Who sees what stays as in the cell alone: a DestinationRule is looked up in the client's namespace, then the
service's, then the root's (push_context.go destinationRule), so client group i's rules for server j reach only
calls i -> j; server group j's objects are the same for every cell that calls j. A cell keeps its own
deployment (`alone`) when that argument does not hold for it: an object in another namespace (the root's: a
mesh-wide policy changes every workload), a DestinationRule for a host other than its server's, one in the
server's namespace exported to the client's namespace by name, or client and server in one namespace.

The oracle predicts a co-deployed cell from `Plan.cell_scenario`: the cell's client and server with every object
of the whole deployment, so its namespace, exportTo and host rules are exercised across all namespaces at once.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from meshproof.istio_api import parse_resources
from meshproof.namespaces import RunNamespaces
from meshproof.scenario import DIMENSIONS, Scenario, Server, Workload


@dataclass(frozen=True)
class PlannedCell:
    cell_id: str
    client: str  # the namespace of its client group
    server: str  # the namespace of its server group
    renamed: tuple[tuple[str, str], ...]  # the cell's own namespaces -> its groups' namespaces

    def names(self, run_id: str, root: str) -> RunNamespaces:
        """The cell's namespace mapping: its own names to the deployment's (and back, for its records)."""
        return _Renamed(run_id, frozenset({root}), frozenset(dict(self.renamed)), self.renamed)


@dataclass(frozen=True)
class Plan:
    """One deployment: a workload per namespace, every object in creation order, the cells as pairs."""

    clients: tuple[Workload, ...]
    servers: tuple[Server, ...]
    manifests: tuple[dict, ...]
    cells: tuple[PlannedCell, ...]
    istio_version: str
    root_namespace: str

    def namespaces(self) -> list[str]:
        return [w.namespace for w in (*self.clients, *self.servers)]

    def cell(self, cell_id: str) -> PlannedCell:
        for cell in self.cells:
            if cell.cell_id == cell_id:
                return cell
        raise KeyError(f"cell {cell_id!r} is not in this deployment")

    def workload(self, namespace: str) -> Workload:
        return next(w for w in (*self.clients, *self.servers) if w.namespace == namespace)

    def scenario(self) -> Scenario:
        """The whole deployment as one scenario (its first pair), for validation and the namespace mapping."""
        return self.cell_scenario(self.cells[0].cell_id)

    def cell_scenario(self, cell_id: str) -> Scenario:
        """The cell's client and server with every object of the deployment: what the oracle predicts on."""
        cell = self.cell(cell_id)
        manifests = list(self.manifests)
        return Scenario(client=self.workload(cell.client), server=self.workload(cell.server),
                        resources=tuple(parse_resources(manifests, f"deployment of cell {cell_id}")),
                        manifests=tuple(manifests), istio_version=self.istio_version,
                        root_namespace=self.root_namespace, name=cell_id)

    def in_run(self, names: RunNamespaces) -> Plan:
        """The plan in the run's namespaces (`<ns>-<run>`)."""
        def moved(w):
            return dataclasses.replace(w, namespace=names.to_run(w.namespace))
        return Plan(tuple(moved(w) for w in self.clients), tuple(moved(w) for w in self.servers),
                    tuple(names.rewrite_manifests(self.manifests)),
                    tuple(PlannedCell(c.cell_id, names.to_run(c.client), names.to_run(c.server),
                                      tuple((a, names.to_run(b)) for a, b in c.renamed)) for c in self.cells),
                    self.istio_version, names.to_run(self.root_namespace))

    def run_names(self, run_id: str) -> RunNamespaces:
        return RunNamespaces(run_id, frozenset({self.root_namespace}), frozenset(self.namespaces()))


@dataclass(frozen=True)
class _Renamed(RunNamespaces):
    """RunNamespaces with a namespace -> namespace table instead of a run suffix (a cell into its groups)."""

    table: tuple[tuple[str, str], ...] = ()

    def to_run(self, namespace: str) -> str:
        return dict(self.table).get(namespace, namespace)

    def from_run(self, namespace: str) -> str:
        return {b: a for a, b in self.table}.get(namespace, namespace)


# The dimensions a co-deployment varies from group to group; every other one (a new one too) stays at its default.
CO_DEPLOYMENT_VARIES = ("namespace", "sidecar", "labels", "service_account", "service_port", "target_port")


def alone_reason(scenario: Scenario) -> str | None:
    """Why a cell cannot share a deployment with others (None: it can)."""
    client, server = scenario.client.namespace, scenario.server.namespace
    if client == server:
        return "client and server share a namespace"
    beyond = [f"{d.path} {d.value(scenario)!r}" for d in DIMENSIONS if d.name not in CO_DEPLOYMENT_VARIES
              and d.value(scenario) != d.default]
    if beyond:
        # one httpbin serves every server pod, each cell is probed through its Service (cell_scenario)
        return f"a co-deployment holds httpbin through a ClusterIP Service only, not {', '.join(beyond)}"
    for res in scenario.resources:
        if res.namespace not in (client, server):
            where = "the root namespace (mesh-wide)" if res.namespace == scenario.root_namespace else res.namespace
            return f"{type(res).__name__} {res.name} lives in {where}"
        host = getattr(res, "host", None)
        if host is not None and host != scenario.server.host:
            return f"DestinationRule {res.namespace}/{res.name} is for host {host!r}, not its server's"
        if res.namespace == server and client in getattr(res, "export_to", ()):
            # a server group's objects are the same for every client that calls it
            return f"DestinationRule {res.namespace}/{res.name} is exported to the client's namespace by name"
    return None


def _key(role: str, workload: Workload, manifests: list[dict]) -> str:
    """A group's identity: its workload's fields (pod_shape's, but the namespace) and its namespace's objects."""
    fields = {d.name: getattr(workload, d.name) for d in DIMENSIONS if d.role == role and d.name != "namespace"}
    return json.dumps([sorted(fields.items()), manifests], sort_keys=True, default=str)


def _group_keys(s: Scenario) -> tuple[str, str]:
    mine = [m for m in s.manifests if m["metadata"]["namespace"] == s.client.namespace]
    theirs = [m for m in s.manifests if m["metadata"]["namespace"] == s.server.namespace]
    return _key("client", s.client, mine), _key("server", s.server, theirs)


def plan_rounds(cells: list[tuple[str, Scenario]], max_pods: int) -> tuple[list[Plan], list[str]]:
    """(as few deployments as hold every cell that can share one, each of at most `max_pods` pods; the ids
    of the cells that keep their own). A cell joins the first round its client and server groups fit in."""
    alone = [cell_id for cell_id, s in cells if alone_reason(s)]
    rounds: list[tuple[set, list]] = []  # (group keys, cells)
    for cell_id, s in cells:
        if cell_id in alone:
            continue
        keys = {("client", _group_keys(s)[0]), ("server", _group_keys(s)[1])}
        home = next((r for r in rounds if len(r[0] | keys) <= max_pods), None)
        if home is None:
            home = (set(), [])
            rounds.append(home)
        home[0].update(keys)
        home[1].append((cell_id, s))
    return [plan(members)[0] for _, members in rounds], alone


def plan(cells: list[tuple[str, Scenario]]) -> tuple[Plan | None, list[str]]:
    """(one deployment for every cell that can share it, the ids of those that keep their own)."""
    alone = [cell_id for cell_id, s in cells if alone_reason(s)]
    shared = [(cell_id, s) for cell_id, s in cells if cell_id not in alone]
    if not shared:
        return None, alone
    first = shared[0][1]
    for cell_id, s in shared:
        if (s.istio_version, s.root_namespace) != (first.istio_version, first.root_namespace):
            raise ValueError(f"cell {cell_id}: istio_version/root_namespace differ from {shared[0][0]}'s; "
                             "one deployment predicts for one Istio minor and one root")
    client_keys: dict[str, int] = {}
    server_keys: dict[str, int] = {}
    clients: list[tuple[Scenario, list[dict]]] = []  # the first cell of each group, its namespace's objects
    servers: list[tuple[Scenario, list[dict]]] = []
    pairs: list[tuple[str, int, int, Scenario]] = []
    for cell_id, s in shared:
        mine = [m for m in s.manifests if m["metadata"]["namespace"] == s.client.namespace]
        theirs = [m for m in s.manifests if m["metadata"]["namespace"] == s.server.namespace]
        client_key, server_key = _group_keys(s)
        i = client_keys.setdefault(client_key, len(client_keys))
        j = server_keys.setdefault(server_key, len(server_keys))
        if i == len(clients):
            clients.append((s, mine))
        if j == len(servers):
            servers.append((s, theirs))
        pairs.append((cell_id, i, j, s))

    def ns(role: str, s: Scenario, index: int) -> str:
        return f"{getattr(s, role).namespace}-{index}"

    client_ns = [ns("client", s, i) for i, (s, _) in enumerate(clients)]
    server_ns = [ns("server", s, j) for j, (s, _) in enumerate(servers)]
    if len(set(client_ns + server_ns)) != len(client_ns) + len(server_ns):
        raise ValueError(f"group namespaces collide: {client_ns + server_ns}")

    def renamer(i: int | None, j: int, s: Scenario) -> _Renamed:
        table = {s.server.namespace: server_ns[j]}
        if i is not None:
            table[s.client.namespace] = client_ns[i]
        return _Renamed("plan", frozenset({s.root_namespace}), frozenset(table), tuple(table.items()))

    manifests: list[dict] = []
    for j, (s, theirs) in enumerate(servers):
        manifests += renamer(None, j, s).rewrite_manifests(theirs)
    called = sorted({(i, j) for _, i, j, _ in pairs})
    for i, (s, mine) in enumerate(clients):
        # Objects that name no server (a PeerAuthentication of the client's namespace) are written once.
        manifests += renamer(i, 0, s).rewrite_manifests([m for m in mine if m["kind"] != "DestinationRule"])
        for _, j in (p for p in called if p[0] == i):
            for doc in renamer(i, j, s).rewrite_manifests([m for m in mine if m["kind"] == "DestinationRule"]):
                doc["metadata"]["name"] = f"{doc['metadata']['name']}-{j}"
                manifests.append(doc)
    parse_resources(manifests, "co-deployment")  # every object valid together, before anything is created
    return Plan(
        clients=tuple(dataclasses.replace(s.client, namespace=client_ns[i]) for i, (s, _) in enumerate(clients)),
        servers=tuple(dataclasses.replace(s.server, namespace=server_ns[j]) for j, (s, _) in enumerate(servers)),
        manifests=tuple(manifests),
        cells=tuple(PlannedCell(cell_id, client_ns[i], server_ns[j],
                                ((s.client.namespace, client_ns[i]), (s.server.namespace, server_ns[j])))
                    for cell_id, i, j, s in pairs),
        istio_version=first.istio_version, root_namespace=first.root_namespace), alone
