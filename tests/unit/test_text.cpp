// Text data of the language model: tokenizers (exact round trips, token kinds and bytes), corpus
// extraction (files:, metamath statements, the per-domain cap), the split by document, the HDF5
// token file (round trip, domains, every kind of broken file) and the token batches (determinism,
// independence of the rank layout, validation windows that tile the stream).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include "daa/core/error.hpp"
#include "daa/io/corpus.hpp"
#include "daa/io/token_batches.hpp"
#include "daa/io/token_file.hpp"
#include "daa/io/tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
using daa::io::Corpus;
using daa::io::Split;
using daa::io::TokenBatches;
using daa::io::TokenFile;
using daa::io::Tokenizer;
using daa::io::TokenizerKind;
using daa::io::TokenKind;
using ::testing::HasSubstr;

// Python with tabs, blank lines, trailing spaces and non-ASCII text: what code must keep exactly.
const std::string kPython =
    "# -*- coding: utf-8 -*-\n"
    "\"\"\"Grüße, naïve café: ∀x ∈ ℝ.\"\"\"\n"
    "\n"
    "\n"
    "def add(a, b):\n"
    "\tif a is None:   \n"
    "\t\treturn b  # tab-indented\n"
    "        return a + b\n"
    "\n"
    "class Point:\n"
    "    def __init__(self, x=0, y=1234567):\n"
    "        self.x, self.y = x, y\n"
    "\r\n"
    "    def __repr__(self):\n"
    "        return f'Point({self.x!r}, {self.y!r})'\n";

const std::string kProse =
    "In the beginning God created the heaven and the earth.\n"
    "And the earth was without form, and void; and darkness was upon the face of the deep.\n"
    "And God said, Let there be light: and there was light.\n";

const std::string kMath =
    "ax-1 $a |- ( ph -> ( ps -> ph ) ) $.\n"
    "mp2.1 $e |- ph $.\n"
    "mp2 $p |- ch $=\n";

