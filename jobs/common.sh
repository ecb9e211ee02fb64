# shellcheck shell=bash disable=SC2034  # sourced by jobs/*.sbatch; variables shared with them
# Shared by the Slurm job scripts in jobs/ (sourced, never run): finding the program (the
# binary, or the Apptainer image), the run directory and its checkpoints, and one job step
# launched with srun whose SIGUSR1/SIGTERM are forwarded from the batch shell; "checkpointed,
# resubmit me" (exit code 75) is turned into a requeue by the caller.
#
# The job scripts find this file through $DAA_ROOT, else the submit directory ($SLURM_SUBMIT_DIR,
# or its parent when submitted from jobs/), else their own directory: sbatch runs a copy of the
# script from Slurm's spool directory, so $0 does not lead back to the checkout.
#
# Environment read here (all optional):
#   DAA_INPUT   input file (default <repo>/inputs/fashion-mnist.toml); relative to the submit dir
#   DAA_SET     extra overrides, "section.key=value" words separated by spaces (no spaces in
#               a value), each passed as --set
#   DAA_BIN     the program: default <repo>/build/bin/daa-swarm, or `daa-swarm` in the image
#   DAA_IMAGE   an Apptainer image (.sif or sandbox directory): empty runs DAA_BIN directly;
#               set, every rank runs `apptainer exec [--nv] $DAA_IMAGE $DAA_BIN ...`
#   DAA_APPTAINER       apptainer command (default apptainer, else singularity)
#   DAA_APPTAINER_ARGS  extra `apptainer exec` options, e.g. "--bind /scratch"
#   DAA_NV      --nv for the image: auto (when Slurm gave the job GPUs), 1 or 0
#   DAA_SRUN_ARGS       extra srun options, e.g. "--cpu-bind=cores" or "--gpus-per-task=1"

daa_prog=${daa_prog:-daa-swarm-job}  # set by the job script before sourcing

daa_say() { echo "$daa_prog: $*"; }
daa_die() { echo "$daa_prog: error: $*" >&2; exit 2; }

# Outside a Slurm allocation these scripts cannot do anything useful.
daa_require_slurm() {  # daa_require_slurm SUBMIT_HINT
  [ -n "${SLURM_JOB_ID:-}" ] \
    || daa_die "not inside a Slurm job (no SLURM_JOB_ID); submit it: $1"
  command -v srun > /dev/null || daa_die "srun not found on PATH"
}

# Words of a variable that may separate them by spaces or commas.
daa_words() { tr ',' ' ' <<<"$1"; }

# daa_resolve_program: checks the binary or the image, and sets daa_cmd (what srun starts).
daa_resolve_program() {
  if [ -n "${DAA_IMAGE:-}" ]; then
    [ -e "$DAA_IMAGE" ] || daa_die "Apptainer image '$DAA_IMAGE' (DAA_IMAGE) does not exist"
    local apptainer=${DAA_APPTAINER:-}
    if [ -z "$apptainer" ]; then
      apptainer=$(command -v apptainer || command -v singularity || true)
      [ -n "$apptainer" ] \
        || daa_die "DAA_IMAGE is set but neither apptainer nor singularity is on PATH (module load apptainer?)"
    fi
    command -v "$apptainer" > /dev/null || daa_die "Apptainer command '$apptainer' (DAA_APPTAINER) not found"
    local bin=${DAA_BIN:-daa-swarm} nv=()
    case ${DAA_NV:-auto} in
      1 | yes) nv=(--nv) ;;
      auto) [ -n "${SLURM_JOB_GPUS:-}${SLURM_GPUS_ON_NODE:-}${SLURM_STEP_GPUS:-}" ] && nv=(--nv) ;;
    esac
    local extra=()
    # shellcheck disable=SC2206  # words, as documented
    extra=(${DAA_APPTAINER_ARGS:-})
    # One container start here finds a missing program before the ranks start.
    "$apptainer" exec "${extra[@]}" "$DAA_IMAGE" sh -c "command -v '$bin'" > /dev/null 2>&1 \
      || daa_die "program '$bin' (DAA_BIN) not found in image '$DAA_IMAGE'"
    daa_cmd=("$apptainer" exec "${nv[@]}" "${extra[@]}" "$DAA_IMAGE" "$bin")
  else
    local bin=${DAA_BIN:-$daa_root/build/bin/daa-swarm}
    [ -f "$bin" ] || daa_die "binary '$bin' (DAA_BIN) does not exist; build it (scripts/build) or set DAA_BIN"
    [ -x "$bin" ] || daa_die "binary '$bin' (DAA_BIN) is not executable"
    daa_cmd=("$bin")
  fi
}

# daa_resolve_input: sets daa_input and daa_sets (the --set arguments of DAA_SET and of $@).
daa_resolve_input() {
  daa_input=${DAA_INPUT:-$daa_root/inputs/fashion-mnist.toml}
  [ -f "$daa_input" ] || daa_die "input file '$daa_input' (DAA_INPUT) does not exist"
  daa_sets=()
  local kv
  for kv in ${DAA_SET:-} "$@"; do
    [[ $kv == *=* ]] || daa_die "DAA_SET: '$kv' is not section.key=value"
    daa_sets+=(--set "$kv")
  done
}

