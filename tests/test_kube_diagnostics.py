"""The diagnostics bundle's istioctl: the one `make kind-up` fetched (cluster/kind/up.sh keeps it at
<tools>/istio-<version>/istioctl), so CI bundles hold proxy-status and proxy-config without istioctl on PATH.
The istioctl here is a script that prints its arguments: what is proven is which binary runs with which
arguments; the API parts go to a loopback API server (tests/kube_apiserver.py) with no control plane."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cluster.kube.diagnostics import collect, find_istioctl
from tests.kube_apiserver import FakeApiServer

KIND_UP = Path(__file__).resolve().parent.parent / "cluster" / "kind" / "up.sh"


def fetched(tools: Path, version: str) -> Path:
    """An istioctl where up.sh's istioctl_for puts it (asked of up.sh itself, so the two cannot drift)."""
    where = subprocess.run(["bash", "-c", f'source "{KIND_UP}"; echo "$TOOLS/istio-{version}/istioctl"'],
                           env={"MESHPROOF_TOOLS": str(tools), "HOME": str(tools), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, check=True).stdout.strip()
    path = Path(where)
    path.parent.mkdir(parents=True)
    path.write_text('#!/bin/sh\necho "istioctl $*"\n')
    path.chmod(0o755)
    return path


def test_the_istioctl_kind_up_fetched_for_the_control_planes_version_is_used(tmp_path):
    istioctl = fetched(tmp_path, "1.30.3")
    env = {"MESHPROOF_TOOLS": str(tmp_path), "PATH": "/nonexistent"}
    assert find_istioctl(["1.29.6", "1.30.3-distroless"], env) == str(istioctl)  # the first version it has
    assert find_istioctl(["1.28.10"], env) is None
    assert find_istioctl(["1.28.10"], {**env, "MESHPROOF_ISTIOCTL": "/opt/istioctl"}) == "/opt/istioctl"


def test_the_bundle_holds_proxy_status_and_proxy_config_from_that_istioctl(tmp_path):
    istioctl = fetched(tmp_path, "1.30.3")
    with FakeApiServer() as api:
        api.route("GET", "/apis/apps/v1/deployments", (200, {"items": []}))
        parts = collect(api.cluster(), [], {"sleep": ("sleep-r1", "sleep-abc")}, 60, "/k/config", "kind-meshproof",
                        str(istioctl))
    assert parts["proxy-status.txt"].strip() == "istioctl --kubeconfig /k/config --context kind-meshproof proxy-status"
    assert parts["proxy-config-sleep-secret.txt"].strip().endswith("proxy-config secret sleep-abc.sleep-r1")
    assert "proxy-config.txt" not in parts
