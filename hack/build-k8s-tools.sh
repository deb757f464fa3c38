#!/usr/bin/env bash
# Build the binaries of the test control plane from Go modules, once per version.
#
#   bash hack/build-k8s-tools.sh              build (does nothing when the cache is complete)
#   bash hack/build-k8s-tools.sh --print-dir  print the bin directory and exit (builds nothing)
#
# Pins live in hack/gotools/go.mod (Kubernetes, etcd), hack/gotools/helm/go.mod (helm) and
# hack/kuberay/go.mod (the KubeRay version of the CRDs; the operator itself is built by
# hack/build-kuberay.sh). The binaries go to a cache directory outside the repository, keyed by the
# Kubernetes version and a hash of everything that decides what is built:
#   ${K8S_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datajuicer-operator/k8s-tools}/<ver>-<hash>/bin
# The directory holds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, helm
# and the KubeRay CRDs (ray.io_rayclusters.yaml, ray.io_rayjobs.yaml). A stamp file marks a
# finished build.
set -euo pipefail

HELM_GIT_VERSION_PKG=helm.sh/helm/v4/internal/version

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MOD=$HERE/gotools
HELM_MOD=$MOD/helm
# The KubeRay version has one source: the operator's module (hack/kuberay/go.mod, built by
# hack/build-kuberay.sh). The CRDs copied here are those of the same version.
KUBERAY_VERSION=$(awk '$1 == "github.com/ray-project/kuberay/ray-operator" {print $2}' \
  "$HERE/kuberay/go.mod")

k8s_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$MOD/go.mod")
helm_version=$(awk '$1 == "helm.sh/helm/v4" {print $2}' "$HELM_MOD/go.mod")
if [[ -z "$k8s_version" || -z "$helm_version" || -z "$KUBERAY_VERSION" ]]; then
  echo "build-k8s-tools: cannot read the pinned versions from $MOD" >&2
  exit 1
fi
tools_hash=$(cat "$MOD/go.mod" "$MOD/go.sum" "$HELM_MOD/go.mod" "$HELM_MOD/go.sum" \
  <(echo "kuberay=$KUBERAY_VERSION layout=2") | sha256sum | cut -c1-12)
cache_root=${K8S_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datajuicer-operator/k8s-tools}
dest=$cache_root/$k8s_version-$tools_hash
bin=$dest/bin
stamp=$dest/.complete

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$bin"
  exit 0
fi

if [[ -f "$stamp" ]]; then
  echo "k8s tools $k8s_version are built: $bin"
  exit 0
fi

GO=${GO:-$(command -v go || true)}
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]]; then
  echo "build-k8s-tools: no Go toolchain found (set GO=/path/to/go)" >&2
  exit 1
fi

mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9
if [[ -f "$stamp" ]]; then  # another build finished while this one waited for the lock
  echo "k8s tools $k8s_version are built: $bin"
  exit 0
fi

export GOFLAGS=-mod=mod
export CGO_ENABLED=0
start=$(date +%s)
echo "building k8s tools $k8s_version, helm $helm_version, KubeRay CRDs $KUBERAY_VERSION"
echo "into $bin (a cold build takes 15-30 minutes on 2 cores)"

stage=$dest/stage
rm -rf "$stage"
mkdir -p "$stage"

minor=${k8s_version#v1.}
minor=${minor%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

(
  cd "$MOD"
  "$GO" build -trimpath -ldflags "-s -w $ldflags" -o "$stage/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl \
    go.etcd.io/etcd/server/v3
)
mv "$stage/v3" "$stage/etcd" 2>/dev/null || mv "$stage/server" "$stage/etcd"
echo "kubernetes and etcd built in $(($(date +%s) - start))s"

(
  cd "$HELM_MOD"
  "$GO" build -trimpath -o "$stage/helm" \
    -ldflags "-s -w -X $HELM_GIT_VERSION_PKG.version=$helm_version -X $HELM_GIT_VERSION_PKG.gitTreeState=clean" \
    helm.sh/helm/v4/cmd/helm
)
echo "helm built in $(($(date +%s) - start))s"

kuberay_dir=$(cd "$dest" && GOFLAGS= "$GO" mod download -json \
  "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
for crd in ray.io_rayclusters.yaml ray.io_rayjobs.yaml; do
  cp "$kuberay_dir/config/crd/bases/$crd" "$stage/$crd"
done
chmod 0644 "$stage"/*.yaml
echo "$KUBERAY_VERSION" >"$stage/KUBERAY_VERSION"

rm -rf "$bin"
mv "$stage" "$bin"
"$bin/kubectl" version --client
"$bin/etcd" --version | head -1
"$bin/helm" version --short
touch "$stamp"
echo "k8s tools $k8s_version built in $(($(date +%s) - start))s: $bin"
