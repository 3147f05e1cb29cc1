"""Connect to a cluster with the official kubernetes client, failing fast with a clear message, and exec
commands in pod containers."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream

from meshproof.errors import UsageError

CONNECT_TIMEOUT_S = 3.0  # an API server that does not answer within this is unreachable for our purposes


class KubeUnavailable(UsageError):
    """No usable cluster: missing kubeconfig, unknown context, unreachable or refusing API server."""


@dataclass
class Cluster:
    api: client.ApiClient
    context: str
    server: str
    version: str  # the API server's gitVersion

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def admission(self) -> client.AdmissionregistrationV1Api:
        return client.AdmissionregistrationV1Api(self.api)


def kubeconfig_path(kubeconfig: str | None) -> Path | None:
    """The file the usual resolution picks: --kubeconfig, then $KUBECONFIG (first entry), ~/.kube/config."""
    if kubeconfig:
        return Path(kubeconfig).expanduser()
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    if first:
        return Path(first).expanduser()
    default = Path.home() / ".kube" / "config"
    return default if default.exists() else None


def connect(kubeconfig: str | None = None, context: str | None = None,
            timeout_s: float = CONNECT_TIMEOUT_S) -> Cluster:
    """Load the kubeconfig and ask the API server its version; raise KubeUnavailable within ~timeout_s."""
    path = kubeconfig_path(kubeconfig)
    configuration = client.Configuration()
    if path is None:
        if "KUBERNETES_SERVICE_HOST" not in os.environ:
            raise KubeUnavailable("no kubeconfig: pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config "
                                  "(for a local cluster: make kind-up)")
        config.load_incluster_config(client_configuration=configuration)
        context_name = "in-cluster"
    else:
        if not path.is_file():
            raise KubeUnavailable(f"kubeconfig {path}: file not found")
        try:
            contexts, active = config.list_kube_config_contexts(str(path))
            names = [c["name"] for c in contexts]
            if context and context not in names:
                raise KubeUnavailable(f"kubeconfig {path}: context {context!r} not found; "
                                      f"allowed: {', '.join(names) or '(none)'}")
            config.load_kube_config(str(path), context=context, client_configuration=configuration,
                                    persist_config=False)
        except ConfigException as err:
            raise KubeUnavailable(f"kubeconfig {path}: {err}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise KubeUnavailable(f"kubeconfig {path}: not valid YAML{where}: "
                                  f"{getattr(err, 'problem', err)}") from None
        context_name = context or (active or {}).get("name", "")
    configuration.retries = 0  # fail fast; the backend retries where waiting makes sense
    api = client.ApiClient(configuration)
    try:
        info = client.VersionApi(api).get_code(_request_timeout=(timeout_s, timeout_s))
    except (urllib3.exceptions.HTTPError, OSError) as err:
        api.close()
        raise KubeUnavailable(f"API server {configuration.host} (context {context_name or '?'}) is unreachable "
                              f"within {timeout_s:g} s: {_reason(err)}") from None
    except client.ApiException as err:
        api.close()
        raise KubeUnavailable(f"API server {configuration.host} refused the version request: "
                              f"{err.status} {err.reason}") from None
    return Cluster(api, context_name, configuration.host, info.git_version)


def _reason(err: Exception) -> str:
    reason = getattr(err, "reason", None) or err
    text = str(reason)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return text.split(": ", 1)[-1][:200]


@dataclass
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    elapsed_s: float


def exec_in(cluster: Cluster, namespace: str, pod: str, container: str, command: list[str],
            timeout_s: float = 30.0) -> ExecResult:
    """Run a command in a container and wait for it (the exec subresource, like `kubectl exec`)."""
    started = time.monotonic()
    # kubernetes.stream.stream swaps `call_api` on the ApiClient of the method it is given for the length of
    # the call (kubernetes/stream/stream.py, client v37; kubernetes-client/python#928). On a shared client a
    # REST call of another thread (chaos traffic beside the main thread) would then go out as a WebSocket,
    # and two overlapping execs restore each other's swap, leaving it in place for good. So every exec gets
    # an ApiClient of its own on the same configuration; the WebSocket it opens does not need it afterwards.
    with client.ApiClient(cluster.api.configuration) as own:
        ws = stream(client.CoreV1Api(own).connect_get_namespaced_pod_exec, pod, namespace, container=container,
                    command=command, stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    stdout, stderr = [], []
    try:
        while ws.is_open():
            remaining = timeout_s - (time.monotonic() - started)
            if remaining <= 0:
                raise TimeoutError(f"exec in {namespace}/{pod}/{container} did not finish in {timeout_s:g} s: "
                                   f"{' '.join(command)}")
            ws.update(timeout=min(remaining, 1.0))
            stdout.append(ws.read_stdout(timeout=0))  # timeout=None would block until more output
            stderr.append(ws.read_stderr(timeout=0))
        stdout.append(ws.read_stdout(timeout=0))
        stderr.append(ws.read_stderr(timeout=0))
        try:
            code = ws.returncode  # from the status the API server sends on the error channel
        except (TypeError, KeyError, IndexError, ValueError):
            code = None
    finally:
        ws.close()
    return ExecResult(code if code is not None else -1, "".join(stdout), "".join(stderr),
                      time.monotonic() - started)
