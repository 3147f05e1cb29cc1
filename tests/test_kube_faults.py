"""Kube fault injection, everything that needs no cluster.

The commands each fault runs in a pod's network namespace are run here for real, in two network namespaces
these tests create and remove (a veth pair named eth0 on both ends, no route or rule in the root network
namespace); what `heal` runs must leave iptables and tc exactly as they were. The sidecar kill script runs
against a real Envoy in a PID namespace of its own. No test here stands in for a cluster: the Kubernetes API
parts (exec, scaling, pod status) are exercised on kind by the chaos suites.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.faults import FaultError
from cluster.kube import faults as kube_faults
from cluster.kube.backend import KubeBackend
from cluster.kube.faults import (
    FAULT_IN,
    KubeFaults,
    MeshWideRefused,
    bandwidth_commands,
    delay_commands,
    heal_commands,
    istiod_targets,
    kill_script,
    loss_commands,
    partition_commands,
    serials,
    undo,
)
from cluster.kube.render import Images, capture_container
from cluster.schemas.validate import errors
from tests.kube_apiserver import FakeApiServer

ENVOY = Path(sys.executable).parent.parent / "lib/python3.11/site-packages/envoy/_bin/envoy"
needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables") or not shutil.which("tc"),
                                reason="needs root, iptables and tc to create network namespaces")

FAULTS = {
    "bandwidth": lambda: bandwidth_commands("128kbit"),
    "delay": lambda: delay_commands(300),
    "loss": lambda: loss_commands(0.3),
    "partition": lambda: partition_commands("10.253.7.1"),
}


# --- the ephemeral container ---------------------------------------------------------------------------

def test_tools_container_is_a_valid_ephemeral_container_with_net_admin():
    spec = capture_container(kube_faults.TOOLS, Images())
    assert errors(spec, as_kind="EphemeralContainer") == []
    assert "NET_ADMIN" in spec["securityContext"]["capabilities"]["add"]  # tc and iptables need it
    assert ":" in spec["image"] and not spec["image"].endswith(":latest")  # pinned
    spec["securityContext"]["capabilities"] = {"add": "NET_ADMIN"}  # a string, not a list: must go red
    assert errors(spec, as_kind="EphemeralContainer")


# --- commands and their inverse ------------------------------------------------------------------------

@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_heal_is_the_exact_inverse_newest_first(fault):
    inject = FAULTS[fault]()
    heal = heal_commands(inject)
    assert len(heal) == len(inject)
    for command, inverse in zip(inject, reversed(heal), strict=True):
        assert inverse == undo(command)
        assert inverse != command
    for chain in {c[3] for c in inject if c[2] == "-N"}:  # rule and hook leave a chain before the chain goes
        removed = heal.index(["iptables", "-w", "-X", chain])
        assert all(i < removed for i, c in enumerate(heal) if c[2] == "-D" and chain in c)


def test_undo_pairs():
    assert undo(["iptables", "-w", "-N", FAULT_IN]) == ["iptables", "-w", "-X", FAULT_IN]
    assert undo(["iptables", "-w", "-I", "INPUT", "1", "-j", FAULT_IN]) == ["iptables", "-w", "-D", "INPUT", "-j",
                                                                          FAULT_IN]
    assert undo(bandwidth_commands("1mbit")[0]) == ["tc", "qdisc", "del", "dev", "eth0", "root", "handle", "4d50:"]
    with pytest.raises(ValueError, match="no inverse known for iptables -w -F"):
        undo(["iptables", "-w", "-F", FAULT_IN])


@pytest.mark.parametrize(("build", "bad", "says"), [
    (bandwidth_commands, "fast", "allowed a number with a tc unit"),
    (bandwidth_commands, "1 mbit; reboot", "allowed a number with a tc unit"),
    (delay_commands, 0, "allowed an integer 1-60000"),
    (delay_commands, 1.5, "allowed an integer 1-60000"),
    (loss_commands, 1.0, "allowed 0 < p < 1"),
    (partition_commands, "10.0.0.1 -j ACCEPT", "does not appear to be an IPv4 or IPv6 address"),
    (partition_commands, "fd00::7", "allowed an IPv4 pod address"),
])
def test_bad_fault_parameters_are_refused_naming_the_allowed_values(build, bad, says):
    with pytest.raises(ValueError, match=says):
        build(bad)


# --- the commands in real network namespaces -----------------------------------------------------------

class NetnsPair:
    """Two network namespaces joined by a veth pair called eth0 on both sides: a client and a server."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.client, self.server = f"mpkfc{tag}", f"mpkfs{tag}"
        self.client_ip, self.server_ip = "10.253.7.1", "10.253.7.2"
        for ns in (self.client, self.server):
            sh(["ip", "netns", "add", ns])
        sh(["ip", "link", "add", f"kfc{tag}", "netns", self.client, "type", "veth", "peer", "name", f"kfs{tag}",
            "netns", self.server])
        for ns, link, ip in ((self.client, f"kfc{tag}", self.client_ip), (self.server, f"kfs{tag}", self.server_ip)):
            sh(["ip", "-n", ns, "link", "set", link, "name", "eth0"])
            sh(["ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", "eth0"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def run(self, ns: str, command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *command], capture_output=True, text=True, check=False)

    def state(self, ns: str) -> str:
        rules = self.run(ns, ["iptables-save", "-t", "filter"]).stdout
        rules = "\n".join(line for line in rules.splitlines() if not line.startswith("#"))
        return rules + self.run(ns, ["tc", "qdisc", "show", "dev", "eth0"]).stdout

    def reachable(self) -> bool:
        """A TCP SYN from the client gets an answer (RST from the closed port) within a second."""
        probe = ("import socket, sys; s = socket.socket(); s.settimeout(1); "
                 f"sys.exit(0 if s.connect_ex(('{self.server_ip}', 9)) in (0, 111) else 1)")
        return self.run(self.client, [sys.executable, "-c", probe]).returncode == 0

    def close(self):
        for ns in (self.client, self.server):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def sh(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture
def pair():
    pair = NetnsPair()
    try:
        yield pair
    finally:
        pair.close()


def netem_available(pair: NetnsPair) -> bool:
    added = pair.run(pair.client, delay_commands(1)[0])
    if added.returncode == 0:
        pair.run(pair.client, undo(delay_commands(1)[0]))
    return added.returncode == 0


@needs_root
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_inject_changes_the_pod_and_heal_restores_it_exactly(pair, fault):
    if fault == "delay" and not netem_available(pair):
        pytest.skip("delay: the netem qdisc does not exist on this machine (it does on cluster nodes)")
    inject = FAULTS[fault]() if fault != "partition" else partition_commands(pair.client_ip)
    before = pair.state(pair.server)
    for command in inject:
        done = pair.run(pair.server, command)
        assert done.returncode == 0, (command, done.stderr)
    assert pair.state(pair.server) != before  # the fault is really there
    for command in heal_commands(inject):
        done = pair.run(pair.server, command)
        assert done.returncode == 0, (command, done.stderr)
    assert pair.state(pair.server) == before


class NetnsFaults(KubeFaults):
    """KubeFaults, unchanged, on a loopback API server (tests/kube_apiserver.py) whose pods are the pair's
    network namespaces: the ephemeral tools container is added by its PATCH and seen running, the client's
    IP is read from the pod, and every command goes through the real exec path (WebSocket, status channel)
    and runs in the pod's network namespace. It proves the client side and the bookkeeping of what was
    applied and healed; whether a cluster admits the container is for `meshproof doctor` on a cluster."""

    def __init__(self, pair: NetnsPair, api: FakeApiServer, allow_mesh_wide: bool = False):
        backend = KubeBackend(allow_mesh_wide=allow_mesh_wide)
        backend.cluster = api.cluster()
        super().__init__(backend)
        self.pair, self.api = pair, api
        self.tools: dict[str, list] = {"sleep": [], "httpbin": []}  # ephemeral containers added per pod
        api.on_exec = self._exec
        api.route("GET", r"/api/v1/namespaces/chaos/pods/(sleep|httpbin)", self._pod_answer)
        api.route("PATCH", r"/api/v1/namespaces/chaos/pods/(sleep|httpbin)/ephemeralcontainers", self._add_tools)

    @property
    def ran(self) -> list[tuple[str, list[str]]]:
        """(pod, command) of every exec in the tools container, in order."""
        return [(r.path.split("/")[5], r.query["command"]) for r in self.api.requests
                if r.websocket and r.query.get("container") == [kube_faults.TOOLS]]

    def _exec(self, call):
        assert call.container == kube_faults.TOOLS and self.tools[call.pod], "exec before the container was added"
        done = self.pair.run(self.pair.client if call.pod == "sleep" else self.pair.server, call.command)
        return done.returncode, done.stdout, done.stderr

    def _pod_answer(self, request, match):
        name = match.group(1)
        ip = self.pair.client_ip if name == "sleep" else self.pair.server_ip
        tools = self.tools[name]
        return 200, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "chaos"},
                     "spec": {"containers": [{"name": name, "image": "x"}], "ephemeralContainers": tools},
                     "status": {"podIP": ip, "ephemeralContainerStatuses": [
                         {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                          "state": {"running": {}}} for c in tools]}}

    def _add_tools(self, request, match):
        added = request.body["spec"]["ephemeralContainers"]
        assert errors(added[0], as_kind="EphemeralContainer") == []
        self.tools[match.group(1)] = added
        return self._pod_answer(request, match)


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


