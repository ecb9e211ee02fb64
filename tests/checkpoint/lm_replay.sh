#!/usr/bin/env bash
# replay (text, --csv, --json) and scripts/plot-run on a 2-rank run of the language model's CI
# input: the specialization columns are the token file's domains then the token kinds, each
# expert's shares sum to 100% per category set, and text, CSV, JSON and plot-run agree with each
# other and with the run's own token counts (global batch x sequence length x top-k per step).
# Usage: lm_replay.sh MPIEXEC DAA_SWARM INPUT PLOT_RUN   (INPUT: inputs/text-mixture-ci.toml)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3 plot_run=$4
fashion_mnist=unused
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

timeout --kill-after=10 60 "$daa_swarm" prepare "$input" --set data.tokens="$work/t.h5" \
  > "$work/prepare.log" 2>&1 || { cat "$work/prepare.log"; fail "prepare exited non-zero"; }
train_ok 2 "$work/train.log" "$input" --set data.tokens="$work/t.h5" \
  --set run.output_dir="$work/runs" --summary-json "$work/summary.json"
run=$work/runs/text-mixture-ci

"$daa_swarm" replay "$run" > "$work/replay.txt" || fail "replay exited non-zero"
cat "$work/replay.txt"
for re in "^model: language model, d_model 32, 2 blocks \(2 heads, sequences of 32 tokens\), 2 MoE layers x 4 experts \(top-2\)" \
          "^  step 40 \(epoch 1\): validation loss [0-9.]+ \(perplexity [0-9.]+\), next-token accuracy [0-9.]+%$" \
          "^expert specialization by domain \(share of each expert's token-slots among the domains, %\):$" \
          "^  layer 1 \| expert \| +prose +code +math \| specialty \(x layer share\)$" \
          "^          \| +3 \|( +[0-9]+\.[0-9]){3} \| (prose|code|math) \(x[0-9]+\.[0-9]{2}\)$" \
          "^  layer 1: mutual information between expert and domain [0-9.]+ bits \(of H\(domain\) = [0-9.]+ bits\)$" \
          "^expert specialization by token kind \(share of each expert's token-slots among the token kinds, %\):$" \
          "^  layer 0 \| expert \| +letters +digits +whitespace +punctuation +other \| top token kind$" \
          "^  layer 0: mutual information between expert and token kind [0-9.]+ bits"; do
  grep -qE -- "$re" "$work/replay.txt" || fail "replay text has no line matching: $re"
done

"$daa_swarm" replay "$run/checkpoints/step-00000040.h5" --json --csv "$work/csv" \
  > "$work/replay.json" || fail "replay --json --csv exited non-zero"
"$plot_run" "$run" --out "$work/png" > "$work/plot.txt" || fail "plot-run exited non-zero"
cat "$work/plot.txt"
"$python" - "$work" <<'PY' || fail "replay or plot-run values do not match the run"
import csv, json, math, re, sys, tomllib
work = sys.argv[1]
doc = json.load(open(f"{work}/replay.json"))
summary = json.load(open(f"{work}/summary.json"))
config = tomllib.loads(doc["input"])
domains = [pair.split("=")[0].strip() for pair in config["text"]["sources"].split(",")]
kinds = ["letters", "digits", "whitespace", "punctuation", "other"]
assert domains == ["prose", "code", "math"], domains
assert doc["model_kind"] == "language-model" and doc["categories"] == domains + kinds
L, E, C = doc["shape"]["layers"], doc["shape"]["experts"], doc["shape"]["classes"]
assert (L, E, C) == (2, 4, 8), (L, E, C)
steps = doc["step"]
assert steps == 40
assert math.isclose(doc["history"]["loss"][-1], summary["final_loss"], rel_tol=1e-12)
slots = config["train"]["global_batch"] * config["model"]["seq_len"] * config["moe"]["top_k"]
registry = [x for row in doc["registry_tokens"] for x in row]
for l in range(L):
    assert sum(registry[l * E:(l + 1) * E]) == steps * slots, (l, registry)
