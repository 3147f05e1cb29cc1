"""Faults on a real cluster: real signals in the sidecar container, istiod scaled away, and real qdiscs and
netfilter rules in the pods' network namespaces.

- Sidecar crash: a signal to the Envoy process inside `istio-proxy` (exec, like `kubectl exec`). Since
  Istio 1.4 pilot-agent exits when Envoy dies, so the container restarts; recovery is the time until the
  container runs again and the pod is Ready. The kubelet delays each further restart of a container
  (CrashLoopBackOff), so the wait for it grows with the restarts the pod already had, and a pair whose
  sidecar was killed is never reused by a later cell.
- Control plane away: every istiod deployment serving the workloads' revisions scaled to 0 (until no pod
  of it is left) and back to the replica count it had. Istio's validating webhook is fail-closed once istiod
  has been ready, so with istiod gone it would refuse the very policy change the scenario makes while the
  control plane is away: its failurePolicy is set to Ignore for the window and restored after. Both are
  mesh-wide, so they are refused unless the backend allows mesh-wide changes.
- Network: the capture's ephemeral container (pinned image, NET_ADMIN) runs `tc` and `iptables` in the pod's
  network namespace. Every command that was run is recorded, and `heal` runs exactly its inverse, newest
  first, so it removes what was added and nothing else (Istio's own interception rules stay untouched).
  Delay is `netem` on the client pod's egress: requests are held on their way to the server (netem on the
  server's egress would hold replies in the kernel, where a killed server sidecar cannot take them back).
- Certificates: what the sidecars serve is read from Envoy's admin /certs through pilot-agent. Istio gives
  no way to re-issue, shorten or swap a workload certificate without restarting the pod, so those faults
  raise FaultUnavailable naming what is missing, and the chaos suites skip them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal as signals
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client

from cluster.faults import DEFAULT_BOUND_S, FaultError, Faults, FaultUnavailable, check_role
from cluster.kube.capture import CONTAINER as TOOLS
from cluster.kube.capture import PodCapture
from cluster.kube.client import exec_in

SIDECAR = "istio-proxy"
FAULT_IN, FAULT_OUT = "MESHPROOF-FAULT-IN", "MESHPROOF-FAULT-OUT"
QDISC_HANDLE = "4d50:"  # our root qdisc's handle, so heal deletes exactly it
EXEC_TIMEOUT_S = 20.0
KILL_SEEN_S = 15.0  # the kubelet reports a dead container within a few seconds (PLEG relist is 1 s)
RECOVER_S = 120.0  # a restarted sidecar fetches its certificate and config before it is Ready
# The kubelet's restart back-off: 10 s, doubled per restart, at most 300 s (kubernetes
# pkg/kubelet/kubelet.go backOffPeriod and MaxContainerBackOff, v1.34).
BACKOFF_S, MAX_BACKOFF_S = 10.0, 300.0
SCALE_S = 120.0
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")

# Kills the process named envoy in the container (there is one: pilot-agent's child) and prints its PID.
# Plain POSIX sh and /proc, so it needs neither pgrep nor pidof in the proxy image.
KILL_SCRIPT = ('for p in /proc/[0-9]*; do [ "$(cat "$p/comm" 2>/dev/null)" = envoy ] || continue; '
               'kill -{signal} "${{p#/proc/}}" && echo "${{p#/proc/}}" && exit 0; exit 4; done; '
               'echo "no envoy process in this container" >&2; exit 3')


class MeshWideRefused(FaultError):
    """A fault that changes the whole mesh, asked for on a backend without allow_mesh_wide."""


# --- commands (pure, so tests check them and run them in a network namespace of their own) --------------

def check_rate(rate: str) -> str:
    if not isinstance(rate, str) or not _RATE.match(rate):
        raise ValueError(f"bandwidth rate {rate!r}: allowed a number with a tc unit "
                         "(bit, kbit, mbit, gbit, bps, kbps, mbps, gbps), e.g. '128kbit'")
    return rate


def chain_setup() -> list[list[str]]:
    """Our own filter chains, hooked first into INPUT and OUTPUT; rules go into them, never into Istio's."""
    return [["iptables", "-w", "-N", FAULT_IN], ["iptables", "-w", "-I", "INPUT", "1", "-j", FAULT_IN],
            ["iptables", "-w", "-N", FAULT_OUT], ["iptables", "-w", "-I", "OUTPUT", "1", "-j", FAULT_OUT]]