def handle_of(pair: NetnsPair):
    return SimpleNamespace(client_pod=("chaos", "sleep"), server_pod=("chaos", "httpbin", pair.server_ip))


@needs_root
def test_partition_cuts_the_pods_apart_and_heal_joins_them(pair, api):
    faults, handle = NetnsFaults(pair, api), handle_of(pair)
    assert pair.reachable()
    with faults.partitioned(handle):
        assert not pair.reachable()
    assert pair.reachable()


@needs_root
def test_stacked_faults_hook_the_chains_once_and_heal_everything(pair, api):
    faults, handle = NetnsFaults(pair, api), handle_of(pair)
    before = {ns: pair.state(ns) for ns in (pair.client, pair.server)}
    faults.drop_packets(handle, 0.2)
    faults.partition(handle)
    faults.limit_bandwidth(handle, "1mbit")
    hooks = [c for _, c in faults.ran if c[2:3] == ["-I"]]
    assert len(hooks) == 2  # INPUT and OUTPUT hooked once, not once per fault
    faults.heal(handle)
    assert {ns: pair.state(ns) for ns in (pair.client, pair.server)} == before
    ran = len(faults.ran)
    faults.heal(handle)  # idempotent: nothing left to undo
    assert len(faults.ran) == ran


@needs_root
def test_a_failed_injection_is_healed_back_to_the_start(pair, api):
    faults, handle = NetnsFaults(pair, api), handle_of(pair)
    before = pair.state(pair.server)
    theirs = ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "tbf", "rate", "2mbit", "burst", "16kb",
              "latency", "1s"]
    pair.run(pair.server, theirs)  # a qdisc someone else put there
    with pytest.raises(FaultError, match="tc qdisc add dev eth0 root handle 4d50: tbf"), \
            faults.bandwidth_limited(handle, "1mbit"):
        pass
    # the client side got its qdisc before the server failed; the heal took exactly that back
    assert "tbf" not in pair.state(pair.client)
    assert "tbf 1: root" in pair.state(pair.server)  # and left the other qdisc alone
    pair.run(pair.server, ["tc", "qdisc", "del", "dev", "eth0", "root"])
    assert pair.state(pair.server) == before


