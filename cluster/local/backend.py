"""LocalBackend: the reference mesh behind the MeshBackend interface.

A scenario runs on a *pair* (a sleep pod and an httpbin pod, each with or without a sidecar). Pairs of the
same shape are reused across scenarios: deploy() then only replaces the pair's whole Istio config, which is
what makes a 100-cell matrix take seconds. Every pair is its own little cluster (own Service VIP, own root
namespace config), so pairs never see each other's policies.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import platform
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cluster.backend import (
    ApplyRefused,
    HandshakeResult,
    MeshBackend,
    ProbeResult,
    RunFigures,
    TlsAttempt,
    outcome_of,
    tcp_outcome,
)
from cluster.local import ca as mesh_ca
from cluster.local import controlplane, iptables, netns
from cluster.local import runtime as workload_runtime
from cluster.local.doctor import require as require_prerequisites
from cluster.local.envoy import Sidecar
from cluster.local.iptables import PROXY_UID, ServiceRule
from cluster.local.lifecycle import (
    STATE_ROOT,
    RunState,
    clean_leftovers,
    install_teardown,
    owner_alive,
    shared_folder,
)
from cluster.local.pods import Handle, LocalPod, Pair, destroy_pods
from cluster.local.push import Debouncer
from cluster.local.tcp_servers import APPS as TCP_APPS
from cluster.local.tcp_servers import GREETING as GREETING_BYTES
from cluster.local.workloads import APP_UID, ServerApp, Sleep, server_app
from meshproof.istio_api import parse_resources
from meshproof.namespaces import RunNamespaces
from meshproof.scenario import APPS, NotSupportedYet, Scenario, Server, Workload, pod_shape, require_supported
from probes.canary import HEADER as CANARY_HEADER
from probes.canary import echoed_canary, new_canary
from probes.errors import CaptureError
from probes.identity import account_identity, peer_identity_from_headers, peer_log_entries, server_account

# Failure counters only: they move when a connection fails, so their change since the last failed probe
# belongs to this probe.
SERVER_FAILURE_STATS = r"(ssl\.fail_verify_[a-z_]+|ssl\.connection_error|no_filter_chain_match)$"
CLIENT_FAILURE_STATS = r"^cluster\.outbound.*(ssl\.fail_verify_[a-z_]+|ssl\.connection_error|upstream_cx_connect_fail)$"
# What the server sidecar's counters say about a refused adversarial handshake, most specific first.
REFUSALS = (("ssl.fail_verify_no_cert", "no-client-certificate"), ("ssl.fail_verify_san", "trust-domain"),
            ("ssl.fail_verify_error", "certificate-rejected"), ("no_filter_chain_match", "no-filter-chain"),
            ("ssl.connection_error", "handshake-failed"))


# What the reference mesh handles beyond every consumer's common ground (meshproof.scenario.DIMENSIONS).
HANDLES = {"server.app": APPS, "server.port_name": None, "server.headless": None, "request.to": None}
GREETING = GREETING_BYTES.decode("latin-1")  # as the TCP probe client reports it

# How long a completed probe waits for the server sidecar's access log line (written when the connection closes,
# flushed every 20 ms: envoy.py).
PEER_LOG_WAIT_S = 1.0

# Idle pod pairs kept for reuse by later cells of the same shape. Cells come roughly grouped by shape,
# so two keep reuse high while a worker holds ~2 x 190 MB instead of one pair per shape it ever saw.
MAX_IDLE_PAIRS = 2


class LocalBackend(MeshBackend):
    name = "local"

    def __init__(self, out_dir: str | Path = "reports/out/local", push_delay_s: float = 0.0) -> None:
        self.out_dir = Path(out_dir)  # pcaps outlive the run: reports attach them after stop()
        self.debouncer = Debouncer(self._push_pair, after_s=push_delay_s)
        self.push_times_s: list[float] = []  # each apply, from the change until every sidecar serves it
        self.figures = RunFigures()
        self.deployments: list = []  # co-deployments (cluster/local/codeploy.py), stopped with the run
        self.run: RunState | None = None
        self.pairs: list[Pair] = []
        self._pairs_created = 0
        self.version = 0
        self.ca: mesh_ca.MeshCA | None = None
        self.runtime: workload_runtime.Runtime | None = None
        self.rogue_ca: mesh_ca.MeshCA | None = None
        self._macs: dict[str, str] = {}  # pod name -> its eth0's MAC (the capture's heartbeat)
        self._next_host = 2
        # None while the control plane is up; during a "control plane away" fault, the pushes it owes
        # (faults' own config, e.g. a request delay): {pair index: (pair, {pod name: config})}, sent when it
        # comes back (cluster/local/faults.py). Applies meanwhile are refused, as by a fail-closed webhook.
        self.held_pushes: dict[int, tuple[Pair, dict]] | None = None
        self.admission_closed_while_away = True  # LocalFaults(refuses_applies_while_away=False) opens it

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        require_prerequisites()
        clean_leftovers()
        self.run = RunState()
        self.run.create()
        install_teardown(self.run)
        # The workloads' users must not need to reach the checkout: they run the run's own staged copies.
        self.run.record("paths", str(self.run.runtime_dir))
        self.runtime = workload_runtime.stage(self.run.runtime_dir)
        self.subnet = netns.pick_subnet(self.run, _subnets_in_use())
        self.run.data["subnet"] = str(self.subnet)
        self.run.save()
        self.bridge = f"{self.run.prefix}br"
        netns.create_bridge(self.run, self.bridge)
        self.ca = mesh_ca.MeshCA()
        self.rogue_ca = mesh_ca.MeshCA("rogue CA (not trusted by the mesh)")

    def stop(self) -> None:
        for deployment in self.deployments:
            destroy_pods(list(deployment.pods.values()))
        self.deployments = []
        for pair in list(self.pairs):
            for pod in pair.pods():
                if pod.sidecar:
                    pod.sidecar.stop()
                if isinstance(pod.app, ServerApp):
                    pod.app.stop()
        self.pairs = []
        if self.run:
            self.run.teardown()  # netns, links, files, and any process the stops above missed
            self.run = None

    # --- deploy / apply ---------------------------------------------------------------------------------

    def deploy(self, scenario: Scenario) -> Handle:
        require_supported(scenario, "the reference mesh", HANDLES)
        server = scenario.server
        protocol = controlplane.port_protocol(server.service_port, server.port_name, server.app_protocol)
        if protocol not in controlplane.SERVED_PROTOCOLS:
            where, value = (("server.port_name", server.port_name) if server.app_protocol is None
                            else ("server.app_protocol", server.app_protocol))
            raise NotSupportedYet(scenario.name or "scenario", "scenario", where,
                                  f"{value!r} means {protocol}, which the reference mesh does not serve (it serves "
                                  "http*, tcp*, tls*, https* and auto-detected names)")
        self._refuse_while_away()
        # As on a cluster, the workloads live in run namespaces <ns>-<run> and the manifests follow them
        # (meshproof/namespaces.py); the mesh's root namespace stays istio-system, as a cluster's does.
        names = RunNamespaces.for_scenario(scenario, self.run.prefix)
        scenario = names.rewrite_scenario(scenario)
        resources = list(scenario.resources)
        key = pod_shape(scenario)
        pair = next((p for p in self.pairs if p.key == key and not p.in_use), None)
        if pair is None:
            self._evict_idle_pairs(keep=MAX_IDLE_PAIRS - 1)
            pair = self._create_pair(scenario, key, resources)
            handle = Handle(pair, scenario, names, resources)
        else:
            handle = Handle(pair, scenario, names, resources)
            self._apply_resources(handle, resources, list(scenario.manifests))
        pair.in_use = True
        pair.last_used = time.monotonic()
        return handle

    def run_namespaces(self, handle: Handle) -> RunNamespaces:
        return handle.names

    def apply(self, handle: Handle, manifests: list[dict]) -> None:
        manifests = handle.names.rewrite_manifests(manifests)
        resources = parse_resources(manifests, source="apply")  # raises before anything changes
        self._apply_resources(handle, resources, manifests)

    def _refuse_while_away(self) -> None:
        """Istio's validating webhook fails closed once istiod has been ready (istio/istio
        pkg/webhooks/validation/controller/controller.go), and so does its sidecar injector: with istiod gone,
        the API server refuses Istio objects and injected pods."""
        if self.held_pushes is not None and self.admission_closed_while_away:
            raise ApplyRefused("the reference mesh's control plane is away: its validating webhook (failurePolicy "
                               "Fail) refuses every Istio object until it returns; nothing was applied")

    def _apply_resources(self, handle: Handle, resources: list, manifests: list[dict]) -> None:
        self._refuse_while_away()
        pair = handle.pair
        # Compiling may raise (config the mesh cannot serve): then nothing has been written.
        compiling = time.monotonic()
        configs = self._compile(pair, resources, manifests, handle.scenario.root_namespace)
        started = time.monotonic()
        self.debouncer.deliver(pair.index, (pair, configs))
        self.push_times_s.append(time.monotonic() - started)
        self.figures.round((started - compiling) * 1000, self.push_times_s[-1] * 1000)
        handle.resources = resources

    def _push_pair(self, _index: int, change: tuple[Pair, dict[str, controlplane.SidecarConfig]]) -> None:
        """The debouncer's push of one pair's whole config: only what changed is written."""
        pair, configs = change
        changed = {name: cfg for name, cfg in configs.items() if _fingerprint(cfg) != _fingerprint(pair.configs[name])}
        if not changed:
            return
        before = {name: pair.configs[name] for name in changed}
        try:
            self._push(pair, changed)
        except BaseException as err:
            # A sidecar refused its files: put every sidecar back on what it served before.
            try:
                self._push(pair, before)
            except Exception as rollback:  # noqa: BLE001 - the first error is the one to report
                err.add_note(f"rolling the sidecars back failed too: {rollback}")
            raise

    def push_time_s(self) -> float:
        """The slowest apply of this run so far (change to every sidecar serving it), and never less than the
        configured push delay (nothing measured yet)."""
        return max([self.debouncer.after_s, *self.push_times_s])

    def _push(self, pair: Pair, configs: dict[str, controlplane.SidecarConfig]) -> None:
        """Write each sidecar's files, then return once every one of them reports the new version
        (or, while the control plane is away, keep them for later)."""
        if self.held_pushes is not None:
            self.held_pushes.setdefault(pair.index, (pair, {}))[1].update(configs)
            return
        self.version += 1
        version = f"v{self.version}"
        pods = {p.name: p for p in pair.pods()}
        # A sidecar that is down (chaos) reads the files when it starts again, as a proxy reconnecting to
        # istiod gets the current config.
        live = {name: pods[name].sidecar.refusals() for name in configs if pods[name].sidecar.alive()}
        for name, cfg in configs.items():
            controlplane.write_xds(pods[name].dir / "xds", cfg, version, uid=PROXY_UID)
        for name, cfg in configs.items():
            if name in live:
                pods[name].sidecar.wait_version(version, refused_before=live[name])
            pair.configs[name] = cfg

    def _compile(self, pair: Pair, resources: list, manifests: list[dict],
                 root_ns: str) -> dict[str, controlplane.SidecarConfig]:
        with_policy = controlplane.policy_keys(manifests)
        return {pod.name: controlplane.compile_sidecar(pod.model(), [pair.service], resources, root_ns, with_policy)
                for pod in pair.pods() if pod.workload.sidecar}

    def _evict_idle_pairs(self, keep: int) -> None:
        """Memory, not time, bounds how many pairs a worker keeps: the least recently used idle ones go."""
        idle = sorted((p for p in self.pairs if not p.in_use), key=lambda p: p.last_used)
        for pair in idle[:max(0, len(idle) - keep)]:
            self._destroy_pair(pair)

    def _create_pair(self, scenario: Scenario, key: tuple, resources: list) -> Pair:
        index = self.allocate_index()
        client = self.new_pod("client", scenario.client, index)
        server = self.new_pod("server", scenario.server, index)
        pair = Pair(key, index, client, server, self.vip(index))
        # Bad config raises here, before anything exists.
        compiling = time.monotonic()
        configs = self._compile(pair, resources, list(scenario.manifests), scenario.root_namespace)
        started = time.monotonic()
        self.pairs.append(pair)
        try:
            self._start_pair(pair, configs)
        except BaseException:
            self._destroy_pair(pair)
            raise
        self.figures.pods_started += 2
        self.figures.round((started - compiling) * 1000, (time.monotonic() - started) * 1000, pods_started=2)
        return pair

    def allocate_index(self) -> int:
        """Indexes name veths and Service VIPs, so they are never reused within a run, even after eviction."""
        index = self._pairs_created
        if index >= 250:
            raise RuntimeError(f"run {self.run.prefix} used {index} pod indexes; its Service VIP range is full")
        self._pairs_created += 1
        return index

    def vip(self, index: int) -> str:
        return f"10.251.{self.subnet.network_address.packed[2]}.{index + 1}"

    def _start_pair(self, pair: Pair, configs: dict[str, controlplane.SidecarConfig]) -> None:
        self.version += 1
        version = f"v{self.version}"
        # Both pods come up side by side: most of the time goes to waiting for processes to start.
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(self.start_pod, pod, [pair.service], configs.get(pod.name), version)
                           for pod in (pair.server, pair.client)]:
                future.result()
        for pod in pair.pods():
            if pod.sidecar:
                pod.sidecar.wait_ready()
                pod.sidecar.wait_version(version)
                pair.configs[pod.name] = configs[pod.name]
        pair.server.app.wait_ready()

    def start_pod(self, pod: LocalPod, services: list[controlplane.Service],
                  config: controlplane.SidecarConfig | None, version: str, app: bool = True) -> None:
        """Start one pod that reaches `services` (each with its one endpoint) by name and VIP; a server pod
        without `app` gets its app from the caller (a co-deployment shares one httpbin)."""
        run = self.run
        shared_folder(pod.dir)
        # A headless Service's name resolves to its pod's IP and nothing translates it (no VIP, no DNAT).
        netns.create_pod(run, pod.name, pod.veth, self.bridge, pod.ip, self.subnet.prefixlen,
                         {s.host: s.vip or s.endpoints[0].ip for s in services})
        iptables.install(pod.name, pod.workload.sidecar,
                         [ServiceRule(s.vip, s.port, s.endpoints[0].ip, s.target_port) for s in services if s.vip])
        if pod.role == "server" and app:
            pod.app = server_app(pod.workload, pod.name, pod.dir, self.runtime)
            pod.app.start(run.record_pid)
        elif pod.role == "client":
            pod.app = Sleep(pod.name, self.runtime)
        if not pod.workload.sidecar:
            return
        xds = pod.dir / "xds"
        xds.mkdir(mode=0o755)
        os.chown(xds, PROXY_UID, PROXY_UID)
        mesh_ca.install_identity(pod.dir / "certs", pod.dir / "sds", self.ca, pod.workload.spiffe_id, PROXY_UID)
        controlplane.write_xds(xds, config, version, uid=PROXY_UID)
        node = f"sidecar~{pod.ip}~{pod.name}.{pod.workload.namespace}~{pod.workload.namespace}.svc.cluster.local"
        pod.sidecar = Sidecar(pod.name, pod.dir, node, f"{pod.role}.{pod.workload.namespace}", self.runtime.envoy)
        pod.sidecar.start(run.record_pid)

    def _destroy_pair(self, pair: Pair) -> None:
        destroy_pods(pair.pods())
        if pair in self.pairs:
            self.pairs.remove(pair)

    def new_pod(self, role: str, workload: Workload, index: int) -> LocalPod:
        host = self._next_host
        self._next_host += 1
        if host >= self.subnet.num_addresses - 1:
            raise RuntimeError(f"subnet {self.subnet} is full")
        ip = str(self.subnet.network_address + host)
        app = "sleep" if role == "client" else "httpbin"
        name = f"{self.run.prefix}-{workload.namespace}-{app}-{index}"
        veth = f"{self.run.prefix}{index:x}{role[0]}"
        return LocalPod(role, workload, name, veth, ip, self.run.dir / name)

    def teardown(self, handle) -> None:
        from cluster.local import codeploy

        if isinstance(handle, codeploy.Deployment):
            codeploy.teardown(self, handle)
            return
        # Pairs are reused by later scenarios of the same shape; stop() removes them.
        handle.pair.in_use = False

    # --- co-deployment (cluster/local/codeploy.py) ------------------------------------------------------

    def deploy_plan(self, plan):
        from cluster.local import codeploy

        return codeploy.deploy(self, plan)

    def plan_in_run(self, handle):
        return handle.plan

    def probe_cells(self, handle, cell_ids: list[str], capture: bool = True) -> dict[str, ProbeResult]:
        from cluster.local import codeploy

        return codeploy.probe_cells(self, handle, cell_ids, capture)

    def cell_handle(self, handle, cell_id: str) -> Handle:
        """One co-deployed cell as a pair handle (diagnostics, chaos helpers)."""
        from cluster.local import codeploy

        return codeploy.handle(handle, cell_id)

    # --- probe ------------------------------------------------------------------------------------------

    def probe(self, handle: Handle, capture: bool = True) -> ProbeResult:
        """One probe of the server's app at the scenario's destination (request.to): curl for httpbin and the
        https app (curl -k), the TCP probe client for tcp-echo and banner."""
        pair = handle.pair
        server: Server = pair.server.workload
        canary = new_canary()
        host, port = destination(pair, handle.scenario)
        # What the control plane decided for this pair: the first thing to read when a cell is red.
        extra: dict[str, Any] = {"control_plane": {pod.role: pair.configs[pod.name].decisions
                                                   for pod in pair.pods() if pod.name in pair.configs}}
        self.figures.probes += 1
        if server.app in TCP_APPS:
            return self._probe_tcp(pair, host, port, canary, capture, extra)
        url = f"{'https' if server.app == 'https' else 'http'}://{host}:{port}/headers"
        with pair.probing:
            log_start = _log_size(pair.server)
            # httpbin on a port the server sidecar may serve with tcp_proxy (a non-http port name): whether one
            # took this request decides whether its account (no XFCC then) is worth waiting for.
            proxied_before = _tcp_proxied(pair.server) \
                if pair.service.protocol != controlplane.HTTP else None
            started = time.perf_counter()
            curl, wire, harness_error = self._captured(pair, canary, lambda: pair.client.app.request(url, canary),
                                                       capture)
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            if curl is None:  # the capture did not start: no request was sent
                return ProbeResult("error", None, -1, None, harness_error, canary=canary, elapsed_ms=elapsed,
                                   extra=extra)
            detail, report = (None, None) if curl.http_status == 200 else self._failure_detail(pair, curl)
            identity = peer_identity_from_headers(curl.body) if curl.http_status == 200 else None
            # The https app's TLS, or httpbin's HTTP, passed through a tcp_proxy: no XFCC, the sidecar's account.
            through_tcp_proxy = proxied_before is not None and _tcp_proxied(pair.server) > proxied_before
            if server.app == "https" or (identity is None and through_tcp_proxy):
                identity = self._peer_from_account(pair, log_start, curl.http_status == 200, extra)
        if curl.http_status == 200 and curl.curl_exit == 0 and echoed_canary(curl.body) != canary:
            harness_error = "the 200 did not echo this probe's canary: it answered another request"
        status = curl.http_status or None
        outcome = outcome_of(status, curl.curl_exit, wire.verdict if wire else None, identity,
                             app_tls=server.app == "https")
        if harness_error:
            # The harness failed, not the mesh: an error, never a pass; keep what the probe itself saw.
            detail = f"{harness_error}; the probe got HTTP {status}, curl exit {curl.curl_exit}" + (
                f"; {detail}" if detail else "")
            outcome = "error"
        return ProbeResult(outcome=outcome, http_status=status, curl_exit=curl.curl_exit, peer_identity=identity,
                           failure_detail=detail, proxy_report=report, wire=wire, canary=canary, elapsed_ms=elapsed,
                           command=curl.command, extra=extra)

    def _probe_tcp(self, pair: Pair, host: str, port: int, canary: str, capture: bool,
                   extra: dict[str, Any]) -> ProbeResult:
        """The TCP probe client (probes/tcp_probe.py): its account goes to extra["tcp_client"]; `curl_exit`
        holds its exit code (tcp_probe.EXIT_CODES) and http_status stays None."""
        banner = pair.server.workload.app == "banner"
        with pair.probing:
            log_start = _log_size(pair.server)
            started = time.perf_counter()
            sent, wire, harness_error = self._captured(
                pair, canary, lambda: pair.client.app.tcp(host, port, canary, pair.server.workload.app), capture)
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            if sent is None:  # the capture did not start: nothing was sent
                return ProbeResult("error", None, -1, None, harness_error, canary=canary, elapsed_ms=elapsed,
                                   extra=extra)
            account = extra["tcp_client"] = sent.account
            result = account.get("result")
            if banner and result == "completed" and account.get("greeting") != GREETING:
                result, account["answer"] = "answered", account.get("greeting")  # another greeting: not the app's
            detail, report = (None, None) if result == "completed" else self._counters_moved(
                pair, [f"tcp client: {result} at {account.get('step')}" + (
                    f" ({account['detail']})" if account.get("detail") else "")])
            identity = self._peer_from_account(pair, log_start, result == "completed", extra)
        if result == "error":
            harness_error = harness_error or f"the TCP probe client failed: {account.get('detail')}"
        outcome = tcp_outcome(result, account.get("answer"), wire.verdict if wire else None, identity)
        if harness_error:
            detail, outcome = f"{harness_error}; the probe client said {result}" + (
                f"; {detail}" if detail else ""), "error"
        return ProbeResult(outcome=outcome, http_status=None, curl_exit=sent.exit_code, peer_identity=identity,
                           failure_detail=detail, proxy_report=report, wire=wire, canary=canary, elapsed_ms=elapsed,
                           command=sent.command, extra=extra)

    def _peer_from_account(self, pair: Pair, log_start: int, completed: bool, extra: dict[str, Any]) -> str | None:
        """The client identity in the server sidecar's access log line for this probe (probes/identity.py), kept
        in extra["server_sidecar"]. tcp_proxy logs when the connection closes, so for a completed probe the line
        is waited for briefly; a probe that did not complete may have left none."""
        if not pair.server.sidecar:
            return None
        deadline = time.monotonic() + (PEER_LOG_WAIT_S if completed else 0)
        while True:
            account = server_account([], peer_log_entries(_log_since(pair.server, log_start)), pair.client.ip)
            if account or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        extra["server_sidecar"] = account
        return account_identity(account)

    def _captured(self, pair: Pair, canary: str, send, capture: bool = True):
        """(what send() returned, or None if it did not run; the verdict of a capture on the server pod's veth
        around it; a harness error): send() runs inside the capture, then the heartbeat from the client's link
        (probes/heartbeat.py) that proves the capture was on the path. Without `capture`: send() alone."""
        if not capture:
            return send(), None, None
        from probes import heartbeat
        from probes.capture import Capture  # imports scapy (~0.5 s): only runs that capture pay for it
        from probes.verdict import judge

        pcap = self.out_dir / "pcaps" / f"{self.run.prefix}-{canary}.pcap"
        pcap.parent.mkdir(parents=True, exist_ok=True)
        port = pair.server.workload.target_port
        done = None
        try:
            # Only this pair's flows: a server pod may serve other clients' probes meanwhile (co-deployment).
            with Capture(iface=pair.server.veth, bpf=f"tcp and host {pair.client.ip}", pcap_path=pcap) as cap:
                done = send()
                beat = heartbeat.heartbeat_port(port)
                heartbeat.send(pair.client.name, "eth0", self._mac(pair.client), self._mac(pair.server),
                               pair.client.ip, pair.server.ip, beat)
                cap.wait_seen((pair.client.ip, heartbeat.HEARTBEAT_SOURCE_PORT), (pair.server.ip, beat))
            return done, judge(pcap, canary=canary, server_ip=pair.server.ip, server_port=port,
                               heartbeat=True), None
        except (CaptureError, OSError) as err:
            return done, None, f"capture failed (harness error): {err}"

    def _mac(self, pod: LocalPod) -> str:
        """The MAC address of the pod's eth0 (read once)."""
        if pod.name not in self._macs:
            shown = subprocess.run(["ip", "-n", pod.name, "-j", "link", "show", "eth0"], check=True,
                                   capture_output=True, text=True).stdout
            self._macs[pod.name] = json.loads(shown)[0]["address"]
        return self._macs[pod.name]

    def _failure_detail(self, pair: Pair, curl) -> tuple[str, dict[str, Any]]:
        """(one line for people, the client sidecar's own account): its response flags and upstream transport
        failure reason (the headers its routes add, controlplane.FLAGS_HEADER), and which failure counters of
        either sidecar moved since the pair's last failed probe."""
        report: dict[str, Any] = {"response_flags": _header(curl, controlplane.FLAGS_HEADER),
                                  "transport_failure": _header(curl, controlplane.FLAGS_HEADER + "-reason")}
        parts = []
        if report["response_flags"]:
            parts.append(f"response_flags={report['response_flags']}")
        if report["transport_failure"]:
            parts.append(f"transport_failure={report['transport_failure']}")
        if curl.http_status and curl.body:
            parts.append(f"body={curl.body.strip().splitlines()[0][:200]}")
        if curl.stderr:
            parts.append(f"curl={curl.stderr.strip().splitlines()[-1][:200]}")
        return self._counters_moved(pair, parts, report)

    def _counters_moved(self, pair: Pair, parts: list[str],
                        report: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """`parts` and `report` with the failure counters of either sidecar that moved since the pair's last
        failed probe."""
        report = {} if report is None else report
        for pod, pattern in ((pair.server, SERVER_FAILURE_STATS), (pair.client, CLIENT_FAILURE_STATS)):
            if pod.sidecar and pod.sidecar.alive():
                delta = _counter_delta(pod, pattern)
                report[f"{pod.role}_counters"] = sorted(delta)
                parts += [f"{pod.role}:{k}+{v}" for k, v in sorted(delta.items())]
        return "; ".join(parts) or "no detail", report

    # --- adversarial TLS clients ------------------------------------------------------------------------

    def tls_handshake(self, handle: Handle, attempt: TlsAttempt, capture: bool = True) -> HandshakeResult:
        from cluster.local.credentials import mint
        from probes.tls_client import REQUEST, read_s_client, s_client_command

        pair = handle.pair
        if pair.client.workload.sidecar:
            raise ValueError("tls_handshake: the adversary's client pod must have no sidecar (its TLS is its own)")
        canary = new_canary()
        folder = pair.client.dir / "adversary"
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chown(folder, APP_UID, APP_UID)
        paths: list[Path] = []
        minted = mint(attempt, self.ca, self.rogue_ca)
        if minted:
            paths = [folder / f"{canary}.pem", folder / f"{canary}.key"]
            for path, data in zip(paths, minted, strict=True):
                path.write_bytes(data)
                os.chown(path, APP_UID, APP_UID)
        argv = netns.exec_prefix(pair.client.name, APP_UID) + s_client_command(
            pair.server.ip, pair.server.workload.target_port, attempt.versions, attempt.alpn,
            *(str(p) for p in paths))
        request = REQUEST.format(header=CANARY_HEADER, canary=canary)
        def send():
            return subprocess.run(argv, input=request, check=False, capture_output=True, text=True, timeout=20)

        with pair.probing:  # the capture and the counters' change are this handshake's alone
            _counter_delta(pair.server, SERVER_FAILURE_STATS)  # what came before is not this handshake's
            try:
                proc, wire, error = self._captured(pair, canary, send, capture)
            finally:
                for path in paths:
                    path.unlink(missing_ok=True)
            counters = _counter_delta(pair.server, SERVER_FAILURE_STATS)
        if wire:
            from probes.tls_client import handshake_stop

            wire = dataclasses.replace(wire, handshake=handshake_stop(wire))
        if proc is None:
            return HandshakeResult("error", None, None, None, None, canary=canary, command=" ".join(argv),
                                   detail=error or "")
        seen = read_s_client(proc.returncode, proc.stdout, proc.stderr)
        refusal = next((name for stat, name in REFUSALS if any(k.endswith(stat) for k in counters)), None)
        identity = peer_identity_from_headers(seen["body"]) if seen["http_status"] == 200 else None
        detail = "; ".join([seen["detail"], *(f"server:{k}+{v}" for k, v in sorted(counters.items()))])
        outcome = seen["outcome"]
        if seen["http_status"] == 200 and echoed_canary(seen["body"]) != canary:
            error = error or "the 200 did not echo this attempt's canary"
        if error:
            outcome, detail = "error", f"{error}; {detail}"
        return HandshakeResult(outcome, seen["alert"], seen["tls_version"], seen["http_status"], identity,
                               refusal, wire, canary, " ".join(argv), detail)

    # --- facts and chaos helpers ------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        version = subprocess.run([str(workload_runtime.envoy_source()), "--version"], check=False, capture_output=True, text=True).stdout.split()
        ipt = subprocess.run(["iptables", "--version"], check=False, capture_output=True, text=True).stdout.strip()
        return {"mesh": self.name, "implementation": "the reference mesh (a reference implementation of Istio's API)",
                "envoy": version[-1].split("/")[1] if version else "?", "kernel": platform.release(),
                "iptables": ipt, "python": platform.python_version()}

    def sidecar(self, handle: Handle, role: str) -> Sidecar | None:
        return (handle.pair.client if role == "client" else handle.pair.server).sidecar

    def diagnostics(self, handle: Handle) -> Path:
        """Everything needed to understand a red cell, written under out_dir/diagnostics/<run>-<pair>-<n>/:
        each sidecar's config dump, counters, log and pushed xDS files, each pod's iptables, the apps' logs
        and the control plane's decisions."""
        pair = handle.pair
        folder = self.out_dir / "diagnostics" / f"{self.run.prefix}-pair{pair.index}-v{self.version}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "decisions.json").write_text(json.dumps(
            {pod.role: pair.configs[pod.name].decisions for pod in pair.pods() if pod.name in pair.configs},
            indent=1, default=str))
        (folder / "manifests.json").write_text(json.dumps(list(handle.scenario.manifests), indent=1, default=str))
        for pod in pair.pods():
            (folder / f"{pod.role}-iptables.txt").write_text(subprocess.run(
                ["ip", "netns", "exec", pod.name, "iptables-save"], check=False, capture_output=True,
                text=True).stdout)
            for name in ("envoy.log", "httpbin.log", "xds/lds.json", "xds/cds.json"):
                source = pod.dir / name
                if source.exists():
                    (folder / f"{pod.role}-{name.replace('/', '-')}").write_bytes(source.read_bytes())
            if pod.sidecar and pod.sidecar.alive():
                for name, path in (("config_dump.json", "/config_dump"), ("stats.txt", "/stats"),
                                   ("clusters.txt", "/clusters")):
                    try:
                        (folder / f"{pod.role}-{name}").write_text(pod.sidecar.admin(path, timeout=2.0)[1])
                    except OSError as err:
                        (folder / f"{pod.role}-{name}").write_text(f"admin unreachable: {err}\n")
        return folder

    def faults(self):
        from cluster.local.faults import LocalFaults

        return LocalFaults(self)

    def restart_sidecar(self, handle: Handle, role: str) -> None:
        """Start a killed sidecar again with its current config (chaos: recovery)."""
        pod = handle.pair.client if role == "client" else handle.pair.server
        pod.sidecar.stop()
        pod.sidecar.start(self.run.record_pid)
        pod.sidecar.wait_ready()
        with handle.pair.probing:
            pod.stat_baseline = {}  # a new process counts from zero

    def rotate_identity(self, handle: Handle, role: str, rogue: bool = False) -> None:
        """Issue a new certificate to a workload (from the untrusted rogue CA if `rogue`), no restart."""
        pod = handle.pair.client if role == "client" else handle.pair.server
        issuer = self.rogue_ca if rogue else self.ca
        mesh_ca.install_identity(pod.dir / "certs", pod.dir / "sds", issuer, pod.workload.spiffe_id, PROXY_UID,
                                 trust=self.ca)


