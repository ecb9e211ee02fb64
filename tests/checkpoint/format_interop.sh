#!/usr/bin/env bash
# The documented format is the contract: a checkpoint written by h5py from docs/checkpoint-format.md
# alone (make_fake_checkpoint.py) must replay, and a corrupt one be refused, by both daa-swarm
# replay and scripts/plot-run; plot-run must also handle a run without a ledger. /meta/model_kind
# and /specialization/categories: absent (an older checkpoint) and "classifier" read alike, a
# language model's columns split into domains and token kinds, names that do not fit are refused.
# Usage: format_interop.sh DAA_SWARM PLOT_RUN
set -euo pipefail
daa_swarm=$1 plot_run=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fake="/usr/bin/python3 $(dirname "$0")/make_fake_checkpoint.py"
fail() { echo "FAIL: $*" >&2; exit 1; }

$fake "$work/fake.h5"
"$daa_swarm" replay "$work/fake.h5" > "$work/replay.txt" || fail "replay refused the h5py-written file"
grep -q '^suspects: rank 3 ' "$work/replay.txt" || { cat "$work/replay.txt"; fail "replay lost the fake ledger"; }
$fake --no-ledger "$work/plain.h5"
"$plot_run" "$work/plain.h5" --out "$work/png" > "$work/plot.txt" || fail "plot-run failed"
grep -qx 'reputation.png: no ledger' "$work/plot.txt" || fail "plot-run did not note the missing ledger"
[ -s "$work/png/reputation.png" ] || fail "no reputation.png without a ledger"

# Named categories: the classifier's replay and plot-run read as without them (the old format).
$fake --model-kind classifier "$work/named.h5"
"$daa_swarm" replay "$work/named.h5" > "$work/named.txt" || fail "replay refused named categories"
diff <(tail -n +2 "$work/replay.txt") <(tail -n +2 "$work/named.txt") \
  || fail "replay reads /specialization/categories of a classifier differently from none"
grep -qE '^  layer 1 \| expert \| +T-shirt +Trouser .* +Boot \| top class$' "$work/named.txt" \
  || fail "replay lost the Fashion-MNIST class names"
"$plot_run" "$work/named.h5" --out "$work/png-named" > "$work/plot-named.txt" || fail "plot-run (named)"
grep -qx 'specialization.png: 2 layers x 4 experts x 10 classes, 11520 token-slots (classifier)' \
  "$work/plot-named.txt" || { cat "$work/plot-named.txt"; fail "plot-run's classifier line"; }
# The same columns named as a language model's: 5 domains, then the 5 token kinds.
$fake --model-kind language-model "$work/lm.h5"
"$daa_swarm" replay "$work/lm.h5" > "$work/lm.txt" || fail "replay refused a language model's names"
for re in '^  layer 0 \| expert \| +prose +code +math +law +chat \| specialty \(x layer share\)$' \
          '^  layer 1 \| expert \| +letters +digits +whitespace +punctuation +other \| top token kind$' \
          '^  layer 1: mutual information between expert and domain [0-9.]+ bits'; do
  grep -qE -- "$re" "$work/lm.txt" || { cat "$work/lm.txt"; fail "replay of lm.h5: no line $re"; }
done
"$plot_run" "$work/lm.h5" --out "$work/png-lm" > "$work/plot-lm.txt" || fail "plot-run (lm)"
grep -q '^specialization.png: language model, 2 layers x 4 experts x (5 domains: prose, code, math, law, chat; 5 token kinds), [0-9]* token-slots$' \
  "$work/plot-lm.txt" || { cat "$work/plot-lm.txt"; fail "plot-run's language-model line"; }
# Names that do not fit the matrix, and a language model's without the token kinds: exit 2.
for names in "a,b,c" "a,b,c,d,e,f,g,h,i,j"; do
  $fake --model-kind language-model --categories "$names" "$work/badnames.h5"
  rc=0
  "$daa_swarm" replay "$work/badnames.h5" > /dev/null 2> "$work/err" || rc=$?
  [ "$rc" == 2 ] || fail "replay of categories $names exited $rc, expected 2"
  grep -qE "^daa-swarm: error: checkpoint: '.*/badnames\.h5': /specialization/categories " "$work/err" \
    || { cat "$work/err"; fail "replay did not name /specialization/categories"; }
  rc=0
  "$plot_run" "$work/badnames.h5" --out "$work/bad" > /dev/null 2> "$work/err" || rc=$?
  [ "$rc" == 2 ] || fail "plot-run of categories $names exited $rc, expected 2"
  grep -qE "^plot-run: error: .*/specialization/categories" "$work/err" || { cat "$work/err"; fail "plot-run message"; }
done

$fake --corrupt /history/steps/loss "$work/bad.h5"
rc=0
"$daa_swarm" replay "$work/bad.h5" > /dev/null 2> "$work/err" || rc=$?
[ "$rc" == 2 ] || fail "replay of a corrupt file exited $rc, expected 2"
grep -qE "^daa-swarm: error: checkpoint: '.*/bad\.h5': dataset '/history/steps/loss' is corrupt" "$work/err" \
  || { cat "$work/err"; fail "replay did not name the corrupt dataset"; }
rc=0
"$plot_run" "$work/bad.h5" --out "$work/bad" > /dev/null 2> "$work/err" || rc=$?
[ "$rc" == 2 ] || fail "plot-run of a corrupt file exited $rc, expected 2"
grep -qE "^plot-run: error: .*/history/steps/loss" "$work/err" || { cat "$work/err"; fail "plot-run message"; }
echo "format_interop: h5py-written checkpoints replay and plot; corrupt ones are refused"
