#!/usr/bin/env bash
# Damaged checkpoints and inputs that do not fit, on a run of 64 steps with checkpoints at 16, 32,
# 48 and 64: each is detected, named and handled as docs/checkpoint-format.md says, with one clear
# message and no hang (expect_error.sh checks code, message, hangs and leftover processes).
# Usage: corruption.sh MPIEXEC DAA_SWARM INPUT EXPECT_ERROR_SH   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3 expect=$4
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

train_ok 1 "$work/prepare.log" "$input" --set run.output_dir="$work/good" --set checkpoint.keep=0
good=$work/good/fashion-mnist-ci
[ "$(cat "$good/checkpoints/latest")" == step-00000064.h5 ] || fail "latest does not name step 64"
# fresh NAME: a copy of the good run directory to damage, under $work/NAME
fresh() { rm -rf "${work:?}/$1"; mkdir -p "$work/$1"; cp -r "$good" "$work/$1/"; echo "$work/$1/fashion-mnist-ci"; }
# expect_code CODE STDERR_RE [--stdout RE]... -- ARGS: daa-swarm ARGS on one rank
expect_code() {
  local code=$1 re=$2
  shift 2
  local checks=()
  while [ "$1" != -- ]; do checks+=("$1" "$2"); shift 2; done
  shift
  bash "$expect" --code "$code" ${re:+--stderr "$re"} "${checks[@]}" -- \
    "$mpiexec" -n 1 "$daa_swarm" "$@" || fail "case: $*"
}

# A truncated newest checkpoint: --restart auto warns naming it and takes the one before.
run=$(fresh truncated)
truncate -s 300000 "$run/checkpoints/step-00000064.h5"
expect_code 0 "" \
  --stdout "^warning: checkpoint: '.*/step-00000064\.h5' is not a readable HDF5 file .*; trying the next older checkpoint$" \
  --stdout "^restart: '.*/step-00000048\.h5' at step 48, written by 1 ranks" -- \
  train "$input" --set run.output_dir="$work/truncated" --restart auto
# A flipped byte inside a dataset: the checksum names the dataset.
run=$(fresh flipped)
"$python" "$tests_dir/tamper.py" flip "$run/checkpoints/step-00000064.h5" /model/layer0/expert1/w1
expect_code 0 "" \
  --stdout "^warning: checkpoint: '.*/step-00000064\.h5': dataset '/model/layer0/expert1/w1' is corrupt: its crc32 is [0-9a-f]{8}, stored [0-9a-f]{8}; trying the next older checkpoint$" \
  --stdout "^restart: '.*/step-00000048\.h5' at step 48" -- \
  train "$input" --set run.output_dir="$work/flipped" --restart auto
# ... and named explicitly, it is refused (by train and by eval).
run=$(fresh flipped_named)
"$python" "$tests_dir/tamper.py" flip "$run/checkpoints/step-00000064.h5" /model/layer0/expert1/w1
expect_code 2 "^daa-swarm: error: checkpoint: '.*/step-00000064\.h5': dataset '/model/layer0/expert1/w1' is corrupt: its crc32 is [0-9a-f]{8}, stored [0-9a-f]{8}$" -- \
  train "$input" --set run.output_dir="$work/flipped_named" --restart "$run/checkpoints/step-00000064.h5"
expect_code 2 "^daa-swarm: error: checkpoint: '.*/step-00000064\.h5': dataset '/model/layer0/expert1/w1' is corrupt" -- \
  eval "$input" --checkpoint "$run/checkpoints/step-00000064.h5"
# No latest pointer: the checkpoints by step; step 64 is the end already.
run=$(fresh no_latest)
rm "$run/checkpoints/latest"
expect_code 0 "" \
  --stdout "^restart: no 'latest' pointer in '.*/checkpoints'. trying its checkpoints by step$" \
  --stdout "^restart: the checkpoint is at step 64, the input's last step is 64: nothing left to train$" -- \
  train "$input" --set run.output_dir="$work/no_latest" --restart auto
# Files that are not checkpoints of this program version.
echo "not a checkpoint" > "$work/text.h5"
expect_code 2 "^daa-swarm: error: checkpoint: '.*/text\.h5' is not a readable HDF5 file \(.*\)$" -- \
  train "$input" --set run.output_dir="$work/x" --restart "$work/text.h5"
"$python" "$tests_dir/tamper.py" foreign "$work/foreign.h5"
expect_code 2 "^daa-swarm: error: checkpoint: '.*/foreign\.h5' is an HDF5 file but not a daa-swarm checkpoint \(no /meta/format\)$" -- \
  train "$input" --set run.output_dir="$work/x" --restart "$work/foreign.h5"
cp "$good/checkpoints/step-00000016.h5" "$work/future.h5"
"$python" "$tests_dir/tamper.py" version "$work/future.h5" 2
expect_code 2 "^daa-swarm: error: checkpoint: '.*/future\.h5' has format version 2. this daa-swarm reads version 1 only$" -- \
  eval "$input" --checkpoint "$work/future.h5"
expect_code 2 "^daa-swarm: error: checkpoint: '.*/missing\.h5' does not exist$" -- \
  train "$input" --set run.output_dir="$work/x" --restart "$work/missing.h5"
# Inputs whose model does not match: refused naming the dataset that differs.
expect_code 2 "^daa-swarm: error: checkpoint: '.*/step-00000064\.h5' does not fit this input: dataset '/model/layer0/expert0/b1' is \[64\] in the checkpoint, \[128\] for this input$" -- \
  train "$input" --set run.output_dir="$work/x" --set moe.d_ff=128 \
  --restart "$good/checkpoints/step-00000064.h5"
expect_code 2 "^daa-swarm: error: checkpoint: '.*/step-00000064\.h5' does not fit this input: it has no dataset '/model/layer0/expert4/b1' \(.model. or .moe. sizes differ\)$" -- \
  eval "$input" --checkpoint "$good/checkpoints/step-00000064.h5" --set moe.experts=8
# A checkpoint directory that cannot be created is found before the first step.
mkdir -p "$work/blocked/fashion-mnist-ci" && touch "$work/blocked/fashion-mnist-ci/checkpoints"
expect_code 2 "^daa-swarm: error: cannot create checkpoint directory '.*/checkpoints': " -- \
  train "$input" --set run.output_dir="$work/blocked"
# A full disk at the next checkpoint, played by a file-size limit on the ranks (not on mpirun,
# whose PMIx server needs large shared-memory files): one message, exit 1, no temporary file left,
# and the previous checkpoint still the valid latest one.
run=$(fresh full)
bash "$expect" --code 1 \
  --stderr "^daa-swarm: error: checkpoint: cannot reserve [0-9.]+ MB for '.*/step-00000072\.h5\.tmp': File too large; the earlier checkpoints are untouched$" -- \
  "$mpiexec" -n 1 bash -c 'ulimit -f 400 && exec "$@"' limited "$daa_swarm" train "$input" \
  --set run.output_dir="$work/full" --set train.max_steps=80 --set checkpoint.every_steps=8 \
  --restart auto || fail "case: full disk"
[ "$(cat "$run/checkpoints/latest")" == step-00000064.h5 ] || fail "latest changed after the failed write"
compgen -G "$run/checkpoints/*.tmp" > /dev/null && fail "a temporary file was left behind"
"$daa_swarm" replay "$run" > "$work/replay.txt" || fail "the previous checkpoint does not replay"
grep -q "step 64 of 64" "$work/replay.txt" || fail "replay does not show step 64"
echo "corruption: all cases handled"
