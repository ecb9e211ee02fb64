#!/usr/bin/env bash
# `sbatch jobs/train.sbatch` with the tiny input on a one-node Slurm cluster: the job completes
# (state COMPLETED, exit code 0), its %x-%j.out log shows the run from step 0 to the end, and the
# run directory holds the final checkpoint. A second submission (as a requeued job would be)
# finds that checkpoint, says so, has nothing left to train and reports the same checksum; it
# runs every rank through DAA_IMAGE with a stand-in for apptainer (not installable here).
# Usage: train_job.sh DAA_SWARM INPUT   (exit 77: no Slurm or no data)
set -euo pipefail
daa_swarm=$1 input=$2
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

start_cluster
export DAA_BIN=$daa_swarm DAA_INPUT=$input DAA_SET="run.output_dir=$work/runs"
run_dir=$work/runs/fashion-mnist-ci

job=$(submit "$root/jobs/train.sbatch")
wait_job "$job" 120
log=$work/daa-swarm-$job.out
[ -f "$log" ] || fail "no log $log (--output=%x-%j.out)"
state=$(job_states "$job")
echo "job $job: $state"
[[ $state == *"JobState=COMPLETED"*"ExitCode=0:0"* ]] || { cat "$log"; fail "job $job did not complete: $state"; }
grep -q "holds no checkpoint: starting from step 0" "$log" || { cat "$log"; fail "no 'starting from step 0' note"; }
grep -q "srun --mpi=pmix --kill-on-bad-exit=1 .* --restart auto" "$log" || fail "no srun line with --restart auto"
grep -q "^train.sbatch: run finished" "$log" || fail "no 'run finished'"
first=$(checksum "$log")
[ -n "$first" ] || fail "no checksum in $log"
latest=$(cat "$run_dir/checkpoints/latest") || fail "no checkpoints/latest in $run_dir"
[ -f "$run_dir/checkpoints/$latest" ] || fail "latest names $latest, which does not exist"
steps=$(grep -oE '[0-9]+ steps of [0-9]+ samples' "$log" | head -1 | cut -d' ' -f1)
[ "$latest" == "$(printf 'step-%08d.h5' "$steps")" ] || fail "latest is $latest, not the last step $steps"
grep -q "JobId=$job .*JobState=COMPLETED" "$cluster/log/jobcomp.txt" || fail "no COMPLETED record in jobcomp.txt"

# Submitted again, now through DAA_IMAGE (Apptainer is not installable here: a stand-in
# `apptainer` that notes each call and runs the program without a container): continues from
# the final checkpoint, nothing left to train.
stand_in_apptainer
touch "$work/daa-swarm.sif"
job2=$(DAA_IMAGE=$work/daa-swarm.sif DAA_APPTAINER=$work/apptainer submit "$root/jobs/train.sbatch")
wait_job "$job2" 120
log2=$work/daa-swarm-$job2.out
[[ $(job_states "$job2") == *"JobState=COMPLETED"*"ExitCode=0:0"* ]] || { cat "$log2"; fail "job $job2 did not complete"; }
grep -q "holds checkpoint $latest: continuing from it" "$log2" || { cat "$log2"; fail "no 'continuing' note"; }
grep -q "srun --mpi=pmix --kill-on-bad-exit=1 $work/apptainer exec $work/daa-swarm.sif $daa_swarm train " "$log2" \
  || { cat "$log2"; fail "the job did not run the program through the image"; }
[ "$(grep -c "^exec $work/daa-swarm.sif $daa_swarm rank [0-3]$" "$work/apptainer.calls")" == 4 ] \
  || { cat "$work/apptainer.calls"; fail "not every rank ran in the image"; }
grep -q "nothing left to train" "$log2" || fail "the second job trained again"
[ "$(checksum "$log2")" == "$first" ] || fail "checksum changed: $(checksum "$log2") vs $first"
echo "train_job: job $job completed ($latest, $first); job $job2 (through DAA_IMAGE) found it and had nothing left to train"