def bandwidth_commands(rate: str) -> list[list[str]]:
    return [["tc", "qdisc", "add", "dev", "eth0", "root", "handle", QDISC_HANDLE, "tbf", "rate", check_rate(rate),
             "burst", "16kb", "latency", "1s"]]


def delay_commands(ms: int) -> list[list[str]]:
    if not isinstance(ms, int) or isinstance(ms, bool) or not 0 < ms <= 60_000:
        raise ValueError(f"delay {ms!r} ms: allowed an integer 1-60000")
    return [["tc", "qdisc", "add", "dev", "eth0", "root", "handle", QDISC_HANDLE, "netem", "delay", f"{ms}ms"]]


def loss_commands(probability: float) -> list[list[str]]:
    if not 0 < probability < 1:
        raise ValueError(f"packet loss probability {probability!r}: allowed 0 < p < 1")
    return chain_setup() + [["iptables", "-w", "-A", FAULT_IN, "-i", "eth0", "-m", "statistic", "--mode", "random",
                             "--probability", f"{probability:.4f}", "-j", "DROP"]]


def partition_commands(peer_ip: str) -> list[list[str]]:
    peer = ipaddress.ip_address(peer_ip)  # ValueError names the bad address
    if peer.version != 4:
        raise ValueError(f"partition from {peer}: allowed an IPv4 pod address (the rules are iptables, not ip6tables)")
    return chain_setup() + [["iptables", "-w", "-A", FAULT_IN, "-s", str(peer), "-j", "DROP"],
                            ["iptables", "-w", "-A", FAULT_OUT, "-d", str(peer), "-j", "DROP"]]


def undo(command: list[str]) -> list[str]:
    """The command that takes back exactly what `command` added."""
    if command[:3] == ["tc", "qdisc", "add"]:
        return ["tc", "qdisc", "del", *command[3:command.index("handle") + 2]]
    if command[:2] == ["iptables", "-w"]:
        verb, rest = command[2], command[3:]
        if verb == "-N":
            return ["iptables", "-w", "-X", *rest]
        if verb == "-A":
            return ["iptables", "-w", "-D", *rest]
        if verb == "-I":  # -I HOOK POSITION RULE...: delete by the rule, not the position
            return ["iptables", "-w", "-D", rest[0], *rest[2:]]
    raise ValueError(f"no inverse known for {' '.join(command)}")


def heal_commands(applied: list[list[str]]) -> list[list[str]]:
    """The inverse of everything applied, newest first (rules leave a chain before the chain goes)."""
    return [undo(command) for command in reversed(applied)]


def kill_script(signal: int) -> str:
    return KILL_SCRIPT.format(signal=int(signal))


def recovery_budget_s(restarts_before: int) -> float:
    """How long a killed sidecar may take to run and be Ready again: the kubelet's back-off before this
    restart (an upper bound: 10 s doubled per earlier restart, capped) plus the start itself."""
    return RECOVER_S + min(MAX_BACKOFF_S, BACKOFF_S * 2 ** min(restarts_before, 16))


def istiod_targets(deployments: list[tuple[str, str, str]], revisions: set[str | None]) -> list[tuple[str, str]]:
    """(namespace, name) of the istiod deployments to stop, from (namespace, name, revision) of all of them.

    A workload injected by the default label (revision None) may be served by any revision a default tag
    points at, so then every istiod goes; otherwise those of the workloads' revisions."""
    if None in revisions or not revisions:
        chosen = deployments
    else:
        chosen = [d for d in deployments if d[2] in revisions]
        if not chosen:
            raise FaultError(f"no istiod deployment of revision(s) {sorted(revisions)}; found "
                             + (", ".join(f"{ns}/{name} ({rev})" for ns, name, rev in deployments) or "none"))
    return [(ns, name) for ns, name, _ in chosen]


