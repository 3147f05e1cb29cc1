"""Waiting for istiod's push and the sidecars' ACK (cluster/kube/xds_sync.py) before the probe streak.

syncz answers are shaped as pilot/pkg/xds/debug.go (release-1.30) writes them; they reach the client through
the real exec path of a loopback API server (tests/kube_apiserver.py). What is proven: which proxy states
count as "the change arrived", that the backend waits for them before its first probe, and what it does
when istiod cannot be asked. How long a real istiod takes is not shown here (docs/kube.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cluster.kube.backend import KubeBackend, KubeHandle
from cluster.kube.convergence import ConvergencePolicy
from cluster.kube.xds_sync import CHANGED_TYPES, SYNCZ_COMMAND, proxy_state, read_syncz, wait_pushed
from tests.kube_apiserver import FakeApiServer
from tests.kube_scenarios import PA_STRICT, scenario

CHANGE = datetime(2026, 11, 30, 5, 0, 0, tzinfo=UTC)
BEFORE, AFTER = "2026-11-30T04:59:58.5Z", "2026-11-30T05:00:01.25Z"
CLIENT, SERVER = ("sleep-r1", "sleep-a"), ("httpbin-r1", "httpbin-b")


def entry(pod: tuple[str, str], sent: str, acked: str, at: str, error: str = "") -> dict:
    ns, name = pod
    status = {"sent": sent, "acked": acked, "sentTime": at, **({"lastError": error} if error else {})}
    return {"proxy": f"sidecar~10.0.0.1~{name}.{ns}~{ns}.svc.cluster.local",
            "resources": {CHANGED_TYPES["cluster"]: status, CHANGED_TYPES["listener"]: {
                "sent": "l1", "acked": "l1", "sentTime": BEFORE}}}


@pytest.mark.parametrize(("sent", "acked", "at", "error", "state"), [
    ("n2", "n2", AFTER, "", "acked"),
    ("n2", "n1", AFTER, "", "sent"),  # on its way, not accepted yet
    ("n2", "n1", AFTER, "cluster rejected: bad tls context", "rejected"),  # a NACK
    ("n1", "n1", BEFORE, "", "not pushed"),  # only what it had before the change
])
def test_a_sidecar_has_the_change_when_it_acked_a_push_sent_after_it(sent, acked, at, error, state):
    assert proxy_state(entry(CLIENT, sent, acked, at, error), CHANGE)[0] == state
    assert proxy_state(None, CHANGE)[0] == "not connected"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def istiod(api: FakeApiServer, answers: list[list[dict]]) -> list:
    """An istiod pod whose syncz answers follow `answers` (the last one repeats); returns the exec log."""
    calls = []
    api.route("GET", "/api/v1/pods", (200, {"items": [
        {"metadata": {"name": "istiod-1-30-3-x", "namespace": "istio-system"}, "status": {"phase": "Running"}}]}))

    def syncz(call):
        calls.append(call)
        return 0, json.dumps(answers[min(len(calls), len(answers)) - 1]), ""
    api.on_exec = syncz
    return calls


def test_waits_through_a_push_in_flight_until_both_sidecars_acked_it():
    answers = [[entry(CLIENT, "n1", "n1", BEFORE), entry(SERVER, "n1", "n1", BEFORE)],
               [entry(CLIENT, "n2", "n1", AFTER), entry(SERVER, "n2", "n2", AFTER)],
               [entry(CLIENT, "n2", "n2", AFTER), entry(SERVER, "n2", "n2", AFTER)]]
    clock = Clock()
    with FakeApiServer() as api:
        calls = istiod(api, answers)
        done = wait_pushed(lambda: read_syncz(api.cluster()), [CLIENT, SERVER], CHANGE, 20, clock=clock,
                           sleep=clock.sleep)
    assert done.synced and done.reads == 3 and {p.state for p in done.proxies} == {"acked"}
    assert calls[0].container == "discovery" and calls[0].command == SYNCZ_COMMAND


@pytest.mark.parametrize(("client_state", "synced"), [
    (entry(CLIENT, "n1", "n1", BEFORE), True),  # istiod found the change outside its scope: nothing outstanding
    (entry(CLIENT, "n2", "n1", AFTER), False),  # never ACKed within the bound
    (entry(CLIENT, "n2", "n1", AFTER, "NACK"), False),
])
def test_at_the_bound_only_a_proxy_with_nothing_outstanding_counts_as_settled(client_state, synced):
    clock = Clock()
    done = wait_pushed(lambda: [client_state, entry(SERVER, "n2", "n2", AFTER)], [CLIENT, SERVER], CHANGE, 20,
                       clock=clock, sleep=clock.sleep)
    assert done.synced is synced and clock.now <= 20


def test_without_a_running_istiod_the_probes_decide_alone():
    with FakeApiServer() as api:
        api.route("GET", "/api/v1/pods", (200, {"items": []}))
        done = wait_pushed(lambda: read_syncz(api.cluster()), [CLIENT], CHANGE, 20)
    assert not done.synced and "control plane away" in done.unreadable


def test_the_backend_probes_only_after_the_sidecars_acked_the_cells_objects():
    """Create -> syncz until both ACKed a push after the object's creationTimestamp -> the probe streak."""
    def created(request, match):
        return 201, {**request.body, "metadata": {**request.body["metadata"],
                                                  "creationTimestamp": "2026-11-30T05:00:00Z"}}

    answers = [[entry(CLIENT, "n1", "n1", BEFORE), entry(SERVER, "n1", "n1", BEFORE)],
               [entry(CLIENT, "n2", "n2", AFTER), entry(SERVER, "n2", "n2", AFTER)]]
    with FakeApiServer() as api:
        calls = istiod(api, answers)
        syncz = api.on_exec

        def exec_(call):
            if call.container == "discovery":
                return syncz(call)
            calls.append(call)
            canary = next(c for c in call.command if c.lower().startswith("x-meshproof-canary")).split(": ")[1]
            return 0, json.dumps({"headers": {"X-Meshproof-Canary": [canary]}}) + "\n200", ""
        api.on_exec = exec_
        api.route("POST", r"/apis/security.istio.io/v1/namespaces/[a-z0-9-]+/peerauthentications", created)
        backend = KubeBackend(convergence=ConvergencePolicy(required=1, settle_s=0, interval_s=0, timeout_s=5))
        backend.cluster = api.cluster()
        handle = KubeHandle(scenario([PA_STRICT]), "r1", {"sleep": CLIENT[0], "httpbin": SERVER[0]}, CLIENT,
                            (*SERVER, "10.0.0.2"), cell_id="c1")
        backend._create_policies(handle, [dict(PA_STRICT, metadata={"name": "default", "namespace": "httpbin-r1"})])
    assert [c.container for c in calls] == ["discovery", "discovery", "sleep"]
    assert handle.sync.synced and handle.convergence.converged
    assert backend._extra(handle)["xds_sync"]["proxies"] == {"sleep-r1/sleep-a": "acked", "httpbin-r1/httpbin-b": "acked"}


