#!/usr/bin/env bash
# The job scripts' bad input: run outside Slurm, each says so (with the sbatch line to use) and
# exits non-zero; inside a job, a missing binary, image, Apptainer command, program in the image
# (through a stand-in apptainer) or input file is named, as is a malformed DAA_SET word, a
# chain task outside an array and a sweep task outside its grid. These checks fake the job's
# environment (the scripts stop before srun). Then, on a real cluster: a submitted job with a
# missing binary fails with the message in its %x-%j.out, and a job requeued by Slurm whose run
# directory holds no checkpoint (removed while it waited) starts from step 0 and says so.
# Usage: bad_input.sh DAA_SWARM INPUT   (exit 77: no Slurm or no data)
set -euo pipefail
daa_swarm=$1 input=$2
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

# expect_fail SCRIPT MESSAGE [VAR=VALUE...]: SCRIPT run by bash with those variables exits
# non-zero and prints MESSAGE (a fixed string).
expect_fail() {
  local script=$1 message=$2 rc=0
  shift 2
  env "$@" timeout 60 bash "$root/jobs/$script" > "$work/out" 2>&1 || rc=$?
  ((rc != 0)) || { cat "$work/out"; fail "$script with $* exited 0"; }
  grep -qF -- "$message" "$work/out" || { cat "$work/out"; fail "$script with $*: no '$message'"; }
  echo "ok: $script ${*:-(no variables)} -> exit $rc: $(head -1 "$work/out")"
}

fake=(SLURM_JOB_ID=999999 SLURM_NTASKS=4 DAA_BIN="$daa_swarm" DAA_INPUT="$input")
for script in train.sbatch train-chain.sbatch robustness-sweep.sbatch; do
  expect_fail $script "not inside a Slurm job (no SLURM_JOB_ID); submit it: sbatch"
done
expect_fail robustness-sweep.sbatch "sbatch --array=1-6 jobs/robustness-sweep.sbatch (3 attacks x 2 rules)" \
  DAA_ATTACKS=nan,inf,gaussian DAA_RULES="median krum"
expect_fail train.sbatch "binary '/nonexistent/daa-swarm' (DAA_BIN) does not exist" \
  "${fake[@]}" DAA_BIN=/nonexistent/daa-swarm
expect_fail train-chain.sbatch "binary '/nonexistent/daa-swarm' (DAA_BIN) does not exist" \
  "${fake[@]}" SLURM_ARRAY_TASK_ID=1 DAA_BIN=/nonexistent/daa-swarm
expect_fail train.sbatch "Apptainer image '$work/missing.sif' (DAA_IMAGE) does not exist" \
  "${fake[@]}" DAA_IMAGE="$work/missing.sif"
touch "$work/present.sif"
expect_fail train.sbatch "Apptainer command '/nonexistent/apptainer' (DAA_APPTAINER) not found" \
  "${fake[@]}" DAA_IMAGE="$work/present.sif" DAA_APPTAINER=/nonexistent/apptainer
stand_in_apptainer
expect_fail train.sbatch "program '/nonexistent/daa-swarm' (DAA_BIN) not found in image '$work/present.sif'" \
  "${fake[@]}" DAA_IMAGE="$work/present.sif" DAA_APPTAINER="$work/apptainer" DAA_BIN=/nonexistent/daa-swarm
if ! command -v apptainer > /dev/null && ! command -v singularity > /dev/null; then
  expect_fail train.sbatch "DAA_IMAGE is set but neither apptainer nor singularity is on PATH" \
    "${fake[@]}" DAA_IMAGE="$work/present.sif"
fi
expect_fail train.sbatch "input file '/nonexistent/in.toml' (DAA_INPUT) does not exist" \
  "${fake[@]}" DAA_INPUT=/nonexistent/in.toml
expect_fail train.sbatch "DAA_SET: 'train.epochs' is not section.key=value" "${fake[@]}" DAA_SET=train.epochs
expect_fail train-chain.sbatch "not an array task; submit the chain as an array" "${fake[@]}"
expect_fail robustness-sweep.sbatch "array task 3 is outside the grid's 1-2" \
  "${fake[@]}" SLURM_ARRAY_TASK_ID=3 DAA_ATTACKS=nan,inf DAA_RULES=median

start_cluster
# A submitted job with a missing binary: FAILED, exit code 2, the binary named in its log.
job=$(DAA_BIN=/nonexistent/daa-swarm DAA_INPUT=$input submit "$root/jobs/train.sbatch")
wait_job "$job" 60
state=$(job_states "$job")
[[ $state == *"JobState=FAILED"*"ExitCode=2:0" ]] || fail "job $job: $state"
grep -qF "binary '/nonexistent/daa-swarm' (DAA_BIN) does not exist" "$work/daa-swarm-$job.out" \
  || { cat "$work/daa-swarm-$job.out"; fail "job $job's log does not name the binary"; }
echo "ok: submitted with a missing binary: $state, named in daa-swarm-$job.out"

# A job requeued by Slurm (scontrol requeue: SIGTERM, the ranks checkpoint and exit 75, the
# script leaves the requeue to Slurm) whose checkpoints are gone when it starts again.
# About 10 s of training, so that the requeue reaches the job while it trains (a fixed 6000 steps
# took 2 s on a fast machine and ended before Slurm's SIGTERM arrived).
epochs=$(calibrate 2 10)
export DAA_BIN=$daa_swarm DAA_INPUT=$input
export DAA_SET="run.output_dir=$work/runs train.epochs=$epochs train.eval_each_epoch=false log.every_steps=1000 checkpoint.every_steps=0"
ckpt=$work/runs/fashion-mnist-ci/checkpoints
job=$(submit --ntasks-per-node=2 "$root/jobs/train.sbatch")
log=$work/daa-swarm-$job.out
for _ in $(seq 1 600); do grep -q '^step ' "$log" 2> /dev/null && break; sleep 0.1; done
grep -q '^step ' "$log" || { cat "$log"; fail "job $job never trained"; }
scontrol requeue "$job"
for _ in $(seq 1 300); do [ "$(job_field "$job" JobState)" == PENDING ] && break; sleep 0.1; done
[ "$(job_field "$job" JobState)" == PENDING ] || fail "job $job was not requeued: $(job_states "$job")"
rm -rf "$ckpt"
wait_job "$job" 180
state=$(job_states "$job")
[[ $state == *"JobState=COMPLETED Restarts=1 ExitCode=0:0" ]] || { cat "$log"; fail "job $job: $state"; }
grep -q "SIGTERM came from Slurm .* so the job does not requeue itself" "$log" || { cat "$log"; fail "no SIGTERM note"; }
grep -q "holds no checkpoint (requeued, restart 1): starting from step 0" "$log" \
  || { cat "$log"; fail "the requeued job did not say it starts fresh"; }
grep -q "^restart: no valid checkpoint in '$ckpt'; starting from step 0" "$log" || { cat "$log"; fail "the program did not start fresh"; }
grep -q "^train.sbatch: run finished" "$log" || { cat "$log"; fail "the requeued job did not finish"; }
echo "ok: requeued by Slurm with no checkpoint left: started from step 0 and said so ($state)"
echo "bad_input: every case named and refused"
