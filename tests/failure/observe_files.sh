#!/usr/bin/env bash
# What the run directory shows (docs/operations.md): metrics.prom in Prometheus text format with
# the documented families, status.json, and one Chrome trace per rank covering the configured
# window with a track per phase (all-to-all included, expert parallelism 2). Then the same run
# with metrics.prom and trace/ made unwritable: each is reported once, and training goes on to
# the same parameters.
# scripts/plot-trace draws the traces and prints each rank's time per phase.
# Usage: observe_files.sh MPIEXEC DAA_SWARM INPUT PLOT_TRACE   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3 plot_trace=$4
# shellcheck source=../checkpoint/common.sh
source "$(dirname "$0")/../checkpoint/common.sh"

args=("$input" --set parallel.expert_parallel=2 --set consensus.every_steps=4
      --set observe.trace_first_step=30 --set observe.trace_steps=4)
train_ok 4 "$work/good.log" "${args[@]}" --set run.output_dir="$work/good"
run_dir=$work/good/fashion-mnist-ci
grep -qx "trace: steps 30-33 -> $run_dir/trace/rank\*.json (4 files, one per rank)" "$work/good.log" \
  || fail "no trace line"
"$python" - "$run_dir" <<'PY' || fail "the run directory's files are not as documented"
import json, re, sys
run_dir = sys.argv[1]
text = open(f"{run_dir}/metrics.prom").read()
families, samples = {}, {}
for line in text.splitlines():
    m = re.match(r"^# TYPE (\w+) (gauge|counter|histogram)$", line)
    if m:
        assert m.group(1) not in families, f"family {m.group(1)} declared twice"
        families[m.group(1)] = m.group(2)
        continue
    if line.startswith("# HELP "):
        continue
    m = re.match(r'^(\w+)\{([^}]*)\} (\S+)$', line)
    assert m, f"not a sample line: {line!r}"
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
    assert labels["run"] == "fashion-mnist-ci", line
    samples.setdefault(m.group(1), []).append((labels, float(m.group(3))))
expected = {
    "daa_step": "gauge", "daa_total_steps": "gauge", "daa_loss": "gauge",
    "daa_train_accuracy": "gauge", "daa_samples_per_second": "gauge",
    "daa_step_seconds": "histogram", "daa_phase_seconds_total": "counter",
    "daa_expert_load_imbalance": "gauge", "daa_dropped_tokens_total": "counter",
    "daa_rank_resident_memory_bytes": "gauge", "daa_rank_compute_seconds_per_step": "gauge",
    "daa_stragglers": "gauge", "daa_suspects": "gauge", "daa_last_checkpoint_step": "gauge",
    "daa_gradient_staging_bytes_total": "counter"}
for name, kind in expected.items():
    assert families.get(name) == kind, (name, families.get(name))
assert samples["daa_step"][0][1] == 64
assert samples["daa_step_seconds_count"][0][1] == 64
buckets = [v for labels, v in samples["daa_step_seconds_bucket"]]
assert buckets == sorted(buckets) and buckets[-1] == 64, buckets
phases = {labels["phase"]: v for labels, v in samples["daa_phase_seconds_total"]}
assert set(phases) >= {"compute", "all_to_all", "aggregation", "consensus", "checkpoint"}, phases
assert phases["all_to_all"] > 0 and phases["consensus"] > 0 and phases["checkpoint"] > 0, phases
# Host build: the gradient's memory is host memory, used in place by the robust rounds.
assert phases["staging"] == 0 and samples["daa_gradient_staging_bytes_total"][0][1] == 0, phases
memory = {int(l["rank"]): v for l, v in samples["daa_rank_resident_memory_bytes"]}
assert sorted(memory) == [0, 1, 2, 3] and min(memory.values()) > 10e6, memory

status = json.load(open(f"{run_dir}/status.json"))
assert status["state"] == "finished" and status["step"] == 64 and status["total_steps"] == 64
assert status["layout"] == {"ranks": 4, "pipeline_stages": 1, "data_parallel": 4,
                            "expert_parallel": 2, "micro_batches": 1}, status["layout"]
assert status["last_checkpoint_step"] == 64, status

for rank in range(4):
    trace = json.load(open(f"{run_dir}/trace/rank{rank}.json"))
    events = trace["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["pid"] for e in events} == {rank + 1}
    assert {e["args"]["step"] for e in spans} == {30, 31, 32, 33}, {e["args"]["step"] for e in spans}
    tracks = {e["cat"] for e in spans}
    assert tracks >= {"step", "data", "compute", "all-to-all", "aggregation", "metrics",
                      "consensus"}, tracks
    names = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert names == tracks, (names, tracks)
    steps = sorted((e for e in spans if e["cat"] == "step"), key=lambda e: e["ts"])
    assert len(steps) == 4
    # Every phase of a step lies inside that step's span.
    for e in spans:
        step = steps[e["args"]["step"] - 30]
        assert step["ts"] - 1 <= e["ts"] and e["ts"] + e["dur"] <= step["ts"] + step["dur"] + 1, e
PY
good=$(checksum "$work/good.log")
"$plot_trace" "$run_dir" --out "$work/trace.png" > "$work/plot-trace.txt" || fail "plot-trace failed"
cat "$work/plot-trace.txt"
[ "$(grep -cE '^rank [0-3] \([^)]+\): steps 30-33, ms per step: step [0-9.]+, data [0-9.]+, compute [0-9.]+, all-to-all [0-9.]+, aggregation [0-9.]+, consensus [0-9.]+, metrics [0-9.]+, checkpoint [0-9.]+, eval [0-9.]+$' "$work/plot-trace.txt")" == 4 ] \
  || fail "plot-trace does not report the 4 ranks' phases"
[ -s "$work/trace.png" ] || fail "plot-trace wrote no figure"

# metrics.prom is a directory (the rename onto it fails) and trace/ is a file.
bad_dir=$work/bad/fashion-mnist-ci
mkdir -p "$bad_dir/metrics.prom" && touch "$bad_dir/trace"
train_ok 4 "$work/bad.log" "${args[@]}" --set run.output_dir="$work/bad"
grep -E '^warning: ' "$work/bad.log"
[ "$(grep -c "^warning: obs: cannot write '$bad_dir/metrics.prom'" "$work/bad.log")" == 1 ] \
  || fail "the unwritable metrics.prom is not reported exactly once"
[ "$(grep -c "^warning: trace not written (rank [0-3]: cannot create trace directory '$bad_dir/trace'" "$work/bad.log")" == 1 ] \
  || fail "the unwritable trace directory is not reported exactly once"
[ "$(checksum "$work/bad.log")" == "$good" ] || fail "training changed when the files failed"
[ ! -e "$bad_dir/metrics.prom.tmp" ] || fail "a temporary metrics file was left behind"
echo "observe_files: metrics.prom, status.json and 4 traces as documented; unwritable files reported once"
