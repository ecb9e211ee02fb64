# bench-peer-common.sh: shell helpers shared by scripts/bench-peer (classifier) and
# scripts/bench-peer-lm (language model), which compare daa-swarm with a PyTorch peer.
# Sourced, not run. Callers set BENCH (their name, for messages), PY and TMP before use.
# shellcheck shell=bash

die() { echo "$BENCH: $*" >&2; exit 1; }

# Installs Debian's PyTorch, NumPy and h5py when $PY cannot import them.
ensure_torch() {
  local modules="torch, numpy, h5py"
  "$PY" -c "import $modules" 2>/dev/null && return 0
  echo "$BENCH: installing the PyTorch peer (python3-torch python3-numpy python3-h5py" \
    "libopenblas0-pthread)" >&2
  local sudo=
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install python3-torch"
    sudo=sudo
  fi
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    python3-torch python3-numpy python3-h5py libopenblas0-pthread
  "$PY" -c "import $modules" || die "packages installed but '$PY -c \"import $modules\"' still fails"
}

# json_get FILE KEY: print a field of a JSON object (the last line of FILE that is one, or the
# whole file when pretty-printed); KEY may be a dotted path (a.b). Numbers print as floats.
json_get() {
  "$PY" - "$1" "$2" "$BENCH" <<'EOF'
import json, sys
path, key, who = sys.argv[1], sys.argv[2], sys.argv[3]
obj = None
with open(path) as f:
    for line in f:
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                pass
if obj is None:  # a pretty-printed file: parse it whole
    try:
        obj = json.load(open(path))
    except ValueError:
        sys.exit(f"{who}: {path}: no JSON object found")
for part in key.split("."):
    if not isinstance(obj, dict) or part not in obj:
        sys.exit(f"{who}: {path}: no field '{key}'")
    obj = obj[part]
print(float(obj) if isinstance(obj, (int, float)) and not isinstance(obj, bool) else obj)
EOF
}

# Median of numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ratio A B: A / B with two decimals (0 when B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# sgemm_peak BENCH_LINALG: GFLOP/s of a large single-thread sgemm (BM_sgemm_peak, through
# kernels::gemm: the own AVX-512 kernel where compiled in, else OpenBLAS), the
# yardstick for the FLOP rates of daa-swarm's layers.
sgemm_peak() {
  echo "$BENCH: running $1 --benchmark_filter=BM_sgemm_peak ..." >&2
  if ! OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$1" --benchmark_filter=BM_sgemm_peak \
      --benchmark_format=json >"$TMP/linalg.json" 2>"$TMP/linalg.log"; then
    tail -n 20 "$TMP/linalg.log" >&2
    die "bench_linalg failed (output above)"
  fi
  "$PY" - "$TMP/linalg.json" "$BENCH" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
vals = [b["GFLOPS"] for b in doc.get("benchmarks", [])
        if "GFLOPS" in b and b.get("run_type", "iteration") == "iteration"]
if not vals:
    sys.exit(f"{sys.argv[2]}: bench_linalg JSON has no BM_sgemm_peak entry with a GFLOPS counter")
print(float(max(vals)))
EOF
}

# mpirun for a benchmark: root allowed (containers), one BLAS thread per rank, oversubscription
# allowed (2 ranks on a loaded 2-core machine still start).
bench_mpirun() {
  env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
    mpirun "$@"
}