// Lines of a small built-in corpus, repeated so that BPE has merges to learn.
std::vector<std::string_view> training_lines() {
  static const std::string corpus = [] {
    std::string s;
    for (int i = 0; i < 20; ++i) s += kPython + kProse + kMath;
    return s;
  }();
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start < corpus.size()) {
    const std::size_t end = corpus.find('\n', start);
    if (end > start) lines.push_back(std::string_view(corpus).substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

const Tokenizer& small_bpe() {
  static const Tokenizer t = Tokenizer::train_bpe(training_lines(), 400);
  return t;
}

std::string all_bytes() {
  std::string s;
  for (int b = 0; b < 256; ++b) s += static_cast<char>(b);
  return s;
}

// Byte strings that a tokenizer must give back exactly.
std::vector<std::string> hard_strings() {
  return {"",
          kPython,
          kProse + kMath,
          all_bytes(),
          std::string("nul\0inside", 10),
          "invalid utf-8: \xff\xfe \xc3( \xe2\x82 end",
          "sentencepiece's own space marker \xE2\x96\x81 and a real space",
          "    leading and trailing    ",
          "\n\n\t\t\n  \n",
          "\r\n\r\n",
          "emoji 😀 and CJK 漢字 and a BOM \xEF\xBB\xBF",
          "1234567890 3.14159e-10 0x1F"};
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no error of the expected type>";
}

// A fresh directory per test, removed afterwards.
class TextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           (std::string("daa-test-text-") + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Two domains of files: prose (8 documents) and code (8 documents, one with a tab and UTF-8).
  std::vector<daa::core::TextSource> write_sources() const {
    for (int i = 0; i < 8; ++i) {
      std::string prose;
      for (int k = 0; k <= i; ++k) prose += kProse;
      write_file(dir_ / "prose" / ("book" + std::to_string(i) + ".txt"), prose);
      write_file(dir_ / "code" / ("mod" + std::to_string(i) + ".py"),
                 kPython + "x = " + std::to_string(i * 1000) + "\n");
    }
    return {{"prose", "files:" + (dir_ / "prose").string()},
            {"code", "files:" + (dir_ / "code").string()}};
  }

  // A token file of write_sources() with half of the documents held out.
  std::string write_token_file(const Tokenizer& tokenizer, Corpus* corpus_out = nullptr,
                               daa::io::TokenFileData* data_out = nullptr) const {
    const Corpus corpus = daa::io::build_corpus(write_sources(), 0);
    const auto splits = daa::io::split_documents(corpus, 0.5);
    daa::io::TokenFileData data = daa::io::tokenize_corpus(corpus, splits, tokenizer);
    data.settings = "[text]\nvalidation_fraction = 0.5\n";
    const std::string path = (dir_ / "tokens.h5").string();
    daa::io::write_token_file(path, data);
    if (corpus_out) *corpus_out = corpus;
    if (data_out) *data_out = data;
    return path;
  }

  fs::path dir_;
};

// ---- tokenizers -------------------------------------------------------------------------------

TEST(Tokenizer, BytesRoundTripsEveryByteString) {
  const Tokenizer t;
  EXPECT_EQ(t.kind(), TokenizerKind::bytes);
  EXPECT_EQ(t.vocab_size(), 257);
  EXPECT_EQ(t.eod_token(), 256);
  EXPECT_TRUE(t.model().empty());
  for (const std::string& s : hard_strings()) {
    const std::vector<int> ids = t.encode(s);
    EXPECT_EQ(ids.size(), s.size());
    EXPECT_EQ(t.decode(ids), s);
  }
  EXPECT_EQ(t.encode("A\xff"), (std::vector<int>{65, 255}));
}

TEST(Tokenizer, BytesTokenKindsAndBytes) {
  const Tokenizer t;
  EXPECT_EQ(t.token_kind('q'), TokenKind::letters);
  EXPECT_EQ(t.token_kind('Z'), TokenKind::letters);
  EXPECT_EQ(t.token_kind('7'), TokenKind::digits);
  EXPECT_EQ(t.token_kind(' '), TokenKind::whitespace);
  EXPECT_EQ(t.token_kind('\t'), TokenKind::whitespace);
  EXPECT_EQ(t.token_kind('\n'), TokenKind::whitespace);
  EXPECT_EQ(t.token_kind('('), TokenKind::punctuation);
  EXPECT_EQ(t.token_kind('~'), TokenKind::punctuation);
  EXPECT_EQ(t.token_kind(0), TokenKind::other);
  EXPECT_EQ(t.token_kind(0xC3), TokenKind::other);
  EXPECT_EQ(t.token_kind(t.eod_token()), TokenKind::other);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(t.token_bytes(b), 1);
  EXPECT_EQ(t.token_bytes(t.eod_token()), 0);
  EXPECT_EQ(t.decode(std::vector<int>{'h', 'i', t.eod_token()}), "hi");
  EXPECT_THAT(error_of<daa::InputError>([&] { t.decode(std::vector<int>{257}); }),
              HasSubstr("token id 257 is outside the vocabulary [0, 257)"));
}

TEST(Tokenizer, BpeRoundTripsCodeAndAnyByteString) {
  const Tokenizer& t = small_bpe();
  EXPECT_EQ(t.kind(), TokenizerKind::bpe);
  EXPECT_GT(t.vocab_size(), daa::io::kMinBpeVocab);
  EXPECT_LE(t.vocab_size(), 400);
  for (const std::string& s : hard_strings()) {
    SCOPED_TRACE(s);
    const std::vector<int> ids = t.encode(s);
    EXPECT_EQ(t.decode(ids), s);
    // Token texts tile the input: their byte counts add up to its length.
    std::size_t bytes = 0;
    for (int id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, t.vocab_size());
      EXPECT_NE(id, t.eod_token());
      bytes += std::size_t(t.token_bytes(id));
    }
    EXPECT_EQ(bytes, s.size());
  }
  // The text it was trained on compresses well; bytes it never saw still round-trip (above).
  // (At least 1.5 bytes per token even with this tiny vocabulary.)
  EXPECT_LT(t.encode(kPython).size() * 3, kPython.size() * 2);
  EXPECT_LT(t.encode(kProse).size() * 3, kProse.size() * 2);
}

TEST(Tokenizer, BpeSpecialsBytesAndKinds) {
  const Tokenizer& t = small_bpe();
  EXPECT_EQ(t.token_bytes(t.eod_token()), 0);
  EXPECT_EQ(t.token_kind(t.eod_token()), TokenKind::other);
  int byte_tokens = 0, specials = 0;
  for (int id = 0; id < t.vocab_size(); ++id) {
    if (t.token_bytes(id) == 0) ++specials;
    if (t.token_bytes(id) == 1) ++byte_tokens;
  }
  EXPECT_EQ(specials, 2);  // unknown and end-of-document
  EXPECT_GE(byte_tokens, 256);
  // Learned pieces: words with their boundary space are letters, indentation is whitespace.
  std::map<std::string, int> by_text;
  for (int id = 0; id < t.vocab_size(); ++id)
    if (t.token_bytes(id) > 1) by_text[t.token_text(id)] = id;
  ASSERT_TRUE(by_text.count(" the"));
  EXPECT_EQ(t.token_kind(by_text[" the"]), TokenKind::letters);
  ASSERT_TRUE(by_text.count("    "));
  EXPECT_EQ(t.token_kind(by_text["    "]), TokenKind::whitespace);
  const std::vector<int> tab = t.encode("\t");
  ASSERT_EQ(tab.size(), 1u);
  EXPECT_EQ(t.token_kind(tab[0]), TokenKind::whitespace);
  const std::vector<int> digits = t.encode("1234567");
  EXPECT_EQ(digits.size(), 7u);  // split_digits: one token per digit
  for (int id : digits) EXPECT_EQ(t.token_kind(id), TokenKind::digits);
  EXPECT_EQ(t.token_kind(t.encode("(")[0]), TokenKind::punctuation);
  EXPECT_EQ(t.token_kind(t.encode("é")[0]), TokenKind::other);
}

TEST(Tokenizer, BpeTrainingIsDeterministicAndTheModelReloads) {
  const Tokenizer again = Tokenizer::train_bpe(training_lines(), 400);
  EXPECT_EQ(again.model(), small_bpe().model());
  const Tokenizer loaded(TokenizerKind::bpe, small_bpe().model());
  EXPECT_EQ(loaded.vocab_size(), small_bpe().vocab_size());
  EXPECT_EQ(loaded.eod_token(), small_bpe().eod_token());
  for (const std::string& s : hard_strings()) EXPECT_EQ(loaded.encode(s), small_bpe().encode(s));
  EXPECT_THAT(
      error_of<daa::DataError>([] { Tokenizer(TokenizerKind::bpe, "not a model", "x.h5"); }),
      HasSubstr("x.h5: the BPE model does not load"));
}

TEST(Tokenizer, BpeVocabularyTooSmallIsAConfigError) {
  EXPECT_EQ(error_of<daa::ConfigError>([] { Tokenizer::train_bpe(training_lines(), 100); }),
            "config: [text] vocab_size = 100 is below the minimum 258 of the bpe tokenizer (256 "
            "byte tokens, unknown, end-of-document)");
  // Above the minimum but without room for the corpus' characters: still named.
  EXPECT_THAT(error_of<daa::ConfigError>([] { Tokenizer::train_bpe(training_lines(), 260); }),
              HasSubstr("config: [text] vocab_size = 260 does not fit this corpus"));
}

// ---- corpus -----------------------------------------------------------------------------------

TEST(Corpus, Sha256KnownAnswers) {
  EXPECT_EQ(daa::io::sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(daa::io::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(daa::io::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(daa::io::sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Corpus, MetamathKeepsStatementsAndDropsProofsAndComments) {
  const std::string mm =
      "$( Preamble comment $)\n"
      "  $c ( ) -> wff |- $.\n"
      "  wph $f wff ph $.\n"
      "$(\n#*#*#*#*#*#*#*#*\n        Propositional calculus\n#*#*#*#*#*#*#*#*\n\n  Text.\n$)\n"
      "  ax-1 $a |- ( ph -> ( ps -> ph ) ) $.\n"
      "  ${\n    mp2.1 $e |- ph $.\n"
      "    $( A double modus ponens inference. $)\n"
      "    mp2 $p |- ch\n      $= ( wi ax-mp ) BCEABCGDFHH $.\n  $}\n"
      "$(\n=-=-=-=-=-=-=-\n  Logical implication\n=-=-=-=-=-=-=-\n$)\n"
      "$( A comment that is no heading. $)\n"
      "  id $p |- ( ph -> ph ) $= ? $.\n";
  const auto docs = daa::io::extract_metamath(mm, "metamath");
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].name, "metamath:0001 Propositional calculus");
  EXPECT_EQ(docs[0].text,
            "ax-1 $a |- ( ph -> ( ps -> ph ) ) $.\n"
            "mp2.1 $e |- ph $.\n"
            "mp2 $p |- ch $=\n");
  EXPECT_EQ(docs[1].name, "metamath:0002 Logical implication");
  EXPECT_EQ(docs[1].text, "id $p |- ( ph -> ph ) $=\n");
}

TEST_F(TextTest, FilesSourceGivesOneDocumentPerFileInNameOrder) {
  write_file(dir_ / "b.txt", "bee\n");
  write_file(dir_ / "a.txt", "ay\n");
  write_file(dir_ / "sub" / "c.py", "print('c')\n");
  write_file(dir_ / "empty.txt", "");
  const auto docs = daa::io::extract_source("files:" + dir_.string());
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].name, "files:a.txt");
  EXPECT_EQ(docs[0].text, "ay\n");
  EXPECT_EQ(docs[1].name, "files:b.txt");
  EXPECT_EQ(docs[2].name, "files:sub/c.py");
  EXPECT_EQ(docs[2].text, "print('c')\n");
  const auto one = daa::io::extract_source("files:" + (dir_ / "b.txt").string());
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].name, "files:b.txt");
}