# --- the faults ---------------------------------------------------------------------------------------------

# On an istiod deployment scaled to 0 by a control-plane-away fault: the replica count to give back.
RESTORE_ANNOTATION = "meshproof.io/restore-replicas"
# On a ValidatingWebhookConfiguration opened for the window: {webhook name: failurePolicy} to give back.
RESTORE_POLICY_ANNOTATION = "meshproof.io/restore-failure-policy"
REV_LABEL = "istio.io/rev"


def validator_selector(revisions: set[str]) -> str:
    """Istio's validating webhook configurations of these revisions: the revision's own
    (istio-validator-<rev>-<ns>) and a tag's (istiod-default-validator) both carry istio.io/rev=<rev>
    (manifests/charts/istio-control/istio-discovery/templates/validatingwebhookconfiguration.yaml, and the
    label selector istiod's webhook controller watches: pkg/webhooks/validation/controller/controller.go,
    release-1.28 to 1.30)."""
    return f"{REV_LABEL} in ({','.join(sorted(revisions))})"


def opening_patch(webhooks: list[tuple[str, str | None]]) -> dict | None:
    """The strategic-merge patch (webhooks merge by name) that sets every webhook to Ignore and records the
    policies it had; None when all of them already ignore failures."""
    closed = {name: policy or "Fail" for name, policy in webhooks if policy != "Ignore"}
    if not closed:
        return None
    return {"metadata": {"annotations": {RESTORE_POLICY_ANNOTATION: json.dumps(closed, sort_keys=True)}},
            "webhooks": [{"name": name, "failurePolicy": "Ignore"} for name in sorted(closed)]}


def restoring_patch(annotations: dict | None) -> dict | None:
    """The patch that gives the recorded policies back and drops the record; None without a record."""
    recorded = (annotations or {}).get(RESTORE_POLICY_ANNOTATION)
    if recorded is None:
        return None
    policies = json.loads(recorded)
    return {"metadata": {"annotations": {RESTORE_POLICY_ANNOTATION: None}},
            "webhooks": [{"name": name, "failurePolicy": policy} for name, policy in sorted(policies.items())]}


def restore_validators(admission: client.AdmissionregistrationV1Api) -> list[str]:
    """Give back the failurePolicy of every Istio validating webhook a run left open; a line per one."""
    restored = []
    for config in admission.list_validating_webhook_configuration(label_selector=REV_LABEL).items:
        patch = restoring_patch(config.metadata.annotations)
        if patch:
            admission.patch_validating_webhook_configuration(config.metadata.name, patch)
            restored.append(f"validatingwebhookconfiguration {config.metadata.name}: failurePolicy restored")
    return restored


def istiods_to_restore(deployments: list[tuple[str, str, dict]]) -> list[tuple[str, str, int]]:
    """(namespace, name, replicas) for each istiod a dead run left scaled down, from (namespace, name,
    annotations) of the cluster's istiod deployments."""
    found = []
    for ns, name, notes in deployments:
        value = (notes or {}).get(RESTORE_ANNOTATION)
        if value is not None and value.isdigit():
            found.append((ns, name, int(value)))
    return found


def restore_istiods(apps: client.AppsV1Api) -> list[str]:
    """Scale back every istiod a run left down; returns a line per deployment restored."""
    deployments = [(d.metadata.namespace, d.metadata.name, d.metadata.annotations)
                   for d in apps.list_deployment_for_all_namespaces(label_selector="app=istiod").items]
    restored = []
    for ns, name, replicas in istiods_to_restore(deployments):
        apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": replicas}})
        apps.patch_namespaced_deployment(name, ns, {"metadata": {"annotations": {RESTORE_ANNOTATION: None}}})
        restored.append(f"deployment {ns}/{name} scaled back to {replicas} replicas")
    return restored


