"""The diagnostics bundle for a failed cell: what a person needs to see why the real mesh did what it did.

Namespace objects and events, the Istio policies, `istioctl proxy-status` / `proxy-config` of both pods,
and istiod's log for the run's window. Each part is a text file; a part that cannot be read says why instead
of failing the bundle. The istioctl is the one `make kind-up` fetched for the control plane's version (CI has
none on PATH), else one named by MESHPROOF_ISTIOCTL or on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml
from kubernetes import client

from cluster.kube.client import Cluster
from cluster.kube.inspect import ISTIO_KINDS, control_planes

ISTIOCTL_ENV, TOOLS_ENV = "MESHPROOF_ISTIOCTL", "MESHPROOF_TOOLS"
DEFAULT_TOOLS = "~/.cache/meshproof/bin"  # cluster/kind/up.sh keeps istioctl at <tools>/istio-<version>/istioctl


def find_istioctl(versions: list[str], env: Mapping[str, str] | None = None) -> str | None:
    """MESHPROOF_ISTIOCTL; else the istioctl kind-up fetched for the first of `versions` (control plane image
    tags such as 1.30.3 or 1.30.3-distroless) it has; else istioctl on PATH; else None."""
    env = os.environ if env is None else env
    if env.get(ISTIOCTL_ENV):
        return env[ISTIOCTL_ENV]
    tools = Path(env.get(TOOLS_ENV) or Path(DEFAULT_TOOLS).expanduser())
    for version in versions:
        release = re.match(r"\d+\.\d+\.\d+", version.lstrip("v"))
        candidate = tools / f"istio-{release[0]}" / "istioctl" if release else None
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("istioctl", path=env.get("PATH"))


def collect(cluster: Cluster, namespaces: list[str], pods: dict[str, tuple[str, str]], since_s: int,
            kubeconfig: str | None = None, context: str | None = None,
            istioctl: str | None = None) -> dict[str, str]:
    """`pods` maps a role (sleep, httpbin) to (namespace, pod name); `istioctl` from find_istioctl.
    Returns file name -> text."""
    parts: dict[str, str] = {}
    sanitize = cluster.api.sanitize_for_serialization
    for ns in namespaces:
        _part(parts, f"{ns}/pods.yaml", lambda ns=ns: _dump(sanitize(cluster.core.list_namespaced_pod(ns).items)))
        _part(parts, f"{ns}/services.yaml",
              lambda ns=ns: _dump(sanitize(cluster.core.list_namespaced_service(ns).items)))
        _part(parts, f"{ns}/events.txt", lambda ns=ns: _events(cluster, ns))
        for group, version, plural in ISTIO_KINDS.values():
            _part(parts, f"{ns}/{plural}.yaml", lambda ns=ns, g=group, v=version, p=plural: _dump(
                cluster.custom.list_namespaced_custom_object(g, v, ns, p)["items"]))
    for plane in control_planes(cluster):
        _part(parts, f"istiod-{plane.revision}.log", lambda plane=plane: _istiod_log(cluster, plane, since_s))
    if istioctl:
        base = [istioctl] + (["--kubeconfig", kubeconfig] if kubeconfig else []) + \
               (["--context", context] if context else [])
        _part(parts, "proxy-status.txt", lambda: _run(base + ["proxy-status"]))
        for role, (ns, pod) in pods.items():
            for what in ("cluster", "listener", "secret"):
                _part(parts, f"proxy-config-{role}-{what}.txt",
                      lambda ns=ns, pod=pod, what=what: _run(base + ["proxy-config", what, f"{pod}.{ns}"]))
    else:
        parts["proxy-config.txt"] = (f"no istioctl (not fetched by make kind-up under ${TOOLS_ENV} or {DEFAULT_TOOLS}, "
                                     f"no ${ISTIOCTL_ENV}, none on PATH): no proxy-status / proxy-config in this "
                                     "bundle\n")
    return parts


def write(parts: dict[str, str], directory: Path) -> Path:
    for name, text in parts.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def _part(parts: dict[str, str], name: str, read: Callable[[], str]) -> None:
    try:
        parts[name] = read()
    except (client.ApiException, OSError, subprocess.SubprocessError, ValueError) as err:
        parts[name] = f"could not read: {err}\n"


def _dump(objects) -> str:
    return yaml.safe_dump_all(objects if isinstance(objects, list) else [objects], sort_keys=False)


def _events(cluster: Cluster, ns: str) -> str:
    events = cluster.core.list_namespaced_event(ns).items
    events.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
    return "".join(f"{e.last_timestamp or e.event_time} {e.type} {e.involved_object.kind}/"
                   f"{e.involved_object.name} {e.reason}: {e.message}\n" for e in events)


def _istiod_log(cluster: Cluster, plane, since_s: int) -> str:
    selector = "app=istiod" + ("" if plane.revision == "default" else f",istio.io/rev={plane.revision}")
    logs = []
    for pod in cluster.core.list_namespaced_pod(plane.namespace, label_selector=selector).items:
        text = cluster.core.read_namespaced_pod_log(pod.metadata.name, plane.namespace, container="discovery",
                                                     since_seconds=max(1, since_s))
        logs.append(f"=== {pod.metadata.name}\n{text}")
    return "\n".join(logs)


def _run(command: list[str]) -> str:
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    return done.stdout + (f"\n[stderr]\n{done.stderr}" if done.stderr else "")
