// The byte and SentencePiece-BPE tokenizers (see tokenizer.hpp). SentencePiece only ever sees
// text it round-trips: runs of valid UTF-8 without newlines, other control characters or its own
// space marker U+2581; every other byte, and any run whose pieces would not give it back
// exactly, becomes byte tokens. Decoding is our own concatenation of token texts.
#include "daa/io/tokenizer.hpp"

#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <unordered_map>

#include "daa/core/error.hpp"

namespace daa::io {

struct Tokenizer::Sp {
  sentencepiece::SentencePieceProcessor processor;
};

const char* to_string(TokenizerKind kind) {
  return kind == TokenizerKind::bpe ? "bpe" : "bytes";
}

const char* to_string(TokenKind kind) {
  switch (kind) {
    case TokenKind::letters:
      return "letters";
    case TokenKind::digits:
      return "digits";
    case TokenKind::whitespace:
      return "whitespace";
    case TokenKind::punctuation:
      return "punctuation";
    case TokenKind::other:
      return "other";
  }
  return "?";
}

TokenizerKind parse_tokenizer_kind(const std::string& text) {
  if (text == "bpe") return TokenizerKind::bpe;
  if (text == "bytes") return TokenizerKind::bytes;
  throw InputError("unknown tokenizer '" + text + "'; tokenizers are bpe, bytes");
}

namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

TokenKind classify(const std::string& text) {
  if (text.empty()) return TokenKind::other;
  unsigned char c = static_cast<unsigned char>(text[0]);
  if (c == ' ' && text.size() > 1 && text[1] != ' ') c = static_cast<unsigned char>(text[1]);
  if (c >= 0x80) return TokenKind::other;
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return TokenKind::letters;
  if (c >= '0' && c <= '9') return TokenKind::digits;
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f')
    return TokenKind::whitespace;
  if (c > 0x20 && c < 0x7f) return TokenKind::punctuation;
  return TokenKind::other;
}

// Length of the valid UTF-8 sequence at s[i] that SentencePiece may see (0: treat as bytes).
std::size_t safe_char_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return (c >= 0x20 && c != 0x7f) || c == '\t' ? 1 : 0;
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4, cp = c & 0x07;
  else
    return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  const bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
  const bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
  if (overlong || surrogate || cp > 0x10FFFF || cp == 0x2581) return 0;
  // Unicode's other line and format separators: SentencePiece may treat them as whitespace.
  if (cp == 0x85 || cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF) return 0;
  return n;
}

[[noreturn]] void vocab_error(int vocab_size, const std::string& why) {
  throw ConfigError(fmt::format("[text] vocab_size = {} {}", vocab_size, why));
}

}  // namespace

Tokenizer::Tokenizer() : kind_(TokenizerKind::bytes), eod_(256) {
  byte_id_.resize(256);
  for (int b = 0; b < 256; ++b) {
    byte_id_[std::size_t(b)] = b;
    text_.emplace_back(1, static_cast<char>(b));
  }
  text_.emplace_back();  // end-of-document
  for (const std::string& t : text_) kind_of_.push_back(classify(t));
}

Tokenizer::Tokenizer(TokenizerKind kind, std::string_view model, const std::string& what)
    : Tokenizer() {
  if (kind == TokenizerKind::bytes) {
    if (!model.empty()) throw DataError(what + ": a byte tokenizer has no model, found one");
    return;
  }
  auto sp = std::make_shared<Sp>();
  const auto status = sp->processor.LoadFromSerializedProto(model);
  if (!status.ok())
    throw DataError(fmt::format("{}: the BPE model does not load: {}", what, status.ToString()));
  const int n = sp->processor.GetPieceSize();
  kind_ = kind;
  model_ = std::string(model);
  eod_ = -1;
  text_.assign(std::size_t(n), std::string());
  std::fill(byte_id_.begin(), byte_id_.end(), -1);
  for (int id = 0; id < n; ++id) {
    const std::string& piece = sp->processor.IdToPiece(id);
    if (sp->processor.IsByte(id)) {
      // "<0x41>"
      const int b = std::stoi(piece.substr(3, 2), nullptr, 16);
      byte_id_[std::size_t(b)] = id;
      text_[std::size_t(id)] = std::string(1, static_cast<char>(b));
    } else if (sp->processor.IsControl(id)) {
      if (piece == "</s>") eod_ = id;
    } else if (!sp->processor.IsUnknown(id)) {
      std::string t;
      for (std::size_t i = 0; i < piece.size();) {
        if (piece.compare(i, kSpaceMarker.size(), kSpaceMarker) == 0) {
          t += ' ';
          i += kSpaceMarker.size();
        } else {
          t += piece[i++];
        }
      }
      text_[std::size_t(id)] = std::move(t);
    }
  }
  for (int b = 0; b < 256; ++b)
    if (byte_id_[std::size_t(b)] < 0)
      throw DataError(
          fmt::format("{}: the BPE model has no byte-fallback token for 0x{:02X}", what, b));
  if (eod_ < 0) throw DataError(what + ": the BPE model has no end-of-document token </s>");
  kind_of_.clear();
  for (const std::string& t : text_) kind_of_.push_back(classify(t));
  sp_ = std::move(sp);
}

