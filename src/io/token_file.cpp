// The HDF5 token file (see token_file.hpp and docs/language-model.md): plain serial HDF5, since
// one process writes it and every rank only reads. Token streams are chunked with Fletcher-32
// checksums, so a corrupted chunk fails its read instead of feeding wrong tokens to training.
#include "daa/io/token_file.hpp"

#include <fmt/format.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "daa/core/error.hpp"
#include "hdf5_handle.hpp"

namespace daa::io {
namespace {

using detail::Handle;
using detail::hdf5_detail;
using detail::silence_hdf5;

namespace fs = std::filesystem;

// Paths inside the file (docs/language-model.md lists them).
constexpr const char* kTrainTokens = "/tokens/train";
constexpr const char* kValidationTokens = "/tokens/validation";
constexpr hsize_t kTokenChunk = 1 << 12;

// HDF5 failures while writing become InputErrors (the usual cause is the path), while reading
// DataErrors; both name the file and the object.
template <class T>
T check_write(T result, const std::string& path, const std::string& what) {
  if (result < 0)
    throw InputError(
        fmt::format("cannot write token file '{}': {}: {}", path, what, hdf5_detail()));
  return result;
}

template <class T>
T check_read(T result, const std::string& path, const std::string& what) {
  if (result < 0)
    throw DataError(fmt::format("token file '{}' is corrupt: {}: {}", path, what, hdf5_detail()));
  return result;
}

template <class T>
hid_t native_type();
template <>
hid_t native_type<std::int32_t>() {
  return H5T_NATIVE_INT32;
}
template <>
hid_t native_type<std::int64_t>() {
  return H5T_NATIVE_INT64;
}
template <>
hid_t native_type<std::uint8_t>() {
  return H5T_NATIVE_UINT8;
}
template <>
hid_t native_type<std::int8_t>() {
  return H5T_NATIVE_INT8;
}

template <class T>
hid_t file_type();
template <>
hid_t file_type<std::int32_t>() {
  return H5T_STD_I32LE;
}
template <>
hid_t file_type<std::int64_t>() {
  return H5T_STD_I64LE;
}
template <>
hid_t file_type<std::uint8_t>() {
  return H5T_STD_U8LE;
}
template <>
hid_t file_type<std::int8_t>() {
  return H5T_STD_I8LE;
}

Handle string_type(std::size_t size) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (type.get() < 0) return type;
  H5Tset_size(type.get(), std::max<std::size_t>(size, 1));
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  return type;
}

class Writer {
 public:
  Writer(hid_t file, std::string path) : file_(file), path_(std::move(path)) {
    lcpl_ = Handle(check_write(H5Pcreate(H5P_LINK_CREATE), path_, "link properties"), H5Pclose);
    check_write(H5Pset_create_intermediate_group(lcpl_.get(), 1), path_, "link properties");
  }

  template <class T>
  void array(const std::string& name, const std::vector<T>& values, bool chunked = false) {
    const hsize_t n = values.size();
    Handle space(check_write(H5Screate_simple(1, &n, nullptr), path_, name), H5Sclose);
    Handle dcpl(check_write(H5Pcreate(H5P_DATASET_CREATE), path_, name), H5Pclose);
    if (chunked && n > 0) {
      const hsize_t chunk = std::min(n, kTokenChunk);
      check_write(H5Pset_chunk(dcpl.get(), 1, &chunk), path_, name);
      check_write(H5Pset_fletcher32(dcpl.get()), path_, name);
    }
    Handle set(check_write(H5Dcreate2(file_, name.c_str(), file_type<T>(), space.get(), lcpl_.get(),
                                      dcpl.get(), H5P_DEFAULT),
                           path_, name),
               H5Dclose);
    if (n > 0)
      check_write(
          H5Dwrite(set.get(), native_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()),
          path_, name);
  }

  void scalar(const std::string& name, std::int64_t value) {
    Handle space(check_write(H5Screate(H5S_SCALAR), path_, name), H5Sclose);
    Handle set(check_write(H5Dcreate2(file_, name.c_str(), H5T_STD_I64LE, space.get(), lcpl_.get(),
                                      H5P_DEFAULT, H5P_DEFAULT),
                           path_, name),
               H5Dclose);
    check_write(H5Dwrite(set.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value), path_,
                name);
  }

