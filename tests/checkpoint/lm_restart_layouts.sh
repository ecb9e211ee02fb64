#!/usr/bin/env bash
# Restart of the language model on other layouts (untied embeddings; lm_restart_tied.sh): a
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
