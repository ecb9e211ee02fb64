#!/usr/bin/env bash
# End-to-end check of `daa-swarm train` on the CI input: mpirun with N ranks, then the summary
# JSON, the run directory (resolved config that validates again, progress log) and the accuracy.
# Usage: train_ci.sh RANKS MPIEXEC DAA_SWARM INPUT [--set k=v ...]   (exit 77: no data set)
set -euo pipefail
ranks=$1 mpiexec=$2 daa_swarm=$3 input=$4
shift 4
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || exit 77

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "train_ci: $*" >&2; exit 1; }

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
timeout --kill-after=10 120 "$mpiexec" -n "$ranks" "$daa_swarm" train "$input" \
  --set run.output_dir="$work/runs" --set run.name=e2e --summary-json "$work/summary.json" "$@" \
  > "$work/stdout" 2> "$work/stderr" || { cat "$work/stdout" "$work/stderr" >&2; fail "train exited $?"; }
cat "$work/stdout"

summary=$work/summary.json
number() { grep -oE "\"$1\": [-0-9.e+]+" "$summary" | head -1 | awk '{print $2}'; }
for key in steps final_loss train_accuracy test_accuracy samples_per_s train_seconds expert_gflops; do
  [ -n "$(number "$key")" ] || fail "summary has no number for \"$key\""
done
grep -qE '"parameter_checksum": "[0-9a-f]{16}"' "$summary" || fail "summary has no 16-hex-digit checksum"
grep -qE "\"ranks\": $ranks," "$summary" || fail "summary does not say $ranks ranks"
grep -qE '"phases": \{"data_s": [0-9.e+-]+, "compute_s": [0-9.e+-]+, "comm_s": [0-9.e+-]+, "dispatch_s": [0-9.e+-]+, "eval_s": [0-9.e+-]+\}' "$summary" \
  || fail "summary lacks the time per phase"
# 2 epochs of 2048 samples on the tiny model: far above chance (10 %) when training works.
awk -v a="$(number test_accuracy)" 'BEGIN { exit !(a >= 0.6) }' || fail "test accuracy $(number test_accuracy) < 0.6"
awk -v l="$(number final_loss)" 'BEGIN { exit !(l > 0 && l < 1.5) }' || fail "final loss $(number final_loss) not in (0, 1.5)"

run=$work/runs/e2e
[ -s "$run/log.txt" ] || fail "no log.txt in the run directory"
grep -qE '^step +[0-9]+/[0-9]+ \| epoch [0-9]+ \| loss [0-9.]+ \| acc +[0-9.]+% \| lr [0-9.e+-]+ \| expert load max/mean [0-9.]+, dropped [0-9]+ \| [0-9]+ samples/s \| [0-9.]+ ms/step \(compute [0-9.]+, comm [0-9.]+\) \| ETA [0-9:]+$' "$run/log.txt" \
  || fail "log.txt has no well-formed progress line"
grep -qE '^experts: layer 0 load max/mean [0-9.]+, busiest expert [0-9]+ \([0-9]+ token-slots, mean gate [0-9.]+\); layer 1 ' "$run/log.txt" \
  || fail "log.txt has no expert registry summary"
grep -qE '^epoch 1 done \| test loss [0-9.]+ \| test accuracy [0-9.]+%$' "$run/log.txt" || fail "no per-epoch test accuracy"
cmp -s "$run/log.txt" <(grep -vE '^$' "$work/stdout") || fail "log.txt differs from what rank 0 printed"
# The resolved configuration is a complete input in its own right.
"$daa_swarm" validate "$run/config.toml" --ranks "$ranks" > /dev/null || fail "resolved config.toml does not validate"
grep -q '^name = "e2e"' "$run/config.toml" || fail "resolved config.toml lost the --set override"
echo "train_ci: $ranks ranks ok, test accuracy $(number test_accuracy)"