  void text(const std::string& name, const std::string& value) {
    Handle type = string_type(value.size());
    check_write(type.get(), path_, name);
    Handle space(check_write(H5Screate(H5S_SCALAR), path_, name), H5Sclose);
    Handle set(check_write(H5Dcreate2(file_, name.c_str(), type.get(), space.get(), lcpl_.get(),
                                      H5P_DEFAULT, H5P_DEFAULT),
                           path_, name),
               H5Dclose);
    std::string padded = value;
    padded.resize(std::max<std::size_t>(value.size(), 1), '\0');
    check_write(H5Dwrite(set.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, padded.data()),
                path_, name);
  }

  void strings(const std::string& name, const std::vector<std::string>& values) {
    std::size_t width = 1;
    for (const std::string& v : values) width = std::max(width, v.size());
    std::string packed(width * values.size(), '\0');
    for (std::size_t i = 0; i < values.size(); ++i)
      packed.replace(i * width, values[i].size(), values[i]);
    Handle type = string_type(width);
    check_write(type.get(), path_, name);
    const hsize_t n = values.size();
    Handle space(check_write(H5Screate_simple(1, &n, nullptr), path_, name), H5Sclose);
    Handle set(check_write(H5Dcreate2(file_, name.c_str(), type.get(), space.get(), lcpl_.get(),
                                      H5P_DEFAULT, H5P_DEFAULT),
                           path_, name),
               H5Dclose);
    if (n > 0)
      check_write(H5Dwrite(set.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, packed.data()),
                  path_, name);
  }

  void attribute(const std::string& name, const std::string& value) {
    Handle type = string_type(value.size());
    Handle space(check_write(H5Screate(H5S_SCALAR), path_, name), H5Sclose);
    Handle attr(check_write(H5Acreate2(file_, name.c_str(), type.get(), space.get(), H5P_DEFAULT,
                                       H5P_DEFAULT),
                            path_, name),
                H5Aclose);
    check_write(H5Awrite(attr.get(), type.get(), value.data()), path_, name);
  }

  void attribute(const std::string& name, std::int64_t value) {
    Handle space(check_write(H5Screate(H5S_SCALAR), path_, name), H5Sclose);
    Handle attr(check_write(H5Acreate2(file_, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                                       H5P_DEFAULT),
                            path_, name),
                H5Aclose);
    check_write(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), path_, name);
  }

 private:
  hid_t file_;
  std::string path_;
  Handle lcpl_;
};

class Reader {
 public:
  Reader(hid_t file, std::string path) : file_(file), path_(std::move(path)) {}

  Handle open(const std::string& name) const {
    if (H5Lexists(file_, name.substr(0, name.find('/', 1)).c_str(), H5P_DEFAULT) <= 0 ||
        H5Lexists(file_, name.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      throw DataError(fmt::format("token file '{}' is corrupt: it has no dataset {}", path_, name));
    }
    return Handle(check_read(H5Dopen2(file_, name.c_str(), H5P_DEFAULT), path_, name), H5Dclose);
  }

  // Elements of a 1-d dataset (or -1 for a scalar).
  std::int64_t extent(hid_t set, const std::string& name) const {
    Handle space(check_read(H5Dget_space(set), path_, name), H5Sclose);
    const int rank = check_read(H5Sget_simple_extent_ndims(space.get()), path_, name);
    if (rank == 0) return -1;
    if (rank != 1) fail(name, fmt::format("has {} dimensions, expected 1", rank));
    hsize_t n = 0;
    check_read(H5Sget_simple_extent_dims(space.get(), &n, nullptr), path_, name);
    return std::int64_t(n);
  }

  template <class T>
  std::vector<T> array(const std::string& name, std::int64_t expected = -1) const {
    Handle set = open(name);
    const std::int64_t n = extent(set.get(), name);
    if (n < 0) fail(name, "is a scalar, expected an array");
    if (expected >= 0 && n != expected)
      fail(name, fmt::format("has {} elements, expected {}", n, expected));
    Handle type(check_read(H5Dget_type(set.get()), path_, name), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_INTEGER) fail(name, "is not an integer dataset");
    std::vector<T> values(static_cast<std::size_t>(n));
    if (n > 0)
      check_read(H5Dread(set.get(), native_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()),
                 path_, name);
    return values;
  }

  std::int64_t scalar(const std::string& name) const {
    Handle set = open(name);
    if (extent(set.get(), name) != -1) fail(name, "is not a scalar");
    std::int64_t v = 0;
    check_read(H5Dread(set.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v), path_,
               name);
    return v;
  }

  std::vector<std::string> strings(const std::string& name, std::int64_t expected = -1) const {
    Handle set = open(name);
    const std::int64_t n = extent(set.get(), name);
    if (expected >= 0 && n != expected)
      fail(name, fmt::format("has {} elements, expected {}", n, expected));
    Handle type(check_read(H5Dget_type(set.get()), path_, name), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) != 0)
      fail(name, "is not a fixed-length string dataset");
    const std::size_t width = H5Tget_size(type.get());
    const std::size_t count = n < 0 ? 1 : std::size_t(n);
    std::string packed(width * count, '\0');
    if (count > 0)
      check_read(H5Dread(set.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, packed.data()),
                 path_, name);
    std::vector<std::string> out;
    for (std::size_t i = 0; i < count; ++i) {
      std::string s = packed.substr(i * width, width);
      s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
      out.push_back(std::move(s));
    }
    return out;
  }

