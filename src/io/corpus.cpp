// Text sources -> documents (see corpus.hpp). Extraction reads packaged files and the output of
// the `bible` program only; orders are by name or by file position, never by directory-listing
// or hash-table order, so the same packages give the same bytes.
#include "daa/io/corpus.hpp"

#include <fmt/format.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/core/text.hpp"

namespace daa::io {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void source_error(const std::string& source, const std::string& what) {
  throw InputError(fmt::format("[text] sources: source '{}': {}", source, what));
}

std::string read_file(const std::string& source, const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  std::string text(ec ? 0 : size, '\0');
  if (ec || !in || !in.read(text.data(), std::streamsize(size)))
    source_error(source, fmt::format("cannot read '{}'", path.string()));
  return text;
}

void require_exists(const std::string& source, const fs::path& path, const char* package) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    source_error(source, fmt::format("'{}' does not exist{}", path.string(),
                                     package ? fmt::format(" (Debian package {})", package) : ""));
}

std::vector<Document> bible() {
  const std::string source = "bible-kjv";
  require_exists(source, kBibleProgram, "bible-kjv");
  require_exists(source, kBibleData, "bible-kjv-text");
  const std::string command =
      fmt::format("LC_ALL=C {} -l0 'gen1:1-rev22:21' </dev/null 2>/dev/null", kBibleProgram);
  std::FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) source_error(source, fmt::format("cannot run '{}'", kBibleProgram));
  std::string text;
  std::array<char, 65536> buffer;
  std::size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) text.append(buffer.data(), n);
  const int status = pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    source_error(source, fmt::format("'{}' failed (status {})", command, status));
  // Chapters start with a heading line "Book N" (verses are indented); a book is the run of
  // chapters with the same book name.
  std::vector<Document> docs;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    const std::string_view line(text.data() + start, end - start);
    const std::size_t next = std::min(end + 1, text.size());
    const bool heading = !line.empty() && line[0] != ' ' && line.find_last_of(' ') != line.npos;
    if (heading) {
      const std::string book(line.substr(0, line.find_last_of(' ')));
      if (docs.empty() || docs.back().name != source + ":" + book)
        docs.push_back({source + ":" + book, 0, ""});
    }
    if (!docs.empty()) docs.back().text.append(text, start, next - start);
    start = next;
  }
  return docs;
}

std::vector<Document> python_stdlib() {
  const std::string source = "python-stdlib";
  require_exists(source, kPythonStdlibDir, "libpython3.11-stdlib");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(kPythonStdlibDir))
    if (entry.is_regular_file() && entry.path().extension() == ".py") files.push_back(entry.path());
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  std::vector<Document> docs;
  for (const fs::path& f : files)
    docs.push_back({source + ":" + f.filename().string(), 0, read_file(source, f)});
  return docs;
}

std::vector<Document> files(const std::string& source) {
  const fs::path root = source.substr(6);
  require_exists(source, root, nullptr);
  std::vector<Document> docs;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    docs.push_back({"files:" + root.filename().string(), 0, read_file(source, root)});
    return docs;
  }
  std::vector<std::string> names;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::end(it);
       it.increment(ec))
    if (it->is_regular_file()) names.push_back(fs::relative(it->path(), root).generic_string());
  if (ec) source_error(source, fmt::format("cannot list '{}': {}", root.string(), ec.message()));
  std::sort(names.begin(), names.end());
  for (const std::string& name : names)
    docs.push_back({"files:" + name, 0, read_file(source, root / name)});
  return docs;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

// A set.mm section heading comment: a decoration line ("#*#*...", "=-=-...", "-.-.-...",
// "####...") then the title.
std::string heading_title(std::string_view body) {
  std::istringstream in{std::string(body)};
  std::string line;
  while (std::getline(in, line) && core::trim(line).empty()) {
  }
  const std::string_view first = core::trim(line);
  const bool decoration = first.starts_with("####") || first.starts_with("#*#*") ||
                          first.starts_with("=-=-") || first.starts_with("-.-.");
  if (!decoration) return "";
  while (std::getline(in, line) && core::trim(line).empty()) {
  }
  return std::string(core::trim(line));
}

constexpr std::uint64_t kCapSalt = 0x6361702d6f726465ULL;  // "cap-orde"

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h;
}

}  // namespace

