#!/usr/bin/env bash
# Restart across layouts of the language model with tied embeddings on two pipeline stages (the
# last stage holds a copy of the embedding table as its head): a checkpoint written by (PP 2,
# DP 1) holds the table once and no head, and continues on 1 rank; one written by 1 rank continues
# on (PP 2, DP 1), where the copy is filled from the table. Compared with the uninterrupted run of
# the writing layout as in lm_restart_layouts.sh (loss of step 21 and parameters after step 40).
# Usage: lm_restart_tied.sh MPIEXEC DAA_SWARM INPUT   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
# shellcheck source=lm_common.sh
source "$(dirname "$0")/lm_common.sh"
readonly PARAM_RTOL=1e-5

settings=("${lm_data[@]}" --set train.max_steps=40 --set checkpoint.every_steps=20
          --set checkpoint.keep=0 --set model.tie_embeddings=true)
run pipelined 2 2 1 1
"$python" - "$(lm_checkpoint pipelined 20)" <<'PY' || fail "the tied pipeline's checkpoint"
import sys
import h5py
with h5py.File(sys.argv[1], "r") as f:
    model = f["/model"]
    if "embedding/table" not in model:
        sys.exit("no /model/embedding/table")
    if "head" in model:
        sys.exit("a tied model wrote /model/head")
    print("tied pipeline: /model/embedding/table once, shape", model["embedding/table"].shape)
PY
run on_1_1_1 1 1 1 1 --restart "$(lm_checkpoint pipelined 20)"
grep -q "written by 2 ranks (PP 2, DP 1, EP 1)" "$work/on_1_1_1.log" \
  || { cat "$work/on_1_1_1.log"; fail "no restart line naming the writing layout"; }
continues pipelined on_1_1_1

run one 1 1 1 1
run on_2_1_1 2 2 1 1 --restart "$(lm_checkpoint one 20)"
grep -q "written by 1 ranks (PP 1, DP 1, EP 1)" "$work/on_2_1_1.log" \
  || { cat "$work/on_2_1_1.log"; fail "no restart line naming the writing layout"; }
continues one on_2_1_1
echo "lm_restart_tied: tied (2,1,1) -> (1,1,1) and (1,1,1) -> (2,1,1): continue alike"