  std::string text(const std::string& name) const {
    Handle set = open(name);
    if (extent(set.get(), name) != -1) fail(name, "is not a scalar");
    return strings(name).at(0);
  }

  std::string string_attribute(const std::string& name) const {
    if (H5Aexists(file_, name.c_str()) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return "";
    }
    Handle attr(check_read(H5Aopen(file_, name.c_str(), H5P_DEFAULT), path_, name), H5Aclose);
    Handle type(check_read(H5Aget_type(attr.get()), path_, name), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) != 0) return "";
    std::string s(H5Tget_size(type.get()), '\0');
    check_read(H5Aread(attr.get(), type.get(), s.data()), path_, name);
    s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
    return s;
  }

  std::int64_t int_attribute(const std::string& name) const {
    if (H5Aexists(file_, name.c_str()) <= 0) fail(name, "is missing (an attribute of /)");
    Handle attr(check_read(H5Aopen(file_, name.c_str(), H5P_DEFAULT), path_, name), H5Aclose);
    std::int64_t v = 0;
    check_read(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), path_, name);
    return v;
  }

  [[noreturn]] void fail(const std::string& name, const std::string& what) const {
    throw DataError(fmt::format("token file '{}' is corrupt: {} {}", path_, name, what));
  }

 private:
  hid_t file_;
  std::string path_;
};

// File access: sec2, with HDF5's file lock where the file system supports one and without it
// where it does not (Lustre or NFS mounted without flock would otherwise refuse every open).
Handle file_access(const std::string& path, bool reading) {
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  const std::string what = "file access properties";
  if (reading)
    check_read(fapl.get(), path, what);
  else
    check_write(fapl.get(), path, what);
#if H5_VERSION_GE(1, 10, 7)
  if (H5Pset_file_locking(fapl.get(), true, true) < 0) {
    if (reading) check_read(-1, path, what);
    check_write(-1, path, what);
  }
#endif
  return fapl;
}

