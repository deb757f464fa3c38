#!/usr/bin/env bash
# Build the KubeRay operator (ray-operator) from its Go module, once per version.
#
#   bash hack/build-kuberay.sh              build (does nothing when the cache is complete)
#   bash hack/build-kuberay.sh --print-dir  print the bin directory and exit (builds nothing)
#
# The pin lives in hack/kuberay/go.mod (a module of its own: its controller-runtime does not
# compile against the control plane's client-go). The output goes to the same cache root as
# hack/build-k8s-tools.sh, under a key of its own, so that changing one never rebuilds the other:
#   ${K8S_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datajuicer-operator/k8s-tools}/kuberay-<ver>-<hash>/bin
# The directory holds ray-operator, the operator's CRDs (ray.io_rayclusters.yaml,
# ray.io_rayjobs.yaml, ray.io_rayservices.yaml: the operator waits for all three and exits when
# one is missing), its ClusterRole (kuberay-operator-role.yaml) and KUBERAY_VERSION. A stamp file marks a finished build; a flock serialises
# concurrent builds.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MOD=$HERE/kuberay
OPERATOR_PKG=github.com/ray-project/kuberay/ray-operator
CRDS=(ray.io_rayclusters.yaml ray.io_rayjobs.yaml ray.io_rayservices.yaml)

kuberay_version=$(awk -v pkg="$OPERATOR_PKG" '$1 == pkg {print $2}' "$MOD/go.mod")
if [[ -z "$kuberay_version" ]]; then
  echo "build-kuberay: cannot read the pinned $OPERATOR_PKG version from $MOD/go.mod" >&2
  exit 1
fi
build_hash=$(cat "$MOD/go.mod" "$MOD/go.sum" <(echo "layout=2") | sha256sum | cut -c1-12)
cache_root=${K8S_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datajuicer-operator/k8s-tools}
dest=$cache_root/kuberay-$kuberay_version-$build_hash
bin=$dest/bin
stamp=$dest/.complete

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$bin"
  exit 0
fi

if [[ -f "$stamp" ]]; then
  echo "KubeRay operator $kuberay_version is built: $bin"
  exit 0
fi

GO=${GO:-$(command -v go || true)}
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]]; then
  echo "build-kuberay: no Go toolchain found (set GO=/path/to/go)" >&2
  exit 1
fi

mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9
if [[ -f "$stamp" ]]; then  # another build finished while this one waited for the lock
  echo "KubeRay operator $kuberay_version is built: $bin"
  exit 0
fi

export GOFLAGS=-mod=mod
export CGO_ENABLED=0
start=$(date +%s)
echo "building the KubeRay operator $kuberay_version into $bin (cold: about 2-4 minutes on 2 cores)"

stage=$dest/stage
rm -rf "$stage"
mkdir -p "$stage"
(
  cd "$MOD"
  "$GO" build -trimpath -ldflags "-s -w" -o "$stage/ray-operator" "$OPERATOR_PKG"
  module_dir=$("$GO" list -m -f '{{.Dir}}' "$OPERATOR_PKG")
  for crd in "${CRDS[@]}"; do
    cp "$module_dir/config/crd/bases/$crd" "$stage/$crd"
  done
  cp "$module_dir/config/rbac/role.yaml" "$stage/kuberay-operator-role.yaml"
)
chmod 0644 "$stage"/*.yaml
echo "$kuberay_version" >"$stage/KUBERAY_VERSION"

rm -rf "$bin"
mv "$stage" "$bin"
"$bin/ray-operator" --help >/dev/null 2>&1 || {
  echo "build-kuberay: $bin/ray-operator does not run" >&2
  exit 1
}
touch "$stamp"
echo "KubeRay operator $kuberay_version built in $(($(date +%s) - start))s: $bin"
