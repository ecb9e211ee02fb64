#!/usr/bin/env bash
# A job whose time limit runs out: `sbatch --time=1 --signal=B:USR1@20 jobs/train.sbatch` with a
# run that needs longer than the limit. Slurm sends SIGUSR1 to the batch shell 10-40 s after the
# start (it checks time limits every 30 s), the trap forwards it to the job step, every rank
# checkpoints and exits 75, the script requeues the job, and the requeued job continues from
# that checkpoint (each run of the job has the same limit, so a long remainder is cut and
# requeued again) to the end. Its final parameter checksum must equal an uninterrupted run's
# (same input, same 2 ranks, one srun step run beside the job).
# Usage: time_limit.sh DAA_SWARM INPUT   (exit 77: no Slurm or no data)
set -euo pipefail
daa_swarm=$1 input=$2
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

ranks=2
start_cluster
export DAA_BIN=$daa_swarm DAA_INPUT=$input

# run_job EPOCHS: the job, until it leaves the queue; sets job and log.
run_job() {
  export DAA_SET="run.output_dir=$work/runs-$1 train.epochs=$1 train.eval_each_epoch=false log.every_steps=4000 checkpoint.every_steps=0"
  local t0=$SECONDS
  job=$(submit --time=1 --signal=B:USR1@20 --ntasks-per-node=$ranks "$root/jobs/train.sbatch")
  wait_job "$job" 500
  log=$work/daa-swarm-$job.out
  echo "job $job ($1 epochs): $(job_states "$job") after $((SECONDS - t0)) s"
}

# run_pair EPOCHS: the job and, beside it on the node's other 2 CPUs, the uninterrupted
# reference run (srun). Sharing the machine's cores, the job trains at about half speed while
# the reference runs, which keeps its first part going until the signal.
run_pair() {
  srun_train $ranks "$work/reference-$1.log" "$input" --set run.output_dir="$work/reference-$1" \
    --set train.epochs="$1" "${long_run[@]}" &
  local reference_pid=$! t0=$SECONDS
  run_job "$1"
  wait "$reference_pid" || fail "the uninterrupted run failed"
  reference=$(checksum "$work/reference-$1.log")
  echo "uninterrupted run: $1 epochs on $ranks ranks, $reference; both done after $((SECONDS - t0)) s"
}

# Long enough that the first signal (at most 40 s after the start) comes before the end: a
# calibrated 35 s alone, about 70 s beside the reference; once more with 3 times the epochs if
# the machine sped up meanwhile.
epochs=$(calibrate $ranks 35)
run_pair "$epochs"
if ! grep -q "SIGUSR1 received" "$log"; then
  echo "the run ended before the time limit's signal; again with 3 times the epochs"
  epochs=$((3 * epochs))
  run_pair "$epochs"
fi
grep -q "SIGUSR1 received" "$log" || { cat "$log"; fail "no SIGUSR1 reached the batch shell"; }
state=$(job_states "$job")
[[ $state =~ JobState=COMPLETED\ Restarts=([0-9]+)\ ExitCode=0:0 ]] || { cat "$log"; fail "job state: $state"; }
restarts=${BASH_REMATCH[1]}
((restarts >= 1)) || { cat "$log"; fail "the job was never requeued"; }
# Every part: signal, checkpoint at step S, exit 75, requeue; the next part restarts at S.
mapfile -t stops < <(sed -nE 's/^stopping after step ([0-9]+): SIGUSR1\/SIGTERM received, checkpoint written; exit code 75.*/\1/p' "$log")
((${#stops[@]} == restarts)) || { cat "$log"; fail "${#stops[@]} checkpoint stops for $restarts requeues"; }
[ "$(grep -c "job step ended with exit code 75" "$log")" == "$restarts" ] || { cat "$log"; fail "srun did not return 75 each time"; }
for i in "${!stops[@]}"; do
  step=${stops[i]} file=$(printf 'step-%08d.h5' "${stops[i]}")
  grep -q "requeueing job $job (restart $((i + 1)))" "$log" || { cat "$log"; fail "no requeue $((i + 1))"; }
  grep -q "holds checkpoint $file (requeued, restart $((i + 1))): continuing from it" "$log" \
    || { cat "$log"; fail "restart $((i + 1)) did not announce checkpoint $file"; }
  grep -q "^restart: '.*/$file' at step $step" "$log" || { cat "$log"; fail "no restart at step $step"; }
done
grep -q "^train.sbatch: run finished" "$log" || { cat "$log"; fail "the requeued run did not finish"; }
final=$(checksum "$log")
[ "$final" == "$reference" ] || fail "final $final differs from the uninterrupted run's $reference"
echo "time_limit: $(grep -oE 'SIGUSR1 received at [0-9: -]+' "$log" | paste -sd';'); checkpoints at steps ${stops[*]}, requeued $restarts times; final $final (= uninterrupted)"
