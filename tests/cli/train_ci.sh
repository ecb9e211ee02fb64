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
# Parsed, not grepped: the checks hold whatever the document's layout.
accuracy=$(python3 - "$summary" "$ranks" <<'PY'
import json, re, sys
summary, ranks = json.load(open(sys.argv[1])), int(sys.argv[2])
def fail(message):
    sys.exit(f"train_ci: {message}")
def number(key, obj=summary):
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f'summary has no number for "{key}"')
    return value
for key in ["steps", "final_loss", "train_accuracy", "test_accuracy", "samples_per_s",
            "train_seconds", "expert_gflops"]:
    number(key)
if not re.fullmatch(r"[0-9a-f]{16}", str(summary.get("parameter_checksum"))):
    fail("summary has no 16-hex-digit checksum")
if number("ranks") != ranks:
    fail(f"summary does not say {ranks} ranks")
phases = summary.get("phases")
if not isinstance(phases, dict) or list(phases) != ["data_s", "compute_s", "comm_s", "dispatch_s",
                                                    "eval_s"]:
    fail("summary lacks the time per phase")
for key in phases:
    number(key, phases)
# 2 epochs of 2048 samples on the tiny model: far above chance (10 %) when training works.
if number("test_accuracy") < 0.6:
    fail(f"test accuracy {summary['test_accuracy']} < 0.6")
if not 0 < number("final_loss") < 1.5:
    fail(f"final loss {summary['final_loss']} not in (0, 1.5)")
print(summary["test_accuracy"])
PY
) || fail "the summary JSON does not hold what it should"

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
echo "train_ci: $ranks ranks ok, test accuracy $accuracy"
