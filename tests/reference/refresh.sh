#!/usr/bin/env bash
# Rewrites tests/reference/lm_reference.h5: test_lm_reference --write-inputs writes each case's
# model, batch and routing biases, then lm_reference.py adds what PyTorch computes from them.
# Needs a built test_lm_reference and /usr/bin/python3 with torch and h5py (Debian's
# python3-torch, python3-h5py). usage: tests/reference/refresh.sh [BUILD_DIR]   (default: build)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
writer=$build/tests/reference/test_lm_reference
if [[ ! -x $writer ]]; then
  echo "refresh.sh: $writer is not built (cmake --build $build --target test_lm_reference)" >&2
  exit 1
fi

# Built under a temporary name, so a failure leaves the committed file as it was.
tmp=$here/lm_reference.h5.tmp
trap 'rm -f "$tmp"' EXIT
"$writer" --write-inputs "$tmp"
/usr/bin/python3 "$here/lm_reference.py" "$tmp"
mv "$tmp" "$here/lm_reference.h5"
echo "refresh.sh: wrote $here/lm_reference.h5; now run $writer"
