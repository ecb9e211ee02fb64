// Text corpora of the language model (docs/language-model.md): named sources from Debian packages
// (bible-kjv, python-stdlib, metamath) or local files, turned into documents of named domains.
// Reproducible: the same packages give the same bytes, in the same order. Not a tokenizer and
// not a file format: tokenizer.hpp and token_file.hpp do those.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "daa/core/config.hpp"

namespace daa::io {

struct Document {
  std::string name;  // "<source>:<name within it>", e.g. "bible-kjv:Genesis"; decides its split
  int domain = 0;    // index into Corpus::domains
  std::string text;
};

struct Corpus {
  std::vector<std::string> domains;  // in the order of [text] sources
  std::vector<std::string> sources;  // per domain, as given ("bible-kjv", "files:a, files:b")
  std::vector<Document> documents;   // grouped by domain, each source's own order within
};

// Where the packaged sources live (Debian 12).
inline constexpr const char* kBibleProgram = "/usr/bin/bible";
inline constexpr const char* kBibleData = "/usr/lib/bible.data";
inline constexpr const char* kPythonStdlibDir = "/usr/lib/python3.11";
inline constexpr const char* kMetamathFile = "/usr/share/metamath/databases/set.mm";

// The documents of one source, in its order, without empty ones:
//  bible-kjv      one per book of `bible -l0 'gen1:1-rev22:21'` ("bible-kjv:Genesis");
//  python-stdlib  one per top-level /usr/lib/python3.11/*.py, sorted ("python-stdlib:abc.py");
//  metamath       set.mm's $a/$p statements (with their $e hypotheses) without proofs, one per
//                 line, one document per section heading ("metamath:0042 Logical implication");
//  files:PATH     one per regular file: PATH itself, or the files of directory PATH, sorted
//                 ("files:notes.txt", the name relative to PATH).
// A missing source, or one that yields no text, is an InputError naming the source and path.
std::vector<Document> extract_source(const std::string& source);

// Metamath statements without proofs, one per line (exposed for tests).
std::vector<Document> extract_metamath(std::string_view mm_text, const std::string& source);

// All sources of [text] sources. A positive `max_bytes_per_domain` keeps, per domain, whole
// documents taken in the order of a (salted) hash of their names while they fit (a spread over the
// whole source, not its first books), then restores the source order. A domain left without
// documents is an InputError naming it.
Corpus build_corpus(const std::vector<core::TextSource>& sources,
                    std::int64_t max_bytes_per_domain);

// Bytes of text per domain.
std::vector<std::int64_t> domain_bytes(const Corpus& corpus);

// SHA-256 (hex) of a domain's documents' texts, concatenated in order: the reproducibility check
// of docs/language-model.md.
std::string domain_sha256(const Corpus& corpus, int domain);
std::string sha256_hex(std::string_view data);

// Stable 64-bit hash of a document name (FNV-1a then a SplitMix64 finalizer): the key of the
// validation split and, salted, of the max_bytes_per_domain order.
std::uint64_t document_hash(std::string_view name);

// Lines for BPE training: at most about `max_bytes`, the same share from each domain, taken as
// every k-th line of the domain's documents (deterministic). Views into `corpus`.
std::vector<std::string_view> tokenizer_sample(const Corpus& corpus, std::int64_t max_bytes);

}  // namespace daa::io
