#!/usr/bin/env bash
# Activation checkpointing and the memory budget from the command line, on the CI twin input:
# the CI model trained a few steps with [train] recompute = none, attention and block on RANKS
# ranks (1: alone; 2: expert parallelism over both; 4: two pipeline stages x 2 with two
# micro-batches in flight) must end with the same final loss and parameter checksum, bit for bit.
# With RANKS 1 also [train] memory_budget_gb: validate and train print the "memory budget:" line,
# the run's peak resident memory (summary JSON) stays within the budget, and a budget too small
# for one sequence is refused with one line naming the key, exit 2.
# Usage: text_lm_recompute.sh RANKS MPIEXEC DAA_SWARM SOURCE_DIR
set -euo pipefail
ranks=$1 mpiexec=$2 daa_swarm=$3 source_dir=$4
input=$source_dir/inputs/text-mixture-ci.toml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "text_lm_recompute np$ranks: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
common=(--set "data.tokens=$work/bpe.h5" --set "run.output_dir=$work/runs" --set train.max_steps=6
        --set checkpoint.every_steps=0 --set observe.every_steps=0)
case $ranks in
  2) common+=(--set parallel.expert_parallel=2) ;;
  4) common+=(--set parallel.pipeline_stages=2 --set parallel.micro_batches=2) ;;
esac

# run RANKS ARGS...: daa-swarm under mpirun (RANKS 1 and prepare: alone), output in $work/out, err.
run() {
  local n=$1
  shift
  local launcher=("$mpiexec" -n "$n")
  ((n > 1)) || launcher=()
  local status=0
  timeout --kill-after=10 120 "${launcher[@]}" "$daa_swarm" "$@" > "$work/out" 2> "$work/err" ||
    status=$?
  return "$status"
}
field() { sed -n "s/^  \"$1\": \\(.*\\),\$/\\1/p" "$2"; }

run 1 prepare "$input" --set "data.tokens=$work/bpe.h5" || { cat "$work/err" >&2; fail "prepare failed"; }
for mode in none attention block; do
  run "$ranks" train "$input" "${common[@]}" --set "run.name=$mode" --set "train.recompute=$mode" \
    --summary-json "$work/$mode.json" || { cat "$work/out" "$work/err" >&2; fail "train with recompute = $mode failed"; }
  loss=$(field final_loss "$work/$mode.json") checksum=$(field parameter_checksum "$work/$mode.json")
  [[ -n $loss && -n $checksum ]] || { cat "$work/$mode.json" >&2; fail "no final_loss or parameter_checksum"; }
  echo "recompute = $mode: final loss $loss, checksum $checksum"
  if [[ $mode == none ]]; then
    base_loss=$loss base_checksum=$checksum
  else
    [[ $loss == "$base_loss" ]] || fail "recompute = $mode: final loss $loss, none gave $base_loss"
    [[ $checksum == "$base_checksum" ]] || fail "recompute = $mode: checksum $checksum, none gave $base_checksum"
  fi
done

if ((ranks == 1)); then
  run 1 validate "$input" "${common[@]}" --set train.memory_budget_gb=1 ||
    { cat "$work/err" >&2; fail "validate with a memory budget failed"; }
  grep -qE '^memory budget: 1 GB per rank fits 1 micro-batch of 16 sequences \(512 tokens\) per rank with recompute = "none": stage 0 needs parameters [0-9.]+ MB, gradients [0-9.]+ MB, AdamW state [0-9.]+ MB, activations [0-9.]+ MB .* = [0-9.]+ MB$' "$work/out" ||
    { cat "$work/out" >&2; fail "validate printed no 'memory budget:' line"; }
  run 1 train "$input" "${common[@]}" --set run.name=budget --set train.memory_budget_gb=1 \
    --set train.recompute=block --summary-json "$work/budget.json" ||
    { cat "$work/out" "$work/err" >&2; fail "train with a memory budget failed"; }
  grep -q '^memory budget: 1 GB per rank fits 1 micro-batch of 16 sequences' "$work/out" ||
    { cat "$work/out" >&2; fail "train printed no 'memory budget:' line"; }
  # The peak resident memory of the run (ru_maxrss) stays within the budget.
  python3 - "$work/budget.json" <<'PY' || fail "peak resident memory not within the budget"
import json, sys
s = json.load(open(sys.argv[1]))
peak, budget, estimate = s["peak_resident_bytes"], s["memory_budget_bytes"], s["memory_estimate_bytes"]
print(f"peak resident {max(peak) / 1e6:.1f} MB, estimate {estimate / 1e6:.1f} MB, budget {budget / 1e6:.0f} MB")
sys.exit(0 if budget == 1e9 and len(peak) == 1 and 0 < max(peak) <= budget and 0 < estimate <= budget else 1)
PY
  status=0
  run 1 train "$input" "${common[@]}" --set run.name=small --set train.memory_budget_gb=0.0001 || status=$?
  [[ $status == 2 ]] || { cat "$work/out" "$work/err" >&2; fail "a budget too small: exit $status, not 2"; }
  [[ $(grep -c '^daa-swarm: error: ' "$work/err") == 1 ]] || { cat "$work/err" >&2; fail "not one error line"; }
  grep -qE '^daa-swarm: error: config: \[train\] memory_budget_gb = 0.0001 is too small: a micro-batch of one sequence \(32 tokens\) with recompute = "none" needs [0-9.]+ GB on stage 0: parameters ' "$work/err" ||
    { cat "$work/err" >&2; fail "no error naming [train] memory_budget_gb and the figures"; }
fi
echo "text_lm_recompute np$ranks: all checks passed"
