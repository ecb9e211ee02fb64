#!/usr/bin/env bash
# Bit-exact restart of the language model: 40 steps in one run against 20 steps, a restart from
# the step-20 checkpoint in a fresh process, and 20 more, on the same layout. The step-40
# checkpoints must agree in every dataset except the clock's, and the checksum lines must be equal.
# Usage: lm_restart_bitexact.sh RANKS MPIEXEC DAA_SWARM INPUT [--set k=v ...]   (exit 77: no data)
set -euo pipefail
ranks=$1 mpiexec=$2 daa_swarm=$3 input=$4
shift 4
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
# shellcheck source=lm_common.sh
source "$(dirname "$0")/lm_common.sh"

settings=("${lm_data[@]}" --set train.max_steps=40 --set checkpoint.every_steps=20
          --set checkpoint.keep=0 "$@")
train_ok "$ranks" "$work/whole.log" "$input" --set run.output_dir="$work/whole" "${settings[@]}"
start=$(lm_checkpoint whole 20)
[ -f "$start" ] || fail "no step-20 checkpoint"
train_ok "$ranks" "$work/resumed.log" "$input" --set run.output_dir="$work/resumed" \
  "${settings[@]}" --restart "$start"
grep -q "^restart: '$start' at step 20" "$work/resumed.log" \
  || { cat "$work/resumed.log"; fail "the restarted run does not say where it continued from"; }
[ -f "$(lm_checkpoint resumed 40)" ] || fail "the restarted run wrote no step-40 checkpoint"
[ ! -f "$(lm_checkpoint resumed 20)" ] || fail "the restarted run rewrote step 20"
"$python" "$tests_dir/compare_checkpoints.py" "$(lm_checkpoint whole 40)" \
  "$(lm_checkpoint resumed 40)" || fail "the checkpoints after 40 steps differ"
a=$(checksum "$work/whole.log") b=$(checksum "$work/resumed.log")
if [ -z "$a" ] || [ "$a" != "$b" ]; then fail "parameter $a (whole run) vs $b (restarted)"; fi
echo "lm_restart_bitexact: $ranks ranks ($*), $a in both runs"
