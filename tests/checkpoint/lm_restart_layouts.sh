#!/usr/bin/env bash
# Restart of the language model on other layouts (untied embeddings, which pipelines need): a
# checkpoint written by 2 ranks (PP 1, DP 2, EP 1) continues on 4 ranks as (1, 4, 2) and as
# (2, 2, 1), and one written by (2, 2, 2) continues on 1 rank. Compared with the uninterrupted run
# of the writing layout (layouts agree within 1e-5, test_lm_layouts): the loss of step 21, the
# first after the restart, within 1e-5, and all parameters after step 40 within PARAM_RTOL.
# Usage: lm_restart_layouts.sh MPIEXEC DAA_SWARM INPUT   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
# shellcheck source=lm_common.sh
source "$(dirname "$0")/lm_common.sh"
readonly PARAM_RTOL=1e-5

settings=("${lm_data[@]}" --set train.max_steps=40 --set checkpoint.every_steps=20
          --set checkpoint.keep=0 --set model.tie_embeddings=false)
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

run two 2 1 2 1
run on_1_4_2 4 1 4 2 --restart "$(lm_checkpoint two 20)"
grep -q "written by 2 ranks (PP 1, DP 2, EP 1)" "$work/on_1_4_2.log" \
  || { cat "$work/on_1_4_2.log"; fail "no restart line naming the writing layout"; }
continues two on_1_4_2
run on_2_2_1 4 2 2 1 --restart "$(lm_checkpoint two 20)"
continues two on_2_2_1

run pipelined 4 2 2 2 --set parallel.micro_batches=2
run on_1_1_1 1 1 1 1 --set parallel.micro_batches=2 --restart "$(lm_checkpoint pipelined 20)"
grep -q "written by 4 ranks (PP 2, DP 2, EP 2)" "$work/on_1_1_1.log" \
  || { cat "$work/on_1_1_1.log"; fail "no restart line naming the writing layout"; }
continues pipelined on_1_1_1
echo "lm_restart_layouts: (1,2,1) -> (1,4,2) and (2,2,1), (2,2,2) -> (1,1,1): continue alike"
