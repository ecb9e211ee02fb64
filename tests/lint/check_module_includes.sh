#!/usr/bin/env bash
# Checks DESIGN.md §4's dependency order on #include lines: a file of module M (src/M/,
# include/daa/M/) may include "daa/O/..." only when O is M or sits below M in
#   app -> (train, serve) -> (robust, privacy, io, obs) -> model -> parallel -> kernels -> cuda
#   -> core
# (cuda: the cuBLAS/NCCL adapters of issue 13, below kernels and parallel, which will call them;
# not yet in DESIGN.md §4's table.) Modules on one level may not include each other;
# daa/build_config.hpp is allowed everywhere.
# Usage: check_module_includes.sh SOURCE_DIR   prints one line per violation, exits 1 if any;
#        check_module_includes.sh --self-test   runs the check on a fake tree with known
#                                               violations and checks what it reports.
set -euo pipefail

# The check must fail on a tree with violations, naming each file, line and the two modules, and
# must not flag the includes that the order allows.
self_test() {
  local tmp out rc=0 fail=0
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$tmp/src/model" "$tmp/src/io" "$tmp/src/obs" "$tmp/include/daa/kernels" "$tmp/src/cuda"
  printf '%s\n' '#include "daa/core/error.hpp"' '#include "daa/model/layer.hpp"' \
    '#include "daa/build_config.hpp"' >"$tmp/src/model/fine.cpp"
  printf '%s\n' '// a model file reaching up' '#include "daa/kernels/views.hpp"' \
    '#include "daa/train/trainer.hpp"' >"$tmp/src/model/upward.cpp"
  printf '%s\n' '#include <vector>' '#include <daa/obs/metrics.hpp>' >"$tmp/src/io/sideways.cpp"
  printf '%s\n' '#include "daa/io/dataset.hpp"' >"$tmp/src/obs/reaches_across.cpp"
  printf '%s\n' '#pragma once' '#include "daa/parallel/topology.hpp"' \
    >"$tmp/include/daa/kernels/up.hpp"
  # The CUDA adapters may use core, not the model.
  printf '%s\n' '#include "daa/core/error.hpp"' '#include "daa/model/params.hpp"' \
    >"$tmp/src/cuda/gemm.cu"
  out=$("$0" "$tmp" 2>&1) || rc=$?
  expect() {
    if ! grep -qF -- "$1" <<<"$out"; then
      echo "self-test: expected a line containing: $1"
      fail=1
    fi
  }
  [[ $rc -eq 1 ]] || { echo "self-test: expected exit 1, got $rc"; fail=1; }
  expect "src/model/upward.cpp:3: model includes daa/train/, which is not below model"
  expect "src/io/sideways.cpp:2: io includes daa/obs/, which is not below io"
  expect "src/obs/reaches_across.cpp:1: obs includes daa/io/, which is not below obs"
  expect "include/daa/kernels/up.hpp:2: kernels includes daa/parallel/, which is not below kernels"
  expect "src/cuda/gemm.cu:2: cuda includes daa/model/, which is not below cuda"
  expect "5 include(s) against"
  if grep -q "fine.cpp" <<<"$out"; then
    echo "self-test: flagged an allowed include"
    fail=1
  fi
  if ((fail)); then
    echo "self-test: the check printed:"
    echo "$out"
    return 1
  fi
  echo "self-test: passed"
}

if [[ $# -eq 1 && $1 == --self-test ]]; then
  self_test
  exit
fi
if [[ $# -ne 1 || ! -d $1 ]]; then
  echo "usage: $0 SOURCE_DIR | --self-test (SOURCE_DIR holds src/ and include/daa/)" >&2
  exit 2
fi
root=$1

# Level of each module: lower numbers sit higher in the order.
declare -A level=(
  [app]=0
  [train]=1 [serve]=1
  [robust]=2 [privacy]=2 [io]=2 [obs]=2
  [model]=3
  [parallel]=4
  [kernels]=5
  [cuda]=6
  [core]=7
)

# Known exceptions, as "FILE:INCLUDED_MODULE" with FILE relative to SOURCE_DIR. Each entry is a
# violation that existed before this check and is left for its module's owners to remove; do not
# add new ones. (Empty: the tree had none when the check was written.)
allowed=(
)

is_allowed() {
  local entry
  for entry in "${allowed[@]+"${allowed[@]}"}"; do
    [[ $entry == "$1" ]] && return 0
  done
  return 1
}

violations=0
report() {
  echo "$1"
  violations=$((violations + 1))
}

for base in src include/daa; do
  [[ -d $root/$base ]] || continue
  for dir in "$root/$base"/*/; do
    module=$(basename "$dir")
    if [[ -z ${level[$module]+x} ]]; then
      report "$base/$module/: module '$module' is not in DESIGN.md §4's order"
      continue
    fi
    while IFS= read -r -d '' file; do
      rel=${file#"$root"/}
      # "daa/X/..." or <daa/X/...>, with the line number.
      while IFS=: read -r line included; do
        is_allowed "$rel:$included" && continue
        if [[ -z ${level[$included]+x} ]]; then
          report "$rel:$line: $module includes daa/$included/, which is no module of DESIGN.md §4"
        elif [[ $included != "$module" && ${level[$included]} -le ${level[$module]} ]]; then
          report "$rel:$line: $module includes daa/$included/, which is not below $module in DESIGN.md §4's order"
        fi
      done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*["<]daa/[^/">]+/' "$file" |
        sed -E 's/^([0-9]+):.*include[[:space:]]*["<]daa\/([^/">]+)\/.*/\1:\2/')
    done < <(find "$dir" -type f \( -name '*.hpp' -o -name '*.cpp' -o -name '*.h' -o -name '*.cu' \
      -o -name '*.cuh' -o -name '*.inl' -o -name '*.in' \) -print0 | sort -z)
  done
done

if ((violations > 0)); then
  echo "check_module_includes: $violations include(s) against DESIGN.md §4's dependency order"
  exit 1
fi
echo "check_module_includes: all includes follow DESIGN.md §4's order"
