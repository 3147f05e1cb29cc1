"""The reference mesh itself: up and down cleanly, the known cells, live policy changes, bad input, rotation.

Needs root (network namespaces, iptables inside them); skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.factory import started
from cluster.local import lifecycle
from cluster.local.backend import LocalBackend
from meshproof.istio_api import ManifestError
from meshproof.scenario import scenario_from_dict

pytestmark = [pytest.mark.root, pytest.mark.mesh,
              pytest.mark.skipif(os.geteuid() != 0, reason="the reference mesh needs root (netns, iptables)")]

PA_MODES = (None, "STRICT", "PERMISSIVE", "DISABLE")
DR_MODES = (None, "DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")


def manifests(pa_mode: str | None, dr_mode: str | None) -> list[dict]:
    docs = []
    if pa_mode:
        docs.append({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                     "metadata": {"name": "default", "namespace": "bar"}, "spec": {"mtls": {"mode": pa_mode}}})
    if dr_mode:
        tls = {"mode": dr_mode}
        if dr_mode == "MUTUAL":
            tls |= {"clientCertificate": "/etc/certs/cert-chain.pem", "privateKey": "/etc/certs/key.pem",
                    "caCertificates": "/etc/certs/root-cert.pem"}
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                     "metadata": {"name": "httpbin", "namespace": "foo"},
                     "spec": {"host": "httpbin.bar.svc.cluster.local", "trafficPolicy": {"tls": tls}}})
    return docs


def scenario(pa_mode=None, dr_mode=None, client_sidecar=True, server_sidecar=True):
    return scenario_from_dict({"client": {"namespace": "foo", "sidecar": client_sidecar},
                               "server": {"namespace": "bar", "sidecar": server_sidecar},
                               "resources": manifests(pa_mode, dr_mode)}, source="test")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with started(LocalBackend(out_dir=tmp_path_factory.mktemp("local-mesh"))) as backend:
        yield backend


def probe(mesh, scn, capture=False):
    handle = mesh.deploy(scn)
    try:
        return mesh.probe(handle, capture=capture)
    finally:
        mesh.teardown(handle)


def sleep_id(mesh) -> str:
    """The client's identity: its workload lives in the run namespace foo-<run>, as on a cluster."""
    return f"spiffe://cluster.local/ns/foo-{mesh.run.prefix}/sa/sleep"


def leftovers(prefix: str) -> list[str]:
    found = [f"netns {n}" for n in lifecycle.list_netns() if n.startswith(prefix)]
    found += [f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith(prefix)]
    found += [f"etc {n}" for n in os.listdir(lifecycle.NETNS_ETC) if n.startswith(prefix)] \
        if lifecycle.NETNS_ETC.exists() else []
    if (lifecycle.STATE_ROOT / prefix).exists():
        found.append(f"state {lifecycle.STATE_ROOT / prefix}")
    if (lifecycle.RUNTIME_ROOT / prefix).exists():
        found.append(f"runtime {lifecycle.RUNTIME_ROOT / prefix}")
    return found


def root_rules() -> str:
    dump = subprocess.run(["iptables-save"], check=True, capture_output=True, text=True).stdout
    return "\n".join(line for line in dump.splitlines() if not line.startswith(("#", ":")))


def test_mesh_comes_up_and_goes_down_leaving_nothing(tmp_path):
    rules_before = root_rules()
    backend = LocalBackend(out_dir=tmp_path)
    backend.start()
    prefix = backend.run.prefix
    result = probe(backend, scenario("STRICT", "ISTIO_MUTUAL"))
    pids = [pid for pid, _ in backend.run.data["pids"]]
    assert result.outcome == "mtls", result.to_json()
    assert root_rules() == rules_before, "the mesh added rules to the root network namespace"
    pod = backend.pairs[0].client.name
    assert "REDIRECT --to-ports 15001" in subprocess.run(["ip", "netns", "exec", pod, "iptables-save"],
                                                          check=True, capture_output=True, text=True).stdout
    assert leftovers(prefix), "the check below must be able to see a running mesh"
    backend.stop()
    assert leftovers(prefix) == []
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    backend.stop()  # safe twice


