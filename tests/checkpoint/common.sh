# shellcheck shell=bash disable=SC2034,SC2154  # sourced: variables shared with the caller
# Shared by the checkpoint tests (sourced): a work directory removed on exit, the MPI environment
# of the test machines, failure reporting, and `train` under mpirun with a time limit.
# Expects: ranks, mpiexec, daa_swarm set by the caller. Exit 77 when Fashion-MNIST is missing,
# unless the caller set fashion_mnist=unused (a language-model test).
[ "${fashion_mnist:-}" == unused ] || [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || exit 77
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tests_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=/usr/bin/python3
fail() { echo "FAIL: $*" >&2; exit 1; }

# launch NP LOG ARGS...: daa-swarm ARGS under mpirun with NP ranks; output in LOG; returns its code.
launch() {
  local np=$1 log=$2
  shift 2
  local rc=0
  timeout --kill-after=10 "${DAA_TEST_TIMEOUT_S:-120}" "$mpiexec" -n "$np" "$daa_swarm" "$@" \
    > "$log" 2>&1 || rc=$?
  ((rc != 124 && rc != 137)) || { cat "$log" >&2; fail "daa-swarm $1 hung: $*"; }
  return "$rc"
}
# train_ok NP LOG ARGS...: `train ARGS` must succeed.
train_ok() {
  local np=$1 log=$2
  shift 2
  launch "$np" "$log" train "$@" || { cat "$log" >&2; fail "train on $np ranks exited non-zero: $*"; }
}
checksum() { grep -oE 'checksum [0-9a-f]{16}' "$1" | tail -1; }

# rank_pid MARKER RANK: the pid of the daa-swarm process of world rank RANK whose environment
# holds MARKER (a NAME=VALUE the test exported before mpirun), or nothing yet.
rank_pid() {
  local dir
  for dir in /proc/[0-9]*; do
    [ "$(cat "$dir/comm" 2>/dev/null)" == daa-swarm ] || continue
    # A process may end between the checks: its files vanish, which is not an error here.
    { tr '\0' '\n' < "$dir/environ"; } 2>/dev/null | grep -qx "$1" || continue
    { tr '\0' '\n' < "$dir/environ"; } 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" || continue
    echo "${dir#/proc/}"
    return
  done
}

# await_rank MARKER RANK COMMAND...: polls (up to 60 s) until COMMAND succeeds and world rank RANK
# of the run marked with MARKER is found; prints its pid, or nothing on time-out.
await_rank() {
  local marker=$1 rank=$2 pid=""
  shift 2
  for _ in $(seq 1 1200); do
    if "$@" 2>/dev/null; then
      pid=$(rank_pid "$marker" "$rank")
      [ -n "$pid" ] && break
    fi
    sleep 0.05
  done
  echo "$pid"
}
# seconds_since NANOSECONDS: the time since a `date +%s%N` reading, in seconds with one decimal.
seconds_since() { awk -v ns=$(($(date +%s%N) - $1)) 'BEGIN { printf "%.1f", ns / 1e9 }'; }
# hit_and_wait SIGNAL PID LAUNCHER: sends SIGNAL to PID and waits for the background LAUNCHER;
# sets hit_rc (the launcher's exit code) and hit_seconds (how long it took to end).
hit_and_wait() {
  local start
  start=$(date +%s%N)
  kill -"$1" "$2"
  hit_rc=0
  wait "$3" || hit_rc=$?
  hit_seconds=$(seconds_since "$start")
}
