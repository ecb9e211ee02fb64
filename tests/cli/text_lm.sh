#!/usr/bin/env bash
# End-to-end check of the language model from the command line, on the CI twin input: prepare a
# token file, train on 2 ranks, evaluate, generate on 1 and 2 ranks (same seed, same text), and
# every bad input of the language model's path: exit 2, one error line naming the problem, no
# hang (each command has a timeout), nothing left running.
# Usage: text_lm.sh MPIEXEC DAA_SWARM SOURCE_DIR
set -euo pipefail
mpiexec=$1 daa_swarm=$2 source_dir=$3
input=$source_dir/inputs/text-mixture-ci.toml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "text_lm: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
common=(--set "data.tokens=$work/bpe.h5" --set "run.output_dir=$work/runs")

# run RANKS ARGS...: daa-swarm under mpirun (RANKS 0: alone), output in $work/out, $work/err.
run() {
  local ranks=$1
  shift
  local launcher=("$mpiexec" -n "$ranks")
  ((ranks > 0)) || launcher=()
  local status=0
  timeout --kill-after=10 120 "${launcher[@]}" "$daa_swarm" "$@" > "$work/out" 2> "$work/err" ||
    status=$?
  return "$status"
}
# refused PATTERN RANKS ARGS...: exit 2 and exactly one error line matching PATTERN.
refused() {
  local pattern=$1 status=0
  shift
  run "$@" || status=$?
  [[ $status == 2 ]] || { cat "$work/out" "$work/err" >&2; fail "exit $status, not 2: $*"; }
  local lines
  lines=$(grep -c '^daa-swarm: error: ' "$work/err" || true)
  [[ $lines == 1 ]] || { cat "$work/err" >&2; fail "$lines error lines, not 1: $*"; }
  grep -qE "^daa-swarm: error: .*$pattern" "$work/err" ||
    { cat "$work/err" >&2; fail "no error matching '$pattern': $*"; }
}

run 0 prepare "$input" "${common[@]}" || { cat "$work/err" >&2; fail "prepare failed"; }
run 2 train "$input" "${common[@]}" --summary-json "$work/summary.json" ||
  { cat "$work/out" "$work/err" >&2; fail "train failed"; }
grep -qE '^final \| validation loss [0-9.]+ \| [0-9.]+ bits/byte \(prose [0-9.]+, code [0-9.]+, math [0-9.]+\) \| next-token accuracy [0-9.]+%$' \
  "$work/out" || { cat "$work/out" >&2; fail "no final evaluation line with bits/byte per domain"; }
checkpoint=$work/runs/text-mixture-ci/checkpoints/step-00000040.h5
[[ -f $checkpoint ]] || fail "no final checkpoint $checkpoint"

# eval on another rank count reads the same model: the same validation figures.
final=$(sed -n 's/^final | validation loss \([0-9.]*\) | \([0-9.]*\) bits.*/\1 \2/p' "$work/out")
run 1 eval "$input" "${common[@]}" --checkpoint "$checkpoint" || { cat "$work/err" >&2; fail "eval failed"; }
grep -qE "validation loss ${final% *} \| ${final#* } bits/byte \| prose " "$work/out" ||
  { cat "$work/out" >&2; fail "eval on 1 rank does not repeat the training's final figures ($final)"; }

# [train] precision = "bf16" (mixed precision): where the CPU has AVX512_BF16 the CI model trains
# to about the fp32 figures (the same steps, the same data); elsewhere the run is refused by name.
status=0
run 2 train "$input" "${common[@]}" --set run.name=bf16 --set train.precision=bf16 \
  --set checkpoint.every_steps=0 || status=$?
if ((status == 2)) && grep -q 'precision = "bf16" needs a CPU with AVX512_BF16' "$work/err"; then
  echo "text_lm: no bf16 products in this build; its refusal checked"
else
  ((status == 0)) || { cat "$work/out" "$work/err" >&2; fail "train with precision bf16 failed"; }
  bf16_bpb=$(sed -n 's/^final | validation loss [0-9.]* | \([0-9.]*\) bits.*/\1/p' "$work/out")
  awk -v a="$bf16_bpb" -v b="${final#* }" 'BEGIN { d = a - b; exit !(a != "" && d < 0.05 && d > -0.05) }' ||
    fail "bf16 validation ${bf16_bpb:-?} bits/byte is not within 0.05 of fp32's ${final#* }"