std::string temp_name(const std::string& path) {
  return fmt::format("{}.tmp.{}", path, ::getpid());
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

const char* to_string(Split split) {
  return split == Split::train ? "train" : "validation";
}

std::vector<Split> split_documents(const Corpus& corpus, double validation_fraction) {
  std::vector<Split> splits;
  std::vector<std::int64_t> train(corpus.domains.size(), 0), validation(corpus.domains.size(), 0);
  for (const Document& d : corpus.documents) {
    const double u = double(document_hash(d.name) >> 11) * 0x1.0p-53;
    splits.push_back(u < validation_fraction ? Split::validation : Split::train);
    ++(splits.back() == Split::train ? train : validation)[std::size_t(d.domain)];
  }
  for (std::size_t d = 0; d < corpus.domains.size(); ++d) {
    if (train[d] == 0 || validation[d] == 0)
      throw DataError(fmt::format(
          "domain '{}' has {} training and {} validation documents with [text] "
          "validation_fraction = {}; each split needs at least one (change the fraction or add "
          "documents)",
          corpus.domains[d], train[d], validation[d], validation_fraction));
  }
  return splits;
}

TokenFileData tokenize_corpus(const Corpus& corpus, const std::vector<Split>& splits,
                              const Tokenizer& tokenizer) {
  TokenFileData data;
  data.domains = corpus.domains;
  data.sources = corpus.sources;
  for (std::size_t d = 0; d < corpus.domains.size(); ++d)
    data.domain_sha256.push_back(domain_sha256(corpus, int(d)));
  data.tokenizer = tokenizer;
  for (std::size_t i = 0; i < corpus.documents.size(); ++i) {
    const Document& doc = corpus.documents[i];
    std::vector<std::int32_t>& stream = splits[i] == Split::train ? data.train : data.validation;
    DocumentInfo info{doc.name,  doc.domain,
                      splits[i], std::int64_t(stream.size()),
                      0,         std::int64_t(doc.text.size())};
    for (int id : tokenizer.encode(doc.text)) stream.push_back(id);
    stream.push_back(tokenizer.eod_token());
    info.length = std::int64_t(stream.size()) - info.offset;
    data.documents.push_back(std::move(info));
  }
  return data;
}

void check_writable(const std::string& path) {
  std::error_code ec;
  const fs::path parent = fs::absolute(path, ec).parent_path();
  if (!ec && !fs::is_directory(parent)) fs::create_directories(parent, ec);
  if (ec)
    throw InputError(fmt::format("cannot write token file '{}': cannot create directory '{}': {}",
                                 path, parent.string(), ec.message()));
  if (fs::is_directory(path, ec))
    throw InputError(fmt::format("cannot write token file '{}': it is a directory", path));
  const std::string probe = temp_name(path);
  {
    std::ofstream out(probe, std::ios::binary);
    if (!out)
      throw InputError(fmt::format("cannot write token file '{}': cannot create '{}': {}", path,
                                   probe, std::strerror(errno)));
  }
  fs::remove(probe, ec);
}

void write_token_file(const std::string& path, const TokenFileData& data) {
  silence_hdf5();
  check_writable(path);
  const std::string temp = temp_name(path);
  try {
    const Handle fapl = file_access(path, false);
    Handle file(check_write(H5Fcreate(temp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), path,
                            "create " + temp),
                H5Fclose);
    Writer w(file.get(), path);
    w.attribute("format", std::string(kTokenFileFormat));
    w.attribute("format_version", kTokenFileVersion);
    w.array(kTrainTokens, data.train, true);
    w.array(kValidationTokens, data.validation, true);
    std::vector<std::string> names;
    std::vector<std::int32_t> domain;
    std::vector<std::int8_t> split;
    std::vector<std::int64_t> offset, length, bytes;
    for (const DocumentInfo& d : data.documents) {
      names.push_back(d.name);
      domain.push_back(d.domain);
      split.push_back(std::int8_t(d.split));
      offset.push_back(d.offset);
      length.push_back(d.length);
      bytes.push_back(d.bytes);
    }
    w.strings("/documents/name", names);
    w.array("/documents/domain", domain);
    w.array("/documents/split", split);
    w.array("/documents/offset", offset);
    w.array("/documents/length", length);
    w.array("/documents/bytes", bytes);
    w.strings("/domains/name", data.domains);
    w.strings("/domains/source", data.sources);
    w.strings("/domains/sha256", data.domain_sha256);
    const Tokenizer& t = data.tokenizer;
    w.text("/tokenizer/kind", to_string(t.kind()));
    w.scalar("/tokenizer/vocab_size", t.vocab_size());
    w.scalar("/tokenizer/eod_token", t.eod_token());
    w.array("/tokenizer/model", std::vector<std::uint8_t>(t.model().begin(), t.model().end()));
    std::vector<std::int32_t> token_bytes;
    std::vector<std::int8_t> token_kind;
    std::vector<std::string> kind_names;
    for (int id = 0; id < t.vocab_size(); ++id) {
      token_bytes.push_back(t.token_bytes(id));
      token_kind.push_back(std::int8_t(t.token_kind(id)));
    }
    for (int k = 0; k < kTokenKinds; ++k) kind_names.emplace_back(to_string(TokenKind(k)));
    w.array("/tokenizer/token_bytes", token_bytes);
    w.array("/tokenizer/token_kind", token_kind);
    w.strings("/tokenizer/kind_names", kind_names);
    w.text("/settings", data.settings);
    check_write(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), path, "flush");
    check_write(file.close(), path, "close");
    std::error_code ec;
    fs::rename(temp, path, ec);
    if (ec)
      throw InputError(fmt::format("cannot write token file '{}': rename from '{}': {}", path, temp,
                                   ec.message()));
  } catch (...) {
    std::error_code ec;
    fs::remove(temp, ec);
    throw;
  }
}

