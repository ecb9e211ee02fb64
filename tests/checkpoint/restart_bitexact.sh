#!/usr/bin/env bash
# Bit-exact restart: 40 steps in one run against 20 steps, a restart from the step-20 checkpoint in
# a fresh process, and 20 more. The final checkpoints must agree in every dataset (parameters,
# AdamW moments, worker momentum, routing bias, pending consensus counts, ledger, history) except
# the clock's, and the parameter checksums must be equal.
# Usage: restart_bitexact.sh RANKS MPIEXEC DAA_SWARM INPUT [--set k=v ...]   (exit 77: no data)
set -euo pipefail
ranks=$1 mpiexec=$2 daa_swarm=$3 input=$4
shift 4
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

settings=(--set train.max_steps=40 --set checkpoint.every_steps=20 --set checkpoint.keep=0 "$@")
train_ok "$ranks" "$work/whole.log" "$input" --set run.output_dir="$work/whole" "${settings[@]}"
first=$work/whole/fashion-mnist-ci/checkpoints
[ -f "$first/step-00000020.h5" ] || fail "no step-20 checkpoint"
train_ok "$ranks" "$work/resumed.log" "$input" --set run.output_dir="$work/resumed" "${settings[@]}" \
  --restart "$first/step-00000020.h5"
grep -q "^restart: '$first/step-00000020.h5' at step 20" "$work/resumed.log" \
  || { cat "$work/resumed.log"; fail "the restarted run does not say where it continued from"; }
second=$work/resumed/fashion-mnist-ci/checkpoints
[ -f "$second/step-00000040.h5" ] || fail "the restarted run wrote no step-40 checkpoint"
[ ! -f "$second/step-00000020.h5" ] || fail "the restarted run rewrote step 20"
"$python" "$tests_dir/compare_checkpoints.py" "$first/step-00000040.h5" "$second/step-00000040.h5" \
  || fail "the checkpoints after 40 steps differ"
a=$(checksum "$work/whole.log") b=$(checksum "$work/resumed.log")
if [ -z "$a" ] || [ "$a" != "$b" ]; then fail "parameter $a (whole run) vs $b (restarted)"; fi
echo "restart_bitexact: $ranks ranks, $a in both runs"