TEST_F(TextTest, MissingOrEmptySourcesAreInputErrorsNamingThem) {
  const std::string missing = (dir_ / "nope").string();
  EXPECT_EQ(error_of<daa::InputError>([&] { daa::io::extract_source("files:" + missing); }),
            "[text] sources: source 'files:" + missing + "': '" + missing + "' does not exist");
  fs::create_directories(dir_ / "empty");
  write_file(dir_ / "empty" / "blank.txt", "");
  const std::string empty = (dir_ / "empty").string();
  EXPECT_EQ(error_of<daa::InputError>([&] { daa::io::extract_source("files:" + empty); }),
            "[text] sources: source 'files:" + empty + "': '" + empty + "' yields no text");
  EXPECT_THAT(error_of<daa::InputError>([] { daa::io::extract_source("gutenberg"); }),
              HasSubstr("unknown source 'gutenberg'"));
}

TEST_F(TextTest, CorpusCapKeepsWholeDocumentsDeterministically) {
  const auto sources = write_sources();
  const Corpus all = daa::io::build_corpus(sources, 0);
  ASSERT_EQ(all.domains, (std::vector<std::string>{"prose", "code"}));
  ASSERT_EQ(all.documents.size(), 16u);
  const std::int64_t cap = 4 * std::int64_t(kProse.size()) + 10;
  const Corpus capped = daa::io::build_corpus(sources, cap);
  const Corpus again = daa::io::build_corpus(sources, cap);
  const std::vector<std::int64_t> bytes = daa::io::domain_bytes(capped);
  for (std::int64_t b : bytes) {
    EXPECT_GT(b, 0);
    EXPECT_LE(b, cap);
  }
  ASSERT_EQ(capped.documents.size(), again.documents.size());
  std::set<std::string> names;
  for (std::size_t i = 0; i < capped.documents.size(); ++i) {
    EXPECT_EQ(capped.documents[i].name, again.documents[i].name);
    names.insert(capped.documents[i].name);
  }
  // Kept documents are whole and in source order.
  std::size_t next = 0;
  for (const auto& doc : all.documents) {
    if (next < capped.documents.size() && capped.documents[next].name == doc.name &&
        capped.documents[next].domain == doc.domain) {
      EXPECT_EQ(capped.documents[next].text, doc.text);
      ++next;
    }
  }
  EXPECT_EQ(next, capped.documents.size());
  EXPECT_EQ(daa::io::domain_sha256(capped, 0), daa::io::domain_sha256(again, 0));
  EXPECT_NE(daa::io::domain_sha256(capped, 0), daa::io::domain_sha256(all, 0));
  // A cap below every document leaves the domain empty: named.
  EXPECT_THAT(error_of<daa::InputError>([&] { daa::io::build_corpus(sources, 10); }),
              HasSubstr("[text] domain 'prose' has no documents"));
}

