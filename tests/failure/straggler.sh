#!/usr/bin/env bash
# A rank that computes 20 ms longer each step than its peers ([byzantine] delay_ms, as on a
# throttled or shared node) is named a straggler in the log, status.json and metrics.prom, and no
# other rank is.
# Usage: straggler.sh MPIEXEC DAA_SWARM INPUT   (exit 77: no data)
set -euo pipefail
mpiexec=$1 daa_swarm=$2 input=$3
# shellcheck source=../checkpoint/common.sh
source "$(dirname "$0")/../checkpoint/common.sh"

ranks=4
run_dir=$work/runs/fashion-mnist-ci
train_ok "$ranks" "$work/straggler.log" "$input" --set run.output_dir="$work/runs" \
  --set byzantine.ranks=1 --set byzantine.delay_ms=20 --set checkpoint.every_steps=0
grep -E '^(straggler|summary: simulated)' "$work/straggler.log" || fail "no straggler named"
grep -qE '^straggler: rank 1 \([^)]+\) computes [0-9.]+ ms per step, [0-9.]+x the [0-9.]+ ms of the other ranks of its stage$' \
  "$work/straggler.log" || fail "rank 1 was not named a straggler"
! grep -E '^straggler: rank [023] ' "$work/straggler.log" || fail "a rank running at full speed was named"
"$python" - "$run_dir/status.json" "$run_dir/metrics.prom" <<'PY' || fail "status.json or metrics.prom disagree"
import json, re, sys
status = json.load(open(sys.argv[1]))
assert [s["rank"] for s in status["stragglers"]] == [1], status["stragglers"]
assert status["stragglers"][0]["compute_ms"] >= 20, status["stragglers"]
assert status["health"] == "degraded", status["health"]
assert status["state"] == "finished", status["state"]
per_rank = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
    r'^daa_rank_compute_seconds_per_step\{run="fashion-mnist-ci",rank="(\d)",host="[^"]*"\} (\S+)$',
    open(sys.argv[2]).read(), re.M)}
assert sorted(per_rank) == [0, 1, 2, 3], per_rank
assert per_rank[1] >= 0.020 and all(per_rank[r] < per_rank[1] / 2 for r in (0, 2, 3)), per_rank
assert re.search(r'^daa_stragglers\{run="fashion-mnist-ci"\} 1$', open(sys.argv[2]).read(), re.M)
PY
echo "straggler: rank 1 named in the log, status.json and metrics.prom; no other rank"
