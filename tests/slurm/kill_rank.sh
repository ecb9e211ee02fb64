#!/usr/bin/env bash
# A rank killed under Slurm: SIGKILL to world rank 2 of a running 4-rank `jobs/train.sbatch`
# job, after its first periodic checkpoint. `srun --kill-on-bad-exit=1` must end the other ranks
# and the job must end non-zero within 60 s (the seconds are measured and printed). A new job
# with the same settings (--restart auto) then resumes from the newest checkpoint and finishes
# with the checksum of an uninterrupted run (same input, same 4 ranks).
# Usage: kill_rank.sh DAA_SWARM INPUT   (exit 77: no Slurm or no data)
set -euo pipefail
daa_swarm=$1 input=$2
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

ranks=4
start_cluster
# About 15 s of training, a checkpoint every fifth of it.
epochs=$(calibrate $ranks 15)
per_epoch=$(($(grep -oE '[0-9]+ steps of [0-9]+ samples' "$work/calibrate.log" | head -1 | cut -d' ' -f1) / 150))
every=$((epochs * per_epoch / 5))
export DAA_BIN=$daa_swarm DAA_INPUT=$input
export DAA_SET="run.output_dir=$work/runs train.epochs=$epochs train.eval_each_epoch=false log.every_steps=4000 checkpoint.every_steps=$every"
ckpt=$work/runs/fashion-mnist-ci/checkpoints

job=$(submit --ntasks-per-node=$ranks "$root/jobs/train.sbatch")
log=$work/daa-swarm-$job.out
# pids_of_job [PROCID]: the job's daa-swarm processes (of that task only, when given). By name,
# not by /proc/PID/exe: slurmd may run in a mount namespace of its own (scripts/slurm-local), and
# its tasks' exe paths do not resolve from here.
pids_of_job() {
  local dir
  for dir in /proc/[0-9]*; do
    [ "$(cat "$dir/comm" 2> /dev/null)" == daa-swarm ] || continue
    tr '\0' '\n' < "$dir/environ" 2> /dev/null | grep -qx "SLURM_JOB_ID=$job" || continue
    [ -z "${1:-}" ] || tr '\0' '\n' < "$dir/environ" 2> /dev/null | grep -qx "SLURM_PROCID=$1" || continue
    echo "${dir#/proc/}"
  done
}
target=""
for _ in $(seq 1 1200); do
  if [ -s "$ckpt/latest" ]; then target=$(pids_of_job 2); [ -n "$target" ] && break; fi
  [ -n "$(squeue -h -j "$job" -o %i)" ] || break
  sleep 0.1
done
[ -n "$target" ] || { cat "$log"; fail "no checkpoint, or no rank 2, while the job ran"; }
kill -KILL "$target"
t_kill=$(date +%s.%N)
echo "killed rank 2 (pid $target) after checkpoint $(cat "$ckpt/latest")"
t_ranks=""
while [ -n "$(squeue -h -j "$job" -o %i)" ]; do
  [ -n "$t_ranks" ] || [ -n "$(pids_of_job)" ] || t_ranks=$(date +%s.%N)
  if awk -v a="$t_kill" -v b="$(date +%s.%N)" 'BEGIN { exit !(b - a > 90) }'; then
    cat "$log"; fail "the job still runs 90 s after a rank was killed"
  fi
  sleep 0.1
done
t_job=$(date +%s.%N)
[ -n "$t_ranks" ] || t_ranks=$t_job
ranks_s=$(awk -v a="$t_kill" -v b="$t_ranks" 'BEGIN { printf "%.1f", b - a }')
job_s=$(awk -v a="$t_kill" -v b="$t_job" 'BEGIN { printf "%.1f", b - a }')
state=$(job_states "$job")
echo "after the kill: the other ranks were gone in $ranks_s s, the job ended in $job_s s: $state"
awk -v s="$job_s" 'BEGIN { exit !(s <= 60) }' || fail "the job took $job_s s (> 60 s) to end"
[[ $state == *"JobState=FAILED"* && $state != *"ExitCode=0:0"* ]] || { cat "$log"; fail "job state: $state"; }
code=$(sed -nE 's/.*job step ended with exit code ([0-9]+)$/\1/p' "$log")
if [ -z "$code" ] || ((code == 0)); then cat "$log"; fail "srun did not end non-zero"; fi
grep -q "training failed with exit code $code" "$log" || { cat "$log"; fail "no failure note"; }

latest=$(cat "$ckpt/latest")
step=$((10#$(sed -E 's/^step-0*([0-9]+)\.h5$/\1/' <<<"$latest")))
job2=$(submit --ntasks-per-node=$ranks "$root/jobs/train.sbatch")
wait_job "$job2" 300
log2=$work/daa-swarm-$job2.out
[[ $(job_states "$job2") == *"JobState=COMPLETED"*"ExitCode=0:0" ]] || { cat "$log2"; fail "the restarted job did not complete"; }
grep -q "holds checkpoint $latest: continuing from it" "$log2" || { cat "$log2"; fail "no 'continuing from $latest'"; }
grep -q "^restart: '.*/$latest' at step $step, written by $ranks ranks" "$log2" \
  || { cat "$log2"; fail "the new job did not resume at step $step"; }
final=$(checksum "$log2")

srun_train $ranks "$work/reference.log" "$input" --set run.output_dir="$work/reference" \
  --set train.epochs="$epochs" "${long_run[@]}"
reference=$(checksum "$work/reference.log")
[ "$final" == "$reference" ] || fail "final $final differs from the uninterrupted run's $reference"
echo "kill_rank: job ended $job_s s after SIGKILL to rank 2 (srun exit code $code); resumed at step $step; final $final (= uninterrupted)"
