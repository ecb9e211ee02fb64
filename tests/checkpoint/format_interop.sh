#!/usr/bin/env bash
# The documented format is the contract: a checkpoint written by h5py from docs/checkpoint-format.md
# alone (make_fake_checkpoint.py) must replay, and a corrupt one be refused, by both daa-swarm
# replay and scripts/plot-run; plot-run must also handle a run without a ledger.
# Usage: format_interop.sh DAA_SWARM PLOT_RUN
set -euo pipefail
daa_swarm=$1 plot_run=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fake="/usr/bin/python3 $(dirname "$0")/make_fake_checkpoint.py"
fail() { echo "FAIL: $*" >&2; exit 1; }

$fake "$work/fake.h5"
"$daa_swarm" replay "$work/fake.h5" > "$work/replay.txt" || fail "replay refused the h5py-written file"
grep -q '^suspects: rank 3 ' "$work/replay.txt" || { cat "$work/replay.txt"; fail "replay lost the fake ledger"; }
$fake --no-ledger "$work/plain.h5"
"$plot_run" "$work/plain.h5" --out "$work/png" > "$work/plot.txt" || fail "plot-run failed"
grep -qx 'reputation.png: no ledger' "$work/plot.txt" || fail "plot-run did not note the missing ledger"
[ -s "$work/png/reputation.png" ] || fail "no reputation.png without a ledger"

$fake --corrupt /history/steps/loss "$work/bad.h5"
rc=0
"$daa_swarm" replay "$work/bad.h5" > /dev/null 2> "$work/err" || rc=$?
[ "$rc" == 2 ] || fail "replay of a corrupt file exited $rc, expected 2"
grep -qE "^daa-swarm: error: checkpoint: '.*/bad\.h5': dataset '/history/steps/loss' is corrupt" "$work/err" \
  || { cat "$work/err"; fail "replay did not name the corrupt dataset"; }
rc=0
"$plot_run" "$work/bad.h5" --out "$work/bad" > /dev/null 2> "$work/err" || rc=$?
[ "$rc" == 2 ] || fail "plot-run of a corrupt file exited $rc, expected 2"
grep -qE "^plot-run: error: .*/history/steps/loss" "$work/err" || { cat "$work/err"; fail "plot-run message"; }
echo "format_interop: h5py-written checkpoints replay and plot; corrupt ones are refused"