PrepareSummary prepare_token_file(const core::Config& config) {
  const core::TextConfig& text = config.text;
  const TokenizerKind kind = parse_tokenizer_kind(text.tokenizer);
  if (kind == TokenizerKind::bpe) check_bpe_vocab_size(text.vocab_size);
  check_writable(config.data.tokens);

  PrepareSummary summary;
  summary.path = config.data.tokens;
  auto t0 = std::chrono::steady_clock::now();
  const Corpus corpus =
      build_corpus(core::parse_text_sources(text.sources), text.max_bytes_per_domain);
  const std::vector<Split> splits = split_documents(corpus, text.validation_fraction);
  summary.extract_s = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  Tokenizer tokenizer;
  if (kind == TokenizerKind::bpe) {
    const std::vector<std::string_view> sample = tokenizer_sample(corpus, kTokenizerSampleBytes);
    for (std::string_view line : sample)
      summary.tokenizer_sample_bytes += std::int64_t(line.size());
    tokenizer = Tokenizer::train_bpe(sample, text.vocab_size);
  }
  summary.train_tokenizer_s = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  TokenFileData data = tokenize_corpus(corpus, splits, tokenizer);
  data.settings = core::to_toml(config, "text");
  summary.tokenize_s = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  write_token_file(config.data.tokens, data);
  summary.write_s = seconds_since(t0);
  std::error_code ec;
  summary.file_bytes = std::int64_t(fs::file_size(config.data.tokens, ec));

  summary.tokenizer = tokenizer.kind();
  summary.vocab_size = tokenizer.vocab_size();
  for (std::size_t d = 0; d < data.domains.size(); ++d) {
    DomainSummary s{
        .name = data.domains[d], .source = data.sources[d], .sha256 = data.domain_sha256[d]};
    for (const DocumentInfo& doc : data.documents) {
      if (doc.domain != int(d)) continue;
      ++s.documents;
      s.bytes += doc.bytes;
      s.tokens += doc.length;
      ++(doc.split == Split::train ? s.train_documents : s.validation_documents);
      (doc.split == Split::train ? s.train_tokens : s.validation_tokens) += doc.length;
    }
    summary.domains.push_back(std::move(s));
  }
  return summary;
}

std::vector<std::string> describe(const PrepareSummary& s) {
  std::vector<std::string> lines;
  std::int64_t bytes = 0, tokens = 0, documents = 0;
  for (const DomainSummary& d : s.domains) {
    lines.push_back(fmt::format(
        "domain {} ({}): {} documents, {} bytes, {} tokens, {:.2f} bytes/token; train {} documents "
        "({} tokens), validation {} documents ({} tokens)",
        d.name, d.source, d.documents, d.bytes, d.tokens,
        d.tokens > 0 ? double(d.bytes) / double(d.tokens) : 0.0, d.train_documents, d.train_tokens,
        d.validation_documents, d.validation_tokens));
    bytes += d.bytes, tokens += d.tokens, documents += d.documents;
  }
  lines.push_back(s.tokenizer == TokenizerKind::bpe
                      ? fmt::format("tokenizer bpe: {} tokens, trained on {} bytes in {:.1f} s",
                                    s.vocab_size, s.tokenizer_sample_bytes, s.train_tokenizer_s)
                      : fmt::format("tokenizer bytes: {} tokens", s.vocab_size));
  lines.push_back(
      fmt::format("wrote {} ({} bytes): {} documents, {} bytes, {} tokens, {:.2f} bytes/token; "
                  "extract {:.1f} s, "
                  "tokenizer {:.1f} s, tokenize {:.1f} s, write {:.1f} s",
                  s.path, s.file_bytes, documents, bytes, tokens,
                  tokens > 0 ? double(bytes) / double(tokens) : 0.0, s.extract_s,
                  s.train_tokenizer_s, s.tokenize_s, s.write_s));
  return lines;
}

// ---- reader -----------------------------------------------------------------------------------