def destination(pair: Pair, scenario: Scenario | None) -> tuple[str, int]:
    """Where the probe goes (request.to): the Service's name and port, its ClusterIP (the pair's VIP) and port, or
    the server pod's IP and target port. A co-deployed cell (no scenario on its handle) goes to the Service."""
    server: Server = pair.server.workload
    to = scenario.request.to if scenario is not None else "service"
    if to == "pod-ip":
        return pair.server.ip, server.target_port
    if to == "cluster-ip":
        return pair.vip, server.service_port
    return server.host, server.service_port


def _tcp_proxied(pod: LocalPod) -> int:
    """Connections the pod's sidecar has handed to a tcp_proxy filter so far (0 without a live sidecar)."""
    if not (pod.sidecar and pod.sidecar.alive()):
        return 0
    try:
        return sum(pod.sidecar.counters(r"^tcp\..*\.downstream_cx_total$").values())
    except OSError:
        return 0


def _log_size(pod: LocalPod) -> int:
    try:
        return (pod.dir / "envoy.log").stat().st_size
    except OSError:
        return 0


def _log_since(pod: LocalPod, offset: int) -> str:
    """What the pod's sidecar logged since `offset` (a restarted sidecar appends to the same file)."""
    try:
        with open(pod.dir / "envoy.log", "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _counter_delta(pod: LocalPod, pattern: str) -> dict[str, int]:
    """How far the sidecar's counters matching `pattern` moved since the last call for this pod."""
    if not (pod.sidecar and pod.sidecar.alive()):
        return {}
    try:
        now = pod.sidecar.counters(pattern)
    except OSError:
        return {}
    delta = {k: v - pod.stat_baseline.get(k, 0) for k, v in now.items() if v > pod.stat_baseline.get(k, 0)}
    pod.stat_baseline = now
    return delta


def _header(curl, name: str) -> str | None:
    """A header the client sidecar added, None when absent or Envoy's "-" (nothing to report)."""
    value = curl.headers.get(name)
    return None if value in (None, "", "-") else value


def _fingerprint(config: controlplane.SidecarConfig) -> str:
    return json.dumps([config.clusters, config.listeners], sort_keys=True)


def _subnets_in_use() -> set[str]:
    used = set()
    if STATE_ROOT.is_dir():
        for state in STATE_ROOT.glob("mp*/state.json"):
            try:
                data = json.loads(state.read_text())
            except (OSError, ValueError):
                continue
            if owner_alive(data) and data.get("subnet"):
                used.add(str(ipaddress.ip_network(data["subnet"])))
    return used