TEST_F(TextTest, CorpusCapIsIndependentOfTheSplit) {
  // 200 equal documents, half kept: about half of the kept ones must be validation documents at
  // fraction 0.5 (the cap's order and the split use different hashes).
  for (int i = 0; i < 200; ++i)
    write_file(dir_ / "many" / ("doc" + std::to_string(i)), "0123456789");
  const Corpus capped =
      daa::io::build_corpus({{"d", "files:" + (dir_ / "many").string()}}, 100 * 10);
  ASSERT_EQ(capped.documents.size(), 100u);
  const auto splits = daa::io::split_documents(capped, 0.5);
  const auto validation = std::count(splits.begin(), splits.end(), Split::validation);
  EXPECT_GT(validation, 30);
  EXPECT_LT(validation, 70);
}

TEST_F(TextTest, TokenizerSampleTakesEveryDomainAndRespectsTheBudget) {
  const Corpus corpus = daa::io::build_corpus(write_sources(), 0);
  const auto sample = daa::io::tokenizer_sample(corpus, 2000);
  std::size_t bytes = 0;
  for (auto line : sample) bytes += line.size();
  EXPECT_LE(bytes, 2000u + 200u);  // budget plus one line per domain at most
  EXPECT_GT(bytes, 500u);
  bool prose = false, code = false;
  for (auto line : sample) {
    prose |= line.find("God") != line.npos;
    code |= line.find("self") != line.npos || line.find("def ") != line.npos;
  }
  EXPECT_TRUE(prose);
  EXPECT_TRUE(code);
}