std::vector<Document> extract_metamath(std::string_view mm, const std::string& source) {
  std::vector<Document> docs{{source + ":0000 (before the first heading)", 0, ""}};
  int headings = 0;
  std::size_t pos = 0;
  auto next_token = [&]() -> std::string_view {
    while (pos < mm.size() && is_space(mm[pos])) ++pos;
    const std::size_t begin = pos;
    while (pos < mm.size() && !is_space(mm[pos])) ++pos;
    return mm.substr(begin, pos - begin);
  };
  std::string_view previous;
  for (std::string_view t = next_token(); !t.empty(); t = next_token()) {
    if (t == "$(") {
      const std::size_t body = pos;
      std::string_view u;
      do u = next_token();
      while (!u.empty() && u != "$)");
      const std::string title = heading_title(mm.substr(body, pos - body));
      if (!title.empty())
        docs.push_back({fmt::format("{}:{:04d} {}", source, ++headings, title), 0, ""});
      continue;  // a comment does not separate a label from its keyword
    }
    if (t == "$a" || t == "$p" || t == "$e") {
      std::string line = std::string(previous) + " " + std::string(t);
      const std::string_view end = t == "$p" ? "$=" : "$.";
      std::string_view u;
      do {
        u = next_token();
        if (u == "$(") {  // a comment inside a statement: skip it
          do u = next_token();
          while (!u.empty() && u != "$)");
          continue;
        }
        if (!u.empty()) line += " " + std::string(u);
      } while (!u.empty() && u != end && u != "$.");
      if (u == "$=") {  // the proof: skipped
        do u = next_token();
        while (!u.empty() && u != "$.");
      }
      docs.back().text += line + "\n";
      previous = {};
      continue;
    }
    previous = t;
  }
  std::erase_if(docs, [](const Document& d) { return d.text.empty(); });
  return docs;
}

std::vector<Document> extract_source(const std::string& source) {
  std::vector<Document> docs;
  std::string path;
  if (source == "bible-kjv") {
    docs = bible(), path = kBibleProgram;
  } else if (source == "python-stdlib") {
    docs = python_stdlib(), path = kPythonStdlibDir;
  } else if (source == "metamath") {
    require_exists(source, kMetamathFile, "metamath-databases");
    docs = extract_metamath(read_file(source, kMetamathFile), source), path = kMetamathFile;
  } else if (source.starts_with("files:") && source.size() > 6) {
    docs = files(source), path = source.substr(6);
  } else {
    throw InputError(fmt::format(
        "[text] sources: unknown source '{}'; sources are bible-kjv, python-stdlib, metamath, "
        "files:PATH",
        source));
  }
  std::erase_if(docs, [](const Document& d) { return d.text.empty(); });
  if (docs.empty()) source_error(source, fmt::format("'{}' yields no text", path));
  return docs;
}

std::uint64_t document_hash(std::string_view name) {
  return core::mix64(fnv1a(name));
}

Corpus build_corpus(const std::vector<core::TextSource>& sources,
                    std::int64_t max_bytes_per_domain) {
  Corpus corpus;
  std::vector<std::vector<Document>> per_domain;
  for (const core::TextSource& s : sources) {
    auto it = std::find(corpus.domains.begin(), corpus.domains.end(), s.domain);
    const std::size_t d = std::size_t(it - corpus.domains.begin());
    if (it == corpus.domains.end()) {
      corpus.domains.push_back(s.domain);
      corpus.sources.push_back(s.source);
      per_domain.emplace_back();
    } else {
      corpus.sources[d] += ", " + s.source;
    }
    for (Document& doc : extract_source(s.source)) {
      doc.domain = int(d);
      per_domain[d].push_back(std::move(doc));
    }
  }
  for (std::size_t d = 0; d < per_domain.size(); ++d) {
    std::vector<Document>& docs = per_domain[d];
    if (max_bytes_per_domain > 0) {
      std::vector<std::size_t> order(docs.size());
      std::iota(order.begin(), order.end(), 0);
      // Salted, so that the documents kept are independent of the split, which uses the plain
      // hash: unsalted, the cap would keep the lowest hashes, i.e. the validation documents.
      auto key = [&](std::size_t i) { return core::mix64(document_hash(docs[i].name) ^ kCapSalt); };
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t a, std::size_t b) { return key(a) < key(b); });
      std::vector<bool> keep(docs.size(), false);
      std::int64_t used = 0;
      for (std::size_t i : order) {
        const auto size = std::int64_t(docs[i].text.size());
        if (used + size <= max_bytes_per_domain) keep[i] = true, used += size;
      }
      std::size_t k = 0;
      std::erase_if(docs, [&](const Document&) { return !keep[k++]; });
      if (docs.empty())
        throw InputError(fmt::format(
            "[text] domain '{}' has no documents: every document of '{}' is larger than [text] "
            "max_bytes_per_domain = {}",
            corpus.domains[d], corpus.sources[d], max_bytes_per_domain));
    }
    for (Document& doc : docs) corpus.documents.push_back(std::move(doc));
  }
  return corpus;
}