@needs_root
def test_the_watchdog_heals_a_window_that_outlives_its_bound(pair, api):
    faults, handle = NetnsFaults(pair, api), handle_of(pair)
    started = time.monotonic()
    with faults.partitioned(handle, bound_s=0.5):
        assert not pair.reachable()
        # Generous on a loaded machine: the point is that the watchdog heals, not how fast.
        while time.monotonic() - started < 10 and FAULT_IN in pair.state(pair.server):
            time.sleep(0.05)
        healed_after = time.monotonic() - started
        assert FAULT_IN not in pair.state(pair.server), "the watchdog never healed the window"
        assert pair.reachable()
    assert healed_after >= 0.5, "healed before its bound"
    assert sum(1 for _, c in faults.ran if c[2:3] == ["-X"]) == 2  # healed once, not again on exit


# --- control plane --------------------------------------------------------------------------------------

def test_stopping_the_control_plane_is_refused_without_allow_mesh_wide():
    faults = KubeFaults(KubeBackend())
    with pytest.raises(MeshWideRefused, match="refused unless --allow-mesh-wide"):
        faults.stop_control_plane()
    # the window's heal has nothing to restore and adds no error of its own
    with pytest.raises(MeshWideRefused), faults.control_plane_away():
        pass


DEPLOYMENTS = [("istio-system", "istiod", "default"), ("istio-system", "istiod-1-30-3", "1-30-3"),
               ("istio-canary", "istiod-1-29-6", "1-29-6")]