class KubeFaults(Faults):
    backend_name = "kube"
    refuses_applies_while_away = False  # the webhook is set to Ignore for the window (stop_control_plane)

    def __init__(self, backend):
        self.backend = backend
        self._lock = threading.Lock()
        self._applied: dict[tuple[str, str], list[list[str]]] = {}  # (namespace, pod) -> commands run, in order
        self._restarts: dict[tuple[str, str], int] = {}  # (namespace, pod) -> sidecar restarts before a kill
        self._replicas: dict[tuple[str, str], int] = {}  # istiod (namespace, name) -> replicas before the stop
        self._opened: list[str] = []  # validating webhook configurations set to Ignore for the window
        self._crashed: set[tuple[str, str]] = set()  # (namespace, pod) whose sidecar was killed
        self.recoveries: list[tuple[str, float]] = []  # (role, seconds from kill to Ready again)
        self._killed_at: dict[tuple[str, str], float] = {}

    def _cluster(self):
        return self.backend._cluster()

    @staticmethod
    def _pod(handle, role: str) -> tuple[str, str]:
        check_role(role)
        return handle.client_pod if role == "client" else handle.server_pod[:2]

    def _has_sidecar(self, handle, role: str) -> bool:
        workload = handle.scenario.client if role == "client" else handle.scenario.server
        return workload.sidecar

    # --- sidecars -----------------------------------------------------------------------------------

    def kill_sidecar(self, handle, role: str, signal: int = signals.SIGKILL) -> None:
        ns, pod = self._pod(handle, role)
        if not self._has_sidecar(handle, role):
            raise FaultError(f"the {role} pod {ns}/{pod} has no sidecar")
        before = _sidecar_status(self._cluster().core.read_namespaced_pod(pod, ns))
        if before is None or not before.ready:
            raise FaultError(f"the {role} sidecar in {ns}/{pod} is not ready; nothing to kill")
        self._restarts[(ns, pod)] = before.restart_count
        self._crashed.add((ns, pod))  # a restart back-off would follow it into later cells: no reuse
        done = exec_in(self._cluster(), ns, pod, SIDECAR, ["sh", "-c", kill_script(signal)], EXEC_TIMEOUT_S)
        if done.exit_code != 0:
            del self._restarts[(ns, pod)]  # nothing was killed: the heal has no restart to wait for
            raise FaultError(f"kill -{int(signal)} of envoy in {ns}/{pod} container {SIDECAR} failed (exit "
                             f"{done.exit_code}): {(done.stderr or done.stdout).strip()[:300]} (a proxy image "
                             "without a shell, e.g. distroless, cannot be used for this fault)")
        self._killed_at[(ns, pod)] = time.monotonic()
        self._wait_pod(ns, pod, lambda s: s is None or not s.ready or s.restart_count > before.restart_count,
                       KILL_SEEN_S, f"envoy (pid {done.stdout.strip()}) in {ns}/{pod} still serving "
                                    f"{KILL_SEEN_S:g} s after signal {int(signal)}")

    def restart_sidecar(self, handle, role: str) -> None:
        """The kubelet restarts the container on its own (pilot-agent exits with Envoy): wait for it."""
        ns, pod = self._pod(handle, role)
        before = self._restarts.pop((ns, pod), None)
        if before is None:
            return  # nothing was killed (a failed kill is healed too)
        self._wait_pod(ns, pod, lambda s: s is not None and s.ready and s.restart_count > before,
                       recovery_budget_s(before),
                       f"the {role} sidecar in {ns}/{pod} did not restart and become ready")
        killed = self._killed_at.pop((ns, pod), None)
        if killed is not None:
            self.recoveries.append((role, time.monotonic() - killed))

    def _wait_pod(self, ns: str, pod: str, done, timeout_s: float, problem: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                status = _sidecar_status(self._cluster().core.read_namespaced_pod(pod, ns))
            except client.ApiException as err:
                raise FaultError(f"{problem}: reading pod {ns}/{pod}: {err.status} {err.reason}") from None
            if done(status):
                return
            time.sleep(0.5)
        raise FaultError(f"{problem} within {timeout_s:g} s")

    def unhealed_on(self, pods: set[tuple[str, str]]) -> bool:
        """Whether a network fault is still applied on any of these (namespace, pod): its heal failed."""
        return any(commands for pod, commands in self._applied.items() if pod in pods)

    def crashed_on(self, pods: set[tuple[str, str]]) -> bool:
        """Whether a sidecar of these (namespace, pod) was killed: its next restart would wait out a back-off."""
        return bool(self._crashed & pods)

    # --- control plane ------------------------------------------------------------------------------

    def stop_control_plane(self) -> None:
        if not self.backend.allow_mesh_wide:
            raise MeshWideRefused("stopping the control plane stops istiod for every workload of the cluster's "
                                  "mesh; refused unless --allow-mesh-wide (run it on a cluster of its own)")
        apps = self._cluster().apps
        found = [(d.metadata.namespace, d.metadata.name, (d.metadata.labels or {}).get(REV_LABEL, "default"))
                 for d in apps.list_deployment_for_all_namespaces(label_selector="app=istiod").items]
        revisions = {self.backend.revisions.client, self.backend.revisions.server}
        targets = istiod_targets(found, revisions)
        self._open_validators({rev for ns, name, rev in found if (ns, name) in targets})
        for ns, name in targets:
            with self._lock:
                if (ns, name) not in self._replicas:  # recorded before scaling, so a heal can always restore
                    self._replicas[(ns, name)] = apps.read_namespaced_deployment_scale(name, ns).spec.replicas
                    # ...and on the deployment itself, so `meshproof clean --mesh kube` can restore it after
                    # a run that died while istiod was down.
                    apps.patch_namespaced_deployment(name, ns, {"metadata": {"annotations": {
                        RESTORE_ANNOTATION: str(self._replicas[(ns, name)])}}})
            apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": 0}})
        for ns, name in list(self._replicas):
            self._wait_gone(ns, name)

    def _open_validators(self, revisions: set[str]) -> None:
        """Set the revisions' validating webhooks to Ignore before istiod goes (recorded on each object, so
        `meshproof clean --mesh kube` restores them after a run that died in the window)."""
        admission = self._cluster().admission
        for config in admission.list_validating_webhook_configuration(
                label_selector=validator_selector(revisions)).items:
            patch = opening_patch([(w.name, w.failure_policy) for w in config.webhooks or []])
            if patch:
                admission.patch_validating_webhook_configuration(config.metadata.name, patch)
                with self._lock:
                    self._opened.append(config.metadata.name)

    def _close_validators(self) -> list[str]:
        """Give the opened webhooks their policy back (istiod also sets Fail itself once it is ready)."""
        with self._lock:
            opened, self._opened = self._opened, []
        admission, failures = self._cluster().admission, []
        for name in opened:
            try:
                patch = restoring_patch(admission.read_validating_webhook_configuration(name).metadata.annotations)
                if patch:
                    admission.patch_validating_webhook_configuration(name, patch)
            except client.ApiException as err:
                failures.append(f"validatingwebhookconfiguration {name}: {err.status} {err.reason}")
        return failures

    def start_control_plane(self) -> None:
        """Restore every recorded replica count, even when one of them fails; then wait for them to serve."""
        with self._lock:
            saved, self._replicas = dict(self._replicas), {}
        if not saved and not self._opened:
            return  # nothing was scaled or opened (a refused or failed stop is healed too)
        apps, failures = self._cluster().apps, []
        for (ns, name), replicas in saved.items():
            try:
                apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": replicas}})
            except client.ApiException as err:
                failures.append(f"{ns}/{name} back to {replicas} replicas: {err.status} {err.reason}")
        for (ns, name), replicas in saved.items():
            try:
                self._wait_replicas(ns, name, replicas)
                apps.patch_namespaced_deployment(name, ns, {"metadata": {"annotations": {RESTORE_ANNOTATION: None}}})
            except (FaultError, client.ApiException) as err:
                failures.append(str(err))
        failures += self._close_validators()
        if failures:
            raise FaultError("restoring istiod: " + "; ".join(failures))

    def _wait_replicas(self, ns: str, name: str, replicas: int) -> None:
        deadline = time.monotonic() + SCALE_S
        while time.monotonic() < deadline:
            status = self._cluster().apps.read_namespaced_deployment(name, ns).status
            if (status.ready_replicas or 0) >= replicas:
                return
            time.sleep(1.0)
        raise FaultError(f"istiod {ns}/{name} did not reach {replicas} ready replicas within {SCALE_S:g} s")

    def _wait_gone(self, ns: str, name: str) -> None:
        """Until no pod of the deployment exists, terminating ones included: a deployment's status.replicas
        counts only pods without a deletion timestamp, so it reads 0 while istiod still shuts down and
        serves its sidecars."""
        apps, core = self._cluster().apps, self._cluster().core
        labels = apps.read_namespaced_deployment(name, ns).spec.selector.match_labels or {}
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        deadline = time.monotonic() + SCALE_S
        left: list[str] = []
        while time.monotonic() < deadline:
            left = [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=selector).items]
            if not left:
                return
            time.sleep(1.0)
        raise FaultError(f"istiod {ns}/{name}: pods {', '.join(left)} still exist {SCALE_S:g} s after the scale to 0")

    # --- certificates -------------------------------------------------------------------------------

    def rotate_certificates(self, handle) -> None:
        raise FaultUnavailable(
            "certificate rotation on kube: Istio re-issues a workload certificate only on the agent's own "
            "schedule (SECRET_TTL, SECRET_GRACE_PERIOD_RATIO) or when the pod restarts; there is no API to "
            "trigger a re-issue without a restart")

    def expire_certificate(self, handle, role: str, lifetime_s: float) -> float:
        raise FaultUnavailable(
            "certificate expiry on kube: istiod's CA sets the lifetime of every certificate it signs (no "
            "per-request TTL below its minimum) and nothing swaps one workload's certificate in place; it needs "
            "a custom CA integration")

    def rogue_certificate(self, handle, role: str) -> None:
        raise FaultUnavailable(
            "rogue peer on kube: a certificate from an untrusted CA needs a workload whose sidecar serves "
            "file-mounted certificates (userVolumeMount), which means a new pod instead of a swap under traffic")

    # The windows fail before any traffic is disturbed (their heal is rotate, which is not available either).
    def certificate_expiring(self, handle, role: str, lifetime_s: float, bound_s: float = DEFAULT_BOUND_S):
        check_role(role)
        return self.expire_certificate(handle, role, lifetime_s)

    def rogue_peer(self, handle, role: str, bound_s: float = DEFAULT_BOUND_S):
        check_role(role)
        return self.rogue_certificate(handle, role)

    def serving_certificates(self, handle) -> dict[str, frozenset[str]]:
        served = {}
        for role in ("client", "server"):
            if not self._has_sidecar(handle, role):
                continue
            ns, pod = self._pod(handle, role)
            done = exec_in(self._cluster(), ns, pod, SIDECAR, ["pilot-agent", "request", "GET", "certs"],
                           EXEC_TIMEOUT_S)
            if done.exit_code != 0:
                raise FaultError(f"reading Envoy's /certs in {ns}/{pod}: {done.stderr.strip()[:300]}")
            served[role] = serials(done.stdout)
        return served

    # --- network ------------------------------------------------------------------------------------

    def limit_bandwidth(self, handle, rate: str) -> None:
        commands = bandwidth_commands(rate)
        for role in ("client", "server"):
            self._apply(handle, role, commands)

    def drop_packets(self, handle, probability: float) -> None:
        self._apply(handle, "server", loss_commands(probability))

    def delay_packets(self, handle, ms: int) -> None:
        self._apply(handle, "client", delay_commands(ms))

    def partition(self, handle) -> None:
        self._apply(handle, "server", partition_commands(self._client_ip(handle)))

    def heal(self, handle) -> None:
        """Undo what was applied to this handle's pods, newest first; try every pod, then report."""
        failures = []
        for role in ("server", "client"):
            key = self._pod(handle, role)
            with self._lock:
                applied = self._applied.pop(key, [])
            for undone, command in enumerate(heal_commands(applied)):
                try:
                    self._run(key, command)
                except FaultError as err:
                    failures.append(str(err))
                    with self._lock:  # keep what is still in place, so a later heal retries exactly that
                        self._applied[key] = applied[:len(applied) - undone]
                    break
        if failures:
            raise FaultError("; ".join(failures))

    def _apply(self, handle, role: str, commands: list[list[str]]) -> None:
        key = self._pod(handle, role)
        self._ensure_tools(key)
        for command in commands:
            with self._lock:
                applied = self._applied.setdefault(key, [])
                if command in applied and command[2] in ("-N", "-I"):
                    continue  # our chains are already hooked in (e.g. loss, then a partition)
            self._run(key, command)
            with self._lock:
                applied.append(command)

    def _ensure_tools(self, key: tuple[str, str]) -> None:
        """The capture's ephemeral container (it has NET_ADMIN, tc and iptables), added once per pod."""
        PodCapture(self._cluster(), *key, 0, self.backend.images).ensure_container()

    def _run(self, key: tuple[str, str], command: list[str]) -> str:
        ns, pod = key
        done = exec_in(self._cluster(), ns, pod, TOOLS, command, EXEC_TIMEOUT_S)
        if done.exit_code != 0:
            raise FaultError(f"in pod {ns}/{pod} container {TOOLS}: {' '.join(command)}: "
                             f"{done.stderr.strip()[:300] or f'exit {done.exit_code}'}")
        return done.stdout

    def _client_ip(self, handle) -> str:
        ns, pod = handle.client_pod
        ip = self._cluster().core.read_namespaced_pod(pod, ns).status.pod_ip
        if not ip:
            raise FaultError(f"client pod {ns}/{pod} has no IP")
        return ip

    # --- observation --------------------------------------------------------------------------------

    @contextmanager
    def capture(self, handle, pcap: Path):
        ns, pod, _ = handle.server_pod
        if handle.capture is None:
            handle.capture = PodCapture(self._cluster(), ns, pod, handle.scenario.server.target_port,
                                        self.backend.images)
        tag = "window" + Path(pcap).stem
        handle.capture.ensure_container()
        handle.capture.start(tag)
        try:
            yield Path(pcap)
        finally:
            Path(pcap).parent.mkdir(parents=True, exist_ok=True)
            Path(pcap).write_bytes(handle.capture.stop(tag))

    def server_address(self, handle) -> tuple[str, int]:
        return handle.server_pod[2], handle.scenario.server.target_port


class _SidecarStatus:
    def __init__(self, ready: bool, restart_count: int):
        self.ready, self.restart_count = ready, restart_count


def _sidecar_status(pod: client.V1Pod) -> _SidecarStatus | None:
    """istio-proxy's readiness and restarts: a container, or a native sidecar (an init container that
    restarts always, Istio's default on Kubernetes 1.29+)."""
    statuses = (pod.status.container_statuses or []) + (pod.status.init_container_statuses or [])
    status = next((s for s in statuses if s.name == SIDECAR), None)
    if status is None:
        return None
    pod_ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return _SidecarStatus(bool(status.ready) and pod_ready, status.restart_count or 0)


def serials(certs_json: str) -> frozenset[str]:
    """Serial numbers of the workload certificates in Envoy's admin /certs answer."""
    try:
        entries = json.loads(certs_json)["certificates"]
    except (ValueError, KeyError, TypeError) as err:
        raise FaultError(f"Envoy's /certs answer is not what the admin API returns: {err}") from None
    return frozenset(cert["serial_number"] for entry in entries for cert in entry.get("cert_chain", []))
