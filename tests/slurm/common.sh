# shellcheck shell=bash disable=SC2034,SC2154  # sourced: variables shared with the caller
# Shared by the Slurm tests (sourced): each test starts its own one-node cluster with
# scripts/slurm-local in its work directory (free ports, so tests may run side by side), and
# always stops it and removes the work directory on exit. Exit 77 (skip) when the Slurm or
# munge programs or Fashion-MNIST are missing.
# Expects: daa_swarm and input set by the caller.
for tool in slurmctld slurmd munged mungekey sbatch srun squeue scontrol sinfo; do
  command -v "$tool" > /dev/null || { echo "SKIP: '$tool' is not installed (scripts/setup-debian)"; exit 77; }
done
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
  || { echo "SKIP: Fashion-MNIST is missing"; exit 77; }

tests_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$tests_dir/../.." && pwd)
slurm_local=$root/scripts/slurm-local
work=$(mktemp -d)
cluster=$work/slurm
fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  "$slurm_local" stop "$cluster" > /dev/null 2>&1 || true
  if ((rc != 0)) && [ -d "$cluster/log" ]; then
    echo "--- slurmctld log (last lines)" >&2
    tail -n 20 "$cluster/log/slurmctld.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "FAIL: interrupted" >&2; exit 1' INT TERM

# Nothing of an outer Slurm job (a CI runner inside an allocation) may leak into ours.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^SLURM_' || true)
# Open MPI under srun here: as root, and ranks sharing cores must yield instead of busy-polling.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export DAA_ROOT=$root
# Inputs relative to the program's own binary's directory would not exist in the job: absolute.
input=$(cd "$(dirname "$input")" && pwd)/$(basename "$input")
daa_swarm=$(cd "$(dirname "$daa_swarm")" && pwd)/$(basename "$daa_swarm")

# start_cluster: the one-node cluster, its daemons ending by themselves after
# $DAA_SLURM_LIFETIME_S (ctest: the test's TIMEOUT + 60 s; default 900) even if this script is
# killed without running its exit trap.
start_cluster() {
  local out
  out=$("$slurm_local" start "$cluster" --cpus 4 --lifetime "${DAA_SLURM_LIFETIME_S:-900}") \
    || fail "slurm-local could not start the cluster"
  eval "$out"
  [ -n "${SLURM_CONF:-}" ] || fail "slurm-local printed no SLURM_CONF"
}

# submit ARGS...: sbatch in $work (where the %x-%j.out logs go); prints the job id.
submit() { sbatch --parsable --chdir="$work" "$@" | cut -d';' -f1; }

# job_field ID FIELD: FIELD of `scontrol show job` (first task of an array).
job_field() { scontrol show job -o "$1" 2> /dev/null | head -1 | grep -oE "(^| )$2=[^ ]*" | cut -d= -f2-; }

# wait_job ID SECONDS: waits until the job (every task of an array) left the queue; fails after
# SECONDS. Finished jobs stay visible to scontrol for MinJobAge (600 s in slurm-local).
wait_job() {
  local id=$1 limit=$2 start=$SECONDS
  while [ -n "$(squeue -h -j "$id" -o %i 2> /dev/null)" ]; do
    if ((SECONDS - start > limit)); then
      scontrol show job "$id" >&2 || true
      fail "job $id still queued or running after $limit s"
    fi
    sleep 0.5
  done
}

# job_states ID: one line per job (per task of an array): JobId, ArrayTaskId, JobState,
# Restarts, ExitCode, as scontrol names them.
job_states() {
  scontrol show job -o "$1" | awk '{ r = ""
    for (i = 1; i <= NF; i++) if ($i ~ /^(JobId|ArrayTaskId|JobState|Restarts|ExitCode)=/) r = r " " $i
    print substr(r, 2) }'
}

checksum() { grep -oE 'checksum [0-9a-f]{16}' "$1" | tail -1; }

# stand_in_apptainer: $work/apptainer, for DAA_APPTAINER (Apptainer is not installable here):
# `apptainer exec [OPTIONS] IMAGE PROGRAM ARGS...` notes the call in $work/apptainer.calls and
# runs PROGRAM ARGS without a container.
stand_in_apptainer() {
  cat > "$work/apptainer" <<'EOF'
#!/bin/sh
[ "$1" = exec ] || { echo "stand-in apptainer: only exec" >&2; exit 64; }
shift
while case $1 in --bind | -B) shift 2 ;; -*) shift ;; *) false ;; esac do :; done
image=$1
shift
echo "exec $image $1 rank ${SLURM_PROCID:-none}" >> "$(dirname "$0")/apptainer.calls"
exec "$@"
EOF
  chmod +x "$work/apptainer"
}

# srun_train NP LOG ARGS...: `daa-swarm train ARGS` as a job step of its own (the reference
# runs); must succeed.
srun_train() {
  local np=$1 log=$2
  shift 2
  timeout --kill-after=10 600 srun --mpi=pmix --kill-on-bad-exit=1 -n "$np" --chdir="$work" \
    "$daa_swarm" train "$@" > "$log" 2>&1 || { tail -n 30 "$log" >&2; fail "srun -n $np train $* failed"; }
}

# Long runs without evaluations or progress noise; checkpoints only when asked for.
long_run=(--set train.eval_each_epoch=false --set log.every_steps=4000 --set checkpoint.every_steps=0)

# calibrate NP SECONDS: epochs of the input that train for about SECONDS on NP ranks here,
# measured with a short run (the training time the program reports, without start-up).
calibrate() {
  local np=$1 target=$2 e0=150 t
  srun_train "$np" "$work/calibrate.log" "$input" --set run.output_dir="$work/calibrate" \
    --set train.epochs=$e0 "${long_run[@]}"
  t=$(sed -nE 's/^summary: .*training ([0-9.]+) s, whole run.*/\1/p' "$work/calibrate.log")
  [ -n "$t" ] || fail "no training time in the calibration run"
  rm -rf "$work/calibrate"
  awk -v t="$t" -v e0=$e0 -v target="$target" 'BEGIN {
    if (t < 0.1) t = 0.1
    e = int(target * e0 / t) + 1; if (e < e0) e = e0; print e }'
}