std::vector<std::int64_t> domain_bytes(const Corpus& corpus) {
  std::vector<std::int64_t> bytes(corpus.domains.size(), 0);
  for (const Document& d : corpus.documents)
    bytes[std::size_t(d.domain)] += std::int64_t(d.text.size());
  return bytes;
}

std::vector<std::string_view> tokenizer_sample(const Corpus& corpus, std::int64_t max_bytes) {
  const std::vector<std::int64_t> bytes = domain_bytes(corpus);
  const std::int64_t share = std::max<std::int64_t>(1, max_bytes / std::int64_t(bytes.size()));
  std::vector<std::string_view> lines;
  std::vector<std::int64_t> line_no(bytes.size(), 0);
  for (const Document& doc : corpus.documents) {
    const std::size_t d = std::size_t(doc.domain);
    const std::int64_t every = std::max<std::int64_t>(1, (bytes[d] + share - 1) / share);
    const std::string_view text = doc.text;
    std::size_t start = 0;
    while (start < text.size()) {
      const std::size_t end = std::min(text.find('\n', start), text.size());
      if (end > start && line_no[d]++ % every == 0)
        lines.push_back(text.substr(start, end - start));
      start = end + 1;
    }
  }
  return lines;
}

// ---- SHA-256 (FIPS 180-4) ---------------------------------------------------------------------

namespace {

constexpr std::array<std::uint32_t, 64> kSha256K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::uint32_t rotr(std::uint32_t x, int n) {
  return (x >> n) | (x << (32 - n));
}

class Sha256 {
 public:
  void update(std::string_view data) {
    for (char c : data) {
      block_[fill_++] = static_cast<std::uint8_t>(c);
      if (fill_ == 64) compress(), fill_ = 0;
    }
    length_ += data.size();
  }
  std::string hex() {
    const std::uint64_t bits = length_ * 8;
    const std::string_view one("\x80", 1);
    update(one);
    while (fill_ != 56) update(std::string_view("\0", 1));
    for (int i = 7; i >= 0; --i) block_[fill_++] = static_cast<std::uint8_t>(bits >> (8 * i));
    compress();
    std::string out;
    for (std::uint32_t v : h_) out += fmt::format("{:08x}", v);
    return out;
  }

 private:
  void compress() {
    std::array<std::uint32_t, 64> w{};
    for (int i = 0; i < 16; ++i)
      w[i] = std::uint32_t(block_[4 * i]) << 24 | std::uint32_t(block_[4 * i + 1]) << 16 |
             std::uint32_t(block_[4 * i + 2]) << 8 | std::uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, h] = h_;
    for (int i = 0; i < 64; ++i) {
      const std::uint32_t t1 =
          h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kSha256K[i] + w[i];
      const std::uint32_t t2 =
          (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    const std::array<std::uint32_t, 8> add = {a, b, c, d, e, f, g, h};
    for (int i = 0; i < 8; ++i) h_[i] += add[i];
  }

  std::array<std::uint32_t, 8> h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<std::uint8_t, 64> block_{};
  std::size_t fill_ = 0;
  std::uint64_t length_ = 0;
};

}  // namespace

std::string sha256_hex(std::string_view data) {
  Sha256 sha;
  sha.update(data);
  return sha.hex();
}

std::string domain_sha256(const Corpus& corpus, int domain) {
  Sha256 sha;
  for (const Document& d : corpus.documents)
    if (d.domain == domain) sha.update(d.text);
  return sha.hex();
}

}  // namespace daa::io