spec = doc["specialization"]  # [L*E][C]
sets = doc["category_sets"]
assert [(s["name"], s["first"], s["count"], s["categories"]) for s in sets] == \
    [("domain", 0, 3, domains), ("token kind", 3, 5, kinds)], sets
for s in sets:
    lo, hi = s["first"], s["first"] + s["count"]
    for l in range(L):
        joint = [spec[l * E + e][lo:hi] for e in range(E)]
        n = sum(map(sum, joint))
        column = [sum(row[c] for row in joint) for c in range(s["count"])]
        mi = 0.0
        for e, row in enumerate(joint):
            # Every token-slot counts once in each set: the set's columns add up to the registry.
            assert sum(row) == registry[l * E + e], (s["name"], l, e)
            shares = s["shares_percent"][l][e]
            assert math.isclose(sum(shares), 100, rel_tol=1e-9), (s["name"], l, e, shares)
            assert all(math.isclose(x, 100 * k / sum(row), rel_tol=1e-9)
                       for x, k in zip(shares, row))
            assert s["top"][l][e] == s["categories"][row.index(max(row))]
            mi += sum(k / n * math.log2(k * n / (sum(row) * column[c]))
                      for c, k in enumerate(row) if k > 0)
        assert math.isclose(s["mutual_information_bits"][l], mi, rel_tol=1e-9, abs_tol=1e-12)
        assert 0 <= mi <= s["entropy_bits"][l] + 1e-12 <= math.log2(s["count"]) + 1e-12
# The text tables show the same shares (1 decimal) and the same specialties.
text = open(f"{work}/replay.txt").read()
for s in sets:
    block = text.split(f"expert specialization by {s['name']} ")[1]
    for l in range(L):
        table = block.split(f"  layer {l} |")[1]
        rows = re.findall(r"^          \|\s+(\d+) \|([ 0-9.]+)\| (\S+)", table, re.M)[:E]
        assert len(rows) == E, (s["name"], l, rows)
        for e, (expert, shares, top) in enumerate(rows):
            values = [float(x) for x in shares.split()]
            assert int(expert) == e and abs(sum(values) - 100) < 0.05 * len(values), values
            assert all(abs(a - b) < 0.051 for a, b in zip(values, s["shares_percent"][l][e]))
            assert top == s["top"][l][e], (top, s["top"][l][e])
# CSV: one row per (layer, expert, category) with its name, set and share.
rows = list(csv.DictReader(open(f"{work}/csv/specialization.csv")))
assert len(rows) == L * E * C and list(rows[0]) == \
    ["layer", "expert", "class", "tokens", "category", "category_set", "share"], rows[0]
share_sum = {}
for r in rows:
    l, e, c = int(r["layer"]), int(r["expert"]), int(r["class"])
    assert int(r["tokens"]) == spec[l * E + e][c] and r["category"] == doc["categories"][c]
    assert r["category_set"] == ("domain" if c < 3 else "token kind"), r
    key = (l, e, r["category_set"])
    share_sum[key] = share_sum.get(key, 0) + float(r["share"])
assert len(share_sum) == L * E * 2
assert all(math.isclose(v, 1, rel_tol=1e-9) for v in share_sum.values()), share_sum
# plot-run: the map exists and its line names the model kind, the sets and the same token-slots.
data = open(f"{work}/png/specialization.png", "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
plot = open(f"{work}/plot.txt").read()
expect = ("specialization.png: language model, 2 layers x 4 experts x (3 domains: prose, code, "
          f"math; 5 token kinds), {L * steps * slots} token-slots")
assert expect in plot, expect
assert "reputation.png: no ledger" in plot
print("lm_replay: values agree")
PY
echo "lm_replay: replay text, JSON, CSV and plot-run show the LM's expert specialization"
