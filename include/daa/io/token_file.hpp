// The HDF5 token file of the language model (layout in docs/language-model.md): the train and
// validation token streams, every document's domain, split, offset and length, the domains, the
// tokenizer and the settings that made it. Written once by one process (temporary name, then
// rename); read by every rank, each reading only the token windows it needs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/io/corpus.hpp"
#include "daa/io/tokenizer.hpp"

namespace daa::io {

inline constexpr std::int64_t kTokenFileVersion = 1;
inline constexpr const char* kTokenFileFormat = "daa-swarm token file";

enum class Split : std::uint8_t { train = 0, validation = 1 };
const char* to_string(Split split);

struct DocumentInfo {
  std::string name;
  int domain = 0;
  Split split = Split::train;
  std::int64_t offset = 0;  // first token in its split's stream
  std::int64_t length = 0;  // tokens, its end-of-document token included
  std::int64_t bytes = 0;   // bytes of text
};

// Everything a token file holds. The writer takes it whole; the reader fills all but the tokens.
struct TokenFileData {
  std::vector<std::string> domains;
  std::vector<std::string> sources;        // per domain
  std::vector<std::string> domain_sha256;  // per domain, of its text (corpus.hpp)
  std::vector<DocumentInfo> documents;     // in stream order within each split
  std::vector<std::int32_t> train, validation;
  Tokenizer tokenizer;
  std::string settings;  // the resolved [text] section (TOML) that made the file
};

// Validation iff the document's name hashes below `fraction` (document_hash / 2^64), so a
// document keeps its split when others are added or capped away. A domain without a training or
// without a validation document is a DataError naming it.
std::vector<Split> split_documents(const Corpus& corpus, double validation_fraction);

// Each document's tokens followed by the end-of-document token, appended to its split's stream.
TokenFileData tokenize_corpus(const Corpus& corpus, const std::vector<Split>& splits,
                              const Tokenizer& tokenizer);

// Writes `path.tmp.<pid>` and renames it to `path` (creating missing parent directories); on any
// failure nothing is left at either name. An unwritable path is an InputError naming it.
void write_token_file(const std::string& path, const TokenFileData& data);

// Fails early (InputError) if `path` cannot be written, before any long work; leaves nothing.
void check_writable(const std::string& path);

struct DomainSummary {
  std::string name, source, sha256;
  std::int64_t documents = 0, bytes = 0, tokens = 0;
  std::int64_t train_documents = 0, validation_documents = 0;
  std::int64_t train_tokens = 0, validation_tokens = 0;
};

struct PrepareSummary {
  std::string path;
  TokenizerKind tokenizer = TokenizerKind::bytes;
  int vocab_size = 0;
  std::int64_t tokenizer_sample_bytes = 0;  // bpe training text
  std::vector<DomainSummary> domains;
  double extract_s = 0, train_tokenizer_s = 0, tokenize_s = 0, write_s = 0;
  std::int64_t file_bytes = 0;
};

// Bytes of text the BPE tokenizer trains on, at most (tokenizer_sample in corpus.hpp).
inline constexpr std::int64_t kTokenizerSampleBytes = 3'000'000;

// `daa-swarm prepare`: [text] sources -> corpus -> tokenizer -> [data] tokens. Bad settings fail
// before extraction, a bad source before tokenizer training; nothing is half-written.
PrepareSummary prepare_token_file(const core::Config& config);

// One line per domain, then the tokenizer and the totals, for the terminal.
std::vector<std::string> describe(const PrepareSummary& summary);

// An opened and validated token file. Missing, unreadable, corrupt or foreign files are
// DataErrors naming the file (and the dataset at fault).
class TokenFile {
 public:
  explicit TokenFile(const std::string& path);
  ~TokenFile();
  TokenFile(TokenFile&&) noexcept;
  TokenFile& operator=(TokenFile&&) noexcept;

  const std::string& path() const;
  // Metadata: everything but the token streams.
  const TokenFileData& metadata() const;
  const std::vector<std::string>& domains() const { return metadata().domains; }
  const std::vector<DocumentInfo>& documents() const { return metadata().documents; }
  const Tokenizer& tokenizer() const { return metadata().tokenizer; }
  std::int64_t tokens(Split split) const;

  // Tokens [start, start + count) of a split's stream, read by hyperslab; outside the stream is
  // a DataError. Token ids are checked against the vocabulary.
  std::vector<std::int32_t> read(Split split, std::int64_t start, std::int64_t count) const;
  // Domain of the token at `position` of a split's stream (binary search over the offsets).
  int domain_at(Split split, std::int64_t position) const;
  // Domains of positions [start, start + count), into out[0, count).
  void domains_of(Split split, std::int64_t start, std::int64_t count, std::int32_t* out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace daa::io
