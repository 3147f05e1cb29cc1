"""Does a workload run with a sidecar? Observed for a running pod, predicted for a pod template the way Istio's
injection webhook decides it.

Sources: istio/istio manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml (the
namespace and object selectors: istio-injection=enabled or istio.io/rev on the namespace; the pod label
sidecar.istio.io/inject=true or istio.io/rev without a namespace label; istio-injection=disabled and
sidecar.istio.io/inject=false exclude) and pkg/kube/inject/inject.go injectRequired (hostNetwork pods and the
sidecar.istio.io/inject annotation "false" are never injected); release-1.28, 1.29 and 1.30 alike.
"""

from __future__ import annotations

INJECT = "sidecar.istio.io/inject"
NS_INJECTION = "istio-injection"
REVISION = "istio.io/rev"
PROXY_CONTAINER = "istio-proxy"
STATUS_ANNOTATION = "sidecar.istio.io/status"  # set by the injector on every pod it injected
DATAPLANE_MODE = "istio.io/dataplane-mode"  # "ambient": ztunnel, not a sidecar, carries the pod's traffic


def ambient(labels: dict[str, str], namespace_labels: dict[str, str] | None) -> str | None:
    """Why a sidecar-less pod is in ambient mode (the oracle models sidecars only), or None.
    Source: istio/istio cni/pkg/util/podutil.go PodRedirectionEnabled (the namespace label, a pod with a
    sidecar never redirected) and enablement_selector.go (a pod's own label, `none` opting out)."""
    mode = labels.get(DATAPLANE_MODE) or (namespace_labels or {}).get(DATAPLANE_MODE)
    if mode == "ambient":
        return (f"{DATAPLANE_MODE}=ambient: ztunnel carries its traffic, and meshproof's oracle models "
                "sidecars only")
    return None


def observed(pod_spec: dict, annotations: dict[str, str]) -> bool:
    """A pod that exists: its containers (or native-sidecar init containers) say it."""
    containers = (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or [])
    return any(isinstance(c, dict) and c.get("name") == PROXY_CONTAINER for c in containers) \
        or STATUS_ANNOTATION in annotations


def predicted(pod_spec: dict, labels: dict[str, str], annotations: dict[str, str],
              namespace_labels: dict[str, str] | None) -> tuple[bool | None, str]:
    """A pod template: (sidecar, why). None when the input cannot tell (its namespace is not in it)."""
    if observed(pod_spec, annotations):
        return True, "the manifest already carries the istio-proxy container"
    if pod_spec.get("hostNetwork"):
        return False, "hostNetwork pods are never injected"
    pod_label = labels.get(INJECT)
    if pod_label == "false":
        return False, f"pod label {INJECT}=false"
    if namespace_labels is None:
        return None, "its namespace is not in the input, so its injection labels are unknown"
    ns_injection = namespace_labels.get(NS_INJECTION)
    if ns_injection == "disabled":
        return False, f"namespace label {NS_INJECTION}=disabled"
    if ns_injection == "enabled":
        selected = f"namespace label {NS_INJECTION}=enabled"
    elif REVISION in namespace_labels:
        selected = f"namespace label {REVISION}={namespace_labels[REVISION]}"
    elif pod_label == "true":
        selected = f"pod label {INJECT}=true"
    elif REVISION in labels:
        selected = f"pod label {REVISION}={labels[REVISION]}"
    else:
        return False, "neither its namespace nor its pod labels ask for injection"
    if annotations.get(INJECT) == "false":
        return False, f"{selected}, but the pod annotation {INJECT}=false opts out"
    return True, selected
