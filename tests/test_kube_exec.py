"""`exec_in` with the official client against a loopback API server (tests/kube_apiserver.py): what goes out
on which transport when execs and REST calls share one Cluster from several threads, as chaos traffic does.

The server holds exec handshakes to order the threads exactly; nothing is timed. It proves the client's
behaviour (kubernetes.stream swapping call_api on the ApiClient it is given), not a cluster's.
"""

from __future__ import annotations

import threading

import pytest

from cluster.kube.client import exec_in
from tests.kube_apiserver import ExecCall, FakeApiServer

POD = r"/api/v1/namespaces/ns/pods/[a-z]+"


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}}


def test_exec_reads_stdout_stderr_and_the_exit_code_from_the_status_channel():
    with FakeApiServer(on_exec=lambda call: (7, f"ran {' '.join(call.command)}\n", "warned\n")) as api:
        done = exec_in(api.cluster(), "ns", "p", "sleep", ["echo", "hi"], timeout_s=10)
    assert (done.exit_code, done.stdout, done.stderr) == (7, "ran echo hi\n", "warned\n")
    call = api.seen("GET", r"/api/v1/namespaces/ns/pods/p/exec")[0]
    assert call.query["container"] == ["sleep"] and call.query["command"] == ["echo", "hi"]


class HeldExecs:
    """Holds each exec handshake until the test releases that pod's exec; then refuses it (403), which is
    enough: the swap under test happens around the handshake."""

    def __init__(self):
        self.arrived = {name: threading.Event() for name in ("a", "b")}
        self.release = {name: threading.Event() for name in ("a", "b")}

    def __call__(self, call: ExecCall):
        self.arrived[call.pod].set()
        assert self.release[call.pod].wait(10), "the test never released this exec"

    def start(self, cluster, name: str) -> threading.Thread:
        def run():
            with pytest.raises(Exception):  # noqa: B017 - the refusal's type is the client's business
                exec_in(cluster, "ns", name, "sleep", ["true"], timeout_s=10)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert self.arrived[name].wait(10), f"exec {name} never reached the server"
        return thread


def rest_calls_went_out_as_rest(api: FakeApiServer) -> bool:
    reads = [r for r in api.requests if r.method == "GET" and not r.path.endswith("/exec")]
    return bool(reads) and not any(r.websocket for r in reads)


def test_a_rest_call_beside_a_running_exec_stays_a_rest_call():
    held = HeldExecs()
    with FakeApiServer(on_exec=held) as api:
        api.route("GET", POD, lambda request, match: (200, pod(match.group(0).rsplit("/", 1)[1])))
        cluster = api.cluster()
        thread = held.start(cluster, "a")  # the exec is inside stream() now
        try:
            read = cluster.core.read_namespaced_pod("x", "ns", _request_timeout=5)
        finally:
            held.release["a"].set()
            thread.join(10)
    assert read.metadata.name == "x"
    assert rest_calls_went_out_as_rest(api)


def test_overlapping_execs_leave_the_shared_client_on_rest():
    """A enters, B enters, A leaves, B leaves: with one shared ApiClient, B restores A's WebSocket call_api
    and every later REST call of the run is sent as a WebSocket upgrade."""
    held = HeldExecs()
    with FakeApiServer(on_exec=held) as api:
        api.route("GET", POD, lambda request, match: (200, pod(match.group(0).rsplit("/", 1)[1])))
        cluster = api.cluster()
        first = held.start(cluster, "a")
        second = held.start(cluster, "b")
        held.release["a"].set()
        first.join(10)
        held.release["b"].set()
        second.join(10)
        read = cluster.core.read_namespaced_pod("x", "ns", _request_timeout=5)
    assert read.metadata.name == "x"
    assert rest_calls_went_out_as_rest(api)
