#!/usr/bin/env bash
# End-to-end check of `daa-swarm prepare` on the tiny corpus tests/cli/text (two domains of five
# files): the summary lines, no temporary file left, and the token file read back with h5py alone
# as docs/language-model.md describes it (byte tokens must give back each file exactly), then the
# same with the BPE tokenizer, and a second run that must write the same tokens.
# Usage: prepare_text.sh RANKS MPIEXEC DAA_SWARM INPUT CORPUS_DIR   (exit 77: no h5py)
# RANKS 0 runs daa-swarm alone, without mpirun.
set -euo pipefail
ranks=$1 mpiexec=$2 daa_swarm=$3 input=$4 corpus=$5
python=/usr/bin/python3
"$python" -c 'import h5py' 2>/dev/null || { echo "SKIP: python3-h5py is not installed" >&2; exit 77; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "prepare_text: $*" >&2; exit 1; }

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
prepare() {  # prepare OUTPUT [--set ...]
  local out=$1
  shift
  local launcher=("$mpiexec" -n "$ranks")
  ((ranks > 0)) || launcher=()
  timeout --kill-after=10 60 "${launcher[@]}" "$daa_swarm" prepare "$input" \
    --set data.tokens="$out" --set text.sources="prose=files:$corpus/prose,code=files:$corpus/code" \
    --set text.validation_fraction=0.5 "$@" > "$work/stdout" 2> "$work/stderr" ||
    { cat "$work/stdout" "$work/stderr" >&2; fail "prepare exited $?"; }
  cat "$work/stdout"
  grep -q 'daa-swarm: error' "$work/stderr" && fail "an error line on success"
  grep -qE "^domain prose \(files:$corpus/prose\): 5 documents, 373 bytes, [0-9]+ tokens, [0-9.]+ bytes/token. train [1-4] documents \([0-9]+ tokens\), validation [1-4] documents \([0-9]+ tokens\)$" "$work/stdout" ||
    fail "no summary line for domain prose"
  grep -qE "^domain code \(files:$corpus/code\): 5 documents, 342 bytes, " "$work/stdout" ||
    fail "no summary line for domain code"
  grep -qE '^prepare: done in [0-9.]+ s$' "$work/stdout" || fail "no elapsed time"
  [ -s "$out" ] || fail "no token file $out"
  ls "$(dirname "$out")" | grep -q '\.tmp\.' && fail "a temporary file was left next to $out"
  return 0
}

# Byte tokens: every document's tokens are its file's bytes, then the end-of-document token.
prepare "$work/out/bytes.h5" --set text.tokenizer=bytes
"$python" - "$work/out/bytes.h5" "$corpus" <<'EOF' || fail "bytes token file does not read back"
import sys, h5py, numpy as np
path, corpus = sys.argv[1], sys.argv[2]
f = h5py.File(path, "r")
assert f.attrs["format"] in (b"daa-swarm token file", "daa-swarm token file"), f.attrs["format"]
assert int(f.attrs["format_version"]) == 1
domains = [d.decode() for d in f["domains/name"][:]]
assert domains == ["prose", "code"], domains
assert f["tokenizer/kind"][()] == b"bytes" and int(f["tokenizer/vocab_size"][()]) == 257
eod = int(f["tokenizer/eod_token"][()])
assert list(f["tokenizer/token_bytes"][:]) == [1] * 256 + [0]
streams = [f["tokens/train"][:], f["tokens/validation"][:]]
docs = f["documents"]
for i, name in enumerate(docs["name"][:]):
    name = name.decode()
    split, offset, length = int(docs["split"][i]), int(docs["offset"][i]), int(docs["length"][i])
    tokens = streams[split][offset:offset + length]
    domain = domains[int(docs["domain"][i])]
    text = open(f"{corpus}/{domain}/{name[len('files:'):]}", "rb").read()
    assert tokens[-1] == eod and bytes(tokens[:-1].astype(np.uint8)) == text, name
    assert int(docs["bytes"][i]) == len(text)
assert sum(int(l) for l in docs["length"][:]) == sum(len(s) for s in streams)
assert "[text]" in f["settings"][()].decode()
print("bytes token file reads back with h5py")
EOF

# BPE: the model, token bytes and kinds are there; a second run writes the same tokens.
prepare "$work/out/bpe.h5" --set text.tokenizer=bpe --set text.vocab_size=400
grep -qE '^tokenizer bpe: [0-9]+ tokens, trained on [0-9]+ bytes in [0-9.]+ s$' "$work/stdout" ||
  fail "no tokenizer line"
prepare "$work/out/bpe2.h5" --set text.tokenizer=bpe --set text.vocab_size=400
"$python" - "$work/out/bpe.h5" "$work/out/bpe2.h5" <<'EOF' || fail "bpe token files differ or do not read back"
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r") for p in sys.argv[1:3])
assert a["tokenizer/kind"][()] == b"bpe"
vocab = int(a["tokenizer/vocab_size"][()])
assert len(a["tokenizer/token_bytes"]) == vocab and len(a["tokenizer/token_kind"]) == vocab
assert len(a["tokenizer/model"]) > 0
for name in ("tokens/train", "tokens/validation", "tokenizer/model", "documents/offset"):
    assert np.array_equal(a[name][:], b[name][:]), name
train = a["tokens/train"][:]
assert train.min() >= 0 and train.max() < vocab
print("bpe token files identical, vocabulary", vocab)
EOF
echo "prepare_text: ok ($ranks ranks; 0: without mpirun)"