fi
refused '\[train\] precision' 2 train "$input" "${common[@]}" --set train.precision=fp16

# [train] max_seconds: a time budget ends the run after the step that crosses it, with the final
# evaluation and checkpoint as at a planned end (the plan here is far longer than 2 s).
run 2 train "$input" "${common[@]}" --set run.name=budget --set train.max_steps=100000 \
  --set train.max_seconds=2 --set checkpoint.every_steps=0 --summary-json "$work/budget.json" ||
  { cat "$work/out" "$work/err" >&2; fail "train with max_seconds failed"; }
budget_steps=$(sed -n 's/^stopping after step \([0-9]*\): \[train\] max_seconds = 2 reached$/\1/p' "$work/out")
[[ -n $budget_steps ]] || { cat "$work/out" >&2; fail "no 'stopping after step N: [train] max_seconds = 2 reached' line"; }
((budget_steps < 100000)) || fail "max_seconds did not stop the run ($budget_steps steps)"
grep -qE "\"steps\": ${budget_steps}[,}]?$" "$work/budget.json" || { cat "$work/budget.json" >&2; fail "summary steps != $budget_steps"; }
grep -q '^final | validation loss ' "$work/out" || fail "no final evaluation after the time budget"
[[ -f $work/runs/budget/checkpoints/step-$(printf %08d "$budget_steps").h5 ]] ||
  fail "no final checkpoint at step $budget_steps after the time budget"

# generate: the same seed gives the same text on 1 and 2 ranks; another seed another text.
gen() { run "$1" generate "$input" "${common[@]}" --checkpoint "$checkpoint" --prompt "In the beginning" --tokens 20 --seed "$2"; }
gen 0 5 || { cat "$work/err" >&2; fail "generate failed"; }
head -n -1 "$work/out" > "$work/one"
grep -qE '^generate: .* [0-9]+ prompt tokens \+ 20 new tokens in [0-9.]+ s, [0-9]+ tokens/s' "$work/out" ||
  { cat "$work/out" >&2; fail "no tokens/s line"; }
gen 2 5 || { cat "$work/err" >&2; fail "generate on 2 ranks failed"; }
head -n -1 "$work/out" | cmp -s - "$work/one" || fail "2 ranks generated another text with the same seed"
gen 0 6
head -n -1 "$work/out" | cmp -s - "$work/one" && fail "another seed generated the same text"

# Bad input.
refused 'generate: --prompt is empty' 0 generate "$input" "${common[@]}" --checkpoint "$checkpoint" --prompt ""
long=$(printf 'word %.0s' $(seq 200))
refused 'the prompt is [0-9]+ tokens, longer than the model.s context of \[model\] seq_len = 32' \
  0 generate "$input" "${common[@]}" --checkpoint "$checkpoint" --prompt "$long"
refused "trains a classifier. generate needs a language-model input" \
  0 generate "$source_dir/inputs/fashion-mnist-ci.toml" --checkpoint "$checkpoint" --prompt "x"
refused 'holds a language-model model. this input trains a classifier' \
  2 eval "$source_dir/inputs/fashion-mnist-ci.toml" --checkpoint "$checkpoint"
run 0 prepare "$input" --set "data.tokens=$work/bytes.h5" --set text.tokenizer=bytes ||
  fail "prepare with bytes failed"
refused "'$work/bytes.h5' was written with the bytes tokenizer. the input names \[text\] tokenizer = \"bpe\"" \
  2 train "$input" "${common[@]}" --set "data.tokens=$work/bytes.h5"
refused "'$work/bpe.h5' holds a vocabulary of 512 tokens. the input names \[text\] vocab_size = 600" \
  2 train "$input" "${common[@]}" --set text.vocab_size=600
refused "\[model\] d_model = 32 and heads = 3 give a head width that is not an even integer" \
  0 validate "$input" "${common[@]}" --set model.heads=3
echo "text_lm: all checks passed"