struct TokenFile::Impl {
  std::string path;
  Handle file;
  Handle train, validation;
  TokenFileData meta;
  std::int64_t train_tokens = 0, validation_tokens = 0;
  // Per split: the documents' offsets in stream order and their domains, for domain_at.
  std::vector<std::int64_t> offsets[2];
  std::vector<int> domains[2];
};

TokenFile::TokenFile(const std::string& path) : impl_(std::make_unique<Impl>()) {
  silence_hdf5();
  Impl& m = *impl_;
  m.path = path;
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw DataError(fmt::format(
        "cannot open token file '{}': file does not exist (make it with `daa-swarm prepare`)",
        path));
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw DataError(fmt::format("'{}' is not a token file: not an HDF5 file", path));
  }
  const Handle fapl = file_access(path, true);
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (id < 0)
    throw DataError(fmt::format("cannot open token file '{}': {} (truncated or corrupt?)", path,
                                hdf5_detail()));
  m.file = Handle(id, H5Fclose);
  const Reader r(id, path);
  const std::string format = r.string_attribute("format");
  if (format != kTokenFileFormat)
    throw DataError(
        fmt::format("'{}' is not a token file: its format attribute is '{}', expected "
                    "'{}'",
                    path, format, kTokenFileFormat));
  const std::int64_t version = r.int_attribute("format_version");
  if (version != kTokenFileVersion)
    throw DataError(
        fmt::format("token file '{}' has format version {}; this program reads version "
                    "{} (prepare it again)",
                    path, version, kTokenFileVersion));

  TokenFileData& meta = m.meta;
  meta.domains = r.strings("/domains/name");
  const auto n_domains = std::int64_t(meta.domains.size());
  meta.sources = r.strings("/domains/source", n_domains);
  meta.domain_sha256 = r.strings("/domains/sha256", n_domains);
  const std::vector<std::string> names = r.strings("/documents/name");
  const auto n_docs = std::int64_t(names.size());
  const auto domain = r.array<std::int32_t>("/documents/domain", n_docs);
  const auto split = r.array<std::int8_t>("/documents/split", n_docs);
  const auto offset = r.array<std::int64_t>("/documents/offset", n_docs);
  const auto length = r.array<std::int64_t>("/documents/length", n_docs);
  const auto bytes = r.array<std::int64_t>("/documents/bytes", n_docs);

  const std::string kind_text = r.text("/tokenizer/kind");
  TokenizerKind kind = TokenizerKind::bytes;
  if (kind_text == "bpe")
    kind = TokenizerKind::bpe;
  else if (kind_text == "bytes")
    kind = TokenizerKind::bytes;
  else
    r.fail("/tokenizer/kind", "is '" + kind_text + "', expected 'bpe' or 'bytes'");
  const auto model = r.array<std::uint8_t>("/tokenizer/model");
  meta.tokenizer = Tokenizer(kind, std::string(model.begin(), model.end()),
                             fmt::format("token file '{}'", path));
  const int vocab = meta.tokenizer.vocab_size();
  if (r.scalar("/tokenizer/vocab_size") != vocab)
    r.fail("/tokenizer/vocab_size", fmt::format("disagrees with the model's {} tokens", vocab));
  if (r.scalar("/tokenizer/eod_token") != meta.tokenizer.eod_token())
    r.fail("/tokenizer/eod_token", "disagrees with the model");
  const auto token_bytes = r.array<std::int32_t>("/tokenizer/token_bytes", vocab);
  const auto token_kind = r.array<std::int8_t>("/tokenizer/token_kind", vocab);
  for (int id = 0; id < vocab; ++id)
    if (token_bytes[std::size_t(id)] != meta.tokenizer.token_bytes(id) ||
        token_kind[std::size_t(id)] != std::int8_t(meta.tokenizer.token_kind(id)))
      r.fail("/tokenizer/token_bytes", fmt::format("disagrees with the model at token {}", id));
  meta.settings = r.text("/settings");

  m.train = r.open(kTrainTokens);
  m.validation = r.open(kValidationTokens);
  m.train_tokens = r.extent(m.train.get(), kTrainTokens);
  m.validation_tokens = r.extent(m.validation.get(), kValidationTokens);
  if (m.train_tokens < 0 || m.validation_tokens < 0) r.fail("/tokens", "holds a scalar");

  // Documents must tile each stream exactly, in order.
  std::int64_t next[2] = {0, 0};
  for (std::int64_t i = 0; i < n_docs; ++i) {
    const auto k = std::size_t(i);
    if (split[k] != 0 && split[k] != 1)
      r.fail("/documents/split", fmt::format("has value {} at {}", int(split[k]), i));
    if (domain[k] < 0 || domain[k] >= n_domains)
      r.fail("/documents/domain", fmt::format("has value {} at {}", domain[k], i));
    const int s = split[k];
    if (offset[k] != next[s] || length[k] < 1)
      r.fail("/documents/offset",
             fmt::format("does not tile the {} stream at document {}", to_string(Split(s)), i));
    next[s] += length[k];
    m.offsets[s].push_back(offset[k]);
    m.domains[s].push_back(domain[k]);
    meta.documents.push_back({names[k], domain[k], Split(s), offset[k], length[k], bytes[k]});
  }
  if (next[0] != m.train_tokens || next[1] != m.validation_tokens)
    r.fail("/documents/length", "does not add up to the token streams' lengths");
  if (m.train_tokens == 0 || m.validation_tokens == 0) r.fail("/tokens", "has an empty split");
}