# The prototype's cells, and those that follow from Istio's code: (PA, DR, client sidecar, server sidecar).
KNOWN_CELLS = {
    ("STRICT", "ISTIO_MUTUAL", True, True): "mtls",
    ("STRICT", None, True, True): "mtls",  # auto mTLS
    ("STRICT", None, False, True): "reset",  # a client without sidecar meets a TLS-only listener
    ("STRICT", "SIMPLE", True, True): "503",  # no client certificate
    ("STRICT", "DISABLE", True, True): "503",
    ("PERMISSIVE", None, False, True): "plaintext",
    ("PERMISSIVE", None, True, True): "mtls",
    ("DISABLE", "ISTIO_MUTUAL", True, True): "503",  # TLS into a plaintext HTTP listener
    ("DISABLE", None, True, True): "plaintext",  # auto mTLS backs off
    (None, "ISTIO_MUTUAL", True, False): "503",  # mTLS to a server without sidecar
    (None, None, True, False): "plaintext",
}


def test_known_cells_and_record_the_whole_matrix(mesh):
    observed = {}
    for client_sidecar in (True, False):
        for server_sidecar in (True, False):
            for pa_mode in PA_MODES:
                for dr_mode in DR_MODES:
                    result = probe(mesh, scenario(pa_mode, dr_mode, client_sidecar, server_sidecar))
                    cell = (pa_mode, dr_mode, client_sidecar, server_sidecar)
                    observed[cell] = result
    # The record: what the reference mesh did in every cell, for people to read next to the oracle.
    record = Path(__file__).resolve().parents[1] / "reports" / "out" / "local" / "self-test-matrix.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps([
        {"pa": pa, "dr": dr, "client_sidecar": cs, "server_sidecar": ss, "outcome": r.outcome,
         "http_status": r.http_status, "peer_identity": r.peer_identity, "failure_detail": r.failure_detail}
        for (pa, dr, cs, ss), r in observed.items()], indent=1))
    wrong = {cell: (want, observed[cell].outcome, observed[cell].failure_detail)
             for cell, want in KNOWN_CELLS.items() if observed[cell].outcome != want}
    assert wrong == {}
    assert observed[("STRICT", "ISTIO_MUTUAL", True, True)].peer_identity == sleep_id(mesh)
    assert observed[("PERMISSIVE", None, False, True)].peer_identity is None
    # Failures say why: the server's stats or the client sidecar's response flags.
    assert "no_filter_chain_match" in observed[("STRICT", None, False, True)].failure_detail
    assert "response_flags=URX,UF" in observed[("STRICT", "SIMPLE", True, True)].failure_detail
    # Without a sidecar on either side, no policy can matter.
    assert {observed[(pa, dr, False, False)].outcome for pa in PA_MODES for dr in DR_MODES} == {"plaintext"}


def test_workloads_live_in_run_namespaces_and_the_policies_follow_them(mesh):
    """As on a cluster, the pods are in <ns>-<run>: the client's identity names that namespace, the Service
    is known only by its run name, and a DestinationRule written in the scenario's names (the server's
    identity pinned in subjectAltNames) applies to the run, rewritten by the same mapping as on kube."""
    def pinned(san: str) -> list[dict]:
        rule = manifests("STRICT", "ISTIO_MUTUAL")
        rule[1]["spec"]["trafficPolicy"]["tls"]["subjectAltNames"] = [san]
        return rule

    handle = mesh.deploy(scenario_from_dict({"client": {"namespace": "foo"}, "server": {"namespace": "bar"},
                                             "resources": pinned("spiffe://cluster.local/ns/bar/sa/httpbin")}))
    try:
        run = f"-{mesh.run.prefix}"
        assert mesh.run_namespaces(handle).run_namespaces() == {"bar": f"bar{run}", "foo": f"foo{run}"}
        assert (handle.pair.client.workload.namespace, handle.pair.server.workload.namespace) == (f"foo{run}",
                                                                                                  f"bar{run}")
        hosts = (lifecycle.NETNS_ETC / handle.pair.client.name / "hosts").read_text()
        assert f" httpbin.bar{run}.svc.cluster.local" in hosts and " httpbin.bar.svc" not in hosts
        result = mesh.probe(handle, capture=False)
        assert (result.outcome, result.peer_identity) == ("mtls", sleep_id(mesh))
        # The pinned identity is checked: another service account's is refused by the client sidecar.
        mesh.apply(handle, pinned("spiffe://cluster.local/ns/bar/sa/other"))
        assert mesh.probe(handle, capture=False).outcome == "503"
    finally:
        mesh.teardown(handle)