void check_bpe_vocab_size(int vocab_size) {
  if (vocab_size < kMinBpeVocab)
    vocab_error(vocab_size, fmt::format("is below the minimum {} of the bpe tokenizer (256 byte "
                                        "tokens, unknown, end-of-document)",
                                        kMinBpeVocab));
}

Tokenizer Tokenizer::train_bpe(const std::vector<std::string_view>& lines, int vocab_size) {
  check_bpe_vocab_size(vocab_size);
  class Lines : public sentencepiece::SentenceIterator {
   public:
    explicit Lines(const std::vector<std::string_view>& lines) : lines_(lines) { load(); }
    bool done() const override { return i_ >= lines_.size(); }
    void Next() override {
      ++i_;
      load();
    }
    const std::string& value() const override { return value_; }
    sentencepiece::util::Status status() const override { return {}; }

   private:
    void load() {
      if (i_ < lines_.size()) value_.assign(lines_[i_]);
    }
    const std::vector<std::string_view>& lines_;
    std::size_t i_ = 0;
    std::string value_;
  } iterator(lines);
  // Code must keep its whitespace: no normalization, no dummy prefix, whitespace-only pieces
  // (indentation); digits split so numbers do not become thousands of pieces.
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"hard_vocab_limit", "false"},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"split_by_whitespace", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      {"character_coverage", "0.9995"},
      {"max_sentence_length", "16384"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"num_threads", "1"},
      {"unk_id", "0"},
      {"eos_id", "1"},
      {"bos_id", "-1"},
      {"pad_id", "-1"},
      {"minloglevel", "2"},
  };
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, &model);
  if (!status.ok()) {
    const std::string msg = status.ToString();
    if (msg.find("ocab") != std::string::npos)
      vocab_error(vocab_size, "does not fit this corpus: SentencePiece: " + msg);
    throw Error("tokenizer: SentencePiece BPE training failed: " + msg);
  }
  return Tokenizer(TokenizerKind::bpe, model, "trained tokenizer");
}

void Tokenizer::encode_line(std::string_view line, std::vector<int>& out) const {
  std::vector<int> ids;
  std::string check;
  std::size_t i = 0;
  while (i < line.size()) {
    std::size_t n = safe_char_length(line, i);
    if (n == 0) {
      out.push_back(byte_id_[static_cast<unsigned char>(line[i])]);
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < line.size() && (n = safe_char_length(line, end)) > 0) end += n;
    const std::string_view run = line.substr(i, end - i);
    ids.clear();
    const auto status = sp_->processor.Encode(run, &ids);
    check.clear();
    if (status.ok())
      for (int id : ids) check += text_[std::size_t(id)];
    if (status.ok() && check == run) {
      out.insert(out.end(), ids.begin(), ids.end());
    } else {
      for (char c : run) out.push_back(byte_id_[static_cast<unsigned char>(c)]);
    }
    i = end;
  }
}

std::vector<int> Tokenizer::encode(std::string_view text) const {
  std::vector<int> out;
  if (kind_ == TokenizerKind::bytes) {
    out.reserve(text.size());
    for (char c : text) out.push_back(static_cast<unsigned char>(c));
    return out;
  }
  out.reserve(text.size() / 3);
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t nl = std::min(text.find('\n', start), text.size());
    encode_line(text.substr(start, nl - start), out);
    if (nl < text.size()) out.push_back(byte_id_['\n']);
    start = nl + 1;
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int> ids) const {
  std::string out;
  for (int id : ids) {
    if (id < 0 || id >= vocab_size())
      throw InputError(fmt::format("tokenizer: token id {} is outside the vocabulary [0, {})", id,
                                   vocab_size()));
    out += text_[std::size_t(id)];
  }
  return out;
}

}  // namespace daa::io