// ---- split ------------------------------------------------------------------------------------

TEST_F(TextTest, SplitIsByDocumentNameHash) {
  const Corpus corpus = daa::io::build_corpus(write_sources(), 0);
  const auto splits = daa::io::split_documents(corpus, 0.5);
  ASSERT_EQ(splits.size(), corpus.documents.size());
  for (std::size_t i = 0; i < splits.size(); ++i) {
    const double u = double(daa::io::document_hash(corpus.documents[i].name) >> 11) * 0x1.0p-53;
    EXPECT_EQ(splits[i], u < 0.5 ? Split::validation : Split::train) << corpus.documents[i].name;
  }
  // A document keeps its split when the fraction grows: validation sets are nested.
  const auto more = daa::io::split_documents(corpus, 0.7);
  for (std::size_t i = 0; i < splits.size(); ++i) {
    if (splits[i] == Split::validation) {
      EXPECT_EQ(more[i], Split::validation);
    }
  }
  EXPECT_EQ(error_of<daa::DataError>([&] { daa::io::split_documents(corpus, 1e-9); }),
            "data: domain 'prose' has 8 training and 0 validation documents with [text] "
            "validation_fraction = 1e-09; each split needs at least one (change the fraction or "
            "add documents)");
}

// ---- token file -------------------------------------------------------------------------------

TEST_F(TextTest, TokenFileRoundTripsWithBothTokenizers) {
  for (const Tokenizer* t : {&small_bpe(), static_cast<const Tokenizer*>(nullptr)}) {
    const Tokenizer tokenizer = t ? *t : Tokenizer();
    SCOPED_TRACE(daa::io::to_string(tokenizer.kind()));
    Corpus corpus;
    daa::io::TokenFileData data;
    const std::string path = write_token_file(tokenizer, &corpus, &data);
    EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
    const TokenFile file(path);
    EXPECT_EQ(file.domains(), (std::vector<std::string>{"prose", "code"}));
    EXPECT_EQ(file.metadata().sources, data.sources);
    EXPECT_EQ(file.metadata().domain_sha256, data.domain_sha256);
    EXPECT_EQ(file.metadata().settings, data.settings);
    EXPECT_EQ(file.tokenizer().kind(), tokenizer.kind());
    EXPECT_EQ(file.tokenizer().vocab_size(), tokenizer.vocab_size());
    EXPECT_EQ(file.tokenizer().eod_token(), tokenizer.eod_token());
    EXPECT_EQ(file.tokenizer().model(), tokenizer.model());
    EXPECT_EQ(file.tokens(Split::train), std::int64_t(data.train.size()));
    EXPECT_EQ(file.tokens(Split::validation), std::int64_t(data.validation.size()));
    EXPECT_EQ(file.read(Split::train, 0, file.tokens(Split::train)), data.train);
    EXPECT_EQ(file.read(Split::validation, 0, file.tokens(Split::validation)), data.validation);
    // A hyperslab in the middle.
    const std::vector<std::int32_t> middle = file.read(Split::train, 17, 40);
    EXPECT_EQ(middle, std::vector<std::int32_t>(data.train.begin() + 17, data.train.begin() + 57));
    ASSERT_EQ(file.documents().size(), corpus.documents.size());
    for (std::size_t i = 0; i < corpus.documents.size(); ++i) {
      const auto& doc = file.documents()[i];
      EXPECT_EQ(doc.name, corpus.documents[i].name);
      EXPECT_EQ(doc.domain, corpus.documents[i].domain);
      EXPECT_EQ(doc.bytes, std::int64_t(corpus.documents[i].text.size()));
      // Each document decodes to its text and ends with the end-of-document token.
      const std::vector<std::int32_t> tokens = file.read(doc.split, doc.offset, doc.length);
      EXPECT_EQ(tokens.back(), tokenizer.eod_token());
      EXPECT_EQ(file.tokenizer().decode(std::vector<int>(tokens.begin(), tokens.end() - 1)),
                corpus.documents[i].text);
      EXPECT_EQ(file.domain_at(doc.split, doc.offset), doc.domain);
      EXPECT_EQ(file.domain_at(doc.split, doc.offset + doc.length - 1), doc.domain);
    }
  }
}