TokenFile::~TokenFile() = default;
TokenFile::TokenFile(TokenFile&&) noexcept = default;
TokenFile& TokenFile::operator=(TokenFile&&) noexcept = default;

const std::string& TokenFile::path() const {
  return impl_->path;
}
const TokenFileData& TokenFile::metadata() const {
  return impl_->meta;
}

std::int64_t TokenFile::tokens(Split split) const {
  return split == Split::train ? impl_->train_tokens : impl_->validation_tokens;
}

std::vector<std::int32_t> TokenFile::read(Split split, std::int64_t start,
                                          std::int64_t count) const {
  const Impl& m = *impl_;
  const std::int64_t n = tokens(split);
  const std::string name = split == Split::train ? kTrainTokens : kValidationTokens;
  if (start < 0 || count < 0 || start + count > n)
    throw DataError(fmt::format("token file '{}': tokens [{}, {}) are outside {} of {} tokens",
                                m.path, start, start + count, name, n));
  std::vector<std::int32_t> out(static_cast<std::size_t>(count));
  if (count == 0) return out;
  const hid_t set = split == Split::train ? m.train.get() : m.validation.get();
  Handle space(check_read(H5Dget_space(set), m.path, name), H5Sclose);
  const hsize_t offset = hsize_t(start), size = hsize_t(count);
  check_read(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, &offset, nullptr, &size, nullptr),
             m.path, name);
  Handle memory(check_read(H5Screate_simple(1, &size, nullptr), m.path, name), H5Sclose);
  check_read(H5Dread(set, H5T_NATIVE_INT32, memory.get(), space.get(), H5P_DEFAULT, out.data()),
             m.path, fmt::format("reading {} [{}, {})", name, start, start + count));
  const int vocab = m.meta.tokenizer.vocab_size();
  for (std::size_t i = 0; i < out.size(); ++i)
    if (out[i] < 0 || out[i] >= vocab)
      throw DataError(
          fmt::format("token file '{}' is corrupt: {} holds token {} at {}, outside the "
                      "vocabulary of {}",
                      m.path, name, out[i], start + std::int64_t(i), vocab));
  return out;
}

int TokenFile::domain_at(Split split, std::int64_t position) const {
  std::int32_t d = 0;
  domains_of(split, position, 1, &d);
  return d;
}

void TokenFile::domains_of(Split split, std::int64_t start, std::int64_t count,
                           std::int32_t* out) const {
  const Impl& m = *impl_;
  if (start < 0 || count < 0 || start + count > tokens(split))
    throw DataError(
        fmt::format("token file '{}': positions [{}, {}) are outside the {} stream of "
                    "{} tokens",
                    m.path, start, start + count, to_string(split), tokens(split)));
  const auto& offsets = m.offsets[int(split)];
  const auto& domains = m.domains[int(split)];
  std::size_t doc =
      std::size_t(std::upper_bound(offsets.begin(), offsets.end(), start) - offsets.begin()) - 1;
  for (std::int64_t i = 0; i < count; ++i) {
    while (doc + 1 < offsets.size() && offsets[doc + 1] <= start + i) ++doc;
    out[i] = domains[doc];
  }
}

}  // namespace daa::io
