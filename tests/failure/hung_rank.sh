#!/usr/bin/env bash
# A rank that hangs (SIGSTOP: alive, silent, as on a frozen node) in a 4-rank run: mpirun sees no
# exit, so the others' watchdogs must end them, with code 4 and a message naming the step, after
# [watchdog] timeout_s; status.json says failed. Nothing may be left running. (No periodic
# checkpoints: a hang inside one would take checkpoint_timeout_s.)
# Usage: hung_rank.sh MPIEXEC DAA_SWARM INPUT   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3
# shellcheck source=../checkpoint/common.sh
source "$(dirname "$0")/../checkpoint/common.sh"

ranks=4
timeout_s=5
marker="DAA_HUNG_RANK_TEST=$$-$RANDOM"
run_dir=$work/runs/fashion-mnist-ci
env "$marker" timeout --kill-after=10 120 "$mpiexec" -n "$ranks" "$daa_swarm" train "$input" \
  --set run.output_dir="$work/runs" --set train.epochs=200 --set watchdog.timeout_s=$timeout_s \
  --set checkpoint.every_steps=0 \
  > "$work/hung.log" 2>&1 &
launcher=$!
target=$(await_rank "$marker" 2 grep -q '^step ' "$work/hung.log")
[ -n "$target" ] || { kill "$launcher"; cat "$work/hung.log"; fail "rank 2 never started training"; }
hit_and_wait STOP "$target" "$launcher"
rc=$hit_rc seconds=$hit_seconds
# Whatever happened, the stopped process must not outlive the test.
leftover=$(rank_pid "$marker" 2)
[ -z "$leftover" ] || kill -KILL "$leftover"
grep -v -E '^(step|experts|checkpoint|epoch) ' "$work/hung.log"
[ -z "$leftover" ] || fail "the hung rank was still there after mpirun returned"
((rc != 0)) || fail "mpirun returned 0"
awk -v s="$seconds" -v t=$timeout_s 'BEGIN { exit !(s >= t && s < t + 30) }' \
  || fail "the other ranks exited $seconds s after rank 2 hung; the watchdog allows $timeout_s s"
grep -qE "^daa-swarm: error: rank [013] \([^)]+\): no progress for [0-9.]+ s in (training step|evaluation|checkpoint write) at step [0-9]+; a peer rank has probably died or hung, exiting with code 4" \
  "$work/hung.log" || fail "no watchdog message from a surviving rank"
"$python" - "$run_dir/status.json" <<'PY' || fail "status.json does not say failed"
import json, sys
status = json.load(open(sys.argv[1]))
assert status["state"] == "failed", status["state"]
assert "no progress" in status["message"], status["message"]
PY
echo "hung_rank: the others exited (mpirun $rc) $seconds s after rank 2 stopped; watchdog $timeout_s s"