def test_istiod_targets_are_the_workloads_revisions():
    assert istiod_targets(DEPLOYMENTS, {"1-30-3"}) == [("istio-system", "istiod-1-30-3")]
    assert istiod_targets(DEPLOYMENTS, {"1-30-3", "1-29-6"}) == [("istio-system", "istiod-1-30-3"),
                                                                 ("istio-canary", "istiod-1-29-6")]
    assert istiod_targets(DEPLOYMENTS, {None}) == [(ns, name) for ns, name, _ in DEPLOYMENTS]
    with pytest.raises(FaultError, match=r"no istiod deployment of revision\(s\) \['1-31-0'\]; found .*istiod "):
        istiod_targets(DEPLOYMENTS, {"1-31-0"})


# --- certificates ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "names"), [
    (lambda f: f.rotate_certificates(None), "certificate rotation on kube"),
    (lambda f: f.expire_certificate(None, "server", 1.5), "certificate expiry on kube"),
    (lambda f: f.rogue_certificate(None, "client"), "rogue peer on kube"),
    (lambda f: f.certificate_expiring(None, "server", 1.5), "certificate expiry on kube"),
    (lambda f: f.rogue_peer(None, "client"), "rogue peer on kube"),
])
def test_certificate_faults_say_what_is_missing(call, names):
    with pytest.raises(NotImplementedError, match=names):
        call(KubeFaults(KubeBackend()))


def test_the_chaos_suite_skips_a_fault_the_target_cannot_inject_and_fails_on_anything_else():
    from suites.chaos.test_chaos import _run

    def not_here(*_):
        KubeFaults(KubeBackend()).rogue_certificate(None, "client")

    with pytest.raises(pytest.skip.Exception, match="certificates: rogue peer on kube"):
        _run("certificates", not_here)

    def broken(*_):
        raise FaultError("healing partition failed")

    with pytest.raises(FaultError):
        _run("network impairment", broken)