def test_a_cells_first_object_comes_a_creation_second_after_the_last_deletion(monkeypatch):
    """creationTimestamp has whole seconds: created in the same second as the previous cell's objects were
    deleted, a push for the deletions would pass for one of the new object. Virtual time (the backend's
    clock), loopback API server; no syncz here (no sidecar), so only the ordering is looked at."""
    from types import SimpleNamespace

    from cluster.kube import backend as kube_backend

    clock = Clock()
    monkeypatch.setattr(kube_backend, "time", SimpleNamespace(monotonic=clock, sleep=clock.sleep))
    old = {**PA_STRICT, "metadata": {"name": "default", "namespace": "httpbin-r1",
                                     "labels": {"meshproof.io/run": "r1", "meshproof.io/cell": "c0"}}}
    listed, created_at = [[old], []], []

    def created(request, match):
        created_at.append(clock.now)
        return 201, {**request.body, "metadata": {**request.body["metadata"], "creationTimestamp": "2026-11-30T05:00:00Z"}}

    with FakeApiServer() as api:
        api.route("GET", "/apis/security.istio.io/v1/peerauthentications",
                  lambda *_: (200, {"items": listed.pop(0) if listed else []}))
        api.route("GET", "/apis/networking.istio.io/v1/destinationrules", (200, {"items": []}))
        api.route("DELETE", "/apis/security.istio.io/v1/namespaces/httpbin-r1/peerauthentications/default",
                  (200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}))
        api.route("POST", "/apis/security.istio.io/v1/namespaces/httpbin-r1/peerauthentications", created)
        api.on_exec = lambda call: (0, "\n503", "")  # a sidecar-less pair's probe; its answer does not matter
        backend = KubeBackend(convergence=ConvergencePolicy(required=1, settle_s=0, interval_s=0, timeout_s=5))
        backend.cluster = api.cluster()
        no_sidecars = scenario([PA_STRICT], {"namespace": "sleep", "sidecar": False},
                               {"namespace": "httpbin", "sidecar": False})
        handle = KubeHandle(no_sidecars, "r1", {"sleep": CLIENT[0], "httpbin": SERVER[0]}, CLIENT,
                            (*SERVER, "10.0.0.2"), cell_id="c1")
        clock.now = 100.0
        backend._clear_cells("r1")
        deleted = backend._deleted_at
        backend._create_policies(handle, [old])
    assert deleted >= 100.0 and created_at and created_at[0] - deleted >= kube_backend.CREATE_SPACING_S - 1e-9


