#!/usr/bin/env bash
# A rank killed with SIGKILL in the middle of a 4-rank run: the others must be gone, with a
# non-zero exit, within 60 s; `--restart auto` then continues from the last checkpoint, losing only
# the steps since it, and ends with the parameters of an uninterrupted run, bit for bit.
# Usage: rank_death.sh MPIEXEC DAA_SWARM INPUT   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3
# shellcheck source=../checkpoint/common.sh
source "$(dirname "$0")/../checkpoint/common.sh"

ranks=4
# 6 epochs of the tiny input (192 steps), a checkpoint every 16 steps.
run_args=("$input" --set train.epochs=6 --set checkpoint.every_steps=16)
train_ok "$ranks" "$work/whole.log" "${run_args[@]}" --set run.output_dir="$work/whole"
expected=$(checksum "$work/whole.log")

marker="DAA_RANK_DEATH_TEST=$$-$RANDOM"
runs=$work/runs
env "$marker" timeout --kill-after=10 120 "$mpiexec" -n "$ranks" "$daa_swarm" train \
  "${run_args[@]}" --set run.output_dir="$runs" > "$work/killed.log" 2>&1 &
launcher=$!
# Rank 2, once the step-64 checkpoint exists (a third of the run).
latest=$runs/fashion-mnist-ci/checkpoints/latest
past_step_63() { [ "$(cat "$latest")" \> step-00000063.h5 ]; }
target=$(await_rank "$marker" 2 past_step_63)
[ -n "$target" ] || { kill "$launcher"; cat "$work/killed.log"; fail "the run never reached step 64"; }
hit_and_wait KILL "$target" "$launcher"
rc=$hit_rc seconds=$hit_seconds
cat "$work/killed.log"
((rc != 0)) || fail "mpirun returned 0 after a rank was killed"
[ -z "$(rank_pid "$marker" 0)$(rank_pid "$marker" 1)$(rank_pid "$marker" 3)" ] \
  || fail "ranks are still running after mpirun returned"
awk -v s="$seconds" 'BEGIN { exit !(s < 60) }' || fail "the other ranks took $seconds s to exit"
last=$(cat "$latest")
last_step=$((10#$(sed -E 's/step-0*([0-9]+)\.h5/\1/' <<<"$last")))
done_steps=$(grep -oE '^step +[0-9]+/' "$work/killed.log" | tail -1 | grep -oE '[0-9]+')

train_ok "$ranks" "$work/resumed.log" "${run_args[@]}" --set run.output_dir="$runs" --restart auto
grep -q "^restart: '.*/$last' at step $last_step, written by 4 ranks" "$work/resumed.log" \
  || { cat "$work/resumed.log"; fail "the restart did not continue from $last"; }
[ "$(checksum "$work/resumed.log")" == "$expected" ] \
  || fail "resumed run ends with $(checksum "$work/resumed.log"), the uninterrupted run with $expected"
echo "rank_death: mpirun exited with $rc $seconds s after SIGKILL of rank 2 (last progress line: step $done_steps)"
echo "rank_death: resumed from step $last_step, final $expected equals the uninterrupted run"
