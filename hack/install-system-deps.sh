#!/usr/bin/env bash
# Install the Debian packages the tests use, only those missing: buildah, podman, mmdebstrap,
# skopeo and runc build and run the container image; prometheus brings a real Prometheus and
# promtool for the observability tests; graphviz (dot) renders the architecture diagrams
# (make diagrams).
set -euo pipefail
declare -A pkg_of=(
  [buildah]=buildah [podman]=podman [mmdebstrap]=mmdebstrap [skopeo]=skopeo [runc]=runc
  [prometheus]=prometheus [promtool]=prometheus [dot]=graphviz
)
missing=()
for tool in "${!pkg_of[@]}"; do
  command -v "$tool" >/dev/null || missing+=("${pkg_of[$tool]}")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
sudo=()
[[ $EUID -eq 0 ]] || sudo=(sudo)
echo "installing: ${missing[*]}"
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}"
# The prometheus package starts a system service on Debian; the tests start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  "${sudo[@]}" systemctl stop prometheus || true
fi