def test_a_cell_without_objects_still_waits_for_the_previous_cells_objects_to_be_gone():
    """Its pods served a cell whose objects were just deleted: the sidecars must have taken that deletion
    (a push after the API server's time of it, read from its Date header) before the probes start."""
    from cluster.kube.backend import Pair

    old = {**PA_STRICT, "metadata": {"name": "default", "namespace": "httpbin-r1",
                                     "labels": {"meshproof.io/run": "r1", "meshproof.io/cell": "c0"}}}
    listed = [[old], []]
    pushed = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()  # after the API server's Date below
    answers = [[entry(CLIENT, "n1", "n1", BEFORE), entry(SERVER, "n1", "n1", BEFORE)],
               [entry(CLIENT, "n2", "n2", pushed), entry(SERVER, "n2", "n2", pushed)]]
    with FakeApiServer() as api:
        calls = istiod(api, answers)
        api.route("GET", "/apis/security.istio.io/v1/peerauthentications",
                  lambda *_: (200, {"items": listed.pop(0) if listed else []}))
        api.route("GET", "/apis/networking.istio.io/v1/destinationrules", (200, {"items": []}))
        api.route("DELETE", "/apis/security.istio.io/v1/namespaces/httpbin-r1/peerauthentications/default",
                  (200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}))
        api.route("GET", "/api/v1/namespaces", (200, {"items": []}))
        syncz = api.on_exec
        api.on_exec = lambda call: syncz(call) if call.container == "discovery" else (0, "\n503", "")
        backend = KubeBackend(convergence=ConvergencePolicy(required=1, settle_s=0, interval_s=0, timeout_s=5))
        backend.cluster = api.cluster()
        pair = Pair((), "r1", {"sleep": CLIENT[0], "httpbin": SERVER[0]}, CLIENT, (*SERVER, "10.0.0.2"))
        backend._clear_pair(pair)
        cleared = pair.cleared_at
        handle = KubeHandle(scenario(), "r1", pair.namespaces, CLIENT, (*SERVER, "10.0.0.2"), cell_id="c1", pair=pair)
        backend._create_policies(handle, [])
    assert cleared is not None and cleared.tzinfo is not None  # the API server's clock, not this machine's
    assert [c.container for c in calls] == ["discovery", "discovery"]  # the old state, then the push
    assert handle.sync.synced and {p.state for p in handle.sync.proxies} == {"acked"}
    assert pair.cleared_at is None  # taken: the next cell on these pods does not wait for it again


def test_a_sidecar_outside_the_changes_scope_settles_soon_after_the_other_acked():
    """istiod pushes one change to every affected proxy at once: PUSH_SPREAD_S after one ACKed, the other
    with nothing outstanding and no push is outside the change's scope; no need to wait out the bound."""
    from cluster.kube.xds_sync import PUSH_SPREAD_S

    clock = Clock()
    answers = iter([[entry(CLIENT, "n1", "n1", BEFORE), entry(SERVER, "n1", "n1", BEFORE)]] * 2
                   + [[entry(CLIENT, "n2", "n2", AFTER), entry(SERVER, "n1", "n1", BEFORE)]] * 100)
    done = wait_pushed(lambda: next(answers), [CLIENT, SERVER], CHANGE, 20, clock=clock, sleep=clock.sleep)
    assert done.synced and [p.state for p in done.proxies] == ["acked", "not pushed"]
    assert PUSH_SPREAD_S <= clock.now - 1.0 < PUSH_SPREAD_S + 1  # from the first ACK (read 3, at 1 s), not 20 s
