#!/usr/bin/env bash
# The defects found at an earlier commit, shown fixed: tests/runner/test_probe_regressions.py run
# against the runner at REF (default 31cdb7c) and against the working tree's .venv.
#
#   bash hack/probe-regressions.sh [REF]                 build the REF install if needed, run, print the table
#   bash hack/probe-regressions.sh --build-only [REF]    only build the REF install
#
# The REF install is a venv with the runner as it was at REF (`git archive` of REF, `pip install`
# of that tree), built once and cached under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/datajuicer-operator/probe-regressions/<commit>/
# A stamp file marks a finished build; a flock serialises concurrent builds. The suite itself
# always comes from the working tree and runs under the working tree's .venv: only the binary
# under test changes (DJ_RUNNER_UNDER_TEST). Every test should fail at REF and pass now; the
# table says, per defect ID, what each side gave. Exit 0 when that holds for every test.
set -euo pipefail

build_only=0
if [[ "${1:-}" == "--build-only" ]]; then
  build_only=1
  shift
fi
REF=${1:-31cdb7c}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-python3.11}
VENV=${VENV:-$ROOT/.venv}
SUITE=tests/runner/test_probe_regressions.py

sha=$(git -C "$ROOT" rev-parse --verify "$REF^{commit}")
cache=${XDG_CACHE_HOME:-$HOME/.cache}/datajuicer-operator/probe-regressions/$sha
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if [[ ! -f "$cache/.complete" ]]; then
  echo "probe-regressions: building the runner at $REF ($sha) in $cache" >&2
  rm -rf "$cache/src" "$cache/venv"
  mkdir -p "$cache/src"
  git -C "$ROOT" archive "$sha" | tar -x -C "$cache/src"
  "$PY" -m venv "$cache/venv"
  "$cache/venv/bin/pip" install -q --upgrade pip
  "$cache/venv/bin/pip" install -q "$cache/src"
  touch "$cache/.complete"
fi
flock -u 9
old_bin=$cache/venv/bin/dj-runner
[[ $build_only == 1 ]] && { echo "$old_bin"; exit 0; }

if [[ ! -x "$VENV/bin/dj-runner" ]]; then
  echo "probe-regressions: no $VENV/bin/dj-runner; run 'make install' first" >&2
  exit 2
fi
results=$(mktemp -d "${TMPDIR:-/tmp}/dj-probe-regressions-XXXXXX")
trap 'rm -rf "$results"' EXIT
cd "$ROOT"
# Each side's failures are the point of the exercise, so pytest's exit code is not ours.
DJ_RUNNER_UNDER_TEST=$old_bin "$VENV/bin/pytest" -q -p no:cacheprovider "$SUITE" \
  --junitxml="$results/ref.xml" -o junit_family=xunit2 >"$results/ref.log" 2>&1 || true
DJ_RUNNER_UNDER_TEST=$VENV/bin/dj-runner "$VENV/bin/pytest" -q -p no:cacheprovider "$SUITE" \
  --junitxml="$results/now.xml" -o junit_family=xunit2 >"$results/now.log" 2>&1 || true
for side in ref now; do
  [[ -s "$results/$side.xml" ]] || { cat "$results/$side.log" >&2; exit 1; }
done
status=0
"$VENV/bin/python" - "$REF" "$results/ref.xml" "$results/now.xml" <<'EOF' || status=$?
import sys
import xml.etree.ElementTree as ET

ref_name, ref_xml, now_xml = sys.argv[1:]


def outcomes(path: str) -> dict[str, str]:
    found = {}
    for case in ET.parse(path).iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = (
            "FAIL" if kinds & {"failure", "error"} else "skip" if "skipped" in kinds else "pass"
        )
        found[case.get("name")] = outcome
    return found


ref, now = outcomes(ref_xml), outcomes(now_xml)
rows = [(name.split("_")[1], name, ref.get(name, "-"), now.get(name, "-")) for name in now]
widths = [max(len(r[i]) for r in [("ID", "test", ref_name, "now"), *rows]) for i in range(4)]
for row in [("ID", "test", ref_name, "now"), *rows]:
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
proven = [r for r in rows if r[2] == "FAIL" and r[3] == "pass"]
print(f"\n{len(proven)} of {len(rows)} tests fail at {ref_name} and pass now")
sys.exit(0 if len(proven) == len(rows) else 1)
EOF
echo "pytest at $REF: $(tail -n 1 "$results/ref.log")"
echo "pytest now: $(tail -n 1 "$results/now.log")"
# The failures at REF are the evidence: keep both sides' pytest output for reading.
mkdir -p "$cache/last-run"
cp "$results/ref.log" "$results/now.log" "$cache/last-run/"
echo "pytest output of both sides: $cache/last-run/{ref,now}.log"
exit $status
