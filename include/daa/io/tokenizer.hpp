// Tokenizers of the language model (docs/language-model.md): `bytes` (one token per byte plus an
// end-of-document token) and `bpe` (SentencePiece BPE with byte fallback, trained here). Both
// round-trip any byte string exactly: decode(encode(s)) == s, tabs, newlines and invalid UTF-8
// included. Not a general SentencePiece wrapper: no sampling, no normalization, no pieces API.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace daa::io {

enum class TokenizerKind { bytes, bpe };

// What a token's text starts with: its first character, after SentencePiece's word-boundary space
// when more text follows (" the" is letters, "    " is whitespace). ASCII classes; a token that
// starts with a non-ASCII character, and a special token, is `other`.
enum class TokenKind : std::uint8_t {
  letters = 0,
  digits = 1,
  whitespace = 2,
  punctuation = 3,
  other = 4
};
inline constexpr int kTokenKinds = 5;

const char* to_string(TokenizerKind kind);
const char* to_string(TokenKind kind);
// "bpe" | "bytes"; anything else is an InputError.
TokenizerKind parse_tokenizer_kind(const std::string& text);

// The smallest BPE vocabulary: 256 byte-fallback tokens, unknown, end-of-document.
inline constexpr int kMinBpeVocab = 258;
// A ConfigError naming [text] vocab_size and kMinBpeVocab if vocab_size is below it.
void check_bpe_vocab_size(int vocab_size);

class Tokenizer {
 public:
  // The byte tokenizer: ids 0..255 are the bytes, 256 is end-of-document.
  Tokenizer();
  // A tokenizer of `kind` from its serialized model (model() of a trained one; empty for bytes).
  // A model that does not load is a DataError naming `what` (e.g. the token file).
  Tokenizer(TokenizerKind kind, std::string_view model, const std::string& what = "tokenizer");

  // Trains SentencePiece BPE on `lines` (one sentence each, as SentencePiece sees text) to at most
  // `vocab_size` tokens; deterministic for the same lines. A vocab_size below kMinBpeVocab, or
  // one SentencePiece cannot fill with this text, is a ConfigError naming [text] vocab_size.
  static Tokenizer train_bpe(const std::vector<std::string_view>& lines, int vocab_size);

  TokenizerKind kind() const { return kind_; }
  int vocab_size() const { return int(text_.size()); }
  int eod_token() const { return eod_; }
  // Serialized SentencePiece model (protobuf bytes); empty for the byte tokenizer.
  const std::string& model() const { return model_; }

  std::vector<int> encode(std::string_view text) const;
  // Ids outside [0, vocab_size) are an InputError; special tokens decode to nothing.
  std::string decode(std::span<const int> ids) const;

  // The text a token stands for ("" for specials), its length in bytes and its kind.
  const std::string& token_text(int id) const { return text_.at(std::size_t(id)); }
  int token_bytes(int id) const { return int(token_text(id).size()); }
  TokenKind token_kind(int id) const { return kind_of_.at(std::size_t(id)); }

 private:
  struct Sp;  // the SentencePiece processor, shared by copies
  void encode_line(std::string_view line, std::vector<int>& out) const;

  TokenizerKind kind_ = TokenizerKind::bytes;
  std::string model_;
  std::shared_ptr<const Sp> sp_;
  int eod_ = 256;
  std::vector<int> byte_id_;  // token of each byte value (bpe: its byte-fallback piece)
  std::vector<std::string> text_;
  std::vector<TokenKind> kind_of_;
};

}  // namespace daa::io
