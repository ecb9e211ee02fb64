#!/usr/bin/env bash
# replay (text, --json, --csv), scripts/plot-run and eval on a 2-rank run of the CI input with a
# ledger and consensus routing: the values they show must be the run's own (the summary's loss
# and accuracy, token counts that add up to the batch, the ledger's ranks), not just exit codes,
# and eval must reproduce the final test accuracy on 1 rank and on 4 ranks with EP 2.
# Usage: replay_plot.sh MPIEXEC DAA_SWARM INPUT PLOT_RUN   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3 plot_run=$4
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

train_ok 2 "$work/train.log" "$input" --set run.output_dir="$work/runs" \
  --set robust.rule=median --set robust.mode=replicated --set consensus.every_steps=4 \
  --set consensus.bias_rate=0.01 --summary-json "$work/summary.json"
run=$work/runs/fashion-mnist-ci

"$daa_swarm" replay "$run" > "$work/replay.txt" || fail "replay exited non-zero"
cat "$work/replay.txt"
for re in "^replay: .*/checkpoints/step-00000064\.h5 \(format 1, daa-swarm [0-9]+\.[0-9]+\.[0-9]+, written " \
          "^checkpoints in the directory: steps 32, 48, 64$" \
          "^run: fashion-mnist-ci, step 64 of 64 \(2\.00 epochs of 32 steps\), seed 1234$" \
          "^layout: 2 ranks = 1 pipeline stage\(s\) x 2 data-parallel, expert parallelism 1" \
          "^  step 64 \(epoch 2\): test loss [0-9.]+, test accuracy [0-9.]+%$" \
          "^    routing bias now:( [+-]0\.[0-9]{4}){4}$" \
          "^  rank 1 \(.*\): reputation 0\.[0-9]{3}, accepted 64 of 64 rounds" \
          "^suspects: none$"; do
  grep -qE -- "$re" "$work/replay.txt" || fail "replay text has no line matching: $re"
done

"$daa_swarm" replay "$run/checkpoints/step-00000064.h5" --json --csv "$work/csv" \
  > "$work/replay.json" || fail "replay --json --csv exited non-zero"
"$plot_run" "$run" --out "$work/png" > "$work/plot.txt" || fail "plot-run exited non-zero"
cat "$work/plot.txt"
"$python" - "$work" <<'PY' || fail "replay or plot-run values do not match the run"
import csv, json, math, os, re, sys
work = sys.argv[1]
doc = json.load(open(f"{work}/replay.json"))
summary = json.load(open(f"{work}/summary.json"))
h = doc["history"]
L, E, C = doc["shape"]["layers"], doc["shape"]["experts"], doc["shape"]["classes"]
assert (L, E, C) == (2, 4, 10), (L, E, C)
assert doc["step"] == 64 and h["step"] == list(range(1, 65))
assert math.isclose(h["loss"][-1], summary["final_loss"], rel_tol=1e-12), "last loss != summary"
assert doc["eval"]["step"] == [32, 64]
assert math.isclose(doc["eval"]["test_accuracy"][-1], summary["test_accuracy"], rel_tol=1e-12)
# Dropless routing: every step's token-slots per layer are the global batch times top-k.
for s, step_load in enumerate(h["expert_load"]):
    for l in range(L):
        assert sum(step_load[l * E:(l + 1) * E]) == 64 * 2, (s, l)
registry = [sum(step[i] for step in h["expert_load"]) for i in range(L * E)]
assert [x for row in doc["registry_tokens"] for x in row] == registry, "registry != history"
spec = doc["specialization"]  # [L*E][C]
assert [sum(row) for row in spec] == registry, "specialization != registry"
now = [x for row in doc["routing_bias"]["now"] for x in row]
assert any(abs(x) > 0 for x in now), "consensus never moved the routing bias"
assert [round(x, 6) for x in doc["routing_bias"]["windows"][-1]] == [round(x, 6) for x in now]
ledger = doc["ledger"]
assert [r["rank"] for r in ledger] == [0, 1] and doc["suspects"] == []
for mine, theirs in zip(ledger, summary["ledger"]):
    assert math.isclose(mine["reputation"], theirs["reputation"], rel_tol=1e-12)
# CSV tables: one row per step, evaluation, (step, layer, expert), (layer, expert, class), rank.
rows = lambda name: list(csv.DictReader(open(f"{work}/csv/{name}")))
assert len(rows("steps.csv")) == 64 and float(rows("steps.csv")[-1]["loss"]) == h["loss"][-1]
assert len(rows("eval.csv")) == 2 and len(rows("expert_load.csv")) == 64 * L * E
assert len(rows("specialization.csv")) == L * E * C and len(rows("ledger.csv")) == 2
assert sum(int(r["tokens"]) for r in rows("specialization.csv")) == 64 * 128 * L
# plot-run: the figures exist as PNG files and its lines report the same values.
for name in ["loss-accuracy", "expert-load", "specialization", "reputation"]:
    data = open(f"{work}/png/{name}.png", "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000, name
text = open(f"{work}/plot.txt").read()
expect = (f"loss-accuracy.png: 64 steps, loss first {h['loss'][0]:.4f} last {h['loss'][-1]:.4f}, "
          f"train accuracy last {h['train_accuracy'][-1]:.4f}, 2 evaluations, "
          f"test accuracy last {doc['eval']['test_accuracy'][-1]:.4f}")
assert expect in text, expect
assert "expert-load.png: 2 layers x 4 experts over 64 steps, max share " in text
assert f"specialization.png: 2 layers x 4 experts x 10 classes, {64 * 128 * L} token-slots" in text
low = min(ledger, key=lambda r: r["reputation"])
windows = len(doc["routing_bias"]["window_step"])
assert (f"reputation.png: 2 ranks over {windows} windows, lowest final reputation "
        f"{low['reputation']:.4f} (rank {low['rank']})") in text, "reputation line"
print("replay_plot: values agree")
PY
accuracy=$("$python" -c 'import json, sys; print("%.2f" % (100 * json.load(open(sys.argv[1]))["test_accuracy"]))' "$work/summary.json")
for layout in "1" "4 --set parallel.expert_parallel=2"; do
  read -r np extra <<<"$layout"
  # shellcheck disable=SC2086 # extra holds --set arguments
  launch "$np" "$work/eval.log" eval "$input" --checkpoint "$run/checkpoints/step-00000064.h5" \
    $extra \
    || { cat "$work/eval.log"; fail "eval on $np ranks exited non-zero"; }
  grep -qE "^eval: .*/step-00000064\.h5 \(step 64\) on $np ranks?: test loss [0-9.]+ \| test accuracy $accuracy% \(1024 images\)$" \
    "$work/eval.log" || { cat "$work/eval.log"; fail "eval on $np ranks does not give $accuracy%"; }
done
echo "replay_plot: replay text, JSON, CSV, plot-run and eval agree with the run"
