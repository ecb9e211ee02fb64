#!/usr/bin/env bash
# A chain of 3 array jobs finishes one run: `sbatch --array=1-3%1 jobs/train-chain.sbatch`,
# tasks 1 and 2 stopped after a slice of DAA_SLICE_SECONDS (as a time limit's signal would stop
# them), task 3 running to the end. Each task must have done a part (task 1 from step 0 to s1,
# task 2 from s1 to s2 > s1, task 3 from s2 to the last step), every task must end COMPLETED,
# and the final checksum must equal an uninterrupted run's (same input, same 2 ranks).
# Usage: chain.sh DAA_SWARM INPUT   (exit 77: no Slurm or no data)
set -euo pipefail
daa_swarm=$1 input=$2
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

ranks=2
slice=4
start_cluster
# About 20 s of training: slices of 4 s (less the start-up) leave most of it to task 3.
epochs=$(calibrate $ranks 20)
export DAA_BIN=$daa_swarm DAA_INPUT=$input DAA_SLICE_SECONDS=$slice
export DAA_SET="run.output_dir=$work/runs train.epochs=$epochs train.eval_each_epoch=false log.every_steps=4000 checkpoint.every_steps=0"
t0=$SECONDS
job=$(submit --array=1-3%1 --ntasks-per-node=$ranks "$root/jobs/train-chain.sbatch")
wait_job "$job" 300
echo "chain $job ($epochs epochs) done after $((SECONDS - t0)) s:"
job_states "$job"
[ "$(job_states "$job" | grep -c 'JobState=COMPLETED Restarts=0 ExitCode=0:0')" == 3 ] \
  || { cat "$work"/daa-swarm-chain-"$job"_*.out; fail "not all 3 tasks completed"; }

stopped_at() {  # stopped_at LOG: the step of its checkpoint stop
  sed -nE 's/^stopping after step ([0-9]+): SIGUSR1\/SIGTERM received, checkpoint written; exit code 75.*/\1/p' "$1"
}
log1=$work/daa-swarm-chain-${job}_1.out log2=$work/daa-swarm-chain-${job}_2.out
log3=$work/daa-swarm-chain-${job}_3.out
for log in "$log1" "$log2" "$log3"; do [ -f "$log" ] || fail "no log $log"; done
grep -q "holds no checkpoint: starting from step 0" "$log1" || { cat "$log1"; fail "task 1 did not start from step 0"; }
s1=$(stopped_at "$log1")
[ -n "$s1" ] || { cat "$log1"; fail "task 1 did not stop with a checkpoint"; }
grep -q "slice done, checkpoint written; the next array task continues" "$log1" || fail "task 1: no 'slice done'"
f1=$(printf 'step-%08d.h5' "$s1")
grep -q "holds checkpoint $f1: continuing from it" "$log2" || { cat "$log2"; fail "task 2 did not announce $f1"; }
grep -q "^restart: '.*/$f1' at step $s1" "$log2" || { cat "$log2"; fail "task 2 did not restart at step $s1"; }
s2=$(stopped_at "$log2")
if [ -z "$s2" ] || ((s2 <= s1)); then cat "$log2"; fail "task 2 did no part of the run (stopped at '$s2' after $s1)"; fi
grep -q "^restart: '.*/$(printf 'step-%08d.h5' "$s2")' at step $s2" "$log3" \
  || { cat "$log3"; fail "task 3 did not restart at step $s2"; }
grep -q "nothing left to train" "$log3" && { cat "$log3"; fail "the run ended before task 3 (faster than calibrated)"; }
grep -q "^train-chain.sbatch: run finished" "$log3" || { cat "$log3"; fail "task 3 did not finish the run"; }
total=$(grep -oE '[0-9]+ steps of [0-9]+ samples' "$log3" | head -1 | cut -d' ' -f1)
latest=$(cat "$work/runs/fashion-mnist-ci/checkpoints/latest")
[ "$latest" == "$(printf 'step-%08d.h5' "$total")" ] || fail "latest is $latest, not step $total"
final=$(checksum "$log3")

t0=$SECONDS
srun_train $ranks "$work/reference.log" "$input" --set run.output_dir="$work/reference" \
  --set train.epochs="$epochs" "${long_run[@]}"
reference=$(checksum "$work/reference.log")
echo "uninterrupted run: $epochs epochs on $ranks ranks in $((SECONDS - t0)) s, $reference"
[ "$final" == "$reference" ] || fail "final $final differs from the uninterrupted run's $reference"
echo "chain: task 1 steps 0-$s1, task 2 $s1-$s2, task 3 $s2-$total; final $final (= uninterrupted)"