def test_a_root_namespace_the_scenario_names_is_the_runs_and_still_the_root(mesh):
    """A scenario with root_namespace of its own owns it: renamed like its other namespaces, and its
    policies there are still mesh-wide (STRICT reaches the server, a client without sidecar is refused)."""
    strict = manifests("STRICT", None)
    strict[0]["metadata"]["namespace"] = "mesh-root"
    handle = mesh.deploy(scenario_from_dict({"client": {"namespace": "foo", "sidecar": False},
                                             "server": {"namespace": "bar"}, "root_namespace": "mesh-root",
                                             "resources": strict}))
    try:
        assert handle.scenario.root_namespace == f"mesh-root-{mesh.run.prefix}"
        assert mesh.probe(handle, capture=False).outcome == "reset"
        mesh.apply(handle, manifests(None, None))
        assert mesh.probe(handle, capture=False).outcome == "plaintext"
    finally:
        mesh.teardown(handle)


def test_a_broken_control_plane_turns_the_known_cells_red(mesh, monkeypatch):
    """The STRICT cell must be able to fail: a control plane that serves STRICT as plaintext is caught."""
    from cluster.local import controlplane

    real = controlplane.inbound_chains
    monkeypatch.setattr(controlplane, "inbound_chains", lambda pod, port, mode, *kind: real(pod, port, "DISABLE", *kind))
    result = probe(mesh, scenario("STRICT", None, client_sidecar=False))
    assert result.outcome == "plaintext" != KNOWN_CELLS[("STRICT", None, False, True)]


def test_a_call_to_the_cluster_ip_carries_the_vip_as_its_host_and_gets_the_services_mtls(mesh):
    """request.to cluster-ip: the probe's URL is the pair's VIP and the Service port, so curl's Host header, as
    the app sees it, is VIP:port; the client sidecar routes it to the Service (Istio mTLS under STRICT)."""
    handle = mesh.deploy(scenario_from_dict({"client": {"namespace": "foo"}, "server": {"namespace": "bar"},
                                             "request": {"to": "cluster-ip"}, "resources": manifests("STRICT", None)}))
    try:
        result = mesh.probe(handle, capture=False)
        url = result.command.split()[-1]
        assert url == f"http://{handle.pair.vip}:8000/headers"
        assert (result.outcome, result.peer_identity) == ("mtls", sleep_id(mesh))
        echoed = json.loads(handle.pair.client.app.request(url, "mp-host-check").body)["headers"]
        assert echoed["Host"] == f"{handle.pair.vip}:8000"
    finally:
        mesh.teardown(handle)


def test_policy_change_takes_effect_without_restarting_envoy(mesh):
    handle = mesh.deploy(scenario("STRICT", "ISTIO_MUTUAL"))
    try:
        pids = {role: mesh.sidecar(handle, role).process.pid for role in ("client", "server")}
        assert mesh.probe(handle, capture=False).outcome == "mtls"
        mesh.apply(handle, manifests("DISABLE", "ISTIO_MUTUAL"))
        assert mesh.probe(handle, capture=False).outcome == "503"
        mesh.apply(handle, manifests("DISABLE", "DISABLE"))
        assert mesh.probe(handle, capture=False).outcome == "plaintext"
        mesh.apply(handle, manifests("STRICT", "ISTIO_MUTUAL"))
        assert mesh.probe(handle, capture=False).outcome == "mtls"
        assert {role: mesh.sidecar(handle, role).process.pid for role in pids} == pids
        assert all(mesh.sidecar(handle, role).alive() for role in pids)
    finally:
        mesh.teardown(handle)