# daa_run_key KEY: [run] KEY as the program will see it (a --set wins over the input file);
# the input is read as simple TOML (key = "value" or key = value, comments allowed).
daa_run_key() {
  local key=$1 value="" i
  value=$(awk -v key="$key" '
    /^[ \t]*\[/ { s = $0; sub(/^[ \t]*\[[ \t]*/, "", s); sub(/[ \t]*\].*$/, "", s); section = s; next }
    section == "run" && $0 ~ "^[ \t]*" key "[ \t]*=" {
      v = $0; sub(/^[^=]*=[ \t]*/, "", v)
      if (v ~ /^"/) { sub(/^"/, "", v); sub(/".*$/, "", v) }
      else { sub(/[ \t]*#.*$/, "", v); sub(/[ \t]+$/, "", v) }
      print v; exit
    }' "$daa_input")
  for ((i = 1; i < ${#daa_sets[@]}; i += 2)); do
    if [[ ${daa_sets[i]} == run.$key=* ]]; then
      value=${daa_sets[i]#run."$key"=}
      value=${value#\"}
      value=${value%\"}
    fi
  done
  printf '%s' "$value"
}

# daa_announce_restart: names the run directory and says whether the job continues a
# checkpoint or starts fresh (the program decides the same with --restart auto).
daa_announce_restart() {
  local name dir
  name=$(daa_run_key name)
  dir=$(daa_run_key output_dir)
  if [ -z "$name" ]; then
    daa_say "cannot tell the run directory from '$daa_input'; --restart auto decides"
    return 0
  fi
  daa_run_dir=${dir:-.}/$name
  local requeued=""
  [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] 2>/dev/null && requeued=" (requeued, restart ${SLURM_RESTART_COUNT})"
  if [ -s "$daa_run_dir/checkpoints/latest" ]; then
    daa_say "run directory $daa_run_dir holds checkpoint $(cat "$daa_run_dir/checkpoints/latest")$requeued: continuing from it"
  else
    daa_say "run directory $daa_run_dir holds no checkpoint$requeued: starting from step 0"
  fi
}

# Signals: Slurm's --signal=B:USR1@N reaches only this batch shell; the trap passes it on to
# the job step (srun forwards it to every task), and each rank then checkpoints at the next step
# and exits 75. SIGTERM (scancel, preemption) is passed on the same way, but the job is then
# not requeued by us. A signal before the step exists is delivered once it has started.
daa_step_pid=""
daa_pending_signal=""
daa_got_signal=0
daa_cancelled=0
daa_on_signal() {
  daa_got_signal=1
  [ "$1" == TERM ] && daa_cancelled=1
  daa_say "SIG$1 received at $(date '+%F %T'); passing it to the job step"
  if [ -n "$daa_step_pid" ]; then
    kill -s "$1" "$daa_step_pid" 2> /dev/null || true
  else
    daa_pending_signal=$1
  fi
}
trap 'daa_on_signal USR1' USR1
trap 'daa_on_signal TERM' TERM

# daa_step STOP_AFTER ARGS...: `srun ... daa-swarm ARGS` as a job step in the background, waits
# for it through any number of trapped signals, and sets daa_rc to its exit code. STOP_AFTER
# (seconds, or empty) sends this shell SIGUSR1 that long after the start, as a time limit would.
daa_step() {
  local stop_after=$1
  shift
  local srun_args=()
  # shellcheck disable=SC2206  # words, as documented
  srun_args=(${DAA_SRUN_ARGS:-})
  local launch=(srun --mpi=pmix --kill-on-bad-exit=1 "${srun_args[@]}" "${daa_cmd[@]}" "$@")
  daa_say "$(date '+%F %T') job ${SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+ (array task $SLURM_ARRAY_TASK_ID)} on ${SLURM_JOB_NODELIST:-?}, ${SLURM_NTASKS:-?} tasks: ${launch[*]}"
  "${launch[@]}" &
  daa_step_pid=$!
  local timer=""
  if [ -n "$stop_after" ]; then
    (sleep "$stop_after" && kill -s USR1 $$) &
    timer=$!
  fi
  if [ -n "$daa_pending_signal" ]; then
    # Arrived before the step existed: give srun time to start the tasks first.
    (sleep 5 && kill -s "$daa_pending_signal" $$) &
  fi
  local prev
  while :; do
    daa_got_signal=0
    daa_rc=0
    wait "$daa_step_pid" || daa_rc=$?
    # Interrupted by a trapped signal: the step still runs; wait again.
    if ((daa_got_signal && daa_rc > 128)); then
      prev=$daa_rc
      continue
    fi
    # A second wait on a step that already ended answers 127: keep the code seen before.
    if ((daa_rc == 127)) && [ -n "${prev:-}" ]; then daa_rc=$prev; fi
    break
  done
  [ -z "$timer" ] || kill "$timer" 2> /dev/null || true
  daa_step_pid=""
  daa_say "$(date '+%F %T') job step ended with exit code $daa_rc"
}

# daa_requeue: puts this job back in the queue (same job id, same script, SLURM_RESTART_COUNT
# one higher); Slurm then ends this shell. Returns non-zero when Slurm refuses.
daa_requeue() {
  if ((daa_cancelled)); then
    daa_say "checkpoint written; SIGTERM came from Slurm (scancel, preemption, or a requeue it does itself), so the job does not requeue itself"
    return 1
  fi
  daa_say "checkpoint written; requeueing job $SLURM_JOB_ID (restart $((${SLURM_RESTART_COUNT:-0} + 1))) to continue"
  scontrol requeue "$SLURM_JOB_ID" && return 0
  daa_say "Slurm refused the requeue (submitted with --no-requeue, or JobRequeue=0?): resubmit this script to continue"
  return 1
}
