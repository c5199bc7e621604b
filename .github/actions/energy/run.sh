#!/usr/bin/env bash
# The one step of the greenbench energy-budgets action (action.yml at the repository root runs
# it; tests/test_ci_action.py runs the very same script). It installs greenbench, runs the sweep,
# checks the budgets and writes every output: JUnit, the job summary, github-action-benchmark's
# JSON (one file per direction), Bencher Metric Format and the pull-request comment.
#
# Read from the environment (action.yml sets each from its input of the same name):
#   GREENBENCH_SWEEP     the sweep file (required)
#   GREENBENCH_BUDGETS   the budgets file (required)
#   GREENBENCH_TORCH     pip arguments that install torch (may hold options: --index-url ...)
#   GREENBENCH_ARGS      more arguments for `greenbench check` (--strict, --baseline FILE),
#                        split on white space
#   GREENBENCH_OUT       the folder for the outputs (default: greenbench-energy)
#   GREENBENCH_INSTALL   'false': greenbench (and torch) are installed already; skip pip
#   GREENBENCH_SOURCE    what pip installs greenbench from (the action's own folder)
#   GREENBENCH_PYTHON    the interpreter (default: python)
#   GITHUB_OUTPUT        where the outputs are written for the steps after (when set)
# Exit status: check's (0 pass, 1 a budget broke, 2 bad input), or the run's when a point
# failed and check passed. The outputs are written whatever the status.
set -uo pipefail

sweep="${GREENBENCH_SWEEP:?the sweep input names the sweep file}"
budgets="${GREENBENCH_BUDGETS:?the budgets input names the budgets file}"
out="${GREENBENCH_OUT:-greenbench-energy}"
python="${GREENBENCH_PYTHON:-python}"
read -r -a extra <<< "${GREENBENCH_ARGS:-}"

output() {  # name=value for the steps after, and on the log
  echo "$1=$2"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "$1=$2" >> "$GITHUB_OUTPUT"; fi
}

if [ "${GREENBENCH_INSTALL:-true}" != false ]; then
  read -r -a torch <<< "${GREENBENCH_TORCH:-torch --index-url https://download.pytorch.org/whl/cpu}"
  "$python" -m pip install "${torch[@]}" || exit 2
  "$python" -m pip install "${GREENBENCH_SOURCE:?GREENBENCH_SOURCE names what to install}" \
    || exit 2
fi

mkdir -p "$out" || exit 2
junit="$out/junit.xml"
benchmark="$out/benchmark.json"
bigger="$out/benchmark-bigger.json"
bmf="$out/bmf.json"
comment="$out/comment.md"
rm -f "$junit" "$benchmark" "$bigger" "$bmf" "$comment"  # none left from an earlier run

# Where the sweep writes: the last line of a dry run says ("...; results in runs/<name>").
plan=$("$python" -m greenbench run "$sweep" --dry-run) || { output exit-code 2; exit 2; }
run_dir=$(printf '%s\n' "$plan" | tail -n 1 | sed -n 's/^.*; results in //p')
output run-dir "$run_dir"

"$python" -m greenbench run "$sweep"
run_status=$?
if [ "$run_status" -ne 0 ] && [ "$run_status" -ne 1 ]; then  # bad input, or interrupted
  output exit-code "$run_status"
  exit "$run_status"
fi

"$python" -m greenbench check "$budgets" "$run_dir" --junit "$junit" \
  --benchmark-json "$benchmark" --bmf "$bmf" --comment "$comment" ${extra[@]+"${extra[@]}"}
status=$?

for name in junit benchmark bigger bmf comment; do
  path="${!name}"
  [ -f "$path" ] || path=""
  case "$name" in
    benchmark) output benchmark-json "$path" ;;
    bigger) output benchmark-json-bigger "$path" ;;
    *) output "$name" "$path" ;;
  esac
done
output exit-code "$status"
if [ "$status" -eq 0 ]; then status=$run_status; fi
exit "$status"
