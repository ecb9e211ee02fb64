#!/usr/bin/env bash
# A checkpoint of one kind of model does not restart a run of the other: a classifier checkpoint
# given to the language model's input, and a language model's checkpoint given to the classifier's,
# each end with exit 2 and one error line naming both kinds, before any training.
# Usage: lm_restart_kind.sh MPIEXEC DAA_SWARM LM_INPUT CLASSIFIER_INPUT EXPECT_ERROR
#        (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3 classifier_input=$4 expect_error=$5
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
# shellcheck source=lm_common.sh
source "$(dirname "$0")/lm_common.sh"

short=(--set train.max_steps=2 --set checkpoint.every_steps=0)
train_ok 1 "$work/lm.log" "$input" --set run.output_dir="$work/lm" "${lm_data[@]}" "${short[@]}"
lm=$(lm_checkpoint lm 2)
train_ok 1 "$work/classifier.log" "$classifier_input" --set run.output_dir="$work/classifier" \
  "${short[@]}"
classifier=$work/classifier/fashion-mnist-ci/checkpoints/step-00000002.h5
[ -f "$lm" ] || fail "the language model wrote no step-2 checkpoint"
[ -f "$classifier" ] || fail "the classifier wrote no step-2 checkpoint"

"$expect_error" --code 2 \
  --stderr "checkpoint: '$classifier' holds a classifier model; this input trains a language-model$" \
  -- "$mpiexec" -n 2 "$daa_swarm" train "$input" --set run.output_dir=@TMP@/runs "${lm_data[@]}" \
  --restart "$classifier" || fail "the language model accepted a classifier checkpoint"
"$expect_error" --code 2 \
  --stderr "checkpoint: '$lm' holds a language-model model; this input trains a classifier$" \
  -- "$mpiexec" -n 2 "$daa_swarm" train "$classifier_input" --set run.output_dir=@TMP@/runs \
  --restart "$lm" || fail "the classifier accepted a language model's checkpoint"
echo "lm_restart_kind: both kinds refused with exit 2, naming both kinds"
