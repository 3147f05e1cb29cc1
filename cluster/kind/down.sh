#!/usr/bin/env bash
# Delete the meshproof kind cluster (everything meshproof and Istio put in it goes with it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HERE/versions.env"
CLUSTER="${KIND_CLUSTER:-meshproof}"
KUBECONFIG_FILE="${KIND_KUBECONFIG:-$HOME/.kube/meshproof-kind.yaml}"
KIND="$(command -v kind || echo "${MESHPROOF_TOOLS:-$HOME/.cache/meshproof/bin}/kind-$KIND_VERSION")"
if [ -x "$KIND" ] && "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  "$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE"
else
  echo "no kind cluster named $CLUSTER"
fi
rm -f "$KUBECONFIG_FILE"
