#!/usr/bin/env bash
# Create the meshproof kind cluster and install Istio, each version as its own revision (canary style).
#
#   cluster/kind/up.sh 1.30            # one control plane, revision 1-30-3, tagged "default"
#   cluster/kind/up.sh 1.29 1.30       # two side by side: 1-29-6 ("default" tag, the current one) and 1-30-3
#
# istioctl (from the Istio release bundle) and kind are downloaded (pinned versions in versions.env) and
# checked against the sha256 committed in checksums.txt before use.
# Prints the kubeconfig path and the installed revisions. Safe to re-run: existing pieces are kept.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HERE/versions.env"
CLUSTER="${KIND_CLUSTER:-meshproof}"
export KUBECONFIG="${KIND_KUBECONFIG:-$HOME/.kube/meshproof-kind.yaml}"
TOOLS="${MESHPROOF_TOOLS:-$HOME/.cache/meshproof/bin}"
CHECKSUMS="${MESHPROOF_CHECKSUMS:-$HERE/checksums.txt}"

die() { echo "up.sh: error: $*" >&2; exit 2; }

arch() {
  case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64|arm64) echo arm64 ;;
    *) die "unsupported machine $(uname -m); allowed: x86_64, aarch64" ;;
  esac
}

# full_version 1.30 -> 1.30.3 (from versions.env); a full x.y.z is taken as given.
full_version() {
  local v="$1"
  if [[ "$v" =~ ^1\.[0-9]+\.[0-9]+$ ]]; then echo "$v"; return; fi
  [[ "$v" =~ ^1\.([0-9]+)$ ]] || die "Istio version '$v': allowed: 1.28, 1.29, 1.30 or a full x.y.z"
  local var="ISTIO_1_${BASH_REMATCH[1]}"
  [ -n "${!var:-}" ] || die "Istio $v is not pinned in versions.env; allowed: 1.28, 1.29, 1.30"
  echo "${!var}"
}

# verify FILE PUBLISHED_SHA256_URL: the sum committed in checksums.txt, nothing else. A sum the release
# publishes next to the file proves only that both came from the same place; it is used for a file without a
# committed sum only when ALLOW_UNPINNED=1, and said so.
verify() {
  local file="$1" url="$2" name want got
  name="$(basename "$file")"
  got="$(sha256sum "$file" | cut -d' ' -f1)"
  want="$(awk -v n="$name" '$2 == n {print $1}' "$CHECKSUMS")"
  if [ -z "$want" ]; then
    if [ "${ALLOW_UNPINNED:-}" != 1 ]; then
      rm -f "$file"
      die "$name: no sha256 committed in $CHECKSUMS; add its line (checked against a source other than the release), or run with ALLOW_UNPINNED=1 to trust $url"
    fi
    want="$(curl -fsSL "$url" | awk '{print $1}')"
    [ -n "$want" ] || { rm -f "$file"; die "no published checksum at $url"; }
    echo "UNPINNED: $name is checked only against its own release's sum; to pin it: $got  $name" >&2
  fi
  [ "$got" = "$want" ] || { rm -f "$file"; die "$name: sha256 $got differs from the expected $want"; }
}

# Always the verified download: a kind on PATH is of unknown origin (and `kind version -q` prints 0.30.0
# without the v: kind pkg/cmd/kind/version/version.go).
install_kind() {
  KIND="$TOOLS/kind-$KIND_VERSION"
  [ -x "$KIND" ] && return
  local file
  file="$TOOLS/kind-$KIND_VERSION-linux-$(arch)"
  curl -fsSL -o "$file" "https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-linux-$(arch)"
  verify "$file" "https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-linux-$(arch).sha256sum"
  chmod +x "$file" && mv "$file" "$KIND"
}

# istioctl_for 1.30.3 -> path of a verified istioctl of exactly that version, from the release bundle
# istio-<version>-linux-<arch>.tar.gz (bin/istioctl). meshproof's diagnostics use it from there too.
istioctl_for() {
  local version="$1" dir="$TOOLS/istio-$1" tarball url
  if [ ! -x "$dir/istioctl" ]; then
    tarball="$TOOLS/istio-$version-linux-$(arch).tar.gz"
    url="https://github.com/istio/istio/releases/download/$version/istio-$version-linux-$(arch).tar.gz"
    curl -fsSL -o "$tarball" "$url" || die "download of $url failed"
    verify "$tarball" "$url.sha256" >&2
    mkdir -p "$dir" && tar -xzf "$tarball" -C "$dir" --strip-components=2 "istio-$version/bin/istioctl" \
      && rm -f "$tarball"
  fi
  echo "$dir/istioctl"
}

main() {
  [ $# -ge 1 ] || set -- "${ISTIO_VERSION:-1.30}"
  local wanted version revision istioctl first=""
  for wanted in "$@"; do full_version "$wanted" >/dev/null; done  # bad input stops before anything is made
  docker info >/dev/null 2>&1 || die "kind needs a running container engine; \`docker info\` failed"
  mkdir -p "$TOOLS" "$(dirname "$KUBECONFIG")"
  install_kind

  if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    "$KIND" create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --config "$HERE/kind-config.yaml" \
      --kubeconfig "$KUBECONFIG" --wait 120s
  fi

  for wanted in "$@"; do
    version="$(full_version "$wanted")"
    revision="${version//./-}"
    istioctl="$(istioctl_for "$version")"
    # minimal profile: istiod only (east-west sidecars need no gateway); auto mTLS is on by default.
    "$istioctl" install -y --set profile=minimal --set revision="$revision" \
      --set meshConfig.accessLogFile=/dev/stdout --set values.global.proxy.holdApplicationUntilProxyStarts=true
    [ -n "$first" ] || first="$revision"
    echo "installed Istio $version as revision $revision"
  done
  # The "default" tag makes istio-injection=enabled inject with the first (current) revision.
  "$(istioctl_for "$(full_version "$1")")" tag set default --revision "$first" --overwrite
  echo "KUBECONFIG=$KUBECONFIG"
  echo "revisions: $*  (installed as ${first} first; the default tag points at it)"
}

# Sourcing the script (the self-tests do) defines the functions without running anything.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
