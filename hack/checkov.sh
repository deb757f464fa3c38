#!/usr/bin/env bash
# Scan the rendered Helm chart (default and non-default values) and the Dockerfile with checkov,
# offline. checkov is installed once, pinned, into a virtual environment of its own in a cache
# outside the repository (its many dependencies stay out of the project's environment).
#
#   bash hack/checkov.sh        scan; exit status non-zero on any failed check not skipped in
#                               hack/checkov.yaml (each skip is explained in docs/install.md)
set -euo pipefail

CHECKOV_VERSION=3.3.30
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cache=${CHECKOV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datajuicer-operator/checkov-$CHECKOV_VERSION}
PY=${PY:-python3.11}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ ! -f "$cache/.complete" ]]; then
  rm -rf "$cache/venv"
  "$PY" -m venv "$cache/venv"
  "$cache/venv/bin/pip" install --quiet "checkov==$CHECKOV_VERSION"
  touch "$cache/.complete"
fi
flock -u 9

helm=$(bash "$HERE/build-k8s-tools.sh" --print-dir)/helm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chart=$ROOT/charts/datajuicer-operator
"$helm" template dj "$chart" --namespace dj-system >"$work/chart-default.yaml"
"$helm" template dj "$chart" --namespace dj-system \
  --set watch.allNamespaces=false --set 'watch.namespaces={team-a,team-b}' \
  --set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true \
  --set metrics.prometheusRule.enabled=true --set dashboards.enabled=true \
  >"$work/chart-namespaced.yaml"
cd "$ROOT"
"$cache/venv/bin/checkov" --config-file "$HERE/checkov.yaml" \
  -f "$work/chart-default.yaml" -f "$work/chart-namespaced.yaml" -f Dockerfile