@pytest.mark.parametrize("bad", [
    [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
      "metadata": {"name": "x", "namespace": "bar"}, "spec": {"mtls": {"mode": "STRICTEST"}}}],
    manifests("DISABLE", None) + [{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                                   "metadata": {"name": "m", "namespace": "foo"},
                                   "spec": {"host": "httpbin.bar.svc.cluster.local", "trafficPolicy": {"tls": {
                                       "mode": "MUTUAL", "clientCertificate": "/nowhere/c.pem",
                                       "privateKey": "/nowhere/k.pem"}}}}],
], ids=["invalid-mode", "unsupported-cert-path"])
def test_bad_manifests_change_nothing(mesh, bad):
    handle = mesh.deploy(scenario("STRICT", "ISTIO_MUTUAL"))
    try:
        files = {p: p.read_bytes() for pod in handle.pair.pods() for p in (pod.dir / "xds").glob("*.json")}
        versions = {role: mesh.sidecar(handle, role).versions() for role in ("client", "server")}
        with pytest.raises(ManifestError) as err:
            mesh.apply(handle, bad)
        assert "spec." in str(err.value)  # names the field
        assert {p: p.read_bytes() for p in files} == files
        assert {role: mesh.sidecar(handle, role).versions() for role in versions} == versions
        assert mesh.probe(handle, capture=False).outcome == "mtls"
    finally:
        mesh.teardown(handle)


def test_certificate_rotation_is_picked_up_without_restart(mesh):
    handle = mesh.deploy(scenario("STRICT", "ISTIO_MUTUAL"))
    try:
        pid = mesh.sidecar(handle, "client").process.pid
        mesh.rotate_identity(handle, "client", rogue=True)
        rejected = _eventually(lambda: mesh.probe(handle, capture=False), lambda r: r.outcome == "503")
        assert "ssl.fail_verify_error" in rejected.failure_detail
        mesh.rotate_identity(handle, "client")
        accepted = _eventually(lambda: mesh.probe(handle, capture=False), lambda r: r.outcome == "mtls")
        assert accepted.peer_identity == sleep_id(mesh)
        assert mesh.sidecar(handle, "client").process.pid == pid
    finally:
        mesh.teardown(handle)


def _eventually(action, done, attempts: int = 50):
    result = None
    for _ in range(attempts):
        result = action()
        if done(result):
            return result
        time.sleep(0.02)
    raise AssertionError(f"never reached the expected state; last: {result.to_json()}")


