# shellcheck shell=bash disable=SC2034,SC2154  # sourced: variables shared with the caller
# Shared by the language model's checkpoint tests (sourced after common.sh): `prepare` writes the
# CI twin's token file into the work directory once, and lm_data points every run at it; `run` and
# `continues` train a layout and compare a restarted run with an uninterrupted one.
# Expects: daa_swarm and input (inputs/text-mixture-ci.toml) set by the caller, and `settings`
# (the --set arguments of every run) and PARAM_RTOL (for `continues`) before they are called.
tokens=$work/tokens.h5
lm_data=(--set data.tokens="$tokens")
timeout --kill-after=10 "${DAA_TEST_TIMEOUT_S:-120}" "$daa_swarm" prepare "$input" "${lm_data[@]}" \
  > "$work/prepare.log" 2>&1 || { cat "$work/prepare.log" >&2; fail "prepare of $input failed"; }
[ -f "$tokens" ] || fail "prepare wrote no $tokens"
# lm_checkpoint DIR STEP: the checkpoint of STEP in the run directory under DIR.
lm_checkpoint() { printf '%s/%s/text-mixture-ci/checkpoints/step-%08d.h5' "$work" "$1" "$2"; }
# run NAME NP PP DP EP [ARG...]: trains 40 steps into $work/NAME.
run() {
  local name=$1 np=$2 pp=$3 dp=$4 ep=$5
  shift 5
  ((np == pp * dp)) || fail "run $name: $np ranks is not PP $pp x DP $dp"
  train_ok "$np" "$work/$name.log" "$input" --set run.output_dir="$work/$name" "${settings[@]}" \
    --set parallel.pipeline_stages="$pp" --set parallel.expert_parallel="$ep" "$@"
}
# continues UNINTERRUPTED RESTARTED: step 21's loss and the step-40 parameters agree.
continues() {
  "$python" "$tests_dir/compare_checkpoints.py" "$(lm_checkpoint "$1" 40)" \
    "$(lm_checkpoint "$2" 40)" --loss-at 21 --rtol 1e-5 \
    || fail "$2: the loss at step 21 differs from $1's by more than 1e-5"
  "$python" - "$(lm_checkpoint "$1" 40)" "$(lm_checkpoint "$2" 40)" "$PARAM_RTOL" "$2" <<'PY' \
    || fail "$2: the parameters after 40 steps differ from $1's by more than $PARAM_RTOL"
import sys
import h5py
import numpy as np
a_path, b_path, rtol, name = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
def params(path):
    found = {}
    with h5py.File(path, "r") as f:
        f["/model"].visititems(lambda n, o: found.__setitem__(n, np.asarray(o[()], np.float64))
                               if isinstance(o, h5py.Dataset) and not n.endswith("routing_bias")
                               else None)
    return found
a, b = params(a_path), params(b_path)
if sorted(a) != sorted(b):
    sys.exit(f"{name}: other parameter datasets: {sorted(set(a) ^ set(b))}")
diff = sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a)
norm = sum(float(np.sum(a[k] ** 2)) for k in a)
rel = (diff / norm) ** 0.5
print(f"{name}: parameters after 40 steps within {rel:.3e} (relative) of the uninterrupted run")
sys.exit(0 if rel <= rtol else 1)
PY
}