TEST_F(TextTest, DomainLookupFollowsDocumentBoundaries) {
  daa::io::TokenFileData data;
  const TokenFile file(write_token_file(Tokenizer(), nullptr, &data));
  for (Split split : {Split::train, Split::validation}) {
    const std::int64_t n = file.tokens(split);
    std::vector<std::int32_t> expected(static_cast<std::size_t>(n), -1);
    for (const auto& doc : file.documents())
      if (doc.split == split)
        for (std::int64_t p = doc.offset; p < doc.offset + doc.length; ++p)
          expected[std::size_t(p)] = doc.domain;
    std::vector<std::int32_t> got(static_cast<std::size_t>(n));
    file.domains_of(split, 0, n, got.data());
    EXPECT_EQ(got, expected);
    EXPECT_EQ(file.domain_at(split, n - 1), expected.back());
    std::vector<std::int32_t> part(5);
    file.domains_of(split, n / 2, 5, part.data());
    EXPECT_EQ(part,
              std::vector<std::int32_t>(expected.begin() + n / 2, expected.begin() + n / 2 + 5));
  }
  // Both domains occur in both splits.
  std::set<std::pair<int, Split>> seen;
  for (const auto& doc : file.documents()) seen.insert({doc.domain, doc.split});
  EXPECT_EQ(seen.size(), 4u);
}

TEST_F(TextTest, ReadsOutsideTheStreamAreDataErrors) {
  const TokenFile file(write_token_file(Tokenizer()));
  const std::int64_t n = file.tokens(Split::train);
  EXPECT_THAT(error_of<daa::DataError>([&] { file.read(Split::train, n - 2, 3); }),
              HasSubstr("are outside /tokens/train of"));
  EXPECT_THAT(error_of<daa::DataError>([&] { file.domain_at(Split::validation, -1); }),
              HasSubstr("outside the validation stream"));
}

