#!/usr/bin/env bash
# SIGUSR1 to one rank's process: every rank agrees to stop at the next step boundary, a complete
# checkpoint is written, and every rank exits with 75 ("checkpointed, resubmit me"). Then
# `--restart auto` continues from it to the end.
# Usage: signal.sh MPIEXEC DAA_SWARM INPUT   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

ranks=4
marker="DAA_SIGNAL_TEST=$$-$RANDOM"
# A long run (200 epochs of the tiny input), so that the signal arrives in its middle.
run_args=(train "$input" --set run.output_dir="$work/runs" --set train.epochs=200
          --set checkpoint.every_steps=0)
# Each rank's exit code goes to exits.txt, through a shell between mpirun and daa-swarm (the
# ranks inherit the environment, marker included, from the local mpirun). mpirun would kill the
# ranks still finishing once the first one exits non-zero; here each must report its own code
# (mpirun itself then returns 0; by default it returns the 75 of the first rank to exit).
export OMPI_MCA_orte_abort_on_non_zero_status=0
# shellcheck disable=SC2016  # expanded by the shell each rank runs
EXITS="$work/exits.txt" env "$marker" timeout --kill-after=10 120 "$mpiexec" -n "$ranks" bash -c \
  '"$@"; code=$?; echo "rank $OMPI_COMM_WORLD_RANK exit $code" >> "$EXITS"; exit $code' launcher "$daa_swarm" \
  "${run_args[@]}" > "$work/stdout" 2>&1 &
launcher=$!

# The daa-swarm process of world rank 2, once training has printed a few progress lines.
target=$(await_rank "$marker" 2 grep -q '^step ' "$work/stdout")
[ -n "$target" ] || { kill "$launcher"; cat "$work/stdout"; fail "rank 2 never started training"; }
kill -USR1 "$target"
rc=0
wait "$launcher" || rc=$?
cat "$work/stdout"
((rc != 124 && rc != 137)) || fail "the job hung after SIGUSR1"
[ "$(sort "$work/exits.txt")" == "$(printf 'rank %d exit 75\n' 0 1 2 3)" ] \
  || { cat "$work/exits.txt"; fail "not every rank exited with 75"; }
line=$(grep -E '^stopping after step [0-9]+: SIGUSR1/SIGTERM received, checkpoint written; exit code 75 asks to resubmit$' "$work/stdout") \
  || fail "no stop line"
step=$(sed -E 's/^stopping after step ([0-9]+):.*/\1/' <<<"$line")
dir=$work/runs/fashion-mnist-ci/checkpoints
file=$(printf 'step-%08d.h5' "$step")
[ "$(cat "$dir/latest")" == "$file" ] || fail "latest does not name $file"
"$daa_swarm" replay "$dir/$file" --json > "$work/replay.json" || fail "the checkpoint does not replay"
"$python" - "$work/replay.json" "$step" <<'PY' || fail "the checkpoint is not complete"
import json, sys
doc = json.load(open(sys.argv[1]))
step = int(sys.argv[2])
assert doc["step"] == step, doc["step"]
assert doc["history"]["step"] == list(range(1, step + 1)), "history does not cover every step"
assert doc["layout"]["ranks"] == 4
PY
# Resubmitted: continues from the checkpoint, here to 8 steps beyond it.
train_ok 2 "$work/resumed.log" "$input" --set run.output_dir="$work/runs" \
  --set train.max_steps=$((step + 8)) --set checkpoint.every_steps=0 --restart auto
grep -q "^restart: '$dir/$file' at step $step, written by 4 ranks" "$work/resumed.log" \
  || { cat "$work/resumed.log"; fail "the resubmitted run did not continue from step $step"; }
echo "signal: stopped after step $step with exit code 75 on every rank; resumed on 2 ranks"
