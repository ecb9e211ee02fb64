#!/usr/bin/env bash
# Restart across layouts: a checkpoint written by 4 ranks with expert parallelism 2 continues on 2
# ranks (EP 1) and on 1 rank, and one written by 1 rank continues on 4 ranks with EP 2. The first
# loss after the restart must match the uninterrupted run's loss at that step within 1e-5.
# Usage: restart_layouts.sh MPIEXEC DAA_SWARM INPUT   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

settings=(--set train.max_steps=40 --set checkpoint.every_steps=20 --set checkpoint.keep=0)
ep2=(--set parallel.expert_parallel=2)
checkpoint() { echo "$work/$1/fashion-mnist-ci/checkpoints/step-000000$2.h5"; }
same_first_loss() {  # uninterrupted-run restarted-run
  "$python" "$tests_dir/compare_checkpoints.py" "$(checkpoint "$1" 40)" "$(checkpoint "$2" 40)" \
    --loss-at 21 --rtol 1e-5 || fail "$2: the loss at step 21 differs from $1's by more than 1e-5"
}

train_ok 4 "$work/ep2.log" "$input" --set run.output_dir="$work/ep2" "${settings[@]}" "${ep2[@]}"
train_ok 2 "$work/from_ep2_on_2.log" "$input" --set run.output_dir="$work/from_ep2_on_2" \
  "${settings[@]}" --restart "$(checkpoint ep2 20)"
grep -q "written by 4 ranks (PP 1, DP 4, EP 2)" "$work/from_ep2_on_2.log" || fail "no restart line"
same_first_loss ep2 from_ep2_on_2
train_ok 1 "$work/from_ep2_on_1.log" "$input" --set run.output_dir="$work/from_ep2_on_1" \
  "${settings[@]}" --restart "$(checkpoint ep2 20)"
same_first_loss ep2 from_ep2_on_1

train_ok 1 "$work/one.log" "$input" --set run.output_dir="$work/one" "${settings[@]}"
train_ok 4 "$work/from_one_on_4.log" "$input" --set run.output_dir="$work/from_one_on_4" \
  "${settings[@]}" "${ep2[@]}" --restart "$(checkpoint one 20)"
same_first_loss one from_one_on_4
echo "restart_layouts: 4 ranks EP 2 -> 2 ranks and 1 rank, 1 rank -> 4 ranks EP 2: first losses agree"