TEST_F(TextTest, MissingAndForeignFilesAreDataErrorsNamingTheFile) {
  const std::string missing = (dir_ / "none.h5").string();
  EXPECT_EQ(error_of<daa::DataError>([&] { TokenFile f(missing); }),
            "data: cannot open token file '" + missing +
                "': file does not exist (make it with `daa-swarm prepare`)");
  const std::string garbage = (dir_ / "garbage.h5").string();
  write_file(garbage, std::string(4096, 'x'));
  EXPECT_EQ(error_of<daa::DataError>([&] { TokenFile f(garbage); }),
            "data: '" + garbage + "' is not a token file: not an HDF5 file");
  // A valid HDF5 file that is not ours.
  const std::string foreign = (dir_ / "foreign.h5").string();
  H5Fclose(H5Fcreate(foreign.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  EXPECT_THAT(error_of<daa::DataError>([&] { TokenFile f(foreign); }),
              HasSubstr("'" + foreign + "' is not a token file: its format attribute is ''"));
}

TEST_F(TextTest, TruncatedWrongVersionAndCorruptFilesAreDataErrors) {
  const std::string path = write_token_file(Tokenizer());
  const std::string bytes = read_file(path);

  const std::string truncated = (dir_ / "truncated.h5").string();
  write_file(truncated, bytes.substr(0, bytes.size() / 2));
  EXPECT_THAT(error_of<daa::DataError>([&] { TokenFile f(truncated); }),
              HasSubstr("token file '" + truncated + "'"));

  const std::string version = (dir_ / "version.h5").string();
  fs::copy_file(path, version);
  {
    const hid_t f = H5Fopen(version.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const std::int64_t v = 99;
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Fclose(f);
  }
  EXPECT_EQ(error_of<daa::DataError>([&] { TokenFile f(version); }),
            "data: token file '" + version +
                "' has format version 99; this program reads version 1 (prepare it again)");

  const std::string missing_set = (dir_ / "no-lengths.h5").string();
  fs::copy_file(path, missing_set);
  {
    const hid_t f = H5Fopen(missing_set.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/documents/length", H5P_DEFAULT);
    H5Fclose(f);
  }
  EXPECT_EQ(
      error_of<daa::DataError>([&] { TokenFile f(missing_set); }),
      "data: token file '" + missing_set + "' is corrupt: it has no dataset /documents/length");

  // One flipped byte inside the token stream: the chunk's Fletcher-32 checksum catches it. The
  // byte tokenizer stores "Point" as int32 little-endian: 'P' 0 0 0 'o' 0 0 0 ...
  const std::string corrupt = (dir_ / "corrupt.h5").string();
  std::string flipped = bytes;
  const std::string needle("P\0\0\0o\0\0\0i\0\0\0n\0\0\0t\0\0\0", 20);
  const std::size_t at = flipped.find(needle);
  ASSERT_NE(at, std::string::npos);
  flipped[at + 4] = 'O';
  write_file(corrupt, flipped);
  const TokenFile file(corrupt);  // metadata is intact
  const std::string msg = error_of<daa::DataError>([&] {
    for (Split s : {Split::train, Split::validation}) file.read(s, 0, file.tokens(s));
  });
  EXPECT_THAT(msg, HasSubstr("token file '" + corrupt + "' is corrupt: reading /tokens/"));
}

TEST_F(TextTest, WritingToAnUnwritablePathLeavesNothing) {
  const Corpus corpus = daa::io::build_corpus(write_sources(), 0);
  const auto data =
      daa::io::tokenize_corpus(corpus, daa::io::split_documents(corpus, 0.5), Tokenizer());
  EXPECT_THAT(error_of<daa::InputError>([&] { daa::io::write_token_file("/dev/null/x.h5", data); }),
              HasSubstr("cannot write token file '/dev/null/x.h5'"));
  const std::string is_dir = (dir_ / "adir").string();
  fs::create_directories(is_dir);
  EXPECT_THAT(error_of<daa::InputError>([&] { daa::io::write_token_file(is_dir, data); }),
              HasSubstr("it is a directory"));
  // Missing parent directories are created.
  const std::string nested = (dir_ / "a" / "b" / "t.h5").string();
  daa::io::write_token_file(nested, data);
  EXPECT_EQ(TokenFile(nested).tokens(Split::train), std::int64_t(data.train.size()));
  std::vector<std::string> left;
  for (const auto& e : fs::recursive_directory_iterator(dir_))
    if (e.path().string().find(".tmp.") != std::string::npos) left.push_back(e.path().string());
  EXPECT_TRUE(left.empty());
}

// ---- batches ----------------------------------------------------------------------------------

std::vector<std::int32_t> concat(const std::vector<daa::io::TokenWindows>& parts,
                                 std::vector<std::int32_t> daa::io::TokenWindows::*field) {
  std::vector<std::int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), (p.*field).begin(), (p.*field).end());
  return out;
}

TEST_F(TextTest, TrainingBatchesAreWindowsOfTheFile) {
  const TokenFile file(write_token_file(small_bpe()));
  const int seq = 16, batch = 8;
  const TokenBatches batches(file, seq, batch, 1234);
  const auto w = batches.train(3, 0, 1);
  ASSERT_EQ(w.samples, batch);
  ASSERT_EQ(w.tokens.size(), std::size_t(batch * seq));
  for (int i = 0; i < batch; ++i) {
    const std::int64_t start = batches.window_start(3, i);
    ASSERT_GE(start, 0);
    ASSERT_LE(start + seq + 1, file.tokens(Split::train));
    const auto window = file.read(Split::train, start, seq + 1);
    for (int j = 0; j < seq; ++j) {
      EXPECT_EQ(w.tokens[std::size_t(i * seq + j)], window[std::size_t(j)]);
      EXPECT_EQ(w.targets[std::size_t(i * seq + j)], window[std::size_t(j + 1)]);
      EXPECT_EQ(w.domains[std::size_t(i * seq + j)], file.domain_at(Split::train, start + j + 1));
    }
  }
  // Deterministic; another step or seed gives other windows.
  const TokenBatches same(file, seq, batch, 1234), other_seed(file, seq, batch, 99);
  EXPECT_EQ(same.train(3, 0, 1).tokens, w.tokens);
  EXPECT_NE(batches.train(4, 0, 1).tokens, w.tokens);
  EXPECT_NE(other_seed.train(3, 0, 1).tokens, w.tokens);
  // Starts spread over the whole stream.
  std::set<std::int64_t> starts;
  std::int64_t lo = file.tokens(Split::train), hi = 0;
  for (int s = 0; s < 200; ++s) {
    const std::int64_t x = batches.window_start(s, 0);
    starts.insert(x), lo = std::min(lo, x), hi = std::max(hi, x);
  }
  EXPECT_GT(starts.size(), 150u);
  EXPECT_LT(lo, file.tokens(Split::train) / 10);
  EXPECT_GT(hi, file.tokens(Split::train) * 9 / 10);
}

TEST_F(TextTest, GlobalBatchDoesNotDependOnTheRankLayout) {
  const TokenFile file(write_token_file(small_bpe()));
  const TokenBatches batches(file, 12, 8, 7);
  for (std::int64_t step : {0, 1, 41}) {
    const auto whole = batches.train(step, 0, 1);
    for (int dp : {2, 4}) {
      std::vector<daa::io::TokenWindows> shards;
      for (int d = 0; d < dp; ++d) {
        shards.push_back(batches.train(step, d, dp));
        EXPECT_EQ(shards.back().samples, 8 / dp);
      }
      EXPECT_EQ(concat(shards, &daa::io::TokenWindows::tokens), whole.tokens) << dp;
      EXPECT_EQ(concat(shards, &daa::io::TokenWindows::targets), whole.targets) << dp;
      EXPECT_EQ(concat(shards, &daa::io::TokenWindows::domains), whole.domains) << dp;
    }
    // A micro-batch slice is the same samples again.
    EXPECT_EQ(
        batches.train_samples(step, 2, 3).tokens,
        std::vector<std::int32_t>(whole.tokens.begin() + 2 * 12, whole.tokens.begin() + 5 * 12));
  }
  EXPECT_EQ(daa::io::rank_share(10, 0, 3), (std::pair<std::int64_t, std::int64_t>{0, 3}));
  EXPECT_EQ(daa::io::rank_share(10, 2, 3), (std::pair<std::int64_t, std::int64_t>{6, 10}));
}

TEST_F(TextTest, ValidationWindowsTileTheStream) {
  daa::io::TokenFileData data;
  const TokenFile file(write_token_file(small_bpe(), nullptr, &data));
  const int seq = 10;
  const TokenBatches batches(file, seq, 4, 1);
  const std::int64_t n = file.tokens(Split::validation);
  const std::int64_t windows = batches.validation_windows();
  EXPECT_EQ(windows, (n - 1) / seq);
  ASSERT_GT(windows, 3);
  for (int dp : {1, 3}) {
    std::vector<daa::io::TokenWindows> parts;
    std::int64_t next = 0;
    for (int d = 0; d < dp; ++d) {
      const auto [first, last] = batches.validation_range(d, dp);
      EXPECT_EQ(first, next);
      next = last;
      parts.push_back(batches.validation(first, last - first));
    }
    EXPECT_EQ(next, windows);
    const auto covered = std::size_t(windows * seq);
    EXPECT_EQ(concat(parts, &daa::io::TokenWindows::tokens),
              std::vector<std::int32_t>(data.validation.begin(),
                                        data.validation.begin() + std::ptrdiff_t(covered)));
    EXPECT_EQ(concat(parts, &daa::io::TokenWindows::targets),
              std::vector<std::int32_t>(data.validation.begin() + 1,
                                        data.validation.begin() + std::ptrdiff_t(covered) + 1));
    const auto domains = concat(parts, &daa::io::TokenWindows::domains);
    for (std::size_t p = 0; p < domains.size(); ++p)
      ASSERT_EQ(domains[p], file.domain_at(Split::validation, std::int64_t(p) + 1)) << p;
  }
  EXPECT_THAT(error_of<daa::DataError>([&] { TokenBatches b(file, int(n), 4, 1); }),
              HasSubstr("the validation split has " + std::to_string(n) +
                        " tokens, fewer than one window"));
}

}  // namespace
