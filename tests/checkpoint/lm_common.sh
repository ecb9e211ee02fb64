# shellcheck shell=bash disable=SC2034,SC2154  # sourced: variables shared with the caller
# Shared by the language model's checkpoint tests (sourced after common.sh): `prepare` writes the
# CI twin's token file into the work directory once, and lm_data points every run at it.
# Expects: daa_swarm and input (inputs/text-mixture-ci.toml) set by the caller.
tokens=$work/tokens.h5
lm_data=(--set data.tokens="$tokens")
timeout --kill-after=10 "${DAA_TEST_TIMEOUT_S:-120}" "$daa_swarm" prepare "$input" "${lm_data[@]}" \
  > "$work/prepare.log" 2>&1 || { cat "$work/prepare.log" >&2; fail "prepare of $input failed"; }
[ -f "$tokens" ] || fail "prepare wrote no $tokens"
# lm_checkpoint DIR STEP: the checkpoint of STEP in the run directory under DIR.
lm_checkpoint() { printf '%s/%s/text-mixture-ci/checkpoints/step-%08d.h5' "$work" "$1" "$2"; }
