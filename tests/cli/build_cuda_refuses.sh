#!/usr/bin/env bash
# Checks scripts/build-cuda's refusals without building anything: no argument, a missing
# directory, a directory that is not a Kokkos tree, and a Kokkos older than 4.7.02 (a fake tree
# that only sets the version) each end with exit 2 and one "build-cuda: " line naming the problem.
# Usage: build_cuda_refuses.sh SOURCE_DIR
set -euo pipefail
script=$1/scripts/build-cuda
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "build_cuda_refuses: $*" >&2; exit 1; }

# refused PATTERN ARGS...: exit 2, exactly one stderr line, matching PATTERN; nothing on stdout.
refused() {
  local pattern=$1 status=0
  shift
  DAA_KOKKOS_PREFIX=$work/prefix DAA_BUILD_DIR=$work/build "$script" "$@" >"$work/out" 2>"$work/err" ||
    status=$?
  [[ $status == 2 ]] || { cat "$work/out" "$work/err" >&2; fail "exit $status, not 2: $*"; }
  [[ ! -s $work/out ]] || { cat "$work/out" >&2; fail "printed to stdout: $*"; }
  [[ $(wc -l <"$work/err") == 1 ]] || { cat "$work/err" >&2; fail "not one error line: $*"; }
  grep -qE "^build-cuda: $pattern" "$work/err" || { cat "$work/err" >&2; fail "no '$pattern': $*"; }
}

refused 'usage: scripts/build-cuda KOKKOS_SOURCE_DIR'
refused "no Kokkos source tree at $work/missing" "$work/missing"
mkdir -p "$work/empty"
refused "$work/empty is not a Kokkos source tree" "$work/empty"
mkdir -p "$work/kokkos/bin"
printf '%s\n' 'set(Kokkos_VERSION_MAJOR 4)' 'set(Kokkos_VERSION_MINOR 7)' \
  'set(Kokkos_VERSION_PATCH 01)' >"$work/kokkos/CMakeLists.txt"
printf '#!/bin/sh\nexit 1\n' >"$work/kokkos/bin/nvcc_wrapper"
chmod +x "$work/kokkos/bin/nvcc_wrapper"
refused "Kokkos 4.7.01 at $work/kokkos is older than 4.7.02" "$work/kokkos"
[[ ! -e $work/prefix && ! -e $work/build ]] || fail "a refused run created its build directories"
echo "build_cuda_refuses: 4 refusals checked"
