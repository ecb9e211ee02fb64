#!/usr/bin/env bash
# Runs one daa-swarm command line (bare or under mpirun) for the CLI tests and checks how it ends:
# the exact exit code, the error line on stderr, that it is printed exactly once, that the command
# does not hang (timeout), and that no process it started outlives it.
#
# usage: expect_error.sh --code N [--stderr ERE] [--stdout ERE]... [--errors K]
#                        [--setup MODE] [--data-source DIR] [--needs-data] [--absent PATH]...
#                        -- COMMAND [ARG]...
#   --code N         exit code the command must return (exactly)
#   --stderr ERE     the one "daa-swarm: error: ..." line must match this extended regex
#   --stdout ERE     stdout must have a line matching this regex (repeatable)
#   --errors K       number of lines starting with "daa-swarm: error:" (default 1, or 0 if N is 0)
#   --setup MODE     prepare @TMP@/data: empty | truncated | swapped-magic (from --data-source)
#   --data-source D  the real Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)
#   --needs-data     the command reads the real data set: skip (exit 77) if it is not installed
#   --absent PATH    after the command, neither PATH nor any PATH.tmp.* may exist (repeatable;
#                    @TMP@ allowed): a failed command leaves nothing half-written
# Every "@TMP@" in COMMAND is replaced by a fresh temporary directory, removed at the end.
# DAA_CLI_TIMEOUT_S changes the 60 s limit (for trying the script itself).
set -euo pipefail

readonly SKIP=77
readonly TIMEOUT_S="${DAA_CLI_TIMEOUT_S:-60}"  # seconds before the command counts as hung
readonly DATA_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
                     t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

code=""
stderr_re=""
stdout_res=()
errors=""
setup=""
data_source=/usr/share/datasets/fashion-mnist
needs_data=0
absent=()
while (($# > 0)); do
  case "$1" in
    --code) code="$2"; shift 2 ;;
    --stderr) stderr_re="$2"; shift 2 ;;
    --stdout) stdout_res+=("$2"); shift 2 ;;
    --errors) errors="$2"; shift 2 ;;
    --setup) setup="$2"; shift 2 ;;
    --data-source) data_source="$2"; shift 2 ;;
    --needs-data) needs_data=1; shift ;;
    --absent) absent+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) fail "expect_error.sh: unknown option '$1'" ;;
  esac
done
[[ -n "$code" ]] || fail "expect_error.sh: --code is required"
(($# > 0)) || fail "expect_error.sh: no command after --"
[[ -n "$errors" ]] || errors=$((code == 0 ? 0 : 1))

have_data() {
  local f
  for f in "${DATA_FILES[@]}"; do [[ -r "$data_source/$f" ]] || return 1; done
}
if ((needs_data)) || [[ "$setup" == truncated || "$setup" == swapped-magic ]]; then
  if ! have_data; then
    echo "SKIP: Fashion-MNIST is not installed in $data_source" >&2
    exit "$SKIP"
  fi
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/daa-cli-test.XXXXXXXX")"
trap 'rm -rf "$tmp"' EXIT

case "$setup" in
  "") ;;
  empty) mkdir "$tmp/data" ;;
  truncated)
    mkdir "$tmp/data"
    cp "${DATA_FILES[@]/#/$data_source/}" "$tmp/data/"
    head -c 100000 "$data_source/train-images-idx3-ubyte.gz" >"$tmp/data/train-images-idx3-ubyte.gz"
    ;;
  swapped-magic)
    mkdir "$tmp/data"
    cp "${DATA_FILES[@]/#/$data_source/}" "$tmp/data/"
    cp "$data_source/train-labels-idx1-ubyte.gz" "$tmp/data/train-images-idx3-ubyte.gz"
    ;;
  *) fail "expect_error.sh: unknown --setup '$setup'" ;;
esac

command=()
for arg in "$@"; do command+=("${arg//@TMP@/$tmp}"); done

# Every process the command starts inherits this variable (mpirun passes its environment on to
# the ranks it forks), so /proc/*/environ finds whatever is left of it afterwards.
marker="DAA_CLI_TEST_MARKER=$$-$RANDOM-$RANDOM"
survivors() {
  local dir
  for dir in /proc/[0-9]*; do
    grep -qsaF -- "$marker" "$dir/environ" 2>/dev/null && echo "${dir#/proc/}"
  done
  return 0
}

echo "+ ${command[*]}"
rc=0
env "$marker" timeout --kill-after=10 "$TIMEOUT_S" "${command[@]}" \
  >"$tmp/stdout" 2>"$tmp/stderr" </dev/null || rc=$?

echo "--- stdout"
cat "$tmp/stdout"
echo "--- stderr"
cat "$tmp/stderr"
echo "--- exit code $rc"

# Processes must be gone once the launcher has returned; allow a moment for exits in flight.
left=()
for _ in 1 2 3 4 5 6 7 8 9 10; do
  mapfile -t left < <(survivors)
  ((${#left[@]} == 0)) && break
  sleep 0.5
done
if ((${#left[@]} > 0)); then
  ps -o pid,ppid,stat,etime,args -p "$(IFS=,; echo "${left[*]}")" >&2 || true
  for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  fail "processes left behind: ${left[*]}"
fi

if ((rc == 124 || rc == 137)); then
  fail "the command hung: killed after ${TIMEOUT_S} s"
fi
[[ "$rc" == "$code" ]] || fail "exit code $rc, expected $code"

error_lines="$(grep -c '^daa-swarm: error:' "$tmp/stderr" || true)"
((error_lines == errors)) ||
  fail "$error_lines lines start with 'daa-swarm: error:', expected $errors"
if [[ -n "$stderr_re" ]]; then
  grep '^daa-swarm: error:' "$tmp/stderr" | grep -qE -- "$stderr_re" ||
    fail "no 'daa-swarm: error:' line matches: $stderr_re"
fi
for re in "${stdout_res[@]+"${stdout_res[@]}"}"; do
  grep -qE -- "$re" "$tmp/stdout" || fail "stdout has no line matching: $re"
done
for path in "${absent[@]+"${absent[@]}"}"; do
  path="${path//@TMP@/$tmp}"
  [[ ! -e "$path" ]] || fail "$path exists"
  compgen -G "$path.tmp.*" >/dev/null && fail "a temporary file $path.tmp.* was left"
done
echo "PASS"