@pytest.mark.skipif(not ENVOY.exists(), reason="needs the envoy binary")
def test_serials_from_a_real_envoy_admin_certs_answer(tmp_path):
    """What `pilot-agent request GET certs` prints is Envoy's admin /certs: read it from a real Envoy that
    serves a certificate from the project's CA code."""
    from cryptography import x509

    from cluster.local.ca import MeshCA

    chain, key = MeshCA().issue("spiffe://cluster.local/ns/chaos/sa/httpbin")
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "envoy.yaml").write_text(textwrap.dedent(f"""\
        admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
        static_resources:
          listeners:
          - address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
            filter_chains:
            - filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                  stat_prefix: t
                  cluster: none
              transport_socket:
                name: envoy.transport_sockets.tls
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
                  common_tls_context:
                    tls_certificates:
                    - certificate_chain: {{filename: {tmp_path}/chain.pem}}
                      private_key: {{filename: {tmp_path}/key.pem}}
          clusters:
          - name: none
            load_assignment: {{cluster_name: none}}
        """))
    envoy = subprocess.Popen([str(ENVOY), "-c", "envoy.yaml", "--disable-hot-restart", "-l", "error",
                              "--admin-address-path", "admin.txt"], cwd=tmp_path)
    try:
        address_file, deadline = tmp_path / "admin.txt", time.monotonic() + 20
        while not (address_file.exists() and address_file.read_text().strip()):
            assert time.monotonic() < deadline and envoy.poll() is None, "envoy did not start"
            time.sleep(0.05)
        admin = address_file.read_text().strip()
        body = urllib.request.urlopen(f"http://{admin}/certs", timeout=5).read().decode()
    finally:
        envoy.kill()
        envoy.wait()
    leaf = x509.load_pem_x509_certificate(chain)
    assert {int(serial, 16) for serial in serials(body)} == {leaf.serial_number}
    with pytest.raises(FaultError, match="not what the admin API returns"):
        serials("upstream connect error")


# --- sidecar kill ---------------------------------------------------------------------------------------

ENVOY_CONFIG = textwrap.dedent("""\
    admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
    static_resources: {}
""")


def run_in_own_pid_namespace(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`script` in a fresh PID namespace with its own /proc, so it sees only the processes it starts here."""
    # --kill-child: if the test times out, the namespace's first process dies and takes the rest with it
    return subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)


@pytest.mark.skipif(os.geteuid() != 0 or not ENVOY.exists(), reason="needs root (unshare) and the envoy binary")
def test_kill_script_kills_envoy_and_nothing_else(tmp_path):
    (tmp_path / "envoy.yaml").write_text(ENVOY_CONFIG)
    shutil.copy("/bin/sleep", tmp_path / "envoy-helper")  # a name that only starts with envoy: must survive
    script = (f"{ENVOY} -c envoy.yaml --disable-hot-restart -l error >envoy.log 2>&1 & envoy=$!; "
              f"./envoy-helper 30 & other=$!; "
              f"sleep 1; ({kill_script(signal.SIGKILL)}) > killed.txt; code=$?; "
              f"sleep 0.5; kill -TERM $envoy 2>/dev/null; wait $envoy; echo envoy=$? >> killed.txt; "  # 137: KILL
              f"kill -0 $other && echo other=alive >> killed.txt; "
              f"kill $other; exit $code")
    done = run_in_own_pid_namespace(script, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "killed.txt").read_text().split()
    assert "envoy=137" in lines  # 128 + SIGKILL: the script killed it, not the TERM that cleans up
    assert lines[0].isdigit()  # the PID it killed
    assert "other=alive" in lines


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare)")
def test_kill_script_reports_a_container_without_envoy(tmp_path):
    done = run_in_own_pid_namespace(kill_script(signal.SIGKILL), tmp_path)
    assert done.returncode == 3
    assert "no envoy process in this container" in done.stderr


def test_clean_finds_the_istiods_a_dead_run_left_scaled_down():
    from cluster.kube.faults import RESTORE_ANNOTATION, istiods_to_restore

    deployments = [("istio-system", "istiod", {RESTORE_ANNOTATION: "2"}),
                   ("istio-system", "istiod-1-30", {"other": "x"}),
                   ("istio-canary", "istiod-canary", None),
                   ("istio-system", "istiod-broken", {RESTORE_ANNOTATION: "two"})]
    assert istiods_to_restore(deployments) == [("istio-system", "istiod", 2)]