def _spawn_run(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """A run in another process with one deployed pair, left running; returns it and its prefix."""
    script = tmp_path / "run.py"
    script.write_text(
        "import time\n"
        "from cluster.local.backend import LocalBackend\n"
        "from meshproof.scenario import scenario_from_dict\n"
        f"b = LocalBackend(out_dir={str(tmp_path)!r}); b.start()\n"
        "b.deploy(scenario_from_dict({'client': {'namespace': 'foo'}, 'server': {'namespace': 'bar'}}))\n"
        "print(b.run.prefix, flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    return proc, proc.stdout.readline().strip()


def test_kill_9_then_clean_leaves_nothing_and_spares_live_runs(mesh, tmp_path):
    proc, prefix = _spawn_run(tmp_path)
    try:
        assert prefix, "the crashing run did not start"
        state = json.loads((lifecycle.STATE_ROOT / prefix / "state.json").read_text())
        assert leftovers(prefix)
        assert not any(prefix in line for line in lifecycle.clean_leftovers()), "a live run was cleaned"
    finally:
        proc.kill()
        proc.wait()
    # A SIGKILLed run cannot tear itself down, so whatever is gone now was removed by a clean: this one, or
    # one that a mesh starting in a parallel test ran first.
    lifecycle.clean_leftovers()
    assert leftovers(prefix) == []
    assert [pid for pid, start in state["pids"] if lifecycle._proc_start_time(pid) == start] == []
    # The live run of this module was not touched.
    assert leftovers(mesh.run.prefix)


def test_sigterm_tears_the_run_down_by_itself(tmp_path):
    """A worker killed politely (SIGTERM) removes its own objects; no clean needed."""
    proc, prefix = _spawn_run(tmp_path)
    try:
        assert prefix and leftovers(prefix)
        proc.terminate()
        assert proc.wait(timeout=20) != 0
    finally:
        proc.kill()
    assert leftovers(prefix) == []


def test_wire_proof_of_mtls_and_plaintext(mesh):
    mtls = probe(mesh, scenario("STRICT", "ISTIO_MUTUAL"), capture=True)
    assert (mtls.outcome, mtls.wire.verdict, mtls.wire.tls_version) == ("mtls", "mtls", "TLSv1.3")
    assert mtls.wire.sni == f"outbound_.8000_._.httpbin.bar-{mesh.run.prefix}.svc.cluster.local"
    assert not mtls.wire.canary_in_clear and not mtls.wire.certificates_visible
    assert Path(mtls.wire.pcap).stat().st_size > 0
    plain = probe(mesh, scenario("PERMISSIVE", None, client_sidecar=False), capture=True)
    assert (plain.outcome, plain.wire.verdict, plain.wire.canary_in_clear) == ("plaintext", "plaintext", True)


def _credential_scenario(pa_mode="PERMISSIVE", selector=True):
    spec = {"host": "httpbin.bar.svc.cluster.local",
            "trafficPolicy": {"tls": {"mode": "SIMPLE", "credentialName": "httpbin-ca"}}}
    if selector:
        spec["workloadSelector"] = {"matchLabels": {"app": "sleep"}}
    docs = manifests(pa_mode, None) + [{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                                        "metadata": {"name": "cred", "namespace": "foo"}, "spec": spec}]
    return scenario_from_dict({"client": {"namespace": "foo"}, "server": {"namespace": "bar"},
                               "resources": docs}, source="test")


def test_credential_name_secret_that_never_arrives_is_a_503_with_nothing_on_the_wire(mesh):
    """A selector-scoped SIMPLE rule with credentialName: Istio builds a TLS context whose secret the mesh never
    has, so the client sidecar answers 503 and neither TLS nor cleartext reaches the server."""
    result = probe(mesh, _credential_scenario(), capture=True)
    assert (result.outcome, result.http_status) == ("503", 503), result.to_json()
    assert result.wire.verdict == "none" and not result.wire.canary_in_clear, result.wire
    assert "Secret_is_not_supplied_by_SDS" in result.failure_detail


def test_credential_name_checks_go_red_when_the_rule_is_skipped(mesh, monkeypatch):
    """The check above must be able to fail: a control plane that skips the TLS context (the rule without a
    selector) sends the request in cleartext, and so does the same rule without a selector."""
    from cluster.local import controlplane

    monkeypatch.setattr(controlplane, "_credential_skipped", lambda tls, dr: True)
    broken = probe(mesh, _credential_scenario(), capture=True)
    assert (broken.outcome, broken.wire.canary_in_clear) == ("plaintext", True)
    monkeypatch.undo()
    unscoped = probe(mesh, _credential_scenario(selector=False), capture=True)
    assert (unscoped.outcome, unscoped.wire.canary_in_clear) == ("plaintext", True)


@pytest.mark.parametrize("dr_mode", ["ISTIO_MUTUAL", "SIMPLE"])
def test_tls_into_a_disable_server_is_closed_without_an_http_answer(mesh, dr_mode):
    """DISABLE serves raw_buffer only (as Istio's plaintext filter chain match): a ClientHello matches no
    chain and is closed; no cleartext HTTP 400 comes back."""
    result = probe(mesh, scenario("DISABLE", dr_mode), capture=True)
    assert result.outcome == "503", result.to_json()
    assert result.wire.response != "cleartext" and result.wire.http_status_on_wire is None, result.wire
    assert re.search(r"server:\S*no_filter_chain_match", result.failure_detail), result.failure_detail


def test_tls_to_a_port_the_disable_server_does_not_serve_is_closed_too(mesh):
    """The passthrough chain of a DISABLE workload matches raw_buffer only as well: TLS to another port is
    refused by the sidecar (no_filter_chain_match) instead of being passed to the app's address."""
    handle = mesh.deploy(scenario("DISABLE", None, client_sidecar=False))
    try:
        server = mesh.sidecar(handle, "server")
        before = server.counters(r"no_filter_chain_match$")
        subprocess.run(["ip", "netns", "exec", handle.pair.client.name, "curl", "-sk", "--max-time", "3",
                        f"https://{handle.pair.server.ip}:9443/"], capture_output=True, check=False)
        after = server.counters(r"no_filter_chain_match$")
        assert sum(after.values()) == sum(before.values()) + 1, (before, after)
    finally:
        mesh.teardown(handle)


def test_a_capture_that_misses_the_probe_is_a_harness_error(mesh, monkeypatch):
    idle = mesh.deploy(scenario_from_dict({"client": {"namespace": "idle"}, "server": {"namespace": "idle"}}))
    handle = mesh.deploy(scenario("STRICT", "ISTIO_MUTUAL"))
    try:
        # Sniff another pair's interface: the probe's flow never shows up there.
        monkeypatch.setattr(handle.pair.server, "veth", idle.pair.server.veth)
        result = mesh.probe(handle, capture=True)
        assert result.outcome == "error" and "harness error" in result.failure_detail
        assert result.http_status == 200  # what the probe itself saw is kept
    finally:
        mesh.teardown(handle)
        mesh.teardown(idle)


def test_bench_reports_every_figure():
    from cluster.local.bench import run_bench

    figures = run_bench(pairs=1, probes=5, changes=2)
    assert figures["policy_change_visible"] is True
    for key in ("pair_start_ms", "probe_ms", "probe_with_capture_ms", "policy_change_ms"):
        assert figures[key]["n"] >= 1 and figures[key]["median"] > 0
    assert 50 < figures["memory_per_pair_mb"] < 1000


def test_a_refused_config_rolls_every_sidecar_back(mesh, monkeypatch):
    """Nothing half-applied: when one sidecar refuses its files, the others return to the old config too."""
    from cluster.local import controlplane

    handle = mesh.deploy(scenario("STRICT", "ISTIO_MUTUAL"))
    try:
        real = controlplane.compile_sidecar

        def refused_by_the_server(pod, *args, **kwargs):
            config = real(pod, *args, **kwargs)
            if pod.name == handle.pair.server.name:
                config.listeners[1]["filter_chains"] = []  # Envoy refuses a listener without filter chains
            return config

        monkeypatch.setattr(controlplane, "compile_sidecar", refused_by_the_server)
        with pytest.raises(RuntimeError, match="refused"):
            mesh.apply(handle, manifests("DISABLE", "DISABLE"))  # would send the client plaintext
        monkeypatch.undo()
        result = mesh.probe(handle, capture=False)
        assert result.outcome == "mtls", result.failure_detail  # the client is back on ISTIO_MUTUAL
    finally:
        mesh.teardown(handle)


def test_diagnostics_bundle_for_a_red_cell(mesh):
    handle = mesh.deploy(scenario("STRICT", "SIMPLE"))
    try:
        folder = mesh.diagnostics(handle)
        names = {p.name for p in folder.iterdir()}
        assert {"decisions.json", "client-config_dump.json", "server-config_dump.json", "client-iptables.txt",
                "server-xds-lds.json", "server-httpbin.log"} <= names
        assert "REDIRECT" in (folder / "client-iptables.txt").read_text()
        decisions = json.loads((folder / "decisions.json").read_text())
        assert decisions["client"]["outbound"][f"httpbin.bar-{mesh.run.prefix}.svc.cluster.local"]["tls_mode"] == "SIMPLE"
    finally:
        mesh.teardown(handle)


def test_idle_pairs_beyond_the_cap_are_removed_and_the_next_pair_still_works(mesh):
    from cluster.local.backend import MAX_IDLE_PAIRS

    for client_sidecar, server_sidecar in [(True, True), (True, False), (False, True), (False, False)]:
        mesh.teardown(mesh.deploy(scenario("STRICT", None, client_sidecar, server_sidecar)))
    assert len(mesh.pairs) <= MAX_IDLE_PAIRS
    kept = {pod.name for pair in mesh.pairs for pod in pair.pods()}
    stale = [ns for ns in lifecycle.list_netns() if ns.startswith(mesh.run.prefix) and ns not in kept]
    assert not stale, f"evicted pairs left their network namespaces behind: {stale}"
    assert probe(mesh, scenario("STRICT", None)).outcome == "mtls"  # the evicted shape comes back
